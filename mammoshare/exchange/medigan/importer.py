"""The bridge between medigan model packages and the project's generator bundles.

Import (:func:`import_medigan_package`, ``mammoshare medigan-import``): a medigan model package of
the study's three published mass generators becomes a MONAI generator bundle of ours.

=============================  ======================  ==============================================
medigan model                  package                 weights
=============================  ======================  ==============================================
``00002_DCGAN_MMG_MASS_ROI``   ``MALIGN_DCGAN.zip``    ``malign_mass_gen`` at the zip root: a plain
(OPTIMAM, Alyafi et al.)                               ``state_dict`` with ``model.N.*`` keys; nz 200,
                                                       ngf 45, LeakyReLU(0.2); output decoded as
                                                       ``(out + 1) / 2``
``00005_DCGAN_MMG_MASS_ROI``   folder of the same      ``500.pt``: ``{"generator": {main.N.*,
(BCDR DCGAN, Szafranowska      name in the zip         first_layers.*, embed_nn.*}}``; nz 100, ngf 64,
et al.)                                                ReLU; decoded as ``clip(out, 0, 1)``
``00006_WGANGP_MMG_MASS_ROI``  the same                ``10000.pt``: the same without ``embed_nn``
(BCDR WGAN-GP)
=============================  ======================  ==============================================

The layout is detected from the weights' content (``model.N.*`` keys -> 00002; a ``generator``
entry with ``main.N.*`` keys -> 00005 when it carries the unused ``embed_nn``, else 00006), the
network geometry (latent size, widths) from the tensor shapes, which must form the project's DCGAN
generator with a 1x128x128 output. The bundle gets ``models/model.safetensors`` in our layout (plain
tensors, keys ``0.weight`` ...), the declarative ``configs/generator.json``, a ``configs/inference.json`` for :func:`mammoshare.gan.inference.generate_synthetic_patches`
that states the generator's geometry and its output decoding (``"decoding"``: a model trained
against [0, 1] images keeps that convention although its weights are now in our layout), a
schema-valid ``configs/metadata.json`` whose ``origin`` names the medigan model id and the
package's SHA-256, a model card with the package's licence and origin, and a ``LICENSE``.

A package's ``__init__.py`` (and any other code in it) is never imported or executed: only the
weights file is read, once, by the restricted pickle loader of :mod:`mammoshare.gan.weights` (size
limits, torch's records checked, every pickle opcode scanned against an allow-list, then
``torch.load(weights_only=True)``) and re-saved as safetensors: this import is the one place where a
foreign pickle is read.

Into an existing bundle (a folder with ``configs/metadata.json``, e.g. ``bundles/dcgan_optimam``),
nothing of the bundle is evaluated: its ``generator.json``, or the literal values of its
``inference.json`` read as JSON, must fit the package; the import then writes only the files it owns,
``models/model.safetensors`` and ``models/origin.json``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import torch

from mammoshare import __version__
from mammoshare.gan.weights import (
    LIMITS,
    WeightsError,
    convert_layout,
    describe_checkpoint,
    dcgan_geometry,
    is_package_zip,
    package_weights_names,
    read_generator_spec,
    read_package_entry,
    read_pickled_weights,
    recognise_generator,
    save_safetensors,
)
from mammoshare.gan.configs import generator_inference_config, logging_conf
from mammoshare.hashing import sha256_bytes, sha256_file

from ..layout import ExchangeError
from ..policy import bundle_generator_settings
from .models import IMAGE_SIZE, MEDIGAN_MODELS, MEDIGAN_REFERENCE, OFFLINE_ENV, STUDY_REFERENCE, MediganModel, MediganPackageError, normalise_model_id

__all__ = ["import_medigan_package", "fetch_medigan_package"]

logger = logging.getLogger(__name__)

#: MONAI's metadata schema (the URL is informative; validation uses mammoshare.bundle.SCHEMA_FILE)
_SCHEMA_URL = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
_LICENCE_FILES = ("LICENSE", "LICENSE.txt", "LICENSE.md", "LICENCE", "LICENCE.txt", "COPYING")


@dataclass


class _Package:
    source: Path
    kind: str  # "zip", "folder" or "file"
    names: list[str]  # posix paths inside the package

    def read(self, name: str, limit: int = LIMITS.max_file_bytes) -> bytes:
        """One file of the package, refused past ``limit`` bytes (declared or actual)."""
        if self.kind == "zip":
            return read_package_entry(self.source, name)
        path = self.source / name if self.kind == "folder" else self.source
        if path.is_symlink() or path.stat().st_size > limit:
            raise MediganPackageError(f"{self.where(name)}: a link, or more than the {limit} bytes accepted")
        return path.read_bytes()

    def where(self, name: str) -> str:
        return str(self.source) if self.kind == "file" else f"{self.source}:{name}"


def _open_package(source: Path) -> _Package:
    if source.is_dir():
        names = sorted(p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file())
        return _Package(source, "folder", names)
    if not source.is_file():
        raise MediganPackageError(f"{source}: medigan package not found (a zip, a folder or a weights file is expected)")
    if is_package_zip(source):
        try:
            with zipfile.ZipFile(source) as archive:
                names = [info.filename for info in archive.infolist() if not info.is_dir()]
        except zipfile.BadZipFile as e:
            raise MediganPackageError(f"{source}: not a readable zip archive ({e})") from e
        return _Package(source, "zip", names)
    return _Package(source, "file", [source.name])


def _weights_entry(package: _Package) -> str:
    if package.kind == "file":
        return package.names[0]
    candidates = package_weights_names(package.names)
    if len(candidates) > 1:
        known = {m.weights_name for m in MEDIGAN_MODELS.values()}
        preferred = [n for n in candidates if n.rsplit("/", 1)[-1] in known]
        candidates = preferred if len(preferred) == 1 else candidates
    if len(candidates) != 1:
        raise MediganPackageError(
            f"{package.source}: a medigan package with exactly one weights file is expected (a .pt file such as "
            f"500.pt / 10000.pt, or malign_mass_gen), found {candidates or 'none'} among {package.names[:12]}"
        )
    return candidates[0]


def _load_entry(package: _Package, name: str):
    """The package's weights (a pickle) through the restricted loader of :mod:`mammoshare.gan.weights`:
    the one place where a foreign pickle is read, once, at import."""
    try:
        return read_pickled_weights(package.read(name), package.where(name))
    except MediganPackageError:
        raise
    except WeightsError as e:
        raise MediganPackageError(str(e)) from None


def _detect_layout(obj, where: str) -> tuple[str, dict[str, torch.Tensor], bool]:
    """-> (family "optimam" | "bcdr", our-layout state_dict, has_embed_nn)."""
    try:
        layout, state, facts = convert_layout(obj, where)
    except WeightsError:
        layout, state, facts = "unknown", {}, {}
    if layout == "medigan-00002":
        return "optimam", state, False
    if layout == "medigan":
        return "bcdr", state, bool(facts.get("embed_nn"))
    raise MediganPackageError(
        f"{where}: unknown medigan weights layout: found {describe_checkpoint(obj)}; expected the 00002 layout (a state_dict "
        "with 'model.N.*' keys) or the 00005/00006 layout (a dict whose 'generator' entry has 'main.N.*' keys)"
    )


@dataclass
class _Geometry:
    latent_size: int
    ngf: int
    multipliers: tuple[int, ...]
    leaky_slope: float | None


def _infer_geometry(state: dict[str, torch.Tensor], model: "MediganModel", where: str) -> tuple[_Geometry, object]:
    """The generator's geometry read from the tensor shapes (through the one recogniser of
    :mod:`mammoshare.gan.weights`, with its parameter ranges), and its :class:`GeneratorSpec`."""
    try:
        spec = recognise_generator(state, where, leaky_slope=model.leaky_slope, decoding=model.decoding)
    except WeightsError as e:
        raise MediganPackageError(str(e).replace(f"{where}: ", f"{where}: wrong tensor shapes: ", 1)
                                  if "wrong tensor shapes" not in str(e) else str(e)) from None
    p = spec.parameters
    geometry = dcgan_geometry(spec)
    if geometry is None or p["out_channels"] != 1 or spec.image_size != [IMAGE_SIZE, IMAGE_SIZE] or p["conv_bias"]:
        raise MediganPackageError(
            f"{where}: wrong tensor shapes: the transposed convolutions map {p['latent_size']} -> {' -> '.join(map(str, p['widths']))} "
            f"-> {p['out_channels']} channels ({spec.image_size} images); a bias-free DCGAN generator of one-channel "
            f"{IMAGE_SIZE}x{IMAGE_SIZE} images with widths that are multiples of the last one is expected"
        )
    return _Geometry(geometry["latent_size"], geometry["ngf"], geometry["multipliers"], geometry["leaky_slope"]), spec


@dataclass
class _Imported:
    model: MediganModel
    geometry: _Geometry
    spec: object
    state: dict[str, torch.Tensor]
    layout: str
    package: _Package
    weights_entry: str
    weights_sha256: str
    package_sha256: str | None
    licence_texts: dict[str, str]


def _read_package(source: Path, model_id: str | None) -> _Imported:
    package = _open_package(source)
    entry = _weights_entry(package)
    where = package.where(entry)
    obj = _load_entry(package, entry)
    family, state, has_embed = _detect_layout(obj, where)
    detected = "00002_DCGAN_MMG_MASS_ROI" if family == "optimam" else (
        "00005_DCGAN_MMG_MASS_ROI" if has_embed else "00006_WGANGP_MMG_MASS_ROI"
    )
    if model_id is not None:
        claimed = normalise_model_id(model_id)
        if (claimed == "00002_DCGAN_MMG_MASS_ROI") != (family == "optimam"):
            raise MediganPackageError(
                f"{where}: the weights have the layout of {detected}, not of {claimed} given as --model-id"
            )
        detected = claimed
    model = MEDIGAN_MODELS[detected]
    geometry, spec = _infer_geometry(state, model, where)
    published = (model.latent_size, model.ngf, model.multipliers)
    if (geometry.latent_size, geometry.ngf, geometry.multipliers) != published:
        logger.warning(
            "%s: nz %d, ngf %d, multipliers %s differ from the published %s (nz %d, ngf %d, multipliers %s); "
            "imported with the file's geometry",
            where, geometry.latent_size, geometry.ngf, geometry.multipliers, model.model_id, *published,
        )
    licences = {}
    if package.kind != "file":
        for name in package.names:
            if name.rsplit("/", 1)[-1] in _LICENCE_FILES:
                licences[name] = package.read(name, 1 << 20).decode("utf-8", errors="replace")
    data = package.read(entry)
    return _Imported(
        model=model,
        geometry=geometry,
        spec=spec,
        state=state,
        layout="medigan-00002" if family == "optimam" else "medigan",
        package=package,
        weights_entry=entry,
        weights_sha256=sha256_bytes(data),
        package_sha256=sha256_file(source) if source.is_file() else None,
        licence_texts=licences,
    )


def _versions() -> dict:
    import monai
    import numpy

    return {
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": numpy.__version__,
    }


def _origin(imp: _Imported, model_file: Path) -> dict:
    return {
        "source": "medigan model hub",
        "medigan_model_id": imp.model.model_id,
        "authors": imp.model.authors,
        "package_file": imp.package.source.name,
        "package_kind": imp.package.kind,
        "package_sha256": imp.package_sha256,
        "weights_file": imp.weights_entry,
        "weights_sha256": imp.weights_sha256,
        "layout": imp.layout,
        "published_at": imp.model.package_link,
        "licence": f"{imp.model.licence} (as declared by the medigan model hub)",
        "model_sha256": sha256_file(model_file),
        "converted_by": f"mammoshare {__version__} medigan-import",
    }


def _inference_config(geometry: _Geometry, decoding: str) -> dict:
    return generator_inference_config(latent_size=geometry.latent_size, ngf=geometry.ngf, multipliers=geometry.multipliers,
                                      leaky_slope=geometry.leaky_slope, decoding=decoding, weights_file="model.safetensors")


def _decoding_text(decoding: str) -> str:
    return "(pred + 1) / 2 gives [0, 1]" if decoding == "tanh" else "clip(pred, 0, 1) gives [0, 1] (trained against [0, 1] images)"


def _metadata(imp: _Imported, name: str, origin: dict) -> dict:
    m, g = imp.model, imp.geometry
    return {
        "schema": _SCHEMA_URL,
        "version": "0.1.0",
        "changelog": {
            "0.1.0": f"converted from the medigan package {imp.package.source.name} ({m.model_id}) by mammoshare medigan-import"
        },
        **_versions(),
        "required_packages_version": {"mammoshare": __version__},
        "name": name,
        "task": f"Synthesis of 128x128 mammography mass patches with the medigan {m.gan_type} {m.model_id}",
        "description": (
            f"{m.gan_type} generator of mammography mass patches from the medigan model hub ({m.model_id}: {m.note}), "
            f"converted to a mammoshare generator bundle. The generator (nz {g.latent_size}, ngf {g.ngf}) is a plain "
            "torch Sequential; models/model.safetensors holds its tensors only. The package's code was never executed."
        ),
        "authors": f"{m.authors} (generator, via medigan); converted by mammoshare",
        "copyright": f"Copyright (c) the authors of the medigan model {m.model_id} ({m.authors})",
        "data_source": f"{m.dataset}; the training data are not distributed with the generator",
        "data_type": "latent vectors (the generator's input); no patient data",
        "image_classes": "one-channel 128x128 synthetic lesion patches",
        "pred_classes": "synthetic 128x128 mass patch",
        "intended_use": (
            "Research only: data augmentation for mammography patch classifiers and the study of sharing generative "
            "models between centres. Not for clinical use; samples are synthetic and must never be presented as "
            "patient images."
        ),
        "references": [*m.references, STUDY_REFERENCE, MEDIGAN_REFERENCE],
        "origin": origin,
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "tensor",
                    "format": "latent",
                    "num_channels": g.latent_size,
                    "spatial_shape": [1, 1],
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": False,
                    "channel_def": {"0": "standard normal latent vector"},
                }
            },
            "outputs": {
                "pred": {
                    "type": "image",
                    "format": "magnitude",
                    "num_channels": 1,
                    "spatial_shape": [IMAGE_SIZE, IMAGE_SIZE],
                    "dtype": "float32",
                    "value_range": [-1, 1],
                    "is_patch_data": True,
                    "channel_def": {"0": f"synthetic lesion patch; {_decoding_text(m.decoding)}"},
                }
            },
        },
    }


def _model_card(imp: _Imported, name: str, origin: dict) -> str:
    m, g = imp.model, imp.geometry
    activation = "ReLU" if g.leaky_slope is None else f"LeakyReLU({g.leaky_slope})"
    widths = " -> ".join(str(g.ngf * k) for k in g.multipliers)
    sha = origin["package_sha256"] or "(a folder; see weights_sha256)"
    return f"""# {name}: medigan {m.model_id} as a mammoshare generator bundle

This bundle was made by `mammoshare medigan-import` from the medigan model package
`{imp.package.source.name}`: {m.note}. It generates synthetic 128x128 mammography mass patches for
data augmentation; it holds no patient data.

## Origin

| | |
|---|---|
| medigan model id | `{m.model_id}` |
| authors | {m.authors} |
| training data | {m.dataset} |
| published at | {m.package_link} (Zenodo, through the medigan model hub) |
| DOI | {", ".join(m.doi)} |
| package file | `{imp.package.source.name}`, SHA-256 `{sha}` |
| weights file | `{imp.weights_entry}`, SHA-256 `{imp.weights_sha256}` |
| `models/model.safetensors` | SHA-256 `{origin["model_sha256"]}` (the same tensors in our layout) |

`configs/metadata.json` (key `origin`) records the same.

## Licence and terms

The medigan model hub declares the licence of `{m.model_id}` as **{m.licence}**; the weights in
`models/model.safetensors` stay under the terms of the original package and of its authors. The bundle's
configuration files are Apache-2.0 (mammoshare). The generator was trained on {m.dataset}: the
terms of that dataset may restrict what you do with its samples; check them before sharing the
generator or its samples further.

## Model

Latent `(B, {g.latent_size})` -> `(B, 1, 128, 128)`: transposed convolutions {g.latent_size} -> {widths}
(k4, BatchNorm + {activation}) and -> 1 (k4 s2 p1) + Tanh, bias-free, as a plain
`torch.nn.Sequential`. Output decoding: `{m.decoding}` ({_decoding_text(m.decoding)}), the
convention the generator was trained with; `configs/inference.json` states it (`"decoding"`).

## Generating synthetic patches

```bash
python -m monai.bundle run --config_file BUNDLE_DIR/configs/inference.json \\
    --num_samples 1200 --output_dir synthetic/{name} --seed 0
```

Exactly N 8-bit PNG patches and `synthetic_datalist.json` are written into an empty folder; every
PNG says that it is synthetic and which weights made it.

## Security

Only the weights file was read, once, by mammoshare's restricted pickle loader (size limits, an
allow-list of pickle globals, `torch.load(weights_only=True)`), and re-saved as safetensors; the package's
`__init__.py` was never imported or executed.

## Intended use and limits

Research only; not a medical device. Synthetic patches must never be presented as patient images.
The generator covers the lesions of its training data only (128x128 patches, one dataset's
scanners and population). Generative models can memorise training examples.
"""


def _licence_text(imp: _Imported) -> str:
    m = imp.model
    text = f"""This bundle holds two kinds of material under different terms.

1. The generator weights (models/model.safetensors) are converted, tensor for tensor, from the medigan model
   package {imp.package.source.name} ({m.model_id}, {m.authors}), published at
   {m.package_link}.
   The medigan model hub declares their licence as: {m.licence}. They remain under the terms of the
   original package and of its authors; the training data ({m.dataset}) may add terms of their own.

2. The configuration files and the model card (configs/, docs/) were written by mammoshare and are
   licensed under the Apache License, Version 2.0 (http://www.apache.org/licenses/LICENSE-2.0).
"""
    for name, licence in imp.licence_texts.items():
        text += f"\n\n--- {name} (from the medigan package, verbatim) ---\n\n{licence}"
    return text


def _install_into_bundle(imp: _Imported, bundle_dir: Path, overwrite: bool) -> Path:
    """Install the weights into an existing bundle without evaluating any of its files: its
    ``generator.json`` (or the literal values of its ``inference.json``, read as JSON) must describe
    the package's generator. Only the files the import owns are written: ``models/model.safetensors``
    and ``models/origin.json`` (an old ``models/model.pt`` is removed with ``--force``)."""
    where = bundle_dir / "configs"
    g = imp.geometry
    problems = []
    if (where / "generator.json").is_file():
        try:
            spec = read_generator_spec((where / "generator.json").read_bytes(), str(where / "generator.json"))
        except WeightsError as e:
            raise MediganPackageError(str(e)) from None
        if spec.parameters != imp.spec.parameters or spec.output_decoding != imp.spec.output_decoding:
            problems.append(f"its generator.json describes {spec.parameters} decoded {spec.output_decoding}")
        decoding = spec.output_decoding
    else:
        try:
            config = json.loads((where / "inference.json").read_text(encoding="utf-8"))
            meta = json.loads((where / "metadata.json").read_text(encoding="utf-8"))
            settings = bundle_generator_settings(config, meta, str(where / "inference.json"))
        except (OSError, ValueError, ExchangeError) as e:
            raise MediganPackageError(f"{where}: cannot tell the bundle's generator from its configs without evaluating them ({e}); "
                                      "import into a new folder instead") from None
        stated = {"latent_size": g.latent_size, "ngf": g.ngf, "multipliers": list(g.multipliers), "leaky_slope": g.leaky_slope}
        for key, value in stated.items():
            have = settings.get(key)
            if key == "multipliers" and have is None and settings.get("ngf") is not None:
                have = [16, 8, 4, 2, 1]
            if have is not None and (list(have) if isinstance(have, (list, tuple)) else have) != value:
                problems.append(f"its inference.json states {key} {have!r}, the package has {value!r}")
        decoding = settings["decoding"]
    if problems:
        raise MediganPackageError(
            f"{imp.package.source}: {imp.model.model_id} (nz {g.latent_size}, ngf {g.ngf}, multipliers {g.multipliers}, "
            f"{'ReLU' if g.leaky_slope is None else f'LeakyReLU({g.leaky_slope})'}) does not fit the bundle {bundle_dir}: "
            + "; ".join(problems) + "; import it into a new folder instead"
        )
    if decoding != imp.model.decoding:
        raise MediganPackageError(
            f"{imp.package.source}: {imp.model.model_id} decodes its output as {imp.model.decoding!r} but the bundle "
            f"{bundle_dir} decodes {decoding!r}; import it into a new folder, or pass the published weights file to that bundle as --checkpoint"
        )
    model_file = bundle_dir / "models" / "model.safetensors"
    old = bundle_dir / "models" / "model.pt"
    if (model_file.exists() or old.exists()) and not overwrite:
        raise MediganPackageError(f"{model_file if model_file.exists() else old}: exists; pass --force to replace it")
    _save_state(imp.state, model_file)
    old.unlink(missing_ok=True)
    from mammoshare.atomic import atomic_write_bytes

    atomic_write_bytes(bundle_dir / "models" / "origin.json", (json.dumps(_origin(imp, model_file), indent=4) + "\n").encode("utf-8"))
    return bundle_dir


def _save_state(state: dict[str, torch.Tensor], path: Path) -> None:
    save_safetensors(state, path, {"format": "pt"})


def import_medigan_package(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    model_id: str | None = None,
    name: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Turn a medigan model package into a generator bundle of ours; returns the bundle folder.

    Args:
        source: the package zip (``MALIGN_DCGAN.zip``, ``00005_DCGAN_MMG_MASS_ROI.zip``...), its
            unpacked folder, or the weights file alone (``malign_mass_gen``, ``500.pt``, ``10000.pt``).
        out_dir: a new or empty folder (a complete bundle is written), or an existing bundle of the
            same architecture (only ``models/model.safetensors`` and ``models/origin.json`` are written;
            nothing of the bundle is evaluated).
        model_id: the medigan model id the package comes from (default: detected from the content);
            it must agree with the detected layout.
        name: the bundle's name in a new bundle (default per model, e.g. ``dcgan_optimam``).
        overwrite: replace existing weights (``models/model.safetensors`` or ``models/model.pt``).

    Raises:
        MediganPackageError: unknown layout, wrong tensor shapes, no or several weights files,
            a bundle that does not fit; the message names the file.
    """
    source, out_dir = Path(source), Path(out_dir)
    imp = _read_package(source, model_id)
    if (out_dir / "configs" / "metadata.json").is_file():
        return _install_into_bundle(imp, out_dir, overwrite)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise MediganPackageError(
            f"{out_dir}: exists and is neither empty nor a bundle (configs/metadata.json); give a new or empty folder"
        )
    name = name or imp.model.bundle_name
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name):
        raise MediganPackageError(f"bundle name {name!r}: letters, digits, '_', '.', '-' only")
    created = not out_dir.exists()
    try:
        for sub in ("configs", "models", "docs"):
            (out_dir / sub).mkdir(parents=True, exist_ok=True)
        model_file = out_dir / "models" / "model.safetensors"
        _save_state(imp.state, model_file)
        (out_dir / "configs" / "generator.json").write_bytes(imp.spec.to_json())
        origin = _origin(imp, model_file)
        (out_dir / "configs" / "metadata.json").write_text(json.dumps(_metadata(imp, name, origin), indent=4) + "\n")
        (out_dir / "configs" / "inference.json").write_text(
            json.dumps(_inference_config(imp.geometry, imp.model.decoding), indent=4) + "\n"
        )
        (out_dir / "configs" / "logging.conf").write_bytes(logging_conf())
        (out_dir / "docs" / "README.md").write_text(_model_card(imp, name, origin))
        (out_dir / "LICENSE").write_text(_licence_text(imp))
    except BaseException:
        if created:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    return out_dir


def _network_available(host: str = "zenodo.org", port: int = 443, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def fetch_medigan_package(model_id: str, dest_dir: str | os.PathLike) -> Path:
    """Download a model package through medigan (its config and downloader; the package is never
    imported) into ``dest_dir``; returns the zip.

    Never touches the network when the environment variable ``MAMMOSHARE_OFFLINE`` is 1; otherwise
    a 3 s connection probe to zenodo.org comes first, and without network a
    :class:`MediganPackageError` says where to get the package by hand.
    """
    model = MEDIGAN_MODELS[normalise_model_id(model_id)]
    manual = (
        f"download {model.package_name}.zip from {model.package_link} on a machine with network access and "
        f"run `mammoshare medigan-import {model.package_name}.zip --out BUNDLE_DIR`"
    )
    if os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes"):
        raise MediganPackageError(f"{model.model_id}: no local package given and {OFFLINE_ENV} forbids network access; {manual}")
    if not _network_available():
        raise MediganPackageError(f"{model.model_id}: no local package given and no network access (zenodo.org unreachable); {manual}")
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:  # medigan writes config/global.json into its working directory
        result = subprocess.run(
            [sys.executable, "-c", files(__package__).joinpath("templates", "fetch_package.py").read_text(encoding="utf-8"), model.model_id, str(dest_dir.absolute())],
            cwd=work, capture_output=True, text=True, timeout=3600,
        )
    if result.returncode != 0:
        raise MediganPackageError(f"{model.model_id}: medigan could not download the package: {result.stderr[-1500:]}; {manual}")
    path = Path(json.loads(result.stdout.strip().splitlines()[-1])["path"])
    if not path.is_file():
        raise MediganPackageError(f"{model.model_id}: medigan reported {path} but it is missing; {manual}")
    return path

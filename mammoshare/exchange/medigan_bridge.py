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

Export (:func:`export_medigan_package`, ``mammoshare medigan-export``): a generator bundle becomes
a medigan model package that medigan 1.0.0 itself runs (see the function for the layout and the
``global.json`` entry).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
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
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mammoshare import __version__
from mammoshare.gan.weights import (
    DECODINGS,
    LIMITS,
    WeightsError,
    convert_layout,
    is_package_zip,
    load_generator_weights,
    load_into,
    package_weights_names,
    read_package_entry,
    read_pickled_weights,
    recognise_generator,
    save_safetensors,
    sha256_of,
)
from mammoshare.networks import DCGANGenerator

__all__ = [
    "MediganPackageError",
    "MediganModel",
    "MEDIGAN_MODELS",
    "import_medigan_package",
    "export_medigan_package",
    "fetch_medigan_package",
    "normalise_model_id",
    "add_medigan_import_parser",
    "add_medigan_export_parser",
    "OFFLINE_ENV",
]

logger = logging.getLogger(__name__)

#: set to 1 to forbid any network access of ``medigan-import --model-id`` (not even a probe)
OFFLINE_ENV = "MAMMOSHARE_OFFLINE"
#: MONAI's metadata schema (the URL is informative; validation uses mammoshare.bundle.SCHEMA_FILE)
_SCHEMA_URL = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
_IMAGE_SIZE = 128
_LICENCE_FILES = ("LICENSE", "LICENSE.txt", "LICENSE.md", "LICENCE", "LICENCE.txt", "COPYING")


class MediganPackageError(WeightsError):
    """A medigan package that cannot be imported, or a bundle that cannot be exported; names the file."""


@dataclass(frozen=True)
class MediganModel:
    """What the medigan hub publishes about one of the study's generators (facts, not code)."""

    model_id: str
    bundle_name: str
    gan_type: str
    authors: str
    dataset: str
    package_name: str
    weights_name: str
    latent_size: int
    ngf: int
    multipliers: tuple[int, ...]
    leaky_slope: float | None
    decoding: str
    licence: str
    package_link: str
    doi: tuple[str, ...]
    note: str
    references: tuple[str, ...] = field(default=())


_MEDIGAN_REF = (
    "Osuala R et al. medigan: a Python library of pretrained generative models for medical image synthesis. "
    "J Med Imaging 10(6), 2023"
)
_STUDY_REF = (
    "Szafranowska Z, Osuala R, Breier B, Kushibar K, Lekadir K, Diaz O. Sharing generative models instead of "
    "private data: a simulation study on mammography patch classification. Proc. SPIE 12286, 16th International "
    "Workshop on Breast Imaging (IWBI 2022). arXiv:2203.04961"
)

MEDIGAN_MODELS: dict[str, MediganModel] = {
    m.model_id: m
    for m in (
        MediganModel(
            model_id="00002_DCGAN_MMG_MASS_ROI",
            bundle_name="dcgan_optimam",
            gan_type="DCGAN",
            authors="Alyafi B, Diaz O, Marti R",
            dataset="OPTIMAM (OMI-DB), malignant masses",
            package_name="MALIGN_DCGAN",
            weights_name="malign_mass_gen",
            latent_size=200,
            ngf=45,
            multipliers=(10, 8, 4, 2, 1),
            leaky_slope=0.2,
            decoding="tanh",
            licence="MIT",
            package_link="https://zenodo.org/record/5548158/files/MALIGN_DCGAN.zip?download=1",
            doi=("10.5281/zenodo.5188557", "10.1117/12.2543506", "10.1117/12.2560473"),
            note="DCGAN trained on malignant mass regions of interest of the OPTIMAM mammography image database",
            references=(
                "Alyafi B, Diaz O, Marti R. DCGANs for realistic breast mass augmentation in x-ray mammography. "
                "Proc. SPIE 11314, Medical Imaging 2020: Computer-Aided Diagnosis",
            ),
        ),
        MediganModel(
            model_id="00005_DCGAN_MMG_MASS_ROI",
            bundle_name="dcgan_bcdr_medigan_00005",
            gan_type="DCGAN",
            authors="Szafranowska Z, Osuala R, Breier B, Kushibar K, Lekadir K, Diaz O",
            dataset="BCDR, mass patches",
            package_name="00005_DCGAN_MMG_MASS_ROI",
            weights_name="500.pt",
            latent_size=100,
            ngf=64,
            multipliers=(16, 8, 4, 2, 1),
            leaky_slope=None,
            decoding="clip01",
            licence="MIT",
            package_link="the package_link of 00005_DCGAN_MMG_MASS_ROI in the medigan hub's config/global.json (RichardObi/medigan)",
            doi=("10.48550/arXiv.2203.04961",),
            note="the study's BCDR DCGAN, weights of epoch 500",
        ),
        MediganModel(
            model_id="00006_WGANGP_MMG_MASS_ROI",
            bundle_name="wgangp_bcdr_medigan_00006",
            gan_type="WGAN-GP",
            authors="Szafranowska Z, Osuala R, Breier B, Kushibar K, Lekadir K, Diaz O",
            dataset="BCDR, mass patches",
            package_name="00006_WGANGP_MMG_MASS_ROI",
            weights_name="10000.pt",
            latent_size=100,
            ngf=64,
            multipliers=(16, 8, 4, 2, 1),
            leaky_slope=None,
            decoding="clip01",
            licence="MIT",
            package_link="the package_link of 00006_WGANGP_MMG_MASS_ROI in the medigan hub's config/global.json (RichardObi/medigan)",
            doi=("10.48550/arXiv.2203.04961",),
            note="the study's BCDR WGAN-GP, weights of epoch 10000",
        ),
    )
}

_LOGGING_CONF = """[loggers]
keys=root

[handlers]
keys=consoleHandler

[formatters]
keys=fullFormatter

[logger_root]
level=INFO
handlers=consoleHandler

[handler_consoleHandler]
class=logging.StreamHandler
level=INFO
formatter=fullFormatter
args=(sys.stdout,)

[formatter_fullFormatter]
format=%(asctime)s - %(name)s - %(levelname)s - %(message)s
"""


def normalise_model_id(model_id: str) -> str:
    """``"2"``, ``"00002"``, ``"00002_dcgan_mmg_mass_roi"`` -> ``"00002_DCGAN_MMG_MASS_ROI"``; only the
    study's three mass generators (00002, 00005, 00006) are supported."""
    text = str(model_id).strip()
    for known in MEDIGAN_MODELS:
        if text.upper() == known or (text.isdigit() and len(text) <= 5 and text.zfill(5) == known[:5]):
            return known
    raise MediganPackageError(
        f"unsupported medigan model id {model_id!r}; supported: {', '.join(MEDIGAN_MODELS)} (or 2, 5, 6)"
    )


# --------------------------------------------------------------------------------------------------
# reading a package without executing it


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


def _describe(obj) -> str:
    if isinstance(obj, dict):
        keys = list(obj)[:6]
        return f"a dict with keys {keys}{' ...' if len(obj) > 6 else ''}"
    return f"a {type(obj).__name__}"


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
        f"{where}: unknown medigan weights layout: found {_describe(obj)}; expected the 00002 layout (a state_dict "
        "with 'model.N.*' keys) or the 00005/00006 layout (a dict whose 'generator' entry has 'main.N.*' keys)"
    )


@dataclass
class _Geometry:
    latent_size: int
    ngf: int
    multipliers: tuple[int, ...]
    leaky_slope: float | None

    def network(self) -> DCGANGenerator:
        return DCGANGenerator(self.latent_size, self.ngf, self.multipliers, 1, self.leaky_slope)


def _infer_geometry(state: dict[str, torch.Tensor], model: "MediganModel", where: str) -> tuple[_Geometry, object]:
    """The generator's geometry read from the tensor shapes (through the one recogniser of
    :mod:`mammoshare.gan.weights`, with its parameter ranges), and its :class:`GeneratorSpec`."""
    try:
        spec = recognise_generator(state, where, leaky_slope=model.leaky_slope, decoding=model.decoding)
    except WeightsError as e:
        raise MediganPackageError(str(e).replace(f"{where}: ", f"{where}: wrong tensor shapes: ", 1)
                                  if "wrong tensor shapes" not in str(e) else str(e)) from None
    p = spec.parameters
    ngf = p["widths"][-1]
    if p["out_channels"] != 1 or any(w % ngf for w in p["widths"]) or spec.image_size != [_IMAGE_SIZE, _IMAGE_SIZE] or p["conv_bias"]:
        raise MediganPackageError(
            f"{where}: wrong tensor shapes: the transposed convolutions map {p['latent_size']} -> {' -> '.join(map(str, p['widths']))} "
            f"-> {p['out_channels']} channels ({spec.image_size} images); a bias-free DCGAN generator of one-channel "
            f"{_IMAGE_SIZE}x{_IMAGE_SIZE} images with widths that are multiples of the last one is expected"
        )
    return _Geometry(p["latent_size"], ngf, tuple(w // ngf for w in p["widths"]), p["leaky_slope"]), spec


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
        weights_sha256=hashlib.sha256(data).hexdigest(),
        package_sha256=sha256_of(source) if source.is_file() else None,
        licence_texts=licences,
    )


# --------------------------------------------------------------------------------------------------
# writing the bundle


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
        "model_sha256": sha256_of(model_file),
        "converted_by": f"mammoshare {__version__} medigan-import",
    }


def _inference_config(geometry: _Geometry, decoding: str) -> dict:
    return {
        "imports": ["$import torch", "$import mammoshare", "$import mammoshare.bundle", "$import mammoshare.gan.inference"],
        "bundle_root": "$mammoshare.bundle.bundle_root()",
        "output_dir": "$@bundle_root + '/synthetic'",
        "num_samples": 1200,
        "seed": 0,
        "checkpoint": None,
        "snapshot_dir": None,
        "default_checkpoint": "$@bundle_root + '/models/model.safetensors'",
        "device": "$'cuda' if torch.cuda.is_available() else 'cpu'",
        "batch_size": 64,
        "task": "mass",
        "latent_size": geometry.latent_size,
        "ngf": geometry.ngf,
        "multipliers": list(geometry.multipliers),
        "leaky_slope": geometry.leaky_slope,
        "decoding": decoding,
        "generator_name": "@_meta_#name",
        "generator_version": "@_meta_#version",
        "network_def": {
            "_target_": "mammoshare.networks.DCGANGenerator",
            "latent_size": "@latent_size",
            "ngf": "@ngf",
            "multipliers": "@multipliers",
            "leaky_slope": "@leaky_slope",
        },
        "network": "$@network_def.to(@device)",
        "run": [
            "$mammoshare.gan.inference.generate_synthetic_patches(network=@network, num_samples=@num_samples, "
            "output_dir=@output_dir, seed=@seed, checkpoint=@checkpoint, snapshot_dir=@snapshot_dir, "
            "default_checkpoint=@default_checkpoint, generator_name=@generator_name, "
            "generator_version=@generator_version, task=@task, device=@device, batch_size=@batch_size, "
            "decoding=@decoding)"
        ],
    }


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
        "references": [*m.references, _STUDY_REF, _MEDIGAN_REF],
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
                    "spatial_shape": [_IMAGE_SIZE, _IMAGE_SIZE],
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
    from mammoshare.gan.weights import read_generator_spec

    from .archive import ExchangeError, bundle_generator_settings

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


def _bundle_config(bundle_dir: Path, config: str = "inference.json"):
    """Our own bundle's config (export only: a bundle of this centre, never a received one)."""
    from monai.bundle import ConfigParser

    path = bundle_dir / "configs" / config
    if not path.is_file():
        raise MediganPackageError(f"{path}: not found; a generator bundle with configs/{config} is expected")
    parser = ConfigParser()
    parser.read_config(str(path))
    parser["bundle_root"] = str(bundle_dir.absolute())
    return parser


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
        (out_dir / "configs" / "logging.conf").write_text(_LOGGING_CONF)
        (out_dir / "docs" / "README.md").write_text(_model_card(imp, name, origin))
        (out_dir / "LICENSE").write_text(_licence_text(imp))
    except BaseException:
        if created:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    return out_dir


# --------------------------------------------------------------------------------------------------
# fetching a package through medigan (online only, on request)


def _network_available(host: str = "zenodo.org", port: int = 443, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


_FETCH_SCRIPT = """
import json, sys
from pathlib import Path
from medigan.config_manager import ConfigManager
from medigan.utils import Utils
manager = ConfigManager()
model_id = manager.match_model_id(sys.argv[1])
execution = manager.get_config_by_id(model_id, "execution")
target = Path(sys.argv[2]) / (execution["package_name"] + ".zip")
Utils.download_file(download_link=execution["package_link"], path_as_string=str(target))
print(json.dumps({"model_id": model_id, "path": str(target)}))
"""


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
            [sys.executable, "-c", _FETCH_SCRIPT, model.model_id, str(dest_dir.absolute())],
            cwd=work, capture_output=True, text=True, timeout=3600,
        )
    if result.returncode != 0:
        raise MediganPackageError(f"{model.model_id}: medigan could not download the package: {result.stderr[-1500:]}; {manual}")
    path = Path(json.loads(result.stdout.strip().splitlines()[-1])["path"])
    if not path.is_file():
        raise MediganPackageError(f"{model.model_id}: medigan reported {path} but it is missing; {manual}")
    return path


# --------------------------------------------------------------------------------------------------
# export


_PACKAGE_INIT = '''"""medigan model package exported by mammoshare from the generator bundle {name} {version}.

It makes SYNTHETIC 128x128 mammography lesion patches (uint8, one channel); never present them as
patient images. Only torch, numpy and PIL are needed; the weights are plain tensors loaded with
weights_only=True.

generate(model_file, num_samples, output_path, save_images, seed=None, device="cpu"):
    save_images False: returns a list of num_samples uint8 arrays of shape (128, 128);
    save_images True: writes num_samples PNG files into output_path (returns their paths).
    seed: latents from torch.Generator().manual_seed(seed) (the same latents as the bundle's
    inference.json with --seed); None: torch's global random state.
    medigan calls generate once per batch of 32 with the same arguments when it saves images,
    so a fixed seed repeats the same latents in every batch there.
"""

import os

import numpy as np
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

NAME = {name!r}
VERSION = {version!r}
LATENT_SIZE = {latent_size!r}
DECODING = {decoding!r}
#: the generator, layer by layer (a torch.nn.Sequential; state_dict keys 0.weight, 1.running_mean...)
LAYERS = {layers}
_CHUNK = 64


def build_generator():
    layers = []
    for spec in LAYERS:
        kind = spec[0]
        if kind == "ConvTranspose2d":
            c_in, c_out, kernel, stride, padding, bias = spec[1:]
            layers.append(torch.nn.ConvTranspose2d(c_in, c_out, kernel, stride, padding, bias=bias))
        elif kind == "BatchNorm2d":
            layers.append(torch.nn.BatchNorm2d(spec[1], eps=spec[2], momentum=spec[3]))
        elif kind == "ReLU":
            layers.append(torch.nn.ReLU(inplace=True))
        elif kind == "LeakyReLU":
            layers.append(torch.nn.LeakyReLU(spec[1], inplace=True))
        elif kind == "Tanh":
            layers.append(torch.nn.Tanh())
        else:
            raise ValueError("unknown layer " + repr(kind))
    return torch.nn.Sequential(*layers)


def _to_uint8(output):
    if DECODING == "tanh":
        images = ((output + 1.0) / 2.0).clamp(0.0, 1.0)
    else:
        images = output.clamp(0.0, 1.0)
    return (images[:, 0].float().cpu() * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()


def generate(model_file, num_samples, output_path, save_images, seed=None, device="cpu", **kwargs):
    num_samples = int(num_samples)
    if num_samples < 0:
        raise ValueError("num_samples must be >= 0, got " + str(num_samples))
    images = []
    if num_samples > 0:
        network = build_generator()
        network.load_state_dict(torch.load(model_file, map_location="cpu", weights_only=True))
        network = network.to(device).eval()
        generator = None if seed is None else torch.Generator().manual_seed(int(seed))
        latents = torch.randn(num_samples, LATENT_SIZE, 1, 1, generator=generator)
        with torch.no_grad():
            for chunk in latents.split(_CHUNK):
                images.extend(np.ascontiguousarray(a) for a in _to_uint8(network(chunk.to(device))))
    if not save_images:
        return images
    os.makedirs(output_path, exist_ok=True)
    paths = []
    for index, array in enumerate(images):
        info = PngInfo()
        info.add_text("Description", "SYNTHETIC lesion patch generated by " + NAME + " " + VERSION + "; not a patient image")
        path = os.path.join(output_path, "synthetic_%05d.png" % index)
        Image.fromarray(array).save(path, format="PNG", pnginfo=info)
        paths.append(path)
    return paths
'''


def _layer_specs(network: torch.nn.Module, where: str) -> list[list]:
    specs: list[list] = []
    if not isinstance(network, torch.nn.Sequential):
        raise MediganPackageError(f"{where}: the bundle's network_def is not a plain torch Sequential generator")
    for module in network:
        if isinstance(module, torch.nn.ConvTranspose2d):
            if module.groups != 1 or module.dilation != (1, 1) or module.output_padding != (0, 0):
                raise MediganPackageError(f"{where}: unsupported transposed convolution {module}")
            specs.append(["ConvTranspose2d", module.in_channels, module.out_channels, list(module.kernel_size),
                          list(module.stride), list(module.padding), module.bias is not None])
        elif isinstance(module, torch.nn.BatchNorm2d):
            specs.append(["BatchNorm2d", module.num_features, module.eps, module.momentum])
        elif isinstance(module, torch.nn.LeakyReLU):
            specs.append(["LeakyReLU", module.negative_slope])
        elif isinstance(module, torch.nn.ReLU):
            specs.append(["ReLU"])
        elif isinstance(module, torch.nn.Tanh):
            specs.append(["Tanh"])
        else:
            raise MediganPackageError(f"{where}: layer {type(module).__name__} cannot be exported to a medigan package")
    return specs


def _default_model_id(name: str, version: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", f"mammoshare_{name}_v{version}").strip("_")


def _medigan_entry(model_id: str, model_name: str, package_link: Path, meta: dict, latent_size: int, decoding: str,
                   privacy_preservation: str | None = None) -> dict:
    origin = meta.get("origin") or {}
    name, version = meta.get("name", model_id), meta.get("version", "")
    gan_type = "WGAN-GP" if "wgan" in name.lower() else "DCGAN"
    today = datetime.date.today()
    return {
        "execution": {
            "package_name": model_id,
            "package_link": str(package_link),
            "model_name": model_name,
            "extension": ".pt",
            "image_size": [_IMAGE_SIZE, _IMAGE_SIZE],
            "dependencies": ["numpy", "torch", "Pillow"],
            "generate_method": {
                "name": "generate",
                "args": {
                    "base": ["model_file", "num_samples", "output_path", "save_images"],
                    "custom": {"seed": None, "device": "cpu"},
                },
                "input_latent_vector_size": latent_size,
            },
        },
        "selection": {
            "performance": {},
            "use_cases": ["classification"],
            "organ": ["breast", "breasts"],
            "modality": ["MMG", "Mammography", "Mammogram"],
            "vendors": [],
            "centres": [],
            "function": ["noise to image", "image generation", "unconditional generation", "data augmentation"],
            "condition": [],
            "dataset": [meta.get("data_source", "unknown")],
            "augmentations": [],
            "generates": ["mass", "masses", "mass ROI", "lesion patch"],
            "height": _IMAGE_SIZE,
            "width": _IMAGE_SIZE,
            "depth": None,
            "type": gan_type,
            "license": origin.get("licence", "see the package's LICENSE"),
            "dataset_type": "private",
            "privacy_preservation": privacy_preservation,
            "tags": ["Mammography", "128x128", "mammoshare", "synthetic lesion patches"],
            "year": str(today.year),
        },
        "description": {
            "title": f"{name} {version}: mammoshare generator bundle exported for medigan",
            "provided_date": today.isoformat(),
            "trained_date": None,
            "provided_after_epoch": None,
            "version": version,
            "publication": None,
            "doi": [],
            "inputs": [
                "seed: default=None, help=seeds the latents (torch.Generator().manual_seed(seed)); None uses torch's global random state",
                "device: default=cpu, help=where the generator runs",
            ],
            "comment": (
                f"{meta.get('description', '')} Exported by mammoshare {__version__}; output decoding {decoding}. "
                f"SYNTHETIC images, never to be presented as patient images."
            ).strip(),
        },
    }


def _privacy_preservation(audit, weights_file: Path) -> str:
    """medigan's ``privacy_preservation`` text of an audit of ``weights_file`` (refused for an
    audit of other weights)."""
    from mammoshare.audit import AuditError, load_audit, privacy_preservation_text

    try:
        audit = audit if isinstance(audit, dict) else load_audit(audit)
        digest = hashlib.sha256(weights_file.read_bytes()).hexdigest()
        audited = {w.get("sha256") for w in audit.get("generator", {}).get("weights", []) if isinstance(w, dict)}
        if digest not in audited:
            raise MediganPackageError(f"{audit.get('_path', 'the audit')}: an audit of other generator weights than {weights_file} "
                                      f"({digest[:12]}); audit these weights (mammoshare audit) or pass their own audit")
        return privacy_preservation_text(audit)
    except AuditError as e:
        raise MediganPackageError(str(e)) from None


def export_medigan_package(
    bundle_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    model_id: str | None = None,
    *,
    checkpoint: str | os.PathLike | None = None,
    audit: dict | str | os.PathLike | None = None,
) -> Path:
    """Write a generator bundle as a medigan model package; returns the package folder.

    ``out_dir`` receives::

        <model_id>/            the package: __init__.py (generate(), needs torch, numpy, PIL only),
                               generator.pt (plain tensors), README.md (the model card), LICENSE,
                               metadata.json (the bundle's)
        <model_id>.zip         the same folder zipped (medigan's package_link points here)
        global.json            {model_id: {"execution": ..., "selection": ..., "description": ...}};
                               an existing global.json there gets the entry added (one file for
                               several exported packages)

    medigan 1.0.0 reads ``config/global.json`` of its working directory (downloading it only when
    absent): put the entry there (or merge it into yours) and call
    ``Generators().generate(model_id=..., num_samples=N, save_images=False, install_dependencies=False)``.
    ``package_link`` is the zip's absolute path: medigan copies a local path (anything without a URL
    scheme) into ``models/<model_id>/``, unzips it and imports ``models.<model_id>.<model_id>``; no
    network is used.

    Args:
        bundle_dir: a generator bundle (``configs/inference.json`` with a ``network_def``,
            ``configs/metadata.json``, weights in ``models/model.pt``).
        out_dir: where to write; existing outputs are refused.
        model_id: the medigan model id (letters, digits, ``_``, ``-``; no dots: medigan imports it
            as a module name). Default ``mammoshare_<name>_v<version>``.
        checkpoint: another weights file of the bundle (a snapshot, a published medigan file)
            instead of ``models/model.pt``.
        audit: the generator's finished audit (:func:`mammoshare.audit.load_audit` dict or its
            folder), of these very weights: fills medigan's ``privacy_preservation`` field with
            :func:`mammoshare.audit.privacy_preservation_text`; without it the field stays empty.
    """
    bundle_dir, out_dir = Path(bundle_dir), Path(out_dir)
    meta_path = bundle_dir / "configs" / "metadata.json"
    if not meta_path.is_file():
        raise MediganPackageError(f"{meta_path}: not found; a generator bundle is expected")
    meta = json.loads(meta_path.read_text())
    name, version = str(meta.get("name", bundle_dir.name)), str(meta.get("version", "0.0.0"))
    model_id = model_id or _default_model_id(name, version)
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]*", model_id):
        raise MediganPackageError(f"medigan model id {model_id!r}: letters, digits, '_' and '-' only (medigan imports it as a module)")
    parser = _bundle_config(bundle_dir)
    where = str(bundle_dir / "configs" / "inference.json")
    try:
        network = parser.get_parsed_content("network_def")
    except Exception as e:
        raise MediganPackageError(f"{where}: cannot build its network_def ({e})") from e
    weights_file = Path(checkpoint) if checkpoint is not None else bundle_dir / "models" / "model.pt"
    if checkpoint is None and not weights_file.is_file():
        weights_file = weights_file.with_suffix(".safetensors")
    if not weights_file.is_file():
        raise MediganPackageError(f"{weights_file}: no generator weights to export (train or import the bundle first, or pass --checkpoint)")
    privacy = _privacy_preservation(audit, weights_file) if audit is not None else None
    weights = load_generator_weights(weights_file)
    load_into(network, weights)
    config = parser.get()
    decoding = (config.get("decoding") if isinstance(config, dict) else None) or weights.decoding
    if decoding not in DECODINGS:
        raise MediganPackageError(f"{where}: unknown decoding {decoding!r}")
    layers = _layer_specs(network, where)
    latent_size = int(getattr(network, "latent_size", layers[0][1]))
    network.eval()
    with torch.no_grad():
        shape = tuple(network(torch.zeros(1, latent_size, 1, 1)).shape)
    if shape != (1, 1, _IMAGE_SIZE, _IMAGE_SIZE):
        raise MediganPackageError(f"{where}: the generator makes {shape[1:]} images; (1, 128, 128) expected")

    package_dir, zip_path, config_path = out_dir / model_id, out_dir / f"{model_id}.zip", out_dir / "global.json"
    existing = [str(p) for p in (package_dir, zip_path) if p.exists()]
    if existing:
        raise MediganPackageError(f"{', '.join(existing)}: exist(s); export into another folder or under another --model-id")
    entries = {}
    if config_path.exists():
        try:
            entries = json.loads(config_path.read_text())
        except ValueError as e:
            raise MediganPackageError(f"{config_path}: not a medigan global.json ({e})") from e
        if not isinstance(entries, dict) or model_id in entries:
            raise MediganPackageError(f"{config_path}: already holds {model_id!r} (or is not a medigan config); export into another folder")
    model_name = "generator"
    try:
        package_dir.mkdir(parents=True)
        torch.save({k: v.detach().clone().contiguous() for k, v in network.state_dict().items()}, package_dir / f"{model_name}.pt")
        (package_dir / "__init__.py").write_text(
            _PACKAGE_INIT.format(
                name=name, version=version, latent_size=latent_size, decoding=decoding,
                layers="[\n" + "".join(f"    {spec!r},\n" for spec in layers) + "]",
            )
        )
        for src, dst in ((bundle_dir / "docs" / "README.md", "README.md"), (bundle_dir / "LICENSE", "LICENSE"), (meta_path, "metadata.json")):
            if src.is_file():
                shutil.copyfile(src, package_dir / dst)
        with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(package_dir.rglob("*")):
                if path.is_file():
                    archive.write(path, f"{model_id}/{path.relative_to(package_dir).as_posix()}")
        entries[model_id] = _medigan_entry(model_id, model_name, zip_path.absolute(), meta, latent_size, decoding, privacy)
        tmp = config_path.with_name(config_path.name + ".part")
        tmp.write_text(json.dumps(entries, indent=4) + "\n")
        os.replace(tmp, config_path)
    except BaseException:
        shutil.rmtree(package_dir, ignore_errors=True)
        zip_path.unlink(missing_ok=True)
        raise
    return package_dir


# --------------------------------------------------------------------------------------------------
# command line


def _cmd_import(args: argparse.Namespace) -> int:
    try:
        if args.package is None:
            if args.model_id is None:
                raise MediganPackageError("give the package FILE (zip, folder or weights file), or --model-id ID to fetch it with medigan")
            with tempfile.TemporaryDirectory() as tmp:
                package = fetch_medigan_package(args.model_id, tmp)
                out = import_medigan_package(package, args.out, model_id=args.model_id, name=args.name, overwrite=args.force)
        else:
            out = import_medigan_package(args.package, args.out, model_id=args.model_id, name=args.name, overwrite=args.force)
    except (MediganPackageError, WeightsError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    meta = json.loads((out / "configs" / "metadata.json").read_text())
    origin = meta.get("origin", {})
    print(f"{origin.get('medigan_model_id')} -> {out / 'models' / 'model.safetensors'} (bundle {meta.get('name')} {meta.get('version')})")
    print(f"generate: python -m monai.bundle run --config_file {out / 'configs' / 'inference.json'} --num_samples 1200 --output_dir synthetic/{meta.get('name')}")
    return 0


def add_medigan_import_parser(subparsers) -> argparse.ArgumentParser:
    """``mammoshare medigan-import FILE --out BUNDLE_DIR [--model-id ID] [--name NAME] [--force]``."""
    p = subparsers.add_parser(
        "medigan-import",
        help="turn a medigan model package (00002, 00005, 00006) into a generator bundle",
        description=(
            "Convert a medigan model package (zip, folder, or its weights file alone) into a mammoshare generator "
            "bundle, or install its weights into an existing bundle of the same architecture (e.g. "
            "bundles/dcgan_optimam). The package's code is never executed. Without FILE, --model-id fetches the "
            f"package through medigan when the network is reachable (never when {OFFLINE_ENV}=1)."
        ),
    )
    p.add_argument("package", nargs="?", type=Path, metavar="FILE",
                   help="MALIGN_DCGAN.zip, 00005_DCGAN_MMG_MASS_ROI.zip, a package folder, malign_mass_gen, 500.pt, 10000.pt")
    p.add_argument("--out", required=True, type=Path, metavar="BUNDLE_DIR", help="a new or empty folder, or an existing bundle")
    p.add_argument("--model-id", "--model_id", dest="model_id", metavar="ID",
                   help="medigan model id (00002_DCGAN_MMG_MASS_ROI, 00005..., 00006... or 2/5/6); default: detected")
    p.add_argument("--name", help="name of a new bundle (default per model, e.g. dcgan_optimam)")
    p.add_argument("--force", action="store_true", help="replace the weights of an existing bundle")
    p.set_defaults(func=_cmd_import)
    return p


def _cmd_export(args: argparse.Namespace) -> int:
    try:
        package = export_medigan_package(args.bundle, args.out, args.model_id, checkpoint=args.checkpoint, audit=args.audit)
    except (MediganPackageError, WeightsError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"medigan package: {package} (zip {package.with_suffix('.zip')})")
    if args.audit is None:
        print("privacy_preservation: left empty (no --audit DIR given; medigan users see no privacy information)")
    else:
        print(f"privacy_preservation: filled from the audit {args.audit}")
    print(f"global.json entry: {package.parent / 'global.json'}; merge it into config/global.json of medigan's working directory")
    return 0


def add_medigan_export_parser(subparsers) -> argparse.ArgumentParser:
    """``mammoshare medigan-export BUNDLE_DIR --out DIR [--model-id ID] [--checkpoint FILE] [--audit DIR]``."""
    p = subparsers.add_parser(
        "medigan-export",
        help="write a generator bundle as a medigan model package (+ its global.json entry)",
        description=(
            "Write a generator bundle as a medigan model package (folder and zip: __init__.py with generate(), "
            "needing torch, numpy and PIL only, and the weights) and a global.json entry whose package_link is the "
            "local zip. medigan 1.0.0 runs it offline from a working directory whose config/global.json holds the entry."
        ),
    )
    p.add_argument("bundle", type=Path, metavar="BUNDLE_DIR")
    p.add_argument("--out", required=True, type=Path, metavar="DIR")
    p.add_argument("--model-id", "--model_id", dest="model_id", metavar="ID", help="default mammoshare_<name>_v<version>")
    p.add_argument("--checkpoint", type=Path, help="weights to export instead of the bundle's models/model.pt")
    p.add_argument("--audit", type=Path, metavar="DIR",
                   help="the finished audit of these weights (mammoshare audit): fills medigan's privacy_preservation field")
    p.set_defaults(func=_cmd_export)
    return p

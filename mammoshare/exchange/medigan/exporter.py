"""``mammoshare medigan-export``: a generator bundle of this centre -> a medigan model package that
medigan 1.0.0 itself runs: the package's ``__init__.py`` is the template module
:mod:`mammoshare.exchange.medigan.templates.package_init` with the generator's values written in,
its weights plain tensors (``generator.pt``), and a ``global.json`` entry.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import zipfile
from pathlib import Path

import torch

from mammoshare import __version__
from mammoshare.gan.weights import DECODINGS, WeightsError, load_generator_weights, load_into, recognise_network
from mammoshare.hashing import sha256_file

from .models import IMAGE_SIZE, MediganPackageError
from .templates import DIFFUSION_PACKAGE_INIT, PACKAGE_INIT, render_package_init

__all__ = ["export_medigan_package"]


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


def _diffusion_spec(config: dict, weights, where: str):
    """The ``diffusion_unet`` description of a diffusion bundle's own weights: its inference.json's
    UNet and sampling settings, the noise schedule its training run recorded, the tensor shapes."""
    from mammoshare.datalist import TRAINING_COUNTS_FILE
    from mammoshare.exchange.layout import PackError
    from mammoshare.exchange.policy import diffusion_bundle_parameters
    from mammoshare.gan.weights import FAMILIES, GeneratorSpec

    counts_path = Path(weights.path).parent / TRAINING_COUNTS_FILE
    try:
        counts = json.loads(counts_path.read_text()) if counts_path.is_file() else {}
        trained = counts.get("diffusion") if counts.get("weights_sha256") == weights.sha256 else None
        parameters = diffusion_bundle_parameters(config, trained if isinstance(trained, dict) else None, where)
    except (PackError, ValueError, AttributeError) as e:
        raise MediganPackageError(f"{where}: {e}") from None
    shapes = {k: tuple(int(n) for n in v.shape) for k, v in weights.state_dict.items()}
    family = FAMILIES["diffusion_unet"]
    return GeneratorSpec(family.name, family.recognise(shapes, {"parameters": parameters}, str(weights.path)), "tanh")


def _default_model_id(name: str, version: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", f"mammoshare_{name}_v{version}").strip("_")


def _medigan_entry(model_id: str, model_name: str, package_link: Path, meta: dict, latent_size: int | None, decoding: str,
                   privacy_preservation: str | None = None, spec=None) -> dict:
    origin = meta.get("origin") or {}
    name, version = meta.get("name", model_id), meta.get("version", "")
    diffusion = spec is not None and spec.family == "diffusion_unet"
    gan_type = "DDPM" if diffusion else "WGAN-GP" if "wgan" in name.lower() else "DCGAN"
    today = datetime.date.today()
    entry = {
        "execution": {
            "package_name": model_id,
            "package_link": str(package_link),
            "model_name": model_name,
            "extension": ".pt",
            "image_size": [IMAGE_SIZE, IMAGE_SIZE],
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
            "height": IMAGE_SIZE,
            "width": IMAGE_SIZE,
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
    if diffusion:  # noise of the image's shape, the lesion type and the sampling steps as inputs
        p = spec.parameters
        entry["execution"]["dependencies"].append("monai")
        entry["execution"]["generate_method"]["args"]["custom"].update(
            {"lesion_type": None, "num_inference_steps": p["num_inference_steps"], "batch_size": 64})
        entry["execution"]["generate_method"]["input_latent_vector_size"] = None
        entry["selection"]["function"] = ["noise to image", "image generation", "data augmentation"] + (
            ["conditional generation"] if p["class_names"] else ["unconditional generation"])
        entry["selection"]["condition"] = list(p["class_names"] or [])
        entry["selection"]["tags"].append("diffusion")
        entry["description"]["inputs"] = [
            "seed: default=None, help=seeds the initial noise (torch.Generator().manual_seed(seed)); None uses torch's global random state",
            "device: default=cpu, help=where the UNet runs",
            f"lesion_type: default=mass, help=one of {p['class_names']}" if p["class_names"] else "lesion_type: ignored (no class embedding)",
            f"num_inference_steps: default={p['num_inference_steps']}, help={p['sampler']} sampling steps (1 to {p['num_train_timesteps']})",
            "batch_size: default=64, help=samples per UNet call",
        ]
    return entry


def _privacy_preservation(audit, weights_file: Path) -> str:
    """medigan's ``privacy_preservation`` text of an audit of ``weights_file`` (refused for an
    audit of other weights)."""
    from mammoshare.audit import AuditError, load_audit, privacy_preservation_text

    try:
        audit = audit if isinstance(audit, dict) else load_audit(audit)
        digest = sha256_file(weights_file)
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
    try:
        if weights.family == "diffusion_unet":
            spec = _diffusion_spec(config, weights, where)
        else:
            spec = recognise_network(network, where, decoding)
    except WeightsError as e:
        raise MediganPackageError(f"{e}; it cannot be exported to a medigan package") from None
    network.eval()
    shape = tuple(spec.family_impl.trial_output(network, spec.parameters).shape)
    if shape != (1, 1, IMAGE_SIZE, IMAGE_SIZE):
        raise MediganPackageError(f"{where}: the generator makes {shape[1:]} images; (1, 128, 128) expected")
    if spec.family == "diffusion_unet":
        p = spec.parameters
        template = DIFFUSION_PACKAGE_INIT
        values = {"NAME": name, "VERSION": version, "DECODING": decoding, "IMAGE_SIZE": p["image_size"],
                  "NETWORK": spec.family_impl.unet_arguments(p), "CLASS_NAMES": p["class_names"],
                  "TRAINING_SCHEDULER": p["training_scheduler"], "NUM_TRAIN_TIMESTEPS": p["num_train_timesteps"],
                  "SAMPLER": p["sampler"], "NUM_INFERENCE_STEPS": p["num_inference_steps"]}
        latent_size = None
    else:
        template = PACKAGE_INIT
        latent_size = spec.latent_shape[0]
        values = {"NAME": name, "VERSION": version, "LATENT_SIZE": latent_size, "DECODING": decoding,
                  "LAYERS": spec.family_impl.layers(spec.parameters)}

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
        (package_dir / "__init__.py").write_text(render_package_init(values, template))
        for src, dst in ((bundle_dir / "docs" / "README.md", "README.md"), (bundle_dir / "LICENSE", "LICENSE"), (meta_path, "metadata.json")):
            if src.is_file():
                shutil.copyfile(src, package_dir / dst)
        with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(package_dir.rglob("*")):
                if path.is_file():
                    archive.write(path, f"{model_id}/{path.relative_to(package_dir).as_posix()}")
        entries[model_id] = _medigan_entry(model_id, model_name, zip_path.absolute(), meta, latent_size, decoding, privacy, spec)
        tmp = config_path.with_name(config_path.name + ".part")
        tmp.write_text(json.dumps(entries, indent=4) + "\n")
        os.replace(tmp, config_path)
    except BaseException:
        shutil.rmtree(package_dir, ignore_errors=True)
        zip_path.unlink(missing_ok=True)
        raise
    return package_dir

"""The study's inputs: centre A and BCDR dataset roots (the phantom for the demo), BCDR generator
files, the OPTIMAM generator (a demo OPTIMAM-layout file when the demo has none), and why a source
is missing."""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..hashing import sha256_file
from .presets import TASKS, Preset
from .stages import captured_logs, describe_error, run_bundle

__all__ = [
    "StudyInputs",
    "parse_bcdr_generators",
    "resolve_inputs",
    "build_demo_optimam_generator",
    "OPTIMAM_WEIGHTS_NAME",
    "OPTIMAM_BUNDLE",
]

logger = logging.getLogger(__name__)

OPTIMAM_BUNDLE = "dcgan_optimam"
#: the weights file name of medigan's 00002 package (no extension)
OPTIMAM_WEIGHTS_NAME = "malign_mass_gen"
#: the 00002 generator: latent size and width (ConvT 200->450->360->180->90->45->1)
OPTIMAM_LATENT = 200
OPTIMAM_NGF = 45
#: the width of the demo's tiny OPTIMAM-layout generator, when the bundle lets ngf be overridden
DEMO_OPTIMAM_NGF = 8


@dataclass
class StudyInputs:
    centre_a_root: Path | None
    centre_a_option: str
    bcdr_root: Path | None
    bcdr_option: str
    generator_files: dict[str, dict[str, Path]] = field(default_factory=dict)  # task -> {dcgan, wgangp}
    optimam_file: Path | None = None
    optimam_option: str = "--optimam-generator"
    optimam_network: dict = field(default_factory=dict)  # overrides of the OPTIMAM bundle (demo: tiny ngf)
    optimam_reason: str = "no OPTIMAM generator given (--optimam-generator FILE, medigan 00002 layout)"
    notes: list[str] = field(default_factory=list)


def parse_bcdr_generators(items: list[str] | None) -> dict[str, dict[str, Path]]:
    """``["mass=DCGAN.pt,WGAN.pt", "all=DCGAN.pt,WGAN.pt"]`` -> ``{task: {"dcgan": path, "wgangp": path}}``."""
    result: dict[str, dict[str, Path]] = {}
    for item in items or []:
        task, sep, files = item.partition("=")
        task = task.strip()
        if not sep or task not in TASKS:
            raise ValueError(
                f"--bcdr-generators {item!r}: expected TASK=DCGAN_FILE,WGANGP_FILE with TASK one of {list(TASKS)}, "
                "e.g. mass=dcgan_mass.pt,wgangp_mass.pt"
            )
        parts = [p.strip() for p in files.split(",")]
        if len(parts) != 2 or not all(parts):
            raise ValueError(
                f"--bcdr-generators {item!r}: two files are expected after '{task}=', the DCGAN's then the WGAN-GP's, "
                "separated by a comma"
            )
        if task in result:
            raise ValueError(f"--bcdr-generators: the task {task!r} is given twice")
        result[task] = {"dcgan": Path(parts[0]).absolute(), "wgangp": Path(parts[1]).absolute()}
    return result


def _write_phantom(out: Path, dataset: str, seed: int) -> Path:
    """The phantom ``dataset`` under ``out/dataset``, written once (into a temporary folder first, so
    that an interrupted write is never taken for a complete one)."""
    from ..datalist import PHANTOM_MARKER
    from ..phantom import write_phantoms

    target = out / dataset
    if (target / PHANTOM_MARKER).is_file():
        return target
    tmp = out / f".{dataset}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    if target.exists():
        shutil.rmtree(target)
    write_phantoms(tmp, seed=seed, datasets=[dataset])
    os.replace(tmp / dataset, target)
    shutil.rmtree(tmp)
    return target


def _optimam_layers(latent: int, ngf: int):
    import torch.nn as nn

    widths = [ngf * 10, ngf * 8, ngf * 4, ngf * 2, ngf]
    layers: list = []
    previous = latent
    for i, width in enumerate(widths):
        layers += [
            nn.ConvTranspose2d(previous, width, 4, 1 if i == 0 else 2, 0 if i == 0 else 1, bias=False),
            nn.BatchNorm2d(width),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        previous = width
    layers += [nn.ConvTranspose2d(previous, 1, 4, 2, 1, bias=False), nn.Tanh()]
    return nn.Sequential(*layers)


def build_demo_optimam_generator(path: Path, ngf: int = OPTIMAM_NGF, seed: int = 0) -> Path:
    """A randomly initialised generator in the layout of medigan's 00002 weights file: a plain
    state_dict with ``model.N.*`` keys of ConvT 200 -> 10 ngf -> 8 ngf -> 4 ngf -> 2 ngf -> ngf -> 1
    (BatchNorm + LeakyReLU(0.2), Tanh, bias-free). It generates noise: for the demo only."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    network = _optimam_layers(OPTIMAM_LATENT, ngf)
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, torch.nn.ConvTranspose2d):
                module.weight.normal_(0.0, 0.02, generator=generator)
            elif isinstance(module, torch.nn.BatchNorm2d):
                module.weight.normal_(1.0, 0.02, generator=generator)
                module.bias.zero_()
    state = {f"model.{k}": v for k, v in network.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def _check_optimam_bundle(bundles_dir: Path, folder: Path, device: str | None) -> tuple[Path | None, dict, str | None]:
    """The demo's OPTIMAM generator: built and sampled once through the dcgan_optimam bundle.

    Returns ``(file, network overrides, None)`` when the bundle loads it, else ``(None, {}, reason)``.
    The outcome is cached in ``folder/check.json`` (keyed by the file's and the config's hashes)."""
    bundle = bundles_dir / OPTIMAM_BUNDLE
    config = bundle / "configs" / "inference.json"
    if not config.is_file():
        return None, {}, (
            f"demo: the OPTIMAM generator bundle bundles/{OPTIMAM_BUNDLE} (configs/inference.json) is not available, "
            "so no demo OPTIMAM-layout generator was built; give --optimam-generator FILE with a real one"
        )
    config_sha = sha256_file(config)
    folder.mkdir(parents=True, exist_ok=True)
    cache = folder / "check.json"
    try:
        keys = set(json.loads(config.read_text()))
    except (OSError, json.JSONDecodeError) as e:
        return None, {}, f"demo: bundles/{OPTIMAM_BUNDLE}/configs/inference.json cannot be read: {e}"
    attempts = []
    if "ngf" in keys:
        attempts.append((DEMO_OPTIMAM_NGF, {"ngf": DEMO_OPTIMAM_NGF}))
    attempts.append((OPTIMAM_NGF, {}))
    errors = []
    for ngf, network in attempts:
        path = folder / f"ngf{ngf}" / OPTIMAM_WEIGHTS_NAME
        if not path.is_file():
            build_demo_optimam_generator(path, ngf=ngf)
        key = {"file_sha256": sha256_file(path), "config_sha256": config_sha, "network": network}
        cached = json.loads(cache.read_text()) if cache.is_file() else {}
        result = cached.get(str(ngf))
        if not result or result.get("key") != key:
            out = folder / f"ngf{ngf}" / "check"
            if out.exists():
                shutil.rmtree(out)
            overrides = {"checkpoint": str(path), "num_samples": 2, "output_dir": str(out), "seed": 0, **network}
            if device:
                overrides["device"] = device
            with captured_logs(folder / f"ngf{ngf}" / "check_log.txt"):
                try:
                    run_bundle(config, overrides, required=("checkpoint", "num_samples", "output_dir", *network))
                    result = {"key": key, "ok": True, "error": None}
                except Exception as e:  # noqa: BLE001 - reported as the reason
                    result = {"key": key, "ok": False, "error": describe_error(e)}
            cached[str(ngf)] = result
            cache.write_text(json.dumps(cached, indent=1) + "\n")
        if result["ok"]:
            return path, network, None
        errors.append(f"ngf {ngf}: {result['error']}")
    return None, {}, (
        f"demo: the bundle bundles/{OPTIMAM_BUNDLE} could not load the demo OPTIMAM-layout generator ("
        + "; ".join(errors) + ")"
    )


def resolve_inputs(
    preset: Preset,
    study_dir: Path,
    bundles_dir: Path,
    centre_a: Path | None,
    centre_a_format: str,
    bcdr: Path | None,
    bcdr_generators: dict[str, dict[str, Path]],
    optimam_generator: Path | None,
    device: str | None,
) -> StudyInputs:
    """Where every centre's data comes from; writes the demo's phantom data and OPTIMAM file."""
    inputs_dir = study_dir / "inputs"
    notes: list[str] = []
    if centre_a is not None:
        centre_a_root, centre_a_option = Path(centre_a).absolute(), "--centre-a"
    elif preset.phantom_default:
        centre_a_root = _write_phantom(inputs_dir / "phantom", centre_a_format, 2021)
        centre_a_option = "the demo's phantom data"
        notes.append(f"Centre A: PHANTOM {centre_a_format} data written by the demo (no clinical meaning).")
    else:
        raise ValueError(
            f"the {preset.name} preset needs centre A's data: --centre-a DATASET_ROOT (--centre-a-format "
            "inbreast or cbis-ddsm); phantom data are used by --preset demo only"
        )
    if bcdr is not None:
        bcdr_root, bcdr_option = Path(bcdr).absolute(), "--bcdr"
    elif preset.phantom_default:
        bcdr_root = _write_phantom(inputs_dir / "phantom", "bcdr", 2021)
        bcdr_option = "the demo's phantom data"
        notes.append("Centre B: PHANTOM BCDR data written by the demo (no clinical meaning).")
    else:
        bcdr_root, bcdr_option = None, "--bcdr"
    result = StudyInputs(centre_a_root, centre_a_option, bcdr_root, bcdr_option, dict(bcdr_generators))
    if optimam_generator is not None:
        result.optimam_file = Path(optimam_generator).absolute()
    elif preset.demo_optimam:
        path, network, reason = _check_optimam_bundle(bundles_dir, inputs_dir / "optimam_demo", device)
        if path is not None:
            result.optimam_file, result.optimam_network = path, network
            result.optimam_option = "the demo's randomly initialised OPTIMAM-layout generator"
            width = network.get("ngf", OPTIMAM_NGF)
            notes.append(
                f"Centre C: no OPTIMAM generator given; the demo built a randomly initialised generator in the layout "
                f"of medigan's 00002 weights (nz {OPTIMAM_LATENT}, ngf {width}) and bundles/{OPTIMAM_BUNDLE} loaded "
                "it: its patches are noise, the OPTIMAM rows only exercise the pipeline."
            )
        else:
            result.optimam_reason = reason
            notes.append(f"Centre C: OPTIMAM rows not run: {reason}.")
    return result

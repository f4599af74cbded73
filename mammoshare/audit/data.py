"""The audit's inputs: canonical patches of the real and synthetic datalists, and samples of a bundle.

Every set goes through the same canonical pre-processing (:func:`mammoshare.data.canonical_patch_transform`:
box crop, area resize to 128, [0, 1]), real and synthetic alike. Each mammogram is decoded once for
all its boxes (records are read grouped by image through a :class:`~transforms.DecodedImageCache`).
"""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..datalist import SUBSETS, DatalistError, load_datalist
from .errors import AuditError

__all__ = ["PatchSet", "LABEL_CHOICES", "load_real_set", "load_synthetic_set", "sample_bundle", "bundle_family",
           "DIFFUSION_NETWORK", "DIFFUSION_SETTINGS", "AuditInputError"]

logger = logging.getLogger(__name__)

LABEL_CHOICES = {"lesion": (1,), "healthy": (0,), "all": (0, 1)}


class AuditInputError(AuditError):
    """An input of the audit that cannot be used; names the file and the fix."""


@dataclass
class PatchSet:
    """Canonical patches ``(n, 128, 128)`` float32 in [0, 1] with their records."""

    name: str
    patches: np.ndarray
    records: list[dict]
    source: str
    skipped: list[dict] = field(default_factory=list)
    phantom: bool = False  # the datalist says its data are phantom (the figures say so)

    def __len__(self) -> int:
        return len(self.patches)

    @property
    def patient_ids(self) -> list[str]:
        return [str(r.get("patient_id")) for r in self.records]


def _load_patches(records: list[dict], name: str, source: str, skip_bad: bool, progress: bool) -> PatchSet:
    from tqdm import tqdm

    from transforms import DecodedImageCache

    from ..data import canonical_patch_transform

    loader = canonical_patch_transform(cache=DecodedImageCache())
    order = sorted(range(len(records)), key=lambda i: str(records[i]["image"]))  # one decode per mammogram
    patches = np.zeros((len(records), 128, 128), dtype=np.float32)
    ok = np.ones(len(records), dtype=bool)
    skipped = []
    for i in tqdm(order, desc=f"loading {name} patches", disable=not progress, leave=False):
        record = records[i]
        try:
            patch = loader({"image": record["image"], "box": record.get("box")})["image"]
            patches[i] = np.asarray(patch, dtype=np.float32)[0]
        except (ValueError, OSError, KeyError) as e:
            if not skip_bad:
                raise AuditInputError(
                    f"{source}: {name} record {i} ({record['image']}) cannot be read: {e}; fix it, or pass --skip-bad"
                ) from e
            ok[i] = False
            skipped.append({"image": str(record["image"]), "problem": str(e)})
            logger.warning("skipped %s: %s", record["image"], e)
    kept = [r for r, good in zip(records, ok) if good]
    if len(kept) < 2:
        raise AuditInputError(f"{source}: fewer than 2 usable {name} patches")
    return PatchSet(name, patches[ok], kept, source, skipped)


def load_real_set(datalist: str | os.PathLike, name: str, subsets: tuple[str, ...], labels: str = "lesion",
                  skip_bad: bool = False, progress: bool = True) -> PatchSet:
    """The real patches of ``subsets`` with the given labels (``lesion``, ``healthy``, ``all``)."""
    unknown = [s for s in subsets if s not in SUBSETS]
    if unknown:
        raise AuditInputError(f"unknown subset(s) {unknown}; use {list(SUBSETS)}")
    if labels not in LABEL_CHOICES:
        raise AuditInputError(f"unknown labels {labels!r}; use one of {list(LABEL_CHOICES)}")
    data = load_datalist(datalist)
    records = [r for s in subsets for r in data.get(s, []) if r["label"] in LABEL_CHOICES[labels]]
    if len(records) < 2:
        raise AuditInputError(
            f"{datalist}: {len(records)} {labels} patch(es) in {list(subsets)}; the {name} set needs at least 2 "
            f"(choose other subsets with --{name}-subsets, or --labels all)"
        )
    patch_set = _load_patches(records, name, str(datalist), skip_bad, progress)
    patch_set.phantom = bool(data.get("phantom"))
    return patch_set


def load_synthetic_set(datalist: str | os.PathLike, num_samples: int | None, seed: int, skip_bad: bool = False,
                       progress: bool = True) -> tuple[PatchSet, dict]:
    """All records of a synthetic datalist (every subset), or ``num_samples`` of them drawn with the
    seed; returns the set and the datalist's ``generator`` entry (empty when absent)."""
    data = load_datalist(datalist)
    records = [r for s in SUBSETS for r in data.get(s, [])]
    if num_samples is not None and num_samples < len(records):
        pick = np.sort(np.random.default_rng(seed).choice(len(records), num_samples, replace=False))
        records = [records[i] for i in pick]
    if len(records) < 2:
        raise AuditInputError(f"{datalist}: fewer than 2 synthetic patches to audit")
    generator = data.get("generator") if isinstance(data.get("generator"), dict) else {}
    patch_set = _load_patches(records, "synthetic", str(datalist), skip_bad, progress)
    patch_set.phantom = bool(data.get("phantom"))
    return patch_set, generator


def snapshot_groups(synthetic: PatchSet, generator: dict) -> "OrderedDict[str, np.ndarray]":
    """Indices of the samples of each weights file, when the set comes from several (a snapshot
    folder); empty otherwise. Files are named from the datalist's ``generator.weights``."""
    names = {w.get("sha256"): w.get("file") for w in generator.get("weights", []) if isinstance(w, dict)}
    keys = [r.get("weights_sha256") for r in synthetic.records]
    groups: OrderedDict[str, list[int]] = OrderedDict()
    for i, key in enumerate(keys):
        if key is None:
            return OrderedDict()
        groups.setdefault(names.get(key) or key[:12], []).append(i)
    if len(groups) < 2:
        return OrderedDict()
    return OrderedDict((k, np.asarray(v)) for k, v in groups.items())


#: the ``network_def`` target that makes a bundle a diffusion bundle (``ddpm_bcdr``)
DIFFUSION_NETWORK = "monai.networks.nets.DiffusionModelUNet"
#: the sampling settings a diffusion bundle's ``inference.json`` must give (read as the bundle evaluates them)
DIFFUSION_SETTINGS = ("task", "lesion_type", "sampler", "training_scheduler", "num_inference_steps", "num_train_timesteps")


def bundle_family(config: dict) -> str:
    """``"diffusion"`` when a bundle's ``inference.json`` (its raw dict) builds a
    :data:`DIFFUSION_NETWORK` (the full name, or the bare class name MONAI also resolves), else ``"gan"``."""
    network_def = config.get("network_def")
    target = str(network_def.get("_target_", "")) if isinstance(network_def, dict) else ""
    return "diffusion" if target in (DIFFUSION_NETWORK, DIFFUSION_NETWORK.rsplit(".", 1)[1]) else "gan"


def sample_bundle(bundle_dir: str | os.PathLike, num_samples: int, output_dir: str | os.PathLike, seed: int = 0,
                  checkpoint: str | os.PathLike | None = None, snapshot_dir: str | os.PathLike | None = None,
                  device: str = "cpu", batch_size: int = 64, progress: bool = True,
                  num_inference_steps: int | None = None) -> Path:
    """Sample a generator bundle with its own ``configs/inference.json`` network and the project's
    inference; returns the datalist.

    A GAN bundle is sampled by :func:`mammoshare.gan.inference.generate_synthetic_patches`; a
    diffusion bundle (its ``network_def`` is :data:`DIFFUSION_NETWORK`, e.g. ``ddpm_bcdr``) by
    :func:`mammoshare.diffusion.inference.generate_diffusion_patches`, with the sampling settings
    :data:`DIFFUSION_SETTINGS` of its ``inference.json`` (``num_inference_steps`` overrides the steps:
    few steps make a quick audit) and its EMA weights.

    The one place where the audit touches generator weights (``models/model.pt``, ``checkpoint`` or
    every snapshot of ``snapshot_dir``, GANs only).
    """
    from monai.bundle import ConfigParser

    bundle_dir = Path(bundle_dir)
    config_file = bundle_dir / "configs" / "inference.json"
    if not config_file.is_file():
        raise AuditInputError(f"{config_file}: not found; give a generator bundle folder (with configs/inference.json), or audit a finished set with --synthetic DATALIST")
    meta_file = bundle_dir / "configs" / "metadata.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    parser = ConfigParser()
    parser.read_config(str(config_file))
    parser["bundle_root"] = str(bundle_dir.absolute())
    family = bundle_family(parser.get())
    if family == "diffusion":
        return _sample_diffusion(parser, config_file, bundle_dir, meta, num_samples, output_dir, seed, checkpoint,
                                 snapshot_dir, device, batch_size, progress, num_inference_steps)
    if num_inference_steps is not None:
        raise AuditInputError(
            f"{config_file}: --num_inference_steps is for diffusion bundles (network_def {DIFFUSION_NETWORK}), and this "
            "bundle is a GAN, sampled in one step; leave the option out"
        )
    from ..gan.inference import generate_synthetic_patches

    try:
        network = parser.get_parsed_content("network_def")
    except Exception as e:
        raise AuditInputError(f"{config_file}: cannot build its network_def ({e})") from e
    config = parser.get()
    return generate_synthetic_patches(
        network=network.to(device),
        num_samples=num_samples,
        output_dir=output_dir,
        seed=seed,
        checkpoint=checkpoint,
        snapshot_dir=snapshot_dir,
        default_checkpoint=bundle_dir / "models" / "model.pt",
        generator_name=str(meta.get("name", bundle_dir.name)),
        generator_version=str(meta.get("version", "0.0.0")),
        task=str(config.get("task", "mass")),
        device=device,
        batch_size=batch_size,
        progress=progress,
        decoding=config.get("decoding"),
    )


def _sample_diffusion(parser, config_file: Path, bundle_dir: Path, meta: dict, num_samples: int, output_dir, seed: int,
                      checkpoint, snapshot_dir, device: str, batch_size: int, progress: bool,
                      num_inference_steps: int | None) -> Path:
    """:func:`sample_bundle` of a diffusion bundle: its settings as its ``inference.json`` evaluates
    them (``device`` and ``num_inference_steps`` set first), checked before anything is written."""
    from ..diffusion.conditioning import sampling_scheduler
    from ..diffusion.inference import generate_diffusion_patches
    from ..gan.weights import WeightsError

    if snapshot_dir is not None:
        raise AuditInputError(
            f"{config_file}: a diffusion bundle is audited on one weights file (its EMA model.pt), not on a snapshot "
            "folder; leave --snapshot_dir out and pass --checkpoint FILE for other weights than models/model.pt"
        )
    config = parser.get()
    missing = [k for k in DIFFUSION_SETTINGS if k not in config]
    if missing:
        raise AuditInputError(
            f"{config_file}: a diffusion bundle's inference.json must set {missing} (the sampling settings); add them "
            "as bundles/ddpm_bcdr/configs/inference.json does"
        )
    parser["device"] = str(device)
    if num_inference_steps is not None:
        if int(num_inference_steps) < 1:
            raise AuditInputError(f"{config_file}: --num_inference_steps must be at least 1, got {num_inference_steps}")
        parser["num_inference_steps"] = int(num_inference_steps)
    settings = {}
    for key in (*DIFFUSION_SETTINGS, "amp"):
        if key not in config:  # amp: the bundle's own rule, off when it has none
            settings[key] = False
            continue
        try:
            settings[key] = parser.get_parsed_content(key)
        except Exception as e:
            raise AuditInputError(f"{config_file}: cannot evaluate {key!r} ({e}); fix it there") from e
    try:
        sampling_scheduler(settings["sampler"], settings["training_scheduler"], int(settings["num_inference_steps"]),
                           int(settings["num_train_timesteps"]))
    except (TypeError, ValueError) as e:
        raise AuditInputError(
            f"{config_file}: its sampling settings (sampler {settings['sampler']!r}, training_scheduler "
            f"{settings['training_scheduler']!r}, num_inference_steps {settings['num_inference_steps']!r}, "
            f"num_train_timesteps {settings['num_train_timesteps']!r}) cannot sample: {e}; fix them there, or pass "
            "--num_inference_steps N to the audit"
        ) from e
    try:
        network = parser.get_parsed_content("network_def")
    except Exception as e:
        raise AuditInputError(f"{config_file}: cannot build its network_def ({e})") from e
    amp = settings.pop("amp")
    try:
        return generate_diffusion_patches(
            network=network.to(device),
            num_samples=num_samples,
            output_dir=output_dir,
            seed=seed,
            checkpoint=checkpoint,
            default_checkpoint=bundle_dir / "models" / "model.pt",
            generator_name=str(meta.get("name", bundle_dir.name)),
            generator_version=str(meta.get("version", "0.0.0")),
            task=str(settings["task"]),
            lesion_type=settings["lesion_type"],
            sampler=str(settings["sampler"]),
            training_scheduler=str(settings["training_scheduler"]),
            num_inference_steps=int(settings["num_inference_steps"]),
            num_train_timesteps=int(settings["num_train_timesteps"]),
            device=device,
            batch_size=batch_size,
            amp=bool(amp),
            progress=progress,
        )
    except FileNotFoundError:  # no weights: its message names the file and the training command
        raise
    except WeightsError as e:
        raise AuditInputError(f"{e}; the audit builds the UNet from {config_file}: set those options there to the ones training used") from e
    except ValueError as e:  # task / lesion_type checks, made before any file is written
        raise AuditInputError(f"{config_file}: {e}") from e


def check_disjoint(train: PatchSet, holdout: PatchSet) -> None:
    """Holdout patients must be unseen: no patient and no (image, box) in both sets."""
    shared = sorted(set(train.patient_ids) & set(holdout.patient_ids))
    if shared:
        raise AuditInputError(
            f"{holdout.source}: {len(shared)} holdout patient(s) are also in the training set ({', '.join(shared[:5])}"
            f"{' ...' if len(shared) > 5 else ''}); the holdout must be patients the generator never saw"
        )
    keys = {(str(r["image"]), json.dumps(r.get("box"))) for r in train.records}
    same = [r for r in holdout.records if (str(r["image"]), json.dumps(r.get("box"))) in keys]
    if same:
        raise DatalistError(f"{holdout.source}: {len(same)} holdout patch(es) are training patches too (e.g. {same[0]['image']})")

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

__all__ = ["PatchSet", "LABEL_CHOICES", "load_real_set", "load_synthetic_set", "sample_bundle", "AuditInputError"]

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


def sample_bundle(bundle_dir: str | os.PathLike, num_samples: int, output_dir: str | os.PathLike, seed: int = 0,
                  checkpoint: str | os.PathLike | None = None, snapshot_dir: str | os.PathLike | None = None,
                  device: str = "cpu", batch_size: int = 64, progress: bool = True) -> Path:
    """Sample a generator bundle with its own ``configs/inference.json`` network and the project's
    inference (:func:`mammoshare.gan.inference.generate_synthetic_patches`); returns the datalist.

    The one place where the audit touches generator weights (``models/model.pt``, ``checkpoint`` or
    every snapshot of ``snapshot_dir``).
    """
    from monai.bundle import ConfigParser

    from ..gan.inference import generate_synthetic_patches

    bundle_dir = Path(bundle_dir)
    config_file = bundle_dir / "configs" / "inference.json"
    if not config_file.is_file():
        raise AuditInputError(f"{config_file}: not found; give a generator bundle folder (with configs/inference.json), or audit a finished set with --synthetic DATALIST")
    meta_file = bundle_dir / "configs" / "metadata.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    parser = ConfigParser()
    parser.read_config(str(config_file))
    parser["bundle_root"] = str(bundle_dir.absolute())
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

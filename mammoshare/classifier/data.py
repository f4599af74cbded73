"""The classifier's data: centre A's datalist, shared synthetic lesions, real BCDR lesions, balance.

Training set (the study's recipe):

1. Centre A's training subset (INbreast by default; any datalist of ours, e.g. CBIS-DDSM), or a
   random ``train_fraction`` of its training patients (drawn with the seed).
2. Balanced: as many healthy patches as lesion patches (a seeded draw when there are more healthy
   ones; boxes of the datalist's healthy reserve, drawn from the same images when the datalist was
   built, when there are fewer).
3. Added lesions: ``synthetic_count`` synthetic patches (default 1200) in equal shares from the
   ``synthetic`` sources (finished synthetic datalists: generators are sampled before training),
   and ``real_lesion_count`` real lesion patches of another centre (``real_lesions``: a BCDR
   datalist; default 1148 for all lesions, 500 for masses).
4. As many extra healthy patches from centre A as lesions were added, to keep the classes balanced.

The log states the final counts per class and source.
"""

from __future__ import annotations

import logging
import os
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from transforms import record_image_type

from ..datalist import HEALTHY_RESERVE, SYNTHETIC_DATALIST, DatalistError, load_datalist, write_training_counts

__all__ = [
    "DEFAULT_SYNTHETIC_COUNT",
    "DEFAULT_REAL_LESION_COUNT",
    "equal_shares",
    "subset_records",
    "draw_patient_fraction",
    "balance_healthy",
    "synthetic_source_records",
    "real_lesion_records",
    "build_training_set",
    "count_table",
]

logger = logging.getLogger(__name__)

DEFAULT_SYNTHETIC_COUNT = 1200
DEFAULT_REAL_LESION_COUNT = {"all": 1148, "mass": 500}


def equal_shares(total: int, sources: int) -> list[int]:
    """``total`` split into ``sources`` equal shares; the first ``total % sources`` get one more."""
    if sources < 1:
        raise ValueError("at least one source is needed")
    base, extra = divmod(int(total), sources)
    return [base + (1 if i < extra else 0) for i in range(sources)]


def subset_records(datalist: dict, subset: str, source: str | os.PathLike = "datalist") -> list[dict]:
    """The records of one subset; an empty subset or one with a single class is an error."""
    records = list(datalist.get(subset, []))
    if not records:
        raise DatalistError(f"{source}: the {subset} subset is empty")
    labels = Counter(r["label"] for r in records)
    if len(labels) < 2:
        only = "lesion" if 1 in labels else "healthy"
        raise DatalistError(f"{source}: the {subset} subset holds {only} patches only; both classes are needed")
    return records


def draw_patient_fraction(records: list[dict], fraction: float, seed: int) -> list[dict]:
    """The records of a random ``fraction`` of the patients (at least one), drawn with the seed."""
    if not 0 < fraction <= 1:
        raise ValueError(f"train_fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return list(records)
    patients = sorted({r["patient_id"] for r in records})
    rng = np.random.RandomState(int(seed) & 0xFFFFFFFF)
    count = max(1, int(round(fraction * len(patients))))
    chosen = {patients[i] for i in rng.choice(len(patients), count, replace=False)}
    return [r for r in records if r["patient_id"] in chosen]


def balance_healthy(
    records: list[dict], extra_lesions: int, seed: int, reserve: Sequence[dict] = ()
) -> tuple[list[dict], list[dict], int]:
    """Centre A's balanced records plus ``extra_lesions`` extra healthy patches.

    Returns ``(lesion records, healthy records, reserve count)``: as many healthy patches as
    lesions, plus ``extra_lesions``, drawn with the seed from the healthy records; when there are
    too few, the missing ones are taken from the datalist's healthy ``reserve`` (boxes sampled from
    the same images when the datalist was built, see :mod:`mammoshare.readers.reserve`), in equal
    shares per image.
    """
    lesions = [r for r in records if r["label"] == 1]
    healthy = [r for r in records if r["label"] == 0]
    wanted = len(lesions) + int(extra_lesions)
    rng = np.random.RandomState(int(seed) & 0xFFFFFFFF)
    if len(healthy) >= wanted:
        chosen = [healthy[i] for i in sorted(rng.choice(len(healthy), wanted, replace=False))]
        return lesions, chosen, 0
    missing = wanted - len(healthy)
    logger.warning(
        "the training subset has %d healthy patches for %d needed: using %d healthy boxes of the datalist's reserve "
        "(sampling from its images when it was built)", len(healthy), wanted, missing,
    )
    more = _reserve_boxes(healthy, reserve, missing)
    return lesions, healthy + more, len(more)


def _reserve_boxes(healthy: list[dict], reserve: Sequence[dict], count: int) -> list[dict]:
    """``count`` reserve records of the images that the ``healthy`` records come from, in equal
    shares per image (sorted), none twice and none already among ``healthy``."""
    images = sorted({r["image"] for r in healthy})
    if not images:
        raise DatalistError("no healthy images in the training subset to take more healthy boxes from")
    taken = {(r["image"], tuple(r["box"])) for r in healthy}
    spare: dict[str, list[dict]] = defaultdict(list)
    for r in reserve:
        if r["image"] in images and (r["image"], tuple(r["box"])) not in taken:
            spare[r["image"]].append(r)
    added: list[dict] = []
    # an image short of its share leaves the rest to the next images
    remaining = count
    for index, image in enumerate(images):
        share = equal_shares(remaining, len(images) - index)[0]
        chosen = spare[image][:share]
        added += [{**r, "extra_healthy": True} for r in chosen]
        remaining -= len(chosen)
    if len(added) < count:
        raise DatalistError(
            f"the datalist's healthy reserve holds {len(added)} of the {count} more healthy boxes that balancing needs: "
            "rebuild the datalist with a larger healthy reserve (healthy_reserve_per_image) or add fewer lesions"
        )
    return added


def _check_synthetic_patch(path: str) -> None:
    try:
        with Image.open(path) as img:
            mode, size = img.mode, img.size
    except Exception as e:
        raise DatalistError(f"{path}: cannot read synthetic patch ({e})") from e
    if mode not in ("L", "I", "I;16", "F"):
        raise DatalistError(f"{path}: synthetic patch has mode {mode}; one grey channel is expected")
    if size[0] != size[1]:
        raise DatalistError(f"{path}: synthetic patch of {size[0]}x{size[1]} is not square")


def synthetic_source_records(sources: Sequence[str | os.PathLike], total: int, seed: int) -> dict[str, list[dict]]:
    """Equal shares of ``total`` synthetic lesion patches from each source.

    A source is a finished synthetic datalist (the ``synthetic_datalist.json`` that a generator's
    inference writes: sample the generator before training). Returns ``{source name: records}``.
    """
    result: dict[str, list[dict]] = {}
    for index, (source, share) in enumerate(zip(sources, equal_shares(total, len(sources)) if sources else [])):
        path = Path(source)
        if path.is_dir():
            raise DatalistError(
                f"{path} is a folder: --synthetic takes synthetic datalists only; sample the generator first "
                f"(python -m monai.bundle run --config_file BUNDLE/configs/inference.json --output_dir DIR) and pass "
                f"DIR/{SYNTHETIC_DATALIST}"
            )
        data = load_datalist(path)
        records = [r for s in ("training", "validation", "test") for r in data.get(s, []) if r["label"] == 1]
        if len(records) < share:
            raise DatalistError(f"{path}: {len(records)} synthetic lesion patches, fewer than its share of {share}")
        rng = np.random.RandomState((int(seed) + index) & 0xFFFFFFFF)
        chosen = [records[i] for i in sorted(rng.choice(len(records), share, replace=False))]
        for r in chosen:
            if record_image_type(r) != "patch":
                raise DatalistError(
                    f"{path}: record {r['image']} is a mammogram box, not a patch file; a synthetic datalist lists "
                    "patch files (image_type 'patch', box null)"
                )
            _check_synthetic_patch(r["image"])
        name = data.get("generator", {}).get("name") or path.stem
        if name in result:
            name = f"{name}#{index}"
        result[name] = [{**r, "source": name, "image_type": "patch"} for r in chosen]
    return result


def real_lesion_records(datalist: str | os.PathLike, count: int, task: str, seed: int) -> list[dict]:
    """``count`` real lesion patches of another centre's datalist (all its subsets), drawn with the
    seed; all of them, with a warning, when it has fewer."""
    data = load_datalist(datalist)
    if data.get("task") not in (None, task):
        raise DatalistError(f"{datalist} is a datalist of the task {data.get('task')!r}, not {task!r}")
    records = [r for s in ("training", "validation", "test") for r in data.get(s, []) if r["label"] == 1]
    if not records:
        raise DatalistError(f"{datalist}: no lesion patches")
    if len(records) < count:
        logger.warning("%s has %d lesion patches, fewer than the %d asked for: using all", datalist, len(records), count)
        return records
    rng = np.random.RandomState(int(seed) & 0xFFFFFFFF)
    return [records[i] for i in sorted(rng.choice(len(records), count, replace=False))]


def count_table(records: Sequence[dict]) -> dict[str, dict[str, int]]:
    """``{"lesion": {source: n}, "healthy": {source: n}}``."""
    table: dict[str, dict[str, int]] = {"lesion": {}, "healthy": {}}
    for r in records:
        cls = "lesion" if r["label"] == 1 else "healthy"
        source = r.get("source", "?") + (" (extra boxes)" if r.get("extra_healthy") else "")
        table[cls][source] = table[cls].get(source, 0) + 1
    return table


def build_training_set(
    datalist: dict,
    task: str,
    seed: int,
    output_dir: str | os.PathLike,
    train_fraction: float = 1.0,
    synthetic: Sequence[str | os.PathLike] | None = None,
    synthetic_count: int = DEFAULT_SYNTHETIC_COUNT,
    real_lesions: str | os.PathLike | None = None,
    real_lesion_count: int | None = None,
    source: str | os.PathLike = "datalist",
) -> list[dict[str, Any]]:
    """The balanced training records (see the module docstring); logs the counts per class and source
    and writes them to ``output_dir/training_counts.json``."""
    base = draw_patient_fraction(subset_records(datalist, "training", source), train_fraction, seed)
    if len({r["label"] for r in base}) < 2:
        raise DatalistError(f"{source}: the drawn {train_fraction:.0%} of training patients hold one class only")
    added: list[dict] = []
    for records in synthetic_source_records(synthetic or [], synthetic_count, seed).values():
        added += records
    if real_lesions:
        count = DEFAULT_REAL_LESION_COUNT[task] if real_lesion_count is None else int(real_lesion_count)
        added += real_lesion_records(real_lesions, count, task, seed)
    lesions, healthy, _ = balance_healthy(base, len(added), seed, datalist.get(HEALTHY_RESERVE, []))
    records = lesions + added + healthy
    table = count_table(records)
    write_training_counts(output_dir, {"patches": len(records), "counts": table})
    logger.info(
        "training set: %d lesion (%s), %d healthy (%s)",
        sum(table["lesion"].values()), ", ".join(f"{k} {v}" for k, v in table["lesion"].items()),
        sum(table["healthy"].values()), ", ".join(f"{k} {v}" for k, v in table["healthy"].items()),
    )
    for r in records:
        r["image_path"] = r["image"]
    return records

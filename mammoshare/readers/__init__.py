"""Readers that turn raw datasets (INbreast, BCDR, CBIS-DDSM, mini-MIAS) into datalists.

Every reader has the signature ``read_X(root, request) -> list[record]`` (``request``: a
:class:`~mammoshare.extraction.ReadRequest`, the task, the case collector, the seed and count of the
healthy boxes and the :class:`~mammoshare.extraction.PatchGeometry` of box sizes, windowing and
spacing; the INbreast reader also takes ``calcifications``) and returns records (see :mod:`mammoshare.datalist`) with
absolute image paths, grouped image by image. A problem with one case goes through the
``collector`` (reported, or skipped with ``--skip-bad``); a problem with the whole dataset (a
missing folder or CSV, missing columns) raises :class:`~mammoshare.datalist.DatalistError`.

Splits (``split`` of :func:`build_datalist`): ``"random"``, the seeded patient split stratified by
label and density (:func:`~mammoshare.datalist.split_patients`); ``"official"``, the dataset's own
training/test split where it has one (CBIS-DDSM, see :func:`official_split`); or a split file.
The default is ``"official"`` for the datasets in :data:`OFFICIAL_SPLIT_DATASETS`, ``"random"``
otherwise.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from ..datalist import (
    DEFAULT_RESERVE_PER_IMAGE,
    HEALTHY_RESERVE,
    TASKS,
    BadCase,
    CaseCollector,
    DatalistError,
    assemble_datalist,
    is_phantom_root,
    read_split_file,
    split_patients,
)
from .reserve import sample_healthy_reserve

__all__ = [
    "DATASETS", "SPLITS", "OFFICIAL_SPLIT_DATASETS", "OFFICIAL_VALIDATION_FRACTION", "get_reader",
    "build_datalist", "official_split", "datalist_task",
]

logger = logging.getLogger(__name__)

DATASETS = ("inbreast", "bcdr", "cbis-ddsm", "mias")
#: the named splits; any other ``split`` value is a split file
SPLITS = ("random", "official")
#: datasets with an official training/test split (their records carry ``official_subset``); it is their default
OFFICIAL_SPLIT_DATASETS = ("cbis-ddsm",)
#: the fraction of the official training patients that the official split puts in validation
OFFICIAL_VALIDATION_FRACTION = 0.15


def get_reader(dataset: str):
    if dataset == "inbreast":
        from .inbreast import read_inbreast

        return read_inbreast
    if dataset == "bcdr":
        from .bcdr import read_bcdr

        return read_bcdr
    if dataset == "cbis-ddsm":
        from .cbis_ddsm import read_cbis_ddsm

        return read_cbis_ddsm
    if dataset == "mias":
        from .mias import read_mias

        return read_mias
    raise DatalistError(f"unknown dataset {dataset!r}; use one of {list(DATASETS)}")


def official_split(records: list[dict], seed: int, dataset: str = "cbis-ddsm") -> dict[str, str]:
    """The dataset's own split: test = the official test patients; validation =
    :data:`OFFICIAL_VALIDATION_FRACTION` of the official training patients, drawn with the seed and
    stratified by label and density like the random split; the rest training.

    A patient with records in both official subsets (possible in CBIS-DDSM across the mass and calc
    CSVs) goes to test, so that no test patient is trained on; this is logged.
    """
    official: dict[str, set[str]] = defaultdict(set)
    for r in records:
        subset = r.get("official_subset")
        if subset not in ("train", "test"):
            raise DatalistError(
                f"{dataset}: record of patient {r['patient_id']} has no official subset (train or test); "
                "use --split random or a split file"
            )
        official[r["patient_id"]].add(subset)
    both = sorted(p for p, s in official.items() if len(s) > 1)
    if both:
        logger.warning(
            "%s: %d patient(s) are in both the official training and test sets; they go to test: %s",
            dataset, len(both), ", ".join(both[:10]) + (" ..." if len(both) > 10 else ""),
        )
    split = {p: "test" for p, s in official.items() if "test" in s}
    training = [r for r in records if r["patient_id"] not in split]
    if training:
        fraction = OFFICIAL_VALIDATION_FRACTION
        drawn = split_patients(training, seed, (1.0 - fraction, fraction, 0.0))
        split.update(drawn)
    return split


def _reader_options(reader, dataset: str, calcifications: str | None) -> dict[str, Any]:
    """The dataset's own keyword options this reader takes (beyond the :class:`ReadRequest` all
    readers take); an option it does not know is an error (so that no setting is silently ignored)."""
    accepted = inspect.signature(reader).parameters
    options: dict[str, Any] = {}
    if calcifications is not None:
        if "calcifications" not in accepted:
            raise DatalistError(
                f"--calcifications is an INbreast option (one patch per calcification ROI or per cluster); "
                f"the {dataset} reader makes one patch per outlined lesion"
            )
        options["calcifications"] = calcifications
    return options


def build_datalist(
    dataset: str,
    root: str | os.PathLike,
    task: str = "all",
    seed: int = 2021,
    split_file: str | os.PathLike | None = None,
    skip_bad: bool = False,
    healthy_per_image: int = 5,
    healthy_box_size: int = 128,
    split: str | os.PathLike | None = None,
    *,
    margin: int = 60,
    margin_mm: float | None = None,
    healthy_box_mm: float | None = None,
    default_pixel_spacing: float | None = None,
    apply_voi: bool | str | None = None,
    calcifications: str | None = None,
    healthy_reserve_per_image: int | None = None,
) -> tuple[dict[str, Any], list[BadCase]]:
    """Read a raw dataset and split it by patient.

    ``split``: ``"random"``, ``"official"`` or a split file (``split_file`` is the same as a file);
    None = the dataset's default (official for :data:`OFFICIAL_SPLIT_DATASETS`, else random).
    ``margin`` / ``healthy_box_size`` are pixels; ``margin_mm`` / ``healthy_box_mm`` replace them
    with sizes in mm (see :class:`~mammoshare.extraction.PatchGeometry`). ``apply_voi`` None (or
    "auto") is the dataset's default (:data:`~mammoshare.extraction.APPLY_VOI_DEFAULTS`).
    ``calcifications`` (INbreast): ``"roi"`` (one patch per ROI, the paper's; the default) or
    ``"cluster"``. ``healthy_reserve_per_image`` (None: :data:`~mammoshare.datalist.DEFAULT_RESERVE_PER_IMAGE`):
    spare healthy boxes per healthy training image for class balancing (the datalist's
    ``healthy_reserve``, see :mod:`mammoshare.readers.reserve`; 0: none).

    Returns the datalist dict (absolute image paths; :func:`~mammoshare.datalist.write_datalist`
    makes them relative) and the bad cases skipped (only with ``skip_bad``; otherwise any bad case
    raises :class:`~mammoshare.datalist.DatalistError` listing all of them). The datalist states
    its settings (split, margin, healthy box, ``apply_voi``, the calcification policy) and its
    lesion counts per type and subset. Cases that give no record by the dataset's own definition
    (mini-MIAS lesions without a location) are listed in the datalist's ``notes``.
    """
    from ..extraction import CALCIFICATION_POLICIES, PatchGeometry, ReadRequest, lesion_type_counts, resolve_apply_voi

    if task not in TASKS:
        raise DatalistError(f"unknown task {task!r}; use one of {list(TASKS)}")
    if split is not None and split_file is not None:
        raise DatalistError("give either split or split_file, not both")
    if split is None:
        split = split_file if split_file is not None else (
            "official" if dataset in OFFICIAL_SPLIT_DATASETS else "random"
        )
    split = str(split)
    if split == "official" and dataset not in OFFICIAL_SPLIT_DATASETS:
        raise DatalistError(
            f"{dataset} has no official training/test split (only {', '.join(OFFICIAL_SPLIT_DATASETS)} has one): "
            "use --split random or a split file"
        )
    if split not in SPLITS and not Path(split).is_file():
        raise DatalistError(f"{split}: split file not found; --split takes random, official or a split file")
    if calcifications is not None and calcifications not in CALCIFICATION_POLICIES:
        raise DatalistError(f"unknown calcification policy {calcifications!r}; use one of {list(CALCIFICATION_POLICIES)}")
    root = Path(root)
    if not root.is_dir():
        raise DatalistError(f"{root}: dataset folder not found")
    reader = get_reader(dataset)
    try:
        geometry = PatchGeometry(
            margin_px=int(margin), healthy_box_px=int(healthy_box_size), margin_mm=margin_mm,
            healthy_box_mm=healthy_box_mm, default_spacing_mm=default_pixel_spacing,
            apply_voi=resolve_apply_voi(apply_voi, dataset),
        )
    except ValueError as e:
        raise DatalistError(str(e)) from e
    options = _reader_options(reader, dataset, calcifications)
    collector = CaseCollector(skip_bad=skip_bad)
    records = reader(root, ReadRequest(task, collector, seed, healthy_per_image, geometry), **options)
    bad_cases = collector.finish(f"{dataset} at {root}")
    if split == "random":
        assignment = None
    elif split == "official":
        assignment = official_split(records, seed, dataset) if records else None
    else:
        assignment = read_split_file(split)
    phantom = is_phantom_root(root)
    if phantom:
        logger.warning("%s is a PHANTOM dataset: synthetic images with no clinical meaning", root)
    extra: dict[str, Any] = {"split_method": split if split in SPLITS else "file"}
    if collector.notes:
        extra["notes"] = [{"file": n.file, "case": n.case, "problem": n.problem} for n in collector.notes]
    policy = options.get("calcifications")
    if policy is None and "calcifications" in inspect.signature(reader).parameters:
        policy = inspect.signature(reader).parameters["calcifications"].default
    datalist = assemble_datalist(
        records, dataset, task, seed, phantom, assignment,
        healthy_per_image=healthy_per_image, healthy_box_size=healthy_box_size,
        **geometry.datalist_fields(), calcifications=policy, **extra,
    )
    datalist["lesion_type_counts"] = {s: lesion_type_counts(datalist[s]) for s in ("training", "validation", "test")}
    per_image = DEFAULT_RESERVE_PER_IMAGE if healthy_reserve_per_image is None else int(healthy_reserve_per_image)
    datalist[HEALTHY_RESERVE] = sample_healthy_reserve(datalist["training"], per_image, seed)
    for subset in ("training", "validation", "test"):
        counts = Counter(r["label"] for r in datalist[subset])
        logger.info("%s %s: %d lesion, %d healthy patches", dataset, subset, counts[1], counts[0])
    return datalist, bad_cases


def datalist_task(datalist: str | os.PathLike | None, default: str = "mass") -> str:
    """The task a bundle runs: the task a prepared ``datalist`` JSON carries, else ``default``.

    Bundles use this as their ``task`` when ``--task`` is not given; a ``--task`` that differs from
    the datalist's is refused by :func:`mammoshare.obtain.obtain_datalist`.
    """
    if datalist is None:
        return default
    path = Path(datalist)
    if not path.is_file():
        raise DatalistError(f"{path}: datalist not found")
    try:
        task = json.loads(path.read_text()).get("task")
    except (json.JSONDecodeError, AttributeError) as e:
        raise DatalistError(f"{path}: not a datalist JSON object ({e})") from e
    if task is None:
        return default
    if task not in TASKS:
        raise DatalistError(f"{path}: unknown task {task!r}; a datalist's task is one of {list(TASKS)}")
    return task

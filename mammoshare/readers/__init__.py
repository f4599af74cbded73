"""Readers that turn raw datasets (INbreast, BCDR, CBIS-DDSM) into datalists.

Every reader has the signature ``read_X(root, task, collector, seed, healthy_per_image,
healthy_box_size, *, geometry=None) -> list[record]`` (``geometry``: the
:class:`~mammoshare.extraction.PatchGeometry` of box sizes, windowing and spacing; the INbreast
reader also takes ``calcifications``) and returns records (see :mod:`mammoshare.datalist`) with
absolute image paths, grouped image by image. A problem with one case goes through the
``collector`` (reported, or skipped with ``--skip-bad``); a problem with the whole dataset (a
missing folder or CSV, missing columns) raises :class:`~mammoshare.datalist.DatalistError`.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any

from ..datalist import (
    load_datalist,
    write_datalist,
    TASKS,
    BadCase,
    CaseCollector,
    DatalistError,
    assemble_datalist,
    is_phantom_root,
    read_split_file,
)

__all__ = ["DATASETS", "get_reader", "build_datalist", "obtain_datalist"]

logger = logging.getLogger(__name__)

DATASETS = ("inbreast", "bcdr", "cbis-ddsm")


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
    raise DatalistError(f"unknown dataset {dataset!r}; use one of {list(DATASETS)}")


def _reader_options(reader, dataset: str, geometry, calcifications: str | None) -> dict[str, Any]:
    """The keyword options this reader takes; an option it does not know is an error unless it is
    at its default (so that no setting is silently ignored)."""
    from ..extraction import PatchGeometry

    accepted = inspect.signature(reader).parameters
    options: dict[str, Any] = {}
    if "geometry" in accepted:
        options["geometry"] = geometry
    elif geometry != PatchGeometry(healthy_box_px=geometry.healthy_box_px):
        raise DatalistError(
            f"the {dataset} reader does not take --margin/--margin-mm/--healthy-box-mm/--default-pixel-spacing/"
            "--apply-voi yet; build this datalist with the defaults"
        )
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
    *,
    margin: int = 60,
    margin_mm: float | None = None,
    healthy_box_mm: float | None = None,
    default_pixel_spacing: float | None = None,
    apply_voi: bool | str | None = None,
    calcifications: str | None = None,
) -> tuple[dict[str, Any], list[BadCase]]:
    """Read a raw dataset and split it by patient.

    ``margin`` / ``healthy_box_size`` are pixels; ``margin_mm`` / ``healthy_box_mm`` replace them
    with sizes in mm (see :class:`~mammoshare.extraction.PatchGeometry`). ``apply_voi`` None (or
    "auto") is the dataset's default (:data:`~mammoshare.extraction.APPLY_VOI_DEFAULTS`).
    ``calcifications`` (INbreast): ``"roi"`` (one patch per ROI, the paper's; the default) or
    ``"cluster"``.

    Returns the datalist dict (absolute image paths; :func:`~mammoshare.datalist.write_datalist`
    makes them relative) and the bad cases skipped (only with ``skip_bad``; otherwise any bad case
    raises :class:`~mammoshare.datalist.DatalistError` listing all of them). The datalist states
    its settings (margin, healthy box, ``apply_voi``, the calcification policy) and its lesion
    counts per type and subset.
    """
    from ..extraction import CALCIFICATION_POLICIES, PatchGeometry, lesion_type_counts, resolve_apply_voi

    if task not in TASKS:
        raise DatalistError(f"unknown task {task!r}; use one of {list(TASKS)}")
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
    options = _reader_options(reader, dataset, geometry, calcifications)
    collector = CaseCollector(skip_bad=skip_bad)
    records = reader(root, task, collector, seed, healthy_per_image, healthy_box_size, **options)
    bad_cases = collector.finish(f"{dataset} at {root}")
    split = read_split_file(split_file) if split_file else None
    phantom = is_phantom_root(root)
    if phantom:
        logger.warning("%s is a PHANTOM dataset: synthetic images with no clinical meaning", root)
    policy = options.get("calcifications")
    if policy is None and "calcifications" in inspect.signature(reader).parameters:
        policy = inspect.signature(reader).parameters["calcifications"].default
    datalist = assemble_datalist(
        records, dataset, task, seed, phantom, split,
        healthy_per_image=healthy_per_image, healthy_box_size=healthy_box_size,
        **geometry.datalist_fields(),
        calcifications=policy,
    )
    datalist["lesion_type_counts"] = {s: lesion_type_counts(datalist[s]) for s in ("training", "validation", "test")}
    for subset in ("training", "validation", "test"):
        counts = Counter(r["label"] for r in datalist[subset])
        logger.info("%s %s: %d lesion, %d healthy patches", dataset, subset, counts[1], counts[0])
    return datalist, bad_cases


def obtain_datalist(
    datalist: str | os.PathLike | None = None,
    dataset_dir: str | os.PathLike | None = None,
    dataset: str = "inbreast",
    task: str = "mass",
    output_dir: str | os.PathLike = ".",
    seed: int = 2021,
    skip_bad: bool = False,
    apply_voi: bool | str | None = None,
) -> tuple[dict[str, Any], Path]:
    """The datalist a bundle trains on, and where it is.

    In this order: ``datalist`` (a prepared datalist JSON; its task must be ``task``), ``dataset_dir``
    (a raw dataset root of type ``dataset``, read with the seed; the datalist is written to
    ``output_dir``), or, when neither is given, the phantom ``dataset`` written under
    ``output_dir/phantom`` (logged loudly: demo and test data with no clinical meaning).
    ``apply_voi`` is used when the datalist is built here (None: the dataset's default); a prepared
    datalist's records keep the setting they were built with.
    """
    if datalist is not None:
        source = Path(datalist)
        data = load_datalist(source)
        if data.get("task") not in (None, task):
            raise DatalistError(
                f"{source} is a datalist of the task {data.get('task')!r}, but this run is for the task "
                f"{task!r}: pass --task {data.get('task')} or a datalist built with --task {task}"
            )
        return data, source
    if dataset_dir is None:
        from ..phantom import write_phantoms

        phantom_root = Path(output_dir) / "phantom"
        if not (phantom_root / dataset).is_dir():
            write_phantoms(phantom_root, seed=seed, datasets=[dataset])
        dataset_dir = phantom_root / dataset
        logger.warning(
            "no --dataset_dir or --datalist given: using the PHANTOM %s data in %s "
            "(synthetic, no clinical meaning; for a demo or a test only)", dataset, dataset_dir,
        )
    data, bad_cases = build_datalist(dataset, dataset_dir, task=task, seed=seed, skip_bad=skip_bad, apply_voi=apply_voi)
    source = write_datalist(data, Path(output_dir) / f"{dataset}_{task}_datalist.json", bad_cases)
    return load_datalist(source), source

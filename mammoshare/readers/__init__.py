"""Readers that turn raw datasets (INbreast, BCDR, CBIS-DDSM) into datalists.

Every reader has the signature ``read_X(root, task, collector, seed, healthy_per_image,
healthy_box_size) -> list[record]`` and returns records (see :mod:`mammoshare.datalist`) with
absolute image paths, grouped image by image. A problem with one case goes through the
``collector`` (reported, or skipped with ``--skip-bad``); a problem with the whole dataset (a
missing folder or CSV, missing columns) raises :class:`~mammoshare.datalist.DatalistError`.
"""

from __future__ import annotations

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


def build_datalist(
    dataset: str,
    root: str | os.PathLike,
    task: str = "all",
    seed: int = 2021,
    split_file: str | os.PathLike | None = None,
    skip_bad: bool = False,
    healthy_per_image: int = 5,
    healthy_box_size: int = 128,
) -> tuple[dict[str, Any], list[BadCase]]:
    """Read a raw dataset and split it by patient.

    Returns the datalist dict (absolute image paths; :func:`~mammoshare.datalist.write_datalist`
    makes them relative) and the bad cases skipped (only with ``skip_bad``; otherwise any bad case
    raises :class:`~mammoshare.datalist.DatalistError` listing all of them).
    """
    if task not in TASKS:
        raise DatalistError(f"unknown task {task!r}; use one of {list(TASKS)}")
    root = Path(root)
    if not root.is_dir():
        raise DatalistError(f"{root}: dataset folder not found")
    reader = get_reader(dataset)
    collector = CaseCollector(skip_bad=skip_bad)
    records = reader(root, task, collector, seed, healthy_per_image, healthy_box_size)
    bad_cases = collector.finish(f"{dataset} at {root}")
    split = read_split_file(split_file) if split_file else None
    phantom = is_phantom_root(root)
    if phantom:
        logger.warning("%s is a PHANTOM dataset: synthetic images with no clinical meaning", root)
    datalist = assemble_datalist(
        records, dataset, task, seed, phantom, split,
        healthy_per_image=healthy_per_image, healthy_box_size=healthy_box_size,
    )
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
) -> tuple[dict[str, Any], Path]:
    """The datalist a bundle trains on, and where it is.

    In this order: ``datalist`` (a prepared datalist JSON; its task must be ``task``), ``dataset_dir``
    (a raw dataset root of type ``dataset``, read with the seed; the datalist is written to
    ``output_dir``), or, when neither is given, the phantom ``dataset`` written under
    ``output_dir/phantom`` (logged loudly: demo and test data with no clinical meaning).
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
    data, bad_cases = build_datalist(dataset, dataset_dir, task=task, seed=seed, skip_bad=skip_bad)
    source = write_datalist(data, Path(output_dir) / f"{dataset}_{task}_datalist.json", bad_cases)
    return load_datalist(source), source

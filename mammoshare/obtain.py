"""Obtaining the datalist a bundle trains or evaluates on: one place, data flowing one way.

In this order: a prepared datalist JSON (``--datalist``), a raw dataset root built into a datalist
by :func:`mammoshare.readers.build_datalist` (``--dataset_dir``), or, when neither is given, the
phantom dataset written by :mod:`mammoshare.phantom` and read like a raw root (demo and test data,
logged loudly). The readers only read; the bundles call :func:`obtain_datalist` (classifier) or
:func:`gan_training_records` (the GAN and diffusion bundles).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .bundle import flag
from .datalist import SUBSETS, DatalistError, load_datalist, write_datalist, write_training_counts
from .phantom import write_phantoms
from .readers import build_datalist

__all__ = ["obtain_datalist", "gan_training_records"]

logger = logging.getLogger(__name__)


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
    skip_bad = flag(skip_bad, "skip_bad")
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


def gan_training_records(
    dataset_dir: str | os.PathLike | None = None,
    datalist: str | os.PathLike | None = None,
    task: str = "mass",
    output_dir: str | os.PathLike = "models",
    subsets: Sequence[str] = SUBSETS,
    dataset: str = "bcdr",
    seed: int = 2021,
    skip_bad: bool = False,
    apply_voi: bool | None = None,
) -> list[dict]:
    """The lesion records (label 1) of ``subsets`` to train a GAN on.

    By default every subset: the centre that shares a generator tests no classifier, so it trains
    on all its patches (the study's centre B, as the original trained on all of BCDR); ``subsets``
    narrows it (e.g. ``["training"]``). ``apply_voi`` is used when the datalist is built here.

    Source, in this order: ``datalist`` (a prepared datalist JSON), ``dataset_dir`` (a raw dataset
    root of type ``dataset``, read with the seed; its datalist is written to ``output_dir``), or,
    when neither is given, the phantom BCDR data written under ``output_dir/phantom`` (logged as
    such: it trains a demo generator with no clinical meaning). What it trains on (subsets, patches,
    patients) is written to ``output_dir/training_counts.json``.
    """
    unknown = [s for s in subsets if s not in SUBSETS]
    if unknown:
        raise DatalistError(f"unknown subset(s) {unknown}; use {list(SUBSETS)}")
    data, source = obtain_datalist(datalist, dataset_dir, dataset, task, output_dir, seed, skip_bad, apply_voi)
    if data.get("phantom"):
        logger.warning("%s holds PHANTOM data: the generator will have no clinical meaning", source)
    records = [r for s in subsets for r in data.get(s, []) if r["label"] == 1]
    if not records:
        raise DatalistError(f"{source}: no lesion patches in the subset(s) {list(subsets)} for the task {task!r}")
    patients = len({r["patient_id"] for r in records})
    # what a shared generator says of its training data (pack records it in the archive): the
    # datalist by name only, no path of this machine
    write_training_counts(output_dir, {
        "dataset": data.get("dataset", dataset), "task": task, "datalist": Path(source).name,
        "phantom": bool(data.get("phantom")), "subsets": list(subsets), "patches": len(records),
        "patients": patients, "seed": int(seed), "mammoshare_version": __version__,
    })
    logger.info(
        "GAN training data: %d lesion patches of %d patients from %s (subsets: %s)",
        len(records), patients, source, ", ".join(subsets),
    )
    return records

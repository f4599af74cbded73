"""Report files of a classifier evaluation.

- :func:`write_evaluation`: ``metrics.json`` (point estimates, patient-level bootstrap intervals and
  facts about the run), ``predictions.csv`` and the three figures of :mod:`mammoshare.classifier.plots`
  in one folder.
- :func:`write_predictions_csv`: the inference table (P(healthy), P(lesion), predicted class).

Files are written next to their final name and moved into place, so a reader never sees half a file.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .metrics import (
    bootstrap_intervals,
    check_inputs,
    class_probabilities,
    classification_metrics,
    cluster_codes,
    is_missing_id,
    label_value,
    positive_index,
)
from .plots import plot_confusion_matrix, plot_pr_curve, plot_roc_curve

__all__ = ["write_evaluation", "write_predictions_csv", "small_sample_warnings", "MIN_PATIENTS", "MIN_LESIONS"]

logger = logging.getLogger(__name__)

#: below these, a test subset's metrics and intervals mean little (warned in the log, metrics.json and figures)
MIN_PATIENTS = 10
MIN_LESIONS = 10
PHANTOM_NOTE = "PHANTOM data: a demo, no clinical meaning"


def small_sample_warnings(n_patients: int, n_lesions: int) -> list[str]:
    """The warnings of a test set of ``n_patients`` patients and ``n_lesions`` lesion patches:
    fewer than :data:`MIN_PATIENTS` or :data:`MIN_LESIONS` make the metrics and intervals unreliable."""
    out = []
    if n_patients < MIN_PATIENTS:
        out.append(f"only {n_patients} patients (fewer than {MIN_PATIENTS}): the metrics and their bootstrap intervals are unreliable")
    if n_lesions < MIN_LESIONS:
        out.append(f"only {n_lesions} lesion patches (fewer than {MIN_LESIONS}): the metrics and their bootstrap intervals are unreliable")
    return out


def _json_ready(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_ready(value.tolist())
    if isinstance(value, torch.Tensor):
        return _json_ready(value.detach().cpu().tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def _write_text_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _write_csv_atomically(path: Path, columns: Sequence[str], rows: Iterable[Sequence]) -> None:
    """A CSV with a header row, written next to ``path`` and moved into place (no half-written file)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(rows)
    os.replace(tmp, path)


def write_evaluation(
    output_dir: str | os.PathLike,
    labels: Any,
    probabilities: Any,
    patient_ids: Sequence | None,
    positive_class: str = "lesion",
    image_paths: Sequence | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    extra: Mapping | None = None,
    threshold: float = 0.5,
    level: float = 0.95,
) -> dict:
    """Write the evaluation of one test (or validation) set into ``output_dir``.

    In: labels (1 = lesion, 0 = healthy), ``probabilities`` = P(positive class) per patch, patient
    ids (None entries: own cluster, with a warning), the positive class, optional image paths, the
    bootstrap settings and ``extra`` (JSON-serialisable facts about the run, stored under ``"extra"``).

    Out (files): ``metrics.json`` (the returned dict), ``predictions.csv`` (columns ``image_path`` if
    given, ``patient_id``, ``label`` (1 = lesion, 0 = healthy), ``p_<positive class>``,
    ``prediction`` (same coding as ``label``)), ``roc_curve.png``, ``pr_curve.png``,
    ``confusion_matrix.png``.

    Returns the dict of :func:`classification_metrics` plus ``"confidence_intervals"``
    (``{metric: {"low", "high", "n_valid"}}``), ``"ci_level"``, ``"ci_method"``, ``"n_bootstrap"``,
    ``"seed"``, ``"n_patients"`` (distinct ids), ``"n_clusters"`` (bootstrap units),
    ``"n_missing_patient_ids"``, ``"constant_prediction"`` (every patch called one class),
    ``"warnings"`` (a test set of fewer than :data:`MIN_PATIENTS` patients or :data:`MIN_LESIONS`
    lesions; also logged and written on the figures, as is ``extra["phantom"]``), ``"files"`` and
    ``"extra"``.
    """
    pos_label = positive_index(positive_class)
    labels, probabilities = check_inputs(labels, probabilities)
    n = labels.size
    if image_paths is not None and len(image_paths) != n:
        raise ValueError(f"{n} patches but {len(image_paths)} image paths")
    if patient_ids is not None and len(patient_ids) != n:
        raise ValueError(f"{n} patches but {len(patient_ids)} patient ids")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    metrics = classification_metrics(labels, probabilities, positive_class, threshold)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # warned once below
        _, n_clusters, n_missing = cluster_codes(patient_ids, n)
        intervals = bootstrap_intervals(
            labels, probabilities, patient_ids, positive_class, n_bootstrap, seed, level, threshold
        )
    if n_missing:
        warnings.warn(
            f"{n_missing} of {n} patches have no patient id: each of them counts as its own patient in the "
            "bootstrap, so the intervals may be too narrow if a patient has several patches",
            UserWarning,
            stacklevel=2,
        )
    ids = [None] * n if patient_ids is None else list(patient_ids)
    n_lesions = int((labels == 1).sum())
    sample_warnings = small_sample_warnings(n_clusters, n_lesions)  # a patch without an id: its own patient
    for text in sample_warnings:
        logger.warning("%s: %s", output_dir, text)
    phantom = bool((extra or {}).get("phantom"))
    predicted = probabilities >= threshold
    notes = ([PHANTOM_NOTE] if phantom else []) + [f"WARNING: {w.split(':')[0]}" for w in sample_warnings]

    files = {
        "metrics": "metrics.json",
        "predictions": "predictions.csv",
        "roc_curve": "roc_curve.png",
        "pr_curve": "pr_curve.png",
        "confusion_matrix": "confusion_matrix.png",
    }
    metrics.update(
        {
            "confidence_intervals": intervals,
            "ci_level": float(level),
            "ci_method": "percentile interval of a cluster bootstrap resampling patients with replacement; "
            "resamples with one class only skipped",
            "n_bootstrap": int(n_bootstrap),
            "seed": int(seed),
            "n_patients": n_clusters - n_missing,
            "n_clusters": n_clusters,
            "n_missing_patient_ids": n_missing,
            "label_coding": {"1": "lesion", "0": "healthy"},
            # every patch called the same class: a constant predictor (the study never marks it best)
            "constant_prediction": bool(predicted.all() or not predicted.any()),
            "warnings": sample_warnings,
            "files": files,
            "extra": dict(extra) if extra is not None else {},
        }
    )
    metrics = _json_ready(metrics)

    predictions = np.where(predicted, pos_label, 1 - pos_label)
    columns = (["image_path"] if image_paths is not None else []) + [
        "patient_id", "label", f"p_{positive_class}", "prediction",
    ]

    def rows() -> Iterator[list]:
        for i in range(n):
            row = [str(image_paths[i])] if image_paths is not None else []
            yield row + ["" if is_missing_id(ids[i]) else str(ids[i]), int(labels[i]), repr(float(probabilities[i])),
                         int(predictions[i])]

    _write_csv_atomically(output_dir / files["predictions"], columns, rows())

    plot_roc_curve(output_dir / files["roc_curve"], labels, probabilities, positive_class, intervals["auroc"], level, notes)
    plot_pr_curve(output_dir / files["pr_curve"], labels, probabilities, positive_class, intervals["auprc"], level, notes)
    plot_confusion_matrix(output_dir / files["confusion_matrix"], labels, probabilities, positive_class, threshold, notes)
    _write_text_atomically(
        output_dir / files["metrics"], json.dumps(metrics, indent=2, allow_nan=False) + "\n"
    )
    return metrics


def write_predictions_csv(
    path: str | os.PathLike,
    image_paths: Sequence,
    log_probabilities: Any,
    patient_ids: Sequence | None = None,
    labels: Sequence | None = None,
    threshold: float = 0.5,
) -> Path:
    """The inference table: one row per patch.

    In: image paths, network outputs (``(N, 2)`` log-probabilities or logits, or a sequence of
    ``(2,)`` tensors), optional patient ids and labels (1 = lesion, 0 = healthy), the threshold on
    P(lesion).

    Out: a CSV at ``path`` with columns ``image_path``, [``patient_id``], [``label``], ``p_healthy``,
    ``p_lesion``, ``prediction`` (``"lesion"`` when P(lesion) >= threshold, else ``"healthy"``).
    Returns the path.
    """
    probabilities = class_probabilities(log_probabilities)
    n = probabilities.shape[0]
    image_paths = list(image_paths) if image_paths is not None else [""] * n
    if len(image_paths) != n:
        raise ValueError(f"{n} outputs but {len(image_paths)} image paths")
    for name, values in (("patient ids", patient_ids), ("labels", labels)):
        if values is not None and len(values) != n:
            raise ValueError(f"{n} outputs but {len(values)} {name}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = ["image_path"]
    columns += ["patient_id"] if patient_ids is not None else []
    columns += ["label"] if labels is not None else []
    columns += ["p_healthy", "p_lesion", "prediction"]

    def rows() -> Iterator[list]:
        for i in range(n):
            row = ["" if image_paths[i] is None else str(image_paths[i])]
            if patient_ids is not None:
                row.append("" if is_missing_id(patient_ids[i]) else str(patient_ids[i]))
            if labels is not None:
                row.append("" if labels[i] is None else int(label_value(labels[i])))
            p_lesion = float(probabilities[i, 1])
            yield row + [repr(float(probabilities[i, 0])), repr(p_lesion),
                         "lesion" if p_lesion >= threshold else "healthy"]

    _write_csv_atomically(path, columns, rows())
    return path

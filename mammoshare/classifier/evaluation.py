"""Evaluation of the healthy-vs-lesion patch classifier: metrics, patient-level bootstrap intervals,
figures, report files, and the Ignite pieces that plug them into MONAI workflows.

Conventions
-----------
- Labels: 1 = lesion, 0 = healthy (the project's datalists).
- Network output per patch: log-probabilities of shape ``(2,)``, index 0 = healthy, index 1 = lesion.
  The probabilities are taken as ``softmax(pred)``, which equals ``exp(pred)`` for log-probabilities
  and also accepts raw logits.
- Positive class: ``"lesion"`` by default (clinical convention). ``"healthy"`` reproduces the
  paper's convention (its code computed F1, AUROC and AUPRC with healthy as the positive class).
  AUROC does not depend on the choice; F1 and AUPRC do. Every output names the positive class used.

Pieces
------
- :func:`classification_metrics`: accuracy, F1, AUROC, AUPRC, confusion matrix (scikit-learn).
- :func:`bootstrap_intervals`: percentile confidence intervals from a cluster bootstrap that resamples
  patients, vectorised over the resamples.
- :func:`plot_roc_curve`, :func:`plot_pr_curve`, :func:`plot_confusion_matrix`: PNG figures (Agg).
- :func:`write_evaluation`: ``metrics.json``, ``predictions.csv`` and the three figures in one folder.
- :func:`write_predictions_csv`: the inference table (P(healthy), P(lesion), predicted class).
- :class:`ClassificationReport`: an Ignite handler that collects a MONAI evaluator's outputs and calls
  :func:`write_evaluation` when the run completes.
- :class:`PredictionsWriter`: an Ignite handler that collects outputs and calls
  :func:`write_predictions_csv` (inference, labels not needed).
- :class:`PositiveClassAUPRC`, :class:`PositiveClassAUROC`: Ignite epoch metrics for the validation
  key metric (``SupervisedEvaluator(key_val_metric={"val_auprc": PositiveClassAUPRC()})``).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.metrics import EpochMetric
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    f1_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

__all__ = [
    "POSITIVE_CLASSES",
    "CLASS_NAMES",
    "METRIC_NAMES",
    "positive_index",
    "class_probabilities",
    "classification_metrics",
    "bootstrap_intervals",
    "plot_roc_curve",
    "plot_pr_curve",
    "plot_confusion_matrix",
    "write_evaluation",
    "write_predictions_csv",
    "ClassificationReport",
    "PredictionsWriter",
    "positive_class_output_transform",
    "PositiveClassAUPRC",
    "PositiveClassAUROC",
]

logger = logging.getLogger(__name__)

POSITIVE_CLASSES = {"lesion": 1, "healthy": 0}
"""Positive class name -> its label (and its index in the network output)."""

CLASS_NAMES = {0: "healthy", 1: "lesion"}
"""Label -> class name."""

METRIC_NAMES = ("accuracy", "f1", "auroc", "auprc")


# ----------------------------------------------------------------------------------------------
# conventions and input checks
# ----------------------------------------------------------------------------------------------


def positive_index(positive_class: str) -> int:
    """``"lesion"`` -> 1, ``"healthy"`` -> 0: the label of the positive class, which is also its
    index in the network output. Anything else raises ValueError."""
    if not isinstance(positive_class, str) or positive_class not in POSITIVE_CLASSES:
        raise ValueError(
            f"positive_class must be one of {sorted(POSITIVE_CLASSES)} "
            f"('lesion' = clinical convention, 'healthy' = the paper's convention), got {positive_class!r}"
        )
    return POSITIVE_CLASSES[positive_class]


def _negative_class(positive_class: str) -> str:
    return CLASS_NAMES[1 - positive_index(positive_class)]


def class_probabilities(log_probabilities: Any) -> np.ndarray:
    """Network outputs (an ``(N, 2)`` array or tensor, or a sequence of ``(2,)`` tensors) of
    log-probabilities (or logits) -> ``(N, 2)`` float64 probabilities, column 0 = healthy,
    column 1 = lesion (``softmax`` along the last axis)."""
    if isinstance(log_probabilities, torch.Tensor):
        array = log_probabilities.detach().cpu().double().numpy()
    elif isinstance(log_probabilities, np.ndarray):
        array = log_probabilities.astype(np.float64)
    else:
        rows = [_as_pred_row(p) for p in log_probabilities]
        array = np.stack(rows) if rows else np.zeros((0, 2))
    array = array.reshape(-1, 2) if array.size else np.zeros((0, 2))
    if not np.all(np.isfinite(array)):
        raise ValueError("network outputs hold NaN or infinite values")
    shifted = array - array.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def _as_pred_row(pred: Any) -> np.ndarray:
    if isinstance(pred, torch.Tensor):
        row = pred.detach().cpu().double().numpy()
    else:
        row = np.asarray(pred, dtype=np.float64)
    if row.size != 2:
        raise ValueError(f"expected 2 values (healthy, lesion) per patch, got shape {tuple(row.shape)}")
    return row.reshape(2)


def _check_inputs(labels: Any, probabilities: Any) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels).reshape(-1)
    probabilities = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    if labels.shape != probabilities.shape:
        raise ValueError(f"{labels.size} labels but {probabilities.size} probabilities")
    if labels.size == 0:
        raise ValueError("no patches to evaluate")
    if not np.all(np.isin(labels, (0, 1))):
        bad = sorted({str(v) for v in labels[~np.isin(labels, (0, 1))]})[:5]
        raise ValueError(f"labels must be 0 (healthy) or 1 (lesion), found {bad}")
    if not np.all(np.isfinite(probabilities)):
        raise ValueError("probabilities hold NaN or infinite values")
    if probabilities.min() < 0.0 or probabilities.max() > 1.0:
        raise ValueError("probabilities must lie in [0, 1] (probability of the positive class)")
    return labels.astype(np.int64), probabilities


def _check_two_classes(labels: np.ndarray) -> None:
    present = sorted(set(labels.tolist()))
    if len(present) < 2:
        name = CLASS_NAMES[present[0]]
        raise ValueError(
            f"all {labels.size} patches are {name}: AUROC and AUPRC are undefined with one class only; "
            "evaluate on a set that holds both healthy and lesion patches"
        )


# ----------------------------------------------------------------------------------------------
# metrics
# ----------------------------------------------------------------------------------------------


def classification_metrics(
    labels: Any, probabilities: Any, positive_class: str = "lesion", threshold: float = 0.5
) -> dict:
    """Point estimates of the study's metrics.

    In: ``labels`` (N,) in the project's coding (1 = lesion, 0 = healthy); ``probabilities`` (N,) =
    P(positive class) per patch; the positive class; the decision threshold (a patch is predicted
    positive when ``probability >= threshold``).

    Out: ``{"positive_class", "positive_label", "negative_class", "threshold", "accuracy", "f1",
    "auroc", "auprc", "prevalence", "confusion_matrix": {"classes": [negative, positive],
    "matrix": [[TN, FP], [FN, TP]]} (rows = true, columns = predicted), "n_patches", "n_positive",
    "n_negative", "counts": {"healthy": n, "lesion": n}}``. Raises ValueError when the labels hold
    one class only (AUROC undefined).
    """
    pos_label = positive_index(positive_class)
    labels, probabilities = _check_inputs(labels, probabilities)
    _check_two_classes(labels)
    y_true = (labels == pos_label).astype(np.int64)
    y_pred = (probabilities >= threshold).astype(np.int64)
    matrix = confusion_matrix(y_true, y_pred, labels=[0, 1])
    n_pos = int(y_true.sum())
    return {
        "positive_class": positive_class,
        "positive_label": pos_label,
        "negative_class": _negative_class(positive_class),
        "threshold": float(threshold),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "f1": float(f1_score(y_true, y_pred, zero_division=0.0)),
        "auroc": float(roc_auc_score(y_true, probabilities)),
        "auprc": float(average_precision_score(y_true, probabilities)),
        "prevalence": n_pos / labels.size,
        "confusion_matrix": {
            "classes": [_negative_class(positive_class), positive_class],
            "matrix": matrix.astype(int).tolist(),
        },
        "n_patches": int(labels.size),
        "n_positive": n_pos,
        "n_negative": int(labels.size - n_pos),
        "counts": {name: int((labels == label).sum()) for label, name in CLASS_NAMES.items()},
    }


def _weighted_metrics(
    y_true: np.ndarray, scores: np.ndarray, weights: np.ndarray, threshold: float
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The four metrics for each row of ``weights`` (B, N): patch multiplicities of B resamples.

    Equal to scikit-learn's with ``sample_weight=weights[b]`` (ties of scores grouped like
    scikit-learn's curves). Returns ``({metric: (B,)}, valid (B,))``; ``valid`` is False where a
    resample holds one class only (its values are NaN).
    """
    y = y_true.astype(bool)
    order = np.argsort(-scores, kind="mergesort")
    s_sorted = scores[order]
    y_sorted = y[order]
    w_sorted = weights[:, order]
    ends = np.r_[np.flatnonzero(np.diff(s_sorted) != 0), s_sorted.size - 1]  # last index of each score
    tp = np.cumsum(w_sorted * y_sorted, axis=1)[:, ends]
    fp = np.cumsum(w_sorted * ~y_sorted, axis=1)[:, ends]
    n_pos = tp[:, -1]
    n_neg = fp[:, -1]
    valid = (n_pos > 0) & (n_neg > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        tpr = tp / n_pos[:, None]
        fpr = fp / n_neg[:, None]
        zeros = np.zeros((tp.shape[0], 1))
        tpr0 = np.hstack([zeros, tpr])
        fpr0 = np.hstack([zeros, fpr])
        auroc = np.sum(np.diff(fpr0, axis=1) * (tpr0[:, 1:] + tpr0[:, :-1]) / 2.0, axis=1)
        precision = np.where(tp + fp > 0, tp / np.where(tp + fp > 0, tp + fp, 1.0), 0.0)
        auprc = np.sum(np.diff(tpr0, axis=1) * precision, axis=1)

        predicted = scores >= threshold
        total = weights.sum(axis=1)
        correct = weights @ (predicted == y).astype(np.float64)
        tp_t = weights @ (predicted & y).astype(np.float64)
        fp_t = weights @ (predicted & ~y).astype(np.float64)
        fn_t = weights @ (~predicted & y).astype(np.float64)
        accuracy = correct / total
        denominator = 2.0 * tp_t + fp_t + fn_t
        f1 = np.where(denominator > 0, 2.0 * tp_t / np.where(denominator > 0, denominator, 1.0), 0.0)
    values = {"accuracy": accuracy, "f1": f1, "auroc": auroc, "auprc": auprc}
    for name in values:
        values[name] = np.where(valid, values[name], np.nan)
    return values, valid


def _cluster_codes(patient_ids: Sequence | None, n: int) -> tuple[np.ndarray, int, int]:
    """Patient ids -> (cluster index per patch, number of clusters, number of patches without id).

    A missing id (``None``, or ``patient_ids=None``) makes the patch its own cluster, with a warning."""
    if patient_ids is None:
        patient_ids = [None] * n
    patient_ids = list(patient_ids)
    if len(patient_ids) != n:
        raise ValueError(f"{n} patches but {len(patient_ids)} patient ids")
    codes = np.empty(n, dtype=np.int64)
    missing = 0
    # sorted ids: the cluster order (hence the resamples of a seed) does not depend on the patch order
    named = sorted({str(p) for p in patient_ids if not _missing_id(p)})
    mapping = {pid: i for i, pid in enumerate(named)}
    next_code = len(named)
    for i, pid in enumerate(patient_ids):
        if _missing_id(pid):
            codes[i] = next_code
            next_code += 1
            missing += 1
        else:
            codes[i] = mapping[str(pid)]
    if missing:
        warnings.warn(
            f"{missing} of {n} patches have no patient id: each of them counts as its own patient in the "
            "bootstrap, so the intervals may be too narrow if a patient has several patches",
            UserWarning,
            stacklevel=3,
        )
    return codes, next_code, missing


def _missing_id(pid: Any) -> bool:
    return pid is None or (isinstance(pid, float) and math.isnan(pid)) or (isinstance(pid, str) and pid == "")


def bootstrap_intervals(
    labels: Any,
    probabilities: Any,
    patient_ids: Sequence | None,
    positive_class: str = "lesion",
    n_bootstrap: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    threshold: float = 0.5,
) -> dict[str, dict]:
    """Percentile confidence intervals of accuracy, F1, AUROC and AUPRC from a cluster bootstrap.

    In: labels (1 = lesion, 0 = healthy), ``probabilities`` = P(positive class), ``patient_ids`` (one
    per patch; ``None`` entries, or ``None`` for all, make a patch its own cluster, with a warning).
    Each resample draws as many patients as there are, with replacement; all patches of a drawn
    patient come along, and a patient drawn twice counts twice. Resamples with one class only are
    skipped. The same seed gives the same intervals.

    Out: ``{metric: {"low", "high", "n_valid"}}`` for the four metrics; ``n_valid`` = resamples used
    (``low``/``high`` are None when none was valid).
    """
    positive_index(positive_class)
    labels, probabilities = _check_inputs(labels, probabilities)
    _check_two_classes(labels)
    if int(n_bootstrap) < 1:
        raise ValueError(f"n_bootstrap must be at least 1, got {n_bootstrap}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    n_bootstrap = int(n_bootstrap)
    y_true = labels == positive_index(positive_class)
    codes, n_clusters, _ = _cluster_codes(patient_ids, labels.size)

    rng = np.random.default_rng(seed)
    # bound the (chunk, N) weight matrices to about 4 million entries
    chunk = max(1, min(n_bootstrap, 4_000_000 // max(labels.size, 1)))
    collected = {name: [] for name in METRIC_NAMES}
    done = 0
    while done < n_bootstrap:
        b = min(chunk, n_bootstrap - done)
        draws = rng.integers(0, n_clusters, size=(b, n_clusters))
        offsets = (np.arange(b) * n_clusters)[:, None]
        cluster_counts = np.bincount((draws + offsets).ravel(), minlength=b * n_clusters).reshape(b, n_clusters)
        weights = cluster_counts[:, codes].astype(np.float64)
        values, valid = _weighted_metrics(y_true, probabilities, weights, threshold)
        for name in METRIC_NAMES:
            collected[name].append(values[name][valid])
        done += b

    alpha = (1.0 - level) / 2.0
    intervals = {}
    for name in METRIC_NAMES:
        values = np.concatenate(collected[name])
        if values.size:
            low, high = np.percentile(values, [100.0 * alpha, 100.0 * (1.0 - alpha)])
            intervals[name] = {"low": float(low), "high": float(high), "n_valid": int(values.size)}
        else:
            intervals[name] = {"low": None, "high": None, "n_valid": 0}
    return intervals


# ----------------------------------------------------------------------------------------------
# figures
# ----------------------------------------------------------------------------------------------


def _new_figure(size: tuple[float, float] = (5.0, 5.0)):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _save_figure(figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, format="png")
    return path


def _interval_text(interval: Mapping | None, level: float) -> str:
    if not interval or interval.get("low") is None:
        return ""
    return f" [{interval['low']:.3f}, {interval['high']:.3f}] ({100 * level:g}% CI)"


def plot_roc_curve(
    path: str | os.PathLike,
    labels: Any,
    probabilities: Any,
    positive_class: str = "lesion",
    interval: Mapping | None = None,
    level: float = 0.95,
) -> Path:
    """ROC curve of P(positive class) as a PNG at ``path`` (AUROC, and its interval if given, in the
    legend; the positive class in the title). Returns the path."""
    pos_label = positive_index(positive_class)
    labels, probabilities = _check_inputs(labels, probabilities)
    _check_two_classes(labels)
    y_true = (labels == pos_label).astype(np.int64)
    fpr, tpr, _ = roc_curve(y_true, probabilities)
    auroc = roc_auc_score(y_true, probabilities)
    figure = _new_figure()
    ax = figure.add_subplot(1, 1, 1)
    ax.plot(fpr, tpr, color="tab:blue", lw=2, label=f"AUROC = {auroc:.3f}{_interval_text(interval, level)}")
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="chance")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel(f"false positive rate ({_negative_class(positive_class)} patches called {positive_class})")
    ax.set_ylabel(f"true positive rate (sensitivity for {positive_class})")
    ax.set_title(f"ROC curve, positive class: {positive_class}")
    ax.legend(loc="lower right", fontsize="small")
    ax.set_aspect("equal")
    return _save_figure(figure, path)


def plot_pr_curve(
    path: str | os.PathLike,
    labels: Any,
    probabilities: Any,
    positive_class: str = "lesion",
    interval: Mapping | None = None,
    level: float = 0.95,
) -> Path:
    """Precision-recall curve of P(positive class) as a PNG at ``path`` (AUPRC, its interval if given
    and the no-skill baseline = prevalence of the positive class in the legend). Returns the path."""
    pos_label = positive_index(positive_class)
    labels, probabilities = _check_inputs(labels, probabilities)
    _check_two_classes(labels)
    y_true = (labels == pos_label).astype(np.int64)
    precision, recall, _ = precision_recall_curve(y_true, probabilities)
    auprc = average_precision_score(y_true, probabilities)
    prevalence = float(y_true.mean())
    figure = _new_figure()
    ax = figure.add_subplot(1, 1, 1)
    ax.step(recall, precision, where="post", color="tab:orange", lw=2,
            label=f"AUPRC = {auprc:.3f}{_interval_text(interval, level)}")
    ax.axhline(prevalence, color="grey", lw=1, ls="--", label=f"baseline (prevalence) = {prevalence:.3f}")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel(f"recall ({positive_class})")
    ax.set_ylabel(f"precision ({positive_class})")
    ax.set_title(f"Precision-recall curve, positive class: {positive_class}")
    ax.legend(loc="lower left", fontsize="small")
    ax.set_aspect("equal")
    return _save_figure(figure, path)


def plot_confusion_matrix(
    path: str | os.PathLike,
    labels: Any,
    probabilities: Any,
    positive_class: str = "lesion",
    threshold: float = 0.5,
) -> Path:
    """Confusion matrix at ``probability >= threshold`` as a PNG at ``path``: rows = true class,
    columns = predicted class, order [negative, positive]; counts and row percentages. Returns the path."""
    result = classification_metrics(labels, probabilities, positive_class, threshold)
    matrix = np.asarray(result["confusion_matrix"]["matrix"])
    classes = result["confusion_matrix"]["classes"]
    row_sums = matrix.sum(axis=1, keepdims=True)
    fractions = matrix / np.maximum(row_sums, 1)
    figure = _new_figure((4.6, 4.2))
    ax = figure.add_subplot(1, 1, 1)
    ax.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(2):
        for j in range(2):
            ax.text(j, i, f"{matrix[i, j]}\n({100 * fractions[i, j]:.1f}%)", ha="center", va="center",
                    color="white" if fractions[i, j] > 0.5 else "black")
    ax.set_xticks([0, 1], labels=classes)
    ax.set_yticks([0, 1], labels=classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"positive class: {positive_class}, threshold {threshold:g}\n"
                 f"accuracy {result['accuracy']:.3f}, F1 {result['f1']:.3f}", fontsize="medium")
    return _save_figure(figure, path)


# ----------------------------------------------------------------------------------------------
# report files
# ----------------------------------------------------------------------------------------------


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
    ``"n_missing_patient_ids"``, ``"files"`` and ``"extra"``.
    """
    pos_label = positive_index(positive_class)
    labels, probabilities = _check_inputs(labels, probabilities)
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
        _, n_clusters, n_missing = _cluster_codes(patient_ids, n)
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
            "files": files,
            "extra": dict(extra) if extra is not None else {},
        }
    )
    metrics = _json_ready(metrics)

    predicted_positive = probabilities >= threshold
    predictions = np.where(predicted_positive, pos_label, 1 - pos_label)
    columns = (["image_path"] if image_paths is not None else []) + [
        "patient_id", "label", f"p_{positive_class}", "prediction",
    ]
    csv_path = output_dir / files["predictions"]
    tmp = csv_path.with_name(csv_path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for i in range(n):
            row = [str(image_paths[i])] if image_paths is not None else []
            row += ["" if _missing_id(ids[i]) else str(ids[i]), int(labels[i]), repr(float(probabilities[i])),
                    int(predictions[i])]
            writer.writerow(row)
    os.replace(tmp, csv_path)

    plot_roc_curve(output_dir / files["roc_curve"], labels, probabilities, positive_class, intervals["auroc"], level)
    plot_pr_curve(output_dir / files["pr_curve"], labels, probabilities, positive_class, intervals["auprc"], level)
    plot_confusion_matrix(output_dir / files["confusion_matrix"], labels, probabilities, positive_class, threshold)
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
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for i in range(n):
            row = ["" if image_paths[i] is None else str(image_paths[i])]
            if patient_ids is not None:
                row.append("" if _missing_id(patient_ids[i]) else str(patient_ids[i]))
            if labels is not None:
                row.append("" if labels[i] is None else int(_scalar(labels[i])))
            p_lesion = float(probabilities[i, 1])
            row += [repr(float(probabilities[i, 0])), repr(p_lesion), "lesion" if p_lesion >= threshold else "healthy"]
            writer.writerow(row)
    os.replace(tmp, path)
    return path


# ----------------------------------------------------------------------------------------------
# engine outputs -> per-patch values
# ----------------------------------------------------------------------------------------------


def _scalar(value: Any) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"expected one label value per patch, got shape {tuple(value.shape)}")
        return float(value.detach().cpu().reshape(-1)[0].item())
    array = np.asarray(value)
    if array.size != 1:
        raise ValueError(f"expected one label value per patch, got shape {array.shape}")
    return float(array.reshape(-1)[0])


def _split_batched(data: Any, n: int | None = None) -> list:
    """A decollated list of per-sample dicts stays as it is; a batched dict (``decollate=False``) is
    split into per-sample dicts (tensors and lists of length B indexed, other values repeated)."""
    if data is None:
        return [{}] * (n or 0)
    if isinstance(data, (list, tuple)):
        return [d if isinstance(d, Mapping) else {} for d in data]
    if isinstance(data, Mapping):
        if n is None:
            pred = data.get("pred")
            n = int(pred.shape[0]) if isinstance(pred, torch.Tensor) and pred.ndim > 0 else 0
        samples = [{} for _ in range(n)]
        for key, value in data.items():
            if isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim > 0 and value.shape[0] == n:
                for i in range(n):
                    samples[i][key] = value[i]
            elif isinstance(value, (list, tuple)) and len(value) == n:
                for i in range(n):
                    samples[i][key] = value[i]
        return samples
    raise TypeError(f"unexpected engine data of type {type(data).__name__}")


def _string_or_none(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)) and len(value) == 1:  # a collated string left in a list
        value = value[0]
    if isinstance(value, torch.Tensor):
        value = value.item() if value.numel() == 1 else value.tolist()
    text = str(value)
    return text if text != "" else None


def _stack_output(output: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Engine output (decollated list of dicts or batched dict) -> (preds (B, 2) float, labels (B,)
    float or None if no sample holds a label)."""
    if isinstance(output, Mapping):
        preds = torch.as_tensor(output["pred"]).detach().float().reshape(-1, 2)
        label = output.get("label")
        labels = None if label is None else torch.as_tensor(label).detach().float().reshape(-1)
        if labels is not None and labels.numel() != preds.shape[0]:
            raise ValueError(f"{preds.shape[0]} predictions but {labels.numel()} labels in the engine output")
        return preds.cpu(), None if labels is None else labels.cpu()
    samples = _split_batched(output)
    preds = torch.as_tensor(np.stack([_as_pred_row(s["pred"]) for s in samples])).float() if samples else \
        torch.zeros((0, 2))
    raw = [s.get("label") for s in samples]
    if any(r is None for r in raw):
        return preds, None
    labels = torch.tensor([_scalar(r) for r in raw], dtype=torch.float32)
    return preds, labels


# ----------------------------------------------------------------------------------------------
# Ignite handlers
# ----------------------------------------------------------------------------------------------


class _Collector:
    """Collects per-patch network outputs, labels, patient ids and image paths of a MONAI workflow:
    reset at ``STARTED``, appended at ``ITERATION_COMPLETED``."""

    def __init__(self, pred_key: str = "pred", label_key: str = "label",
                 patient_key: str = "patient_id", image_path_key: str = "image_path"):
        self.pred_key = pred_key
        self.label_key = label_key
        self.patient_key = patient_key
        self.image_path_key = image_path_key
        self.reset()

    def reset(self, engine: Engine | None = None) -> None:
        self.preds: list[np.ndarray] = []
        self.labels: list[float | None] = []
        self.patient_ids: list[str | None] = []
        self.image_paths: list[str | None] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def collect(self, engine: Engine) -> None:
        outputs = _split_batched(engine.state.output)
        batch = engine.state.batch
        samples = _split_batched(batch, len(outputs)) if isinstance(batch, (list, tuple, Mapping)) else []
        if len(samples) != len(outputs):
            samples = [{}] * len(outputs)
        for out, sample in zip(outputs, samples):
            if self.pred_key not in out:
                raise KeyError(f"engine output has no {self.pred_key!r}: keys {sorted(out)}")
            self.preds.append(_as_pred_row(out[self.pred_key]))
            label = out.get(self.label_key)
            if label is None:
                label = sample.get(self.label_key)
            self.labels.append(None if label is None else _scalar(label))
            self.patient_ids.append(_string_or_none(sample.get(self.patient_key)))
            self.image_paths.append(_string_or_none(sample.get(self.image_path_key)))

    def completed(self, engine: Engine) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class ClassificationReport(_Collector):
    """Ignite handler: the evaluation files of a MONAI ``SupervisedEvaluator`` run.

    Collects, at every ``ITERATION_COMPLETED``, the per-patch ``"pred"`` (log-probabilities (2,))
    and ``"label"`` of ``engine.state.output`` and the ``"patient_id"`` / ``"image_path"`` strings of
    ``engine.state.batch`` (decollated lists of dicts, or batched dicts); at ``COMPLETED`` it calls
    :func:`write_evaluation` into ``output_dir``, logs the metrics with the positive class and keeps
    the result in ``self.result``. Patches without a patient id are their own bootstrap cluster
    (with a warning). ``extra`` is stored in ``metrics.json``.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        positive_class: str = "lesion",
        n_bootstrap: int = 1000,
        seed: int = 0,
        threshold: float = 0.5,
        extra: Mapping | None = None,
        **keys: str,
    ):
        positive_index(positive_class)
        super().__init__(**keys)
        self.output_dir = Path(output_dir)
        self.positive_class = positive_class
        self.n_bootstrap = int(n_bootstrap)
        self.seed = int(seed)
        self.threshold = float(threshold)
        self.extra = dict(extra) if extra is not None else {}
        self.result: dict | None = None

    def completed(self, engine: Engine) -> None:
        if not self.preds:
            logger.warning("ClassificationReport: no patches were evaluated; nothing written")
            return
        if any(label is None for label in self.labels):
            raise ValueError("ClassificationReport needs a label for every patch (1 = lesion, 0 = healthy)")
        probabilities = class_probabilities(np.stack(self.preds))[:, positive_index(self.positive_class)]
        image_paths = self.image_paths if any(p is not None for p in self.image_paths) else None
        if image_paths is not None:
            image_paths = ["" if p is None else p for p in image_paths]
        self.result = write_evaluation(
            self.output_dir,
            np.asarray(self.labels).round().astype(np.int64),
            probabilities,
            self.patient_ids,
            positive_class=self.positive_class,
            image_paths=image_paths,
            n_bootstrap=self.n_bootstrap,
            seed=self.seed,
            extra=self.extra,
            threshold=self.threshold,
        )
        r = self.result
        ci = r["confidence_intervals"]

        def fmt(name: str) -> str:
            low, high = ci[name]["low"], ci[name]["high"]
            interval = "" if low is None else f" [{low:.4f}, {high:.4f}]"
            return f"{name} {r[name]:.4f}{interval}"

        logger.info(
            "evaluation (positive class: %s, %d patches, %d patients, %g%% CI from %d patient-level bootstrap "
            "resamples): %s; written to %s",
            self.positive_class, r["n_patches"], r["n_patients"], 100 * r["ci_level"], r["n_bootstrap"],
            ", ".join(fmt(name) for name in METRIC_NAMES), self.output_dir,
        )


class PredictionsWriter(_Collector):
    """Ignite handler for inference: collects ``"pred"`` of ``engine.state.output`` and the
    ``"image_path"`` / ``"patient_id"`` of ``engine.state.batch`` (labels if present) and writes
    :func:`write_predictions_csv` to ``output_path`` at ``COMPLETED``."""

    def __init__(self, output_path: str | os.PathLike, threshold: float = 0.5, **keys: str):
        super().__init__(**keys)
        self.output_path = Path(output_path)
        self.threshold = float(threshold)

    def completed(self, engine: Engine) -> None:
        labels = self.labels if all(label is not None for label in self.labels) else None
        patient_ids = self.patient_ids if any(p is not None for p in self.patient_ids) else None
        write_predictions_csv(
            self.output_path,
            self.image_paths,
            np.stack(self.preds) if self.preds else np.zeros((0, 2)),
            patient_ids=patient_ids,
            labels=labels,
            threshold=self.threshold,
        )
        logger.info("predictions of %d patches written to %s", len(self.preds), self.output_path)


# ----------------------------------------------------------------------------------------------
# Ignite metrics
# ----------------------------------------------------------------------------------------------


def positive_class_output_transform(positive_class: str = "lesion") -> Callable:
    """An Ignite ``output_transform``: MONAI engine output (decollated list of ``{"pred", "label"}``
    dicts, or a batched dict) -> ``(P(positive class) (B,) float32, y_true (B,) int64)`` with
    ``y_true = (label == positive label)``."""
    pos = positive_index(positive_class)

    def transform(output: Any) -> tuple[torch.Tensor, torch.Tensor]:
        preds, labels = _stack_output(output)
        if labels is None:
            raise ValueError("the engine output holds no labels: validation metrics need them")
        probabilities = torch.softmax(preds.double(), dim=1)[:, pos].float()
        return probabilities, (labels.round().long() == pos).long()

    return transform


def _epoch_score(score: Callable, name: str, positive_class: str) -> Callable:
    def compute(probabilities: torch.Tensor, y_true: torch.Tensor) -> float:
        y = y_true.cpu().numpy().astype(np.int64)
        if y.size == 0 or y.min() == y.max():
            raise ValueError(
                f"{name} (positive class {positive_class}) is undefined: the evaluated patches hold one class only"
            )
        return float(score(y, probabilities.cpu().double().numpy()))

    return compute


class PositiveClassAUPRC(EpochMetric):
    """Ignite epoch metric: sklearn ``average_precision_score`` of P(positive class) over all
    patches of a run. Reads MONAI engine outputs (decollated ``{"pred", "label"}`` dicts) directly,
    so ``SupervisedEvaluator(key_val_metric={"val_auprc": PositiveClassAUPRC()})`` works."""

    def __init__(self, positive_class: str = "lesion", device: str | torch.device = "cpu"):
        self.positive_class = positive_class
        super().__init__(
            _epoch_score(average_precision_score, "AUPRC", positive_class),
            output_transform=positive_class_output_transform(positive_class),
            check_compute_fn=False,
            device=device,
        )


class PositiveClassAUROC(EpochMetric):
    """Ignite epoch metric: sklearn ``roc_auc_score`` of P(positive class) over all patches of a run
    (same input as :class:`PositiveClassAUPRC`; AUROC is the same for both positive classes)."""

    def __init__(self, positive_class: str = "lesion", device: str | torch.device = "cpu"):
        self.positive_class = positive_class
        super().__init__(
            _epoch_score(roc_auc_score, "AUROC", positive_class),
            output_transform=positive_class_output_transform(positive_class),
            check_compute_fn=False,
            device=device,
        )

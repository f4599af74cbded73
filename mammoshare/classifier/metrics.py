"""Metrics of the healthy-vs-lesion patch classifier: the project's conventions, point estimates
and patient-level bootstrap intervals.

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
  patients, vectorised over the resamples (:func:`weighted_metrics`).
- :func:`positive_targets`, :func:`check_inputs`, :func:`class_probabilities`: the input checks and
  conversions that the plots, report files and Ignite handlers share.

Figures: :mod:`mammoshare.classifier.plots`; files: :mod:`mammoshare.classifier.report`; Ignite
handlers and validation metrics: :mod:`mammoshare.classifier.handlers`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.metrics import accuracy_score, average_precision_score, confusion_matrix, f1_score, roc_auc_score

__all__ = [
    "POSITIVE_CLASSES",
    "CLASS_NAMES",
    "METRIC_NAMES",
    "positive_index",
    "negative_class",
    "class_probabilities",
    "as_pred_row",
    "label_value",
    "is_missing_id",
    "check_inputs",
    "check_two_classes",
    "positive_targets",
    "classification_metrics",
    "weighted_metrics",
    "cluster_codes",
    "bootstrap_intervals",
]

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


def negative_class(positive_class: str) -> str:
    """``"lesion"`` -> ``"healthy"`` and back."""
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
        rows = [as_pred_row(p) for p in log_probabilities]
        array = np.stack(rows) if rows else np.zeros((0, 2))
    array = array.reshape(-1, 2) if array.size else np.zeros((0, 2))
    if not np.all(np.isfinite(array)):
        raise ValueError("network outputs hold NaN or infinite values")
    shifted = array - array.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def as_pred_row(pred: Any) -> np.ndarray:
    """One network output (tensor or array of 2 values) -> ``(2,)`` float64; other sizes raise."""
    if isinstance(pred, torch.Tensor):
        row = pred.detach().cpu().double().numpy()
    else:
        row = np.asarray(pred, dtype=np.float64)
    if row.size != 2:
        raise ValueError(f"expected 2 values (healthy, lesion) per patch, got shape {tuple(row.shape)}")
    return row.reshape(2)


def check_inputs(labels: Any, probabilities: Any) -> tuple[np.ndarray, np.ndarray]:
    """Labels ``(N,)`` (0 or 1) and P(positive class) ``(N,)`` in [0, 1] -> ``(labels int64,
    probabilities float64)``; empty, mismatched, non-binary or non-finite inputs raise ValueError."""
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


def check_two_classes(labels: np.ndarray) -> None:
    """Raise ValueError when ``labels`` hold one class only (AUROC and AUPRC undefined)."""
    present = sorted(set(labels.tolist()))
    if len(present) < 2:
        name = CLASS_NAMES[present[0]]
        raise ValueError(
            f"all {labels.size} patches are {name}: AUROC and AUPRC are undefined with one class only; "
            "evaluate on a set that holds both healthy and lesion patches"
        )


def positive_targets(
    labels: Any, probabilities: Any, positive_class: str = "lesion"
) -> tuple[np.ndarray, np.ndarray]:
    """Labels (1 = lesion, 0 = healthy) and P(positive class) ``(N,)`` of a set holding both classes
    -> ``(y_true (N,) int64 with 1 = positive class, probabilities (N,) float64)``."""
    pos_label = positive_index(positive_class)
    labels, probabilities = check_inputs(labels, probabilities)
    check_two_classes(labels)
    return (labels == pos_label).astype(np.int64), probabilities


def label_value(value: Any) -> float:
    """One label (tensor, array or number holding one value) -> float; several values raise."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"expected one label value per patch, got shape {tuple(value.shape)}")
        return float(value.detach().cpu().reshape(-1)[0].item())
    array = np.asarray(value)
    if array.size != 1:
        raise ValueError(f"expected one label value per patch, got shape {array.shape}")
    return float(array.reshape(-1)[0])


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
    labels, probabilities = check_inputs(labels, probabilities)
    check_two_classes(labels)
    y_true = (labels == pos_label).astype(np.int64)
    y_pred = (probabilities >= threshold).astype(np.int64)
    matrix = confusion_matrix(y_true, y_pred, labels=[0, 1])
    n_pos = int(y_true.sum())
    return {
        "positive_class": positive_class,
        "positive_label": pos_label,
        "negative_class": negative_class(positive_class),
        "threshold": float(threshold),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "f1": float(f1_score(y_true, y_pred, zero_division=0.0)),
        "auroc": float(roc_auc_score(y_true, probabilities)),
        "auprc": float(average_precision_score(y_true, probabilities)),
        "prevalence": n_pos / labels.size,
        "confusion_matrix": {
            "classes": [negative_class(positive_class), positive_class],
            "matrix": matrix.astype(int).tolist(),
        },
        "n_patches": int(labels.size),
        "n_positive": n_pos,
        "n_negative": int(labels.size - n_pos),
        "counts": {name: int((labels == label).sum()) for label, name in CLASS_NAMES.items()},
    }


def weighted_metrics(
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


def cluster_codes(patient_ids: Sequence | None, n: int) -> tuple[np.ndarray, int, int]:
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
    named = sorted({str(p) for p in patient_ids if not is_missing_id(p)})
    mapping = {pid: i for i, pid in enumerate(named)}
    next_code = len(named)
    for i, pid in enumerate(patient_ids):
        if is_missing_id(pid):
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


def is_missing_id(pid: Any) -> bool:
    """True for a patient id that is None, NaN or empty."""
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
    labels, probabilities = check_inputs(labels, probabilities)
    check_two_classes(labels)
    if int(n_bootstrap) < 1:
        raise ValueError(f"n_bootstrap must be at least 1, got {n_bootstrap}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    n_bootstrap = int(n_bootstrap)
    y_true = labels == positive_index(positive_class)
    codes, n_clusters, _ = cluster_codes(patient_ids, labels.size)

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
        values, valid = weighted_metrics(y_true, probabilities, weights, threshold)
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

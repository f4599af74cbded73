"""Figures of a classifier evaluation as PNG files (matplotlib's Agg canvas, no display needed):
ROC curve, precision-recall curve and confusion matrix of P(positive class).

In (each function): the output path, labels ``(N,)`` (1 = lesion, 0 = healthy), ``probabilities``
``(N,)`` = P(positive class) per patch and the positive class (:mod:`mammoshare.classifier.metrics`).
``notes``: lines written in red under the figure (phantom data, a small test set). Out: the path
written.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from .metrics import classification_metrics, negative_class, positive_targets

__all__ = ["plot_roc_curve", "plot_pr_curve", "plot_confusion_matrix"]


def _new_figure(size: tuple[float, float] = (5.0, 5.0)):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _save_figure(figure, path: str | os.PathLike, notes: Sequence[str] = ()) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if notes:  # under the axes, in red, so no copy of the figure loses them
        height = 0.035 * len(notes) + 0.01
        figure.tight_layout(rect=(0, height, 1, 1))
        figure.text(0.5, 0.01, "\n".join(notes), ha="center", va="bottom", color="tab:red", fontsize="small", weight="bold")
    else:
        figure.tight_layout()
    figure.savefig(path, format="png")
    return path


def _interval_text(interval: Mapping | None, level: float) -> str:
    if not interval or interval.get("low") is None:
        return ""
    return f" [{interval['low']:.3f}, {interval['high']:.3f}] ({100 * level:g}% CI)"


def _plot_curve(
    path: str | os.PathLike, draw: Callable, axis_labels: tuple[str, str], title: str, legend_loc: str,
    notes: Sequence[str] = (),
) -> Path:
    """A curve (ROC or PR) drawn by ``draw(ax)`` on unit-square axes, labelled, saved at ``path``."""
    figure = _new_figure()
    ax = figure.add_subplot(1, 1, 1)
    draw(ax)
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    ax.set_title(title)
    ax.legend(loc=legend_loc, fontsize="small")
    ax.set_aspect("equal")
    return _save_figure(figure, path, notes)


def plot_roc_curve(path: str | os.PathLike, labels: Any, probabilities: Any, positive_class: str = "lesion",
                   interval: Mapping | None = None, level: float = 0.95, notes: Sequence[str] = ()) -> Path:
    """ROC curve of P(positive class) as a PNG at ``path`` (AUROC, and its interval if given, in the
    legend; the positive class in the title). Returns the path."""
    y_true, probabilities = positive_targets(labels, probabilities, positive_class)
    fpr, tpr, _ = roc_curve(y_true, probabilities)
    auroc = roc_auc_score(y_true, probabilities)

    def draw(ax) -> None:
        ax.plot(fpr, tpr, color="tab:blue", lw=2, label=f"AUROC = {auroc:.3f}{_interval_text(interval, level)}")
        ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="chance")

    axis_labels = (
        f"false positive rate ({negative_class(positive_class)} patches called {positive_class})",
        f"true positive rate (sensitivity for {positive_class})",
    )
    return _plot_curve(path, draw, axis_labels, f"ROC curve, positive class: {positive_class}", "lower right", notes)


def plot_pr_curve(path: str | os.PathLike, labels: Any, probabilities: Any, positive_class: str = "lesion",
                  interval: Mapping | None = None, level: float = 0.95, notes: Sequence[str] = ()) -> Path:
    """Precision-recall curve of P(positive class) as a PNG at ``path`` (AUPRC, its interval if given
    and the no-skill baseline = prevalence of the positive class in the legend). Returns the path."""
    y_true, probabilities = positive_targets(labels, probabilities, positive_class)
    precision, recall, _ = precision_recall_curve(y_true, probabilities)
    auprc = average_precision_score(y_true, probabilities)
    prevalence = float(y_true.mean())

    def draw(ax) -> None:
        ax.step(recall, precision, where="post", color="tab:orange", lw=2,
                label=f"AUPRC = {auprc:.3f}{_interval_text(interval, level)}")
        ax.axhline(prevalence, color="grey", lw=1, ls="--", label=f"baseline (prevalence) = {prevalence:.3f}")

    axis_labels = (f"recall ({positive_class})", f"precision ({positive_class})")
    return _plot_curve(
        path, draw, axis_labels, f"Precision-recall curve, positive class: {positive_class}", "lower left", notes
    )


def plot_confusion_matrix(
    path: str | os.PathLike,
    labels: Any,
    probabilities: Any,
    positive_class: str = "lesion",
    threshold: float = 0.5,
    notes: Sequence[str] = (),
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
    return _save_figure(figure, path, notes)

"""Tables 1 and 2 and the paired comparison: aggregation over seeds and formatting (pure functions).

A table cell is one (task, classifier, augmentation row, training fraction) over its seeds:
``mean(std)`` of the seeds' test metrics, e.g. ``0.942(.005)`` (std = sample standard deviation,
ddof 1; only the mean when one seed ran). The best mean of each column within a classifier's block
is bold (ties at the shown precision all bold), except a cell where a seed's classifier called every
test patch one class (a constant predictor: footnoted, never bold). A cell that did not run by design reads
``not run [n]`` and a cell where a seed failed reads ``failed [n]``; footnote ``[n]`` says why.
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .presets import CLASSIFIERS, FRACTIONS, ROWS, fraction_label

__all__ = [
    "METRICS",
    "METRIC_LABELS",
    "Group",
    "format_mean_std",
    "format_difference",
    "aggregate",
    "best_per_column",
    "markdown_table",
    "table_csv",
    "paired_comparison",
    "paired_markdown",
    "paired_csv",
]

METRICS = ("accuracy", "f1", "auroc", "auprc")
METRIC_LABELS = {"accuracy": "Accuracy", "f1": "F1", "auroc": "AUROC", "auprc": "AUPRC"}
DIGITS = 3
MAX_NOTE = 600


def _short(value: float, digits: int = DIGITS) -> str:
    """0.005 -> '.005' (the paper's std style); 1.2 -> '1.200'."""
    text = f"{abs(value):.{digits}f}"
    return text[1:] if text.startswith("0.") else text


def format_mean_std(mean: float, std: float | None, digits: int = DIGITS) -> str:
    """``0.9417, 0.0049 -> '0.942(.005)'``; without a std (one seed): ``'0.942'``."""
    text = f"{mean:.{digits}f}"
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return text
    return f"{text}({_short(std, digits)})"


def format_difference(mean: float, std: float | None, digits: int = DIGITS) -> str:
    """A signed difference: ``+0.012(.005)``."""
    text = f"{mean:+.{digits}f}"
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return text
    return f"{text}({_short(std, digits)})"


@dataclass
class Group:
    """One table cell: a (task, classifier, row, fraction) over its seeds."""

    status: str  # "done", "failed" or "not_run"
    seeds: int = 0
    done: int = 0
    mean: dict[str, float] = field(default_factory=dict)
    std: dict[str, float | None] = field(default_factory=dict)
    ci: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)  # mean CI over seeds
    reasons: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    constant: int = 0  # done seeds whose classifier called every test patch one class

    @property
    def note(self) -> str | None:
        if self.status == "done" and self.constant:
            return (f"constant predictor in {self.constant} of {self.done} seeds: every test patch called one class "
                    "(its accuracy is the class balance); never marked best")
        if self.status == "not_run":
            return "not run: " + "; ".join(self.reasons)
        if self.status == "failed":
            failed = self.seeds - self.done
            text = "; ".join(self.errors)
            if len(text) > MAX_NOTE:
                text = text[: MAX_NOTE - 3] + "..."
            return f"failed ({failed} of {self.seeds} seeds): {text}"
        return None


def _mean_ci(cells: list[dict], metric: str) -> tuple[float | None, float | None]:
    lows = [c["ci"][metric]["low"] for c in cells if c.get("ci") and c["ci"][metric]["low"] is not None]
    highs = [c["ci"][metric]["high"] for c in cells if c.get("ci") and c["ci"][metric]["high"] is not None]
    return (float(np.mean(lows)) if lows else None, float(np.mean(highs)) if highs else None)


def aggregate(cells: Iterable[dict]) -> dict[tuple, Group]:
    """Cells (dicts with ``task``, ``classifier``, ``row``, ``fraction``, ``seed``, ``status`` and,
    when done, ``metrics`` / ``ci``; ``reason`` or ``error`` otherwise) -> ``{(task, classifier, row,
    fraction): Group}``."""
    by_key: dict[tuple, list[dict]] = defaultdict(list)
    for cell in cells:
        by_key[(cell["task"], cell["classifier"], cell["row"], float(cell["fraction"]))].append(cell)
    groups = {}
    for key, members in by_key.items():
        done = [c for c in members if c["status"] == "done"]
        failed = [c for c in members if c["status"] == "failed"]
        group = Group(status="done", seeds=len(members), done=len(done),
                      constant=sum(bool(c.get("constant_prediction")) for c in done))
        if failed:
            group.status = "failed"
            group.errors = list(dict.fromkeys(str(c.get("error") or "unknown error") for c in failed))
        elif len(done) < len(members):
            group.status = "not_run"
            group.reasons = list(dict.fromkeys(str(c.get("reason") or "unknown") for c in members if c["status"] != "done"))
        if done:
            for metric in METRICS:
                values = np.array([c["metrics"][metric] for c in done], dtype=float)
                group.mean[metric] = float(values.mean())
                group.std[metric] = float(values.std(ddof=1)) if values.size > 1 else None
                group.ci[metric] = _mean_ci(done, metric)
        groups[key] = group
    return groups


def best_per_column(groups: dict[tuple, Group], task: str, classifier: str, fraction: float, metric: str,
                    rows: Sequence[str] | None = None) -> set[str]:
    """The rows whose mean, at the shown precision, is the best of the column within a classifier
    (a cell with a constant predictor is never the best)."""
    rows = rows or [r.key for r in ROWS]
    values = {
        row: round(groups[(task, classifier, row, fraction)].mean[metric], DIGITS)
        for row in rows
        if (task, classifier, row, fraction) in groups
        and groups[(task, classifier, row, fraction)].status == "done"
        and not groups[(task, classifier, row, fraction)].constant
        and metric in groups[(task, classifier, row, fraction)].mean
    }
    if not values:
        return set()
    best = max(values.values())
    return {row for row, value in values.items() if value == best}


class _Footnotes:
    def __init__(self):
        self.notes: dict[str, int] = {}

    def mark(self, text: str) -> int:
        if text not in self.notes:
            self.notes[text] = len(self.notes) + 1
        return self.notes[text]

    def lines(self) -> list[str]:
        return [f"[{n}] {text}" for text, n in self.notes.items()]


def _cell_text(group: Group | None, bold: bool, metric: str, notes: _Footnotes) -> str:
    if group is None:
        return f"not run [{notes.mark('not run: not planned')}]"
    if group.status == "done":
        text = format_mean_std(group.mean[metric], group.std[metric])
        if group.constant:
            return f"{text} [{notes.mark(group.note)}]"
        return f"**{text}**" if bold else text
    word = "not run" if group.status == "not_run" else "failed"
    return f"{word} [{notes.mark(group.note)}]"


def markdown_table(
    task: str,
    groups: dict[tuple, Group],
    title: str,
    caption: str = "",
    classifiers: Sequence[str] = tuple(CLASSIFIERS),
    fractions: Sequence[float] = FRACTIONS,
) -> str:
    """A table laid out like the paper's: rows per classifier and augmentation, columns accuracy, F1,
    AUROC, AUPRC for each training-data fraction; footnotes for cells that did not run or failed."""
    notes = _Footnotes()
    header = ["Classifier", "Augmentation"] + [
        f"{METRIC_LABELS[m]} ({fraction_label(f)})" for f in fractions for m in METRICS
    ]
    lines = [f"## {title}", ""]
    if caption:
        lines += [caption, ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|"]
    for classifier in classifiers:
        best = {(f, m): best_per_column(groups, task, classifier, f, m) for f in fractions for m in METRICS}
        for i, row in enumerate(ROWS):
            cells = [CLASSIFIERS[classifier] if i == 0 else "", row.label]
            for fraction in fractions:
                group = groups.get((task, classifier, row.key, fraction))
                for metric in METRICS:
                    cells.append(_cell_text(group, row.key in best[(fraction, metric)], metric, notes))
            lines.append("| " + " | ".join(cells) + " |")
    footnotes = notes.lines()
    if footnotes:
        lines += [""] + [line + "  " for line in footnotes]
    return "\n".join(lines) + "\n"


def table_csv(task: str, groups: dict[tuple, Group], classifiers: Sequence[str] = tuple(CLASSIFIERS),
              fractions: Sequence[float] = FRACTIONS) -> str:
    """The table as CSV, one line per classifier, augmentation and training fraction."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    columns = ["task", "classifier", "augmentation", "row", "training_data", "status", "seeds_done", "seeds"]
    for metric in METRICS:
        columns += [f"{metric}_mean", f"{metric}_std", f"{metric}_ci_low", f"{metric}_ci_high", f"{metric}_best"]
    writer.writerow(columns + ["note"])
    for classifier in classifiers:
        best = {(f, m): best_per_column(groups, task, classifier, f, m) for f in fractions for m in METRICS}
        for row in ROWS:
            for fraction in fractions:
                group = groups.get((task, classifier, row.key, fraction)) or Group(status="not_run", reasons=["not planned"])
                line = [task, CLASSIFIERS[classifier], row.label, row.key, fraction_label(fraction), group.status,
                        group.done, group.seeds]
                for metric in METRICS:
                    if group.status == "done":
                        low, high = group.ci.get(metric, (None, None))
                        std = group.std.get(metric)
                        line += [f"{group.mean[metric]:.6f}", "" if std is None else f"{std:.6f}",
                                 "" if low is None else f"{low:.6f}", "" if high is None else f"{high:.6f}",
                                 int(row.key in best[(fraction, metric)])]
                    else:
                        line += ["", "", "", "", 0]
                writer.writerow(line + [group.note or ""])
    return out.getvalue()


# ----------------------------------------------------------------------------------------------
# paired comparison against "None"
# ----------------------------------------------------------------------------------------------


def paired_comparison(cells: Iterable[dict], baseline: str = "none") -> list[dict]:
    """Every row against ``baseline`` over the seeds where both ran, per task, classifier, fraction
    and metric: mean paired difference (row - baseline), its sample std, the number of seeds where
    the row is better, and a paired t-test p-value (two-sided) when at least 3 seeds are paired."""
    from scipy import stats

    done: dict[tuple, dict] = {}
    for cell in cells:
        if cell["status"] == "done":
            done[(cell["task"], cell["classifier"], float(cell["fraction"]), cell["row"], cell["seed"])] = cell
    keys = sorted({(t, c, f, r) for (t, c, f, r, _) in done if r != baseline},
                  key=lambda k: (k[0], list(CLASSIFIERS).index(k[1]), -k[2], [r.key for r in ROWS].index(k[3])))
    results = []
    for task, classifier, fraction, row in keys:
        seeds = sorted(s for (t, c, f, r, s) in done if (t, c, f, r) == (task, classifier, fraction, row)
                       and (task, classifier, fraction, baseline, s) in done)
        if not seeds:
            continue
        for metric in METRICS:
            a = np.array([done[(task, classifier, fraction, row, s)]["metrics"][metric] for s in seeds], dtype=float)
            b = np.array([done[(task, classifier, fraction, baseline, s)]["metrics"][metric] for s in seeds], dtype=float)
            diff = a - b
            p_value = None
            if len(seeds) >= 3:
                if np.allclose(diff, diff[0]):
                    p_value = None if diff[0] != 0 else 1.0  # no spread: the t statistic is undefined
                else:
                    p_value = float(stats.ttest_rel(a, b).pvalue)
            results.append({
                "task": task, "classifier": classifier, "fraction": fraction, "row": row, "baseline": baseline,
                "metric": metric, "n_seeds": len(seeds), "seeds": seeds,
                "mean_difference": float(diff.mean()),
                "std_difference": float(diff.std(ddof=1)) if len(seeds) > 1 else None,
                "wins": int((diff > 0).sum()),
                "p_value": p_value,
            })
    return results


def paired_markdown(results: list[dict], title: str = "Paired comparison against None") -> str:
    rows_by_key = {r.key: r.label for r in ROWS}
    lines = [
        f"## {title}", "",
        "Per cell: mean paired difference row - None over the seeds where both ran (its std), the seeds where "
        "the row is better, and the two-sided paired t-test p-value when at least 3 seeds are paired.", "",
        "| Task | Classifier | Training data | Augmentation | seeds | "
        + " | ".join(f"Δ {METRIC_LABELS[m]}" for m in METRICS) + " |",
        "|---|---|---|---|---:|" + "---:|" * len(METRICS),
    ]
    grouped: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for result in results:
        grouped[(result["task"], result["classifier"], result["fraction"], result["row"])][result["metric"]] = result
    for (task, classifier, fraction, row), by_metric in grouped.items():
        n = next(iter(by_metric.values()))["n_seeds"]
        cells = []
        for metric in METRICS:
            r = by_metric.get(metric)
            if r is None:
                cells.append("")
                continue
            text = f"{format_difference(r['mean_difference'], r['std_difference'])}, {r['wins']}/{r['n_seeds']} better"
            if r["p_value"] is not None:
                text += f", p={r['p_value']:.3g}"
            cells.append(text)
        lines.append(f"| {task} | {CLASSIFIERS[classifier]} | {fraction_label(fraction)} | {rows_by_key[row]} | {n} | "
                     + " | ".join(cells) + " |")
    if not results:
        lines.append("| (no row and None ran on the same seeds) | | | | | | | | |")
    return "\n".join(lines) + "\n"


def paired_csv(results: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["task", "classifier", "training_data", "row", "baseline", "metric", "n_seeds", "mean_difference",
                     "std_difference", "wins", "p_value"])
    for r in results:
        writer.writerow([r["task"], r["classifier"], fraction_label(r["fraction"]), r["row"], r["baseline"], r["metric"],
                         r["n_seeds"], f"{r['mean_difference']:.6f}",
                         "" if r["std_difference"] is None else f"{r['std_difference']:.6f}", r["wins"],
                         "" if r["p_value"] is None else f"{r['p_value']:.6g}"])
    return out.getvalue()

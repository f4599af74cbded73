"""The study's outputs: tables (Markdown and CSV), ``runs.json``, the paired comparison, the plot of
deltas against "None", and ``report.md``."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .presets import CLASSIFIERS, FRACTIONS, GENERATORS, ROWS, TASK_TABLES, TASKS, fraction_label
from .tables import (
    METRIC_LABELS,
    METRICS,
    aggregate,
    markdown_table,
    paired_comparison,
    paired_csv,
    paired_markdown,
    table_csv,
)

__all__ = ["write_outputs", "environment", "plot_deltas", "deviations", "DEVIATIONS", "DEMO_STATEMENT", "audit_markdown",
           "audit_figure", "plot_audits", "AUDIT_FIGURE", "generator_family"]

TASK_NAMES = {"all": "All lesions", "mass": "Masses"}

DEMO_STATEMENT = (
    "**These demo numbers mean nothing clinically.** The demo preset trains on PHANTOM data (synthetic "
    "breast-shaped images with drawn lesions, written by `mammoshare phantom`), with tiny GANs (a few epochs, "
    "ngf = ndf = 8), a few dozen synthetic patches, a CNN trained for 2 epochs of 8 batches and a Swin-T "
    "trained on one batch, and a test set of a few dozen patches. It shows that every stage of the pipeline runs end to end; "
    "it says nothing about whether shared generators help. Run `--preset paper` on real data for that."
)

#: the red note of the study's figures on phantom data
PHANTOM_NOTE = "PHANTOM data: a demo, no clinical meaning"
#: the study report's figure of every audited generator's headline figures, next to report.md
AUDIT_FIGURE = "audit_figures.png"
#: the generators of the study that are not GANs (``GENERATORS`` keys); the others are GANs
_FAMILIES = {"ddpm": "diffusion"}
_FAMILY_STYLE = {"GAN": {"color": "#1f77b4", "hatch": None}, "diffusion": {"color": "#ff7f0e", "hatch": "//"}}
#: the panels of the audit figure: (family, figure, title, y label, chance line or None, scale of the values)
_AUDIT_PANELS = (
    ("memorisation", "copy_rate_pixel", "Copy rate (pixel NCC)", "share of samples (%)", None, 100.0),
    ("membership", "distance_attack_pixel_auc", "Distance-attack AUC (pixel)", "AUC", 0.5, 1.0),
    ("diversity", "msssim_synthetic_pairs", "MS-SSIM of synthetic pairs", "mean MS-SSIM (higher: more alike)", None, 1.0),
    ("fidelity", "frechet_distance", "Fréchet distance to train", "Fréchet distance (features)", None, 1.0),
)


def generator_family(generator: str) -> str:
    """``"diffusion"`` or ``"GAN"``: the family of a study generator (a ``GENERATORS`` key)."""
    return _FAMILIES.get(generator, "GAN")


def deviations(preset=None) -> list[tuple[str, str, str]]:
    """``(topic, this implementation (and the original code), the option that changes it)`` for the
    report; the settings that a preset chooses (calcifications, windowing, GAN subsets) are read from it."""
    from transforms import RandPatchJitter

    jitter = RandPatchJitter()
    calcifications = getattr(preset, "calcifications", "roi")
    apply_voi = getattr(preset, "apply_voi", None)
    gan_subsets = list(getattr(preset, "gan_subsets", ("training", "validation", "test")))
    voi = ("each dataset's default: no VOI LUT / window for INbreast, CBIS-DDSM and BCDR" if apply_voi is None
           else f"apply_voi {bool(apply_voi)} for every dataset")
    return [
        ("Lesion patch boxes",
         "The original code subtracted the y margin twice, so GAN training crops put the lesion near the bottom "
         "centre. Here every lesion box is the lesion's bounding box with a 60 px margin on every side (at least "
         "128 px), squared and shifted inside the image (the paper's description).",
         "No option; the original crop is a defect."),
        ("Physical scale",
         "Margins and boxes are in pixels, as in the paper (60 px margin, 128 px healthy boxes and smallest lesion "
         "box), so they cover different tissue sizes at different pixel spacings. Every datalist record states its "
         "pixel spacing.",
         "`mammoshare datalist --margin-mm MM --healthy-box-mm MM` (with `--default-pixel-spacing MM` for files "
         "without one); the study uses the paper's pixels."),
        ("INbreast calcifications",
         f"This study: one lesion patch per **{calcifications}**"
         + (" (every calcification ROI, the paper's count: 3028 lesion patches)." if calcifications == "roi" else
            " (calcification ROIs within 5 mm merged; fewer lesion patches than the paper's 3028).")
         + " The counts per lesion type are in the data section.",
         "`mammoshare datalist --calcifications roi|cluster` (the preset's `calcifications`)."),
        ("Classifier translation and zoom",
         "The original translated the box in the mammogram by min(-0.33 L, N(0, 0.25 L)), i.e. always negative, "
         "and zoomed before the area resize. Here the jitter acts on the canonical patch, the same for every "
         f"source: an offset u ~ N(0, {jitter.shift_std:g}) of the crop side in x and y (clipped at "
         f"{jitter.max_shift:g}) with the zoom-in it needs, 1 + 2 max|u| + |N(0, {jitter.zoom_std:g})| (at most "
         f"{jitter.max_zoom:g}), crop only, never padded: the lesion centre moves with a standard deviation of "
         "about 10% of the side (12.7 px of 128) in either direction. Synthetic patches have no surrounding tissue, "
         "so no source is jittered in the mammogram; every patch's view is a crop of its own box.",
         "The classifier bundle's `--jitter` (RandPatchJitterd's arguments), e.g. `--jitter \"{'shift_std': 0.25, "
         "'max_shift': 0.5}\"` for the original's spread N(0, 0.25 L) (crop only, so up to 2x zoom-in); the one-sided "
         "shift is a defect and is not reproduced."),
        ("Healthy boxes",
         "The original code swapped the x and y axes of healthy boxes (until March 2022). Here x = column and "
         "y = row everywhere; healthy boxes lie inside the breast with at most 40% background.",
         "No option; the swap is a defect."),
        ("Windowing",
         f"As the original: the raw (modality LUT) values are min-max scaled per image ({voi}); a display window "
         "can clip the dense breast and lose tissue contrast. Each record states its apply_voi.",
         "`mammoshare datalist --apply-voi yes`, or `--apply_voi True` of any bundle that reads mammograms."),
        ("Synthetic and real patch decoding",
         "Every patch, real or synthetic, healthy or lesion, becomes a canonical 128x128 patch first: a real "
         "patch is cropped from its mammogram (scaled per image) and area-resized (cv2.INTER_AREA); a synthetic "
         "patch file is decoded by its encoding (8-bit / 255), never stretched, so it reads back as the generator "
         "wrote it (tested: real canonical patches written as synthetic PNGs read back within 1/255, also after "
         "the jitter). A classifier cannot tell sources apart by their pre-processing.",
         "No option."),
        ("Swin-T input",
         "Swin-T's 224x224 input is the 128 canonical patch resized with cv2.INTER_AREA (area-weighted: each "
         "output pixel is the mean of the input area it covers), grey stacked to 3 channels; the paper resized "
         "the original crop to 224. Synthetic patches exist at 128 only, so resizing the original crop would "
         "treat sources differently.",
         "No option."),
        ("WGAN-GP critic updates",
         "The original code silently dropped n_critic = 5 (about 2 critic steps per generator step). Here the "
         "critic takes 5 updates, each on a fresh real batch, per generator update (the paper).",
         "`--n_critic 2` of the wgangp_bcdr bundle comes close to the original behaviour (the study does not "
         "expose it)."),
        ("Centre B's GAN data",
         f"Centre B tests no classifier, so its GANs train on the lesion patches of the subsets {gan_subsets} of "
         "its datalist (all of BCDR, as the original), and the Real BCDR row draws from all subsets too.",
         "`--subsets \"['training']\"` of the GAN bundles narrows it (their default is all subsets)."),
        ("Audit holdout",
         "The privacy and quality audit (`mammoshare audit`) of each study-trained generator needs real patches "
         "of patients the generator never saw. Centre B's GANs train on all its patients, so the audit's holdout "
         "is centre A's lesion patches of the same task (every subset): unseen patients, but of another centre. "
         "Thresholds calibrated train vs holdout then include the centre shift: copy rates and authenticity stay "
         "meaningful (a copy is far closer to its training patch than any other patch), but the membership "
         "attacks and the fidelity baselines measure centre B vs centre A as much as members vs non-members, so "
         "a membership or fidelity 'warn'/'fail' here is not evidence of leakage on its own.",
         "Train the GANs on `--subsets \"['training']\"` of BCDR and run `mammoshare audit` with the BCDR "
         "validation and test patients as `--holdout` (the study does not expose it)."),
        ("Synthetic patches in the sampler",
         "In one committed version of the original code the weighted sampler never drew synthetic samples. Here "
         "the training set lists every added patch explicitly and a plain shuffled loader goes through all of them "
         "every epoch.",
         "No option; the bug is not reproduced."),
        ("Counts and balance",
         "Synthetic patches: the preset's count (paper 1200) in equal shares per source (600 + 600 for 'Both'). "
         "Real BCDR: 1148 (all lesions) / 500 (masses) lesion patches drawn with the seed from all BCDR subsets. "
         "Balance: as many healthy patches of centre A as lesion patches, plus one extra healthy patch per added "
         "lesion (new healthy boxes are sampled from centre A's training images when there are too few). The 50% "
         "rows draw a random half of centre A's training patients with the seed. GANs are trained once per task "
         "and sampled once per generator; the seeds vary the classifier (initialisation, order, draws).",
         "`--synthetic_count` / `--real_lesion_count` of the classifier bundle (the study uses the preset's)."),
        ("Positive class",
         "F1 and AUPRC are computed with lesion as the positive class (the clinical convention); the original "
         "code used healthy as the positive class. AUROC is the same either way. Every metrics file names the "
         "positive class.",
         "`mammoshare study --positive-class healthy` (the paper's convention; it also changes the validation "
         "AUPRC that picks the best checkpoint)."),
        ("Patient split",
         "A seeded patient-level split ~70/15/15 stratified by label and breast density (largest remainder), "
         "instead of the original's independent per-patient draws.",
         "`mammoshare datalist --split FILE` takes an external split (the study builds its datalists with the "
         "seeded split)."),
    ]


#: the deviations under the default settings (the paper preset's)
DEVIATIONS = deviations()


def environment(device: str | None, gpus: list[int]) -> dict[str, Any]:
    import monai
    import torch

    from .. import __version__

    info = {
        "mammoshare": __version__,
        "monai": monai.__version__,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "device": device or ("cuda" if torch.cuda.is_available() else "cpu"),
        "parallel_workers": [f"GPU {g}" for g in gpus],
    }
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def _cell_entry(cell: dict, records: dict[str, dict], study_dir: Path) -> dict:
    entry = {k: cell[k] for k in ("id", "label", "task", "classifier", "fraction", "row", "seed")}
    if cell["status"] == "not_run":
        return {**entry, "status": "not_run", "reason": cell["reason"]}
    record = records.get(cell["spec_id"], {})
    outputs = record.get("outputs") or {}
    timings = dict(outputs.get("timings") or {})
    if record.get("seconds") is not None:
        timings["total_s"] = record["seconds"]
    return {
        **entry,
        "status": record.get("status", "failed"),
        "ran_on": record.get("ran_on"),
        "error": record.get("error"),
        "reused": record.get("reused", False),
        "dir": str(Path(record.get("dir", "")) if record.get("dir") else ""),
        "hash": record.get("hash"),
        "config": record.get("config"),
        "metrics": outputs.get("metrics"),
        "ci": outputs.get("ci"),
        "ci_level": outputs.get("ci_level"),
        "positive_class": outputs.get("positive_class"),
        "training_counts": outputs.get("training_counts"),
        "test_counts": outputs.get("test_counts"),
        "constant_prediction": outputs.get("constant_prediction"),
        "test_warnings": outputs.get("test_warnings") or [],
        "best_validation": outputs.get("best_validation"),
        "timings": timings,
        "started": record.get("started"),
        "finished": record.get("finished"),
        "warnings": record.get("warnings", [])[:20],
    }


def plot_deltas(cells: list[dict], path: Path, tasks=TASKS, notes: Sequence[str] = ()) -> Path:
    """Bars: mean over seeds of (row - None) per metric, classifier and training fraction; whiskers: the
    row's 95% bootstrap interval (averaged over seeds) minus None's mean. ``notes``: lines in red at
    the top (phantom data, small test sets)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = aggregate(cells)
    rows = [r for r in ROWS if r.key != "none"]
    series = [(c, f) for c in CLASSIFIERS for f in FRACTIONS]
    colours = ["#1f77b4", "#aec7e8", "#d62728", "#ff9896"]
    fig, axes = plt.subplots(len(tasks), len(METRICS), figsize=(4.2 * len(METRICS), 3.6 * len(tasks)), squeeze=False)
    width = 0.8 / len(series)
    legend = False
    for ti, task in enumerate(tasks):
        for mi, metric in enumerate(METRICS):
            ax = axes[ti][mi]
            drawn = False
            for si, (classifier, fraction) in enumerate(series):
                base = groups.get((task, classifier, "none", fraction))
                xs, heights, lower, upper = [], [], [], []
                for ri, row in enumerate(rows):
                    group = groups.get((task, classifier, row.key, fraction))
                    if base is None or group is None or base.status != "done" or group.status != "done":
                        continue
                    delta = group.mean[metric] - base.mean[metric]
                    low, high = group.ci.get(metric, (None, None))
                    xs.append(ri + (si - (len(series) - 1) / 2) * width)
                    heights.append(delta)
                    lower.append(max(0.0, group.mean[metric] - low) if low is not None else 0.0)
                    upper.append(max(0.0, high - group.mean[metric]) if high is not None else 0.0)
                if xs:
                    drawn = True
                    ax.bar(xs, heights, width, yerr=[lower, upper], capsize=2, color=colours[si % len(colours)],
                           label=f"{CLASSIFIERS[classifier]} {fraction_label(fraction)}", error_kw={"elinewidth": 0.8})
            ax.axhline(0.0, color="black", linewidth=0.8)
            ax.set_xticks(range(len(rows)))
            ax.set_xticklabels([r.label.split(":")[0] for r in rows], rotation=35, ha="right", fontsize=8)
            ax.set_title(f"{TASK_NAMES[task]}: Δ {METRIC_LABELS[metric]}", fontsize=9)
            if not drawn:
                ax.text(0.5, 0.5, "no cell ran\n(with None)", ha="center", va="center", transform=ax.transAxes,
                        fontsize=9, color="grey")
            if mi == 0:
                ax.set_ylabel("row - None")
            if drawn and not legend:
                handles, labels = ax.get_legend_handles_labels()
                legend = True
    fig.suptitle("Difference to 'None' (mean over seeds); whiskers: the row's 95% bootstrap interval", fontsize=10)
    if legend:
        fig.legend(handles, labels, loc="lower center", ncol=len(series), fontsize=8, frameon=False)
    top = 1.0
    if notes:
        fig.text(0.01, 0.995, "\n".join(notes), ha="left", va="top", color="tab:red", fontsize=9, weight="bold")
        top = 1.0 - 0.045 * len(notes) / len(tasks)
    fig.tight_layout(rect=(0, 0.04 if legend else 0, 1, top))
    return _save_figure(fig, path)


def _write(path: Path, text: str) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def _counts_text(table: dict[str, dict[str, int]] | None) -> tuple[str, str]:
    if not table:
        return "", ""

    def one(cls: str) -> str:
        items = table.get(cls, {})
        return f"{sum(items.values())} (" + ", ".join(f"{k} {v}" for k, v in items.items()) + ")"

    return one("lesion"), one("healthy")


def _phantom(plan) -> bool:
    return plan.inputs.centre_a_option.startswith("the demo")


def _test_warnings(cells: list[dict], task: str) -> list[str]:
    """The small-test-set warnings of a task's cells (each once)."""
    return list(dict.fromkeys(w for c in cells if c["task"] == task for w in c.get("test_warnings") or []))


def _caption(plan, options, task: str, cells: list[dict]) -> str:
    n = len(plan.seeds)
    centre_a = options.centre_a_format if hasattr(options, "centre_a_format") else "inbreast"
    warned = _test_warnings(cells, task)
    return (
        f"Centre A ({centre_a}{', PHANTOM data' if _phantom(plan) else ''}) test "
        f"subset, task {task!r}. Cells: mean(std) over {n} seed{'s' if n != 1 else ''} (std: sample standard "
        f"deviation; the mean alone for one seed); positive class: {options.positive_class}; bold: the best of the "
        f"column for each classifier (never a constant predictor). Preset {plan.preset.name}."
        + "".join(f"\n\n**WARNING: the test subset has {w}.**" for w in warned)
    )


def write_outputs(plan, records: dict[str, dict], options, stage_seconds: dict[str, float], seconds: float,
                  ran: list[str], reused: list[str], gpus: list[int]) -> dict[str, Any]:
    """Write every output file of the study; returns ``{name: path}`` plus ``"_cells"`` (the cells)."""
    study_dir = plan.study_dir
    for spec in plan.specs:
        if spec["id"] in records:
            records[spec["id"]].setdefault("dir", spec["dir"])
    cells = [_cell_entry(cell, records, study_dir) for cell in plan.cells]
    groups = aggregate(cells)
    outputs: dict[str, Any] = {}
    tables_md = {}
    for task in TASKS:
        stem, title = TASK_TABLES[task]
        text = markdown_table(task, groups, title, _caption(plan, options, task, cells))
        tables_md[task] = text
        outputs[f"{stem}.md"] = _write(study_dir / f"{stem}.md", text)
        outputs[f"{stem}.csv"] = _write(study_dir / f"{stem}.csv", table_csv(task, groups))
    paired = paired_comparison(cells)
    paired_md = paired_markdown(paired)
    outputs["paired_comparison.md"] = _write(study_dir / "paired_comparison.md", paired_md)
    outputs["paired_comparison.csv"] = _write(study_dir / "paired_comparison.csv", paired_csv(paired))
    phantom_note = [PHANTOM_NOTE] if _phantom(plan) else []
    notes = phantom_note + [
        f"WARNING ({TASK_NAMES[task]} test subset): {w.split(':')[0]}" for task in TASKS for w in _test_warnings(cells, task)]
    outputs["deltas_vs_none.png"] = plot_deltas(cells, study_dir / "deltas_vs_none.png", notes=notes)
    audit_png = plot_audits(records, study_dir / AUDIT_FIGURE, notes=phantom_note)
    if audit_png is not None:
        outputs[AUDIT_FIGURE] = audit_png
    else:
        (study_dir / AUDIT_FIGURE).unlink(missing_ok=True)  # no audit done (any more): no stale figure

    env = environment(options.device, gpus)
    failed = [r for r in records.values() if r.get("status") == "failed"]
    stages = [
        {k: v for k, v in records[s["id"]].items() if k != "warnings"} | {"warnings": records[s["id"]].get("warnings", [])[:20]}
        for s in plan.specs if s["kind"] != "cell" and s["id"] in records
    ]
    study = {
        "preset": plan.preset.as_dict(),
        "written": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "study_dir": str(study_dir),
        "seeds": plan.seeds,
        "selection": plan.selection,
        "positive_class": options.positive_class,
        "centre_a_format": options.centre_a_format,
        "inputs": {
            "centre_a": str(plan.inputs.centre_a_root), "centre_a_from": plan.inputs.centre_a_option,
            "bcdr": str(plan.inputs.bcdr_root) if plan.inputs.bcdr_root else None, "bcdr_from": plan.inputs.bcdr_option,
            "bcdr_generators": {t: {g: str(p) for g, p in files.items()} for t, files in plan.inputs.generator_files.items()},
            "optimam_generator": str(plan.inputs.optimam_file) if plan.inputs.optimam_file else None,
            "optimam_from": plan.inputs.optimam_option if plan.inputs.optimam_file else None,
            "optimam_reason": None if plan.inputs.optimam_file else plan.inputs.optimam_reason,
            "notes": plan.inputs.notes,
        },
        "environment": env,
        "this_invocation": {
            "seconds": round(seconds, 3),
            "seconds_per_phase": {k: round(v, 3) for k, v in stage_seconds.items()},
            "stages_run": ran,
            "stages_reused": len(reused),
        },
        "exit_status": 1 if failed else 0,
    }
    runs = {"study": study, "stages": stages, "cells": cells, "paired_comparison": paired}
    outputs["runs.json"] = _write(study_dir / "runs.json", json.dumps(runs, indent=1, default=str) + "\n")
    report = _report(plan, options, records, cells, tables_md, paired_md, env, stage_seconds, seconds, ran, reused)
    outputs["report.md"] = _write(study_dir / "report.md", report)
    outputs["_cells"] = cells
    return outputs


def _value(figures: dict, family: str, name: str, interval: bool = False, baseline: bool = False) -> str:
    fig = figures.get(family, {}).get(name)
    if not fig or fig.get("value") is None:
        return "–"
    text = f"{fig['value']:.3g}"
    if interval and fig.get("interval"):
        low, high = fig["interval"]
        text += f" [{low:.3g}, {high:.3g}]"
    if baseline and fig.get("baseline") is not None:
        text += f" (real {fig['baseline']:.3g})"
    return text


def _done_audits(records: dict[str, dict]) -> list[dict]:
    return sorted((r for r in records.values() if r.get("kind") == "audit" and r.get("status") == "done"),
                  key=lambda r: r["id"])


def audit_figure(records: dict[str, dict], notes: Sequence[str] = ()):
    """The matplotlib figure of :data:`AUDIT_FIGURE`: one group per audited generator (done audit
    stages, in the order of the report's table), coloured and hatched by family (GAN / diffusion),
    in four panels: copy rate (pixel) and distance-attack AUC with their 95% intervals (chance 0.5),
    MS-SSIM of synthetic pairs and Fréchet distance with their intervals beside the real baseline
    (a black diamond). ``notes``: lines in red at the top (phantom data). Returns ``(figure, labels)``;
    None when no audit is done."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    audits = _done_audits(records)
    if not audits:
        return None, []
    labels = [f"{GENERATORS[r['config']['generator']][2]}\n{TASK_NAMES.get(r['config']['task'], r['config']['task'])}"
              for r in audits]
    families = [generator_family(r["config"]["generator"]) for r in audits]
    x = np.arange(len(audits))
    width = max(4.0, 0.95 * len(audits) + 1.8)
    fig, axes = plt.subplots(2, 2, figsize=(2 * width, 7.6), squeeze=False)
    for ax, (family, name, title, ylabel, reference, scale) in zip(axes.flat, _AUDIT_PANELS):
        for i, (r, fam) in enumerate(zip(audits, families)):
            fig_data = r["outputs"]["summary"]["figures"].get(family, {}).get(name)
            if not fig_data or fig_data.get("value") is None:
                ax.text(i, 0, "n/a", ha="center", va="bottom", fontsize=8, color="grey")
                continue
            value = fig_data["value"] * scale
            low, high = (v * scale for v in fig_data.get("interval") or (fig_data["value"], fig_data["value"]))
            style = _FAMILY_STYLE[fam]
            ax.bar(i, value, 0.6, color=style["color"], hatch=style["hatch"], edgecolor="black", linewidth=0.6,
                   yerr=[[max(0.0, value - low)], [max(0.0, high - value)]], capsize=3, error_kw={"elinewidth": 0.9})
            top = max(value, high)
            if fig_data.get("baseline") is not None and reference is None:
                ax.plot(i, fig_data["baseline"] * scale, marker="D", color="black", markersize=5, linestyle="none")
                top = max(top, fig_data["baseline"] * scale)
            ax.annotate(fig_data.get("verdict", ""), (i, top), textcoords="offset points", xytext=(0, 4),
                        ha="center", va="bottom", fontsize=7)
        if reference is not None:
            ax.axhline(reference * scale, color="black", linestyle="--", linewidth=0.9)
        ax.set_xticks(x)
        ax.set_xticklabels(labels, fontsize=7)
        ax.set_xlim(-0.6, len(audits) - 0.4)
        ax.margins(y=0.18)
        ax.set_ylim(bottom=0)
        ax.set_title(title, fontsize=9)
        ax.set_ylabel(ylabel, fontsize=8)
    from matplotlib.lines import Line2D

    shown = [f for f in _FAMILY_STYLE if f in families]
    handles = [Patch(facecolor=_FAMILY_STYLE[f]["color"], hatch=_FAMILY_STYLE[f]["hatch"], edgecolor="black", label=f)
               for f in shown]
    handles.append(Line2D([], [], marker="D", color="black", linestyle="none", markersize=5,
                          label="real baseline (copy rate: 1% for unseen patients)"))
    handles.append(Line2D([], [], color="black", linestyle="--", linewidth=0.9, label="chance (AUC 0.5)"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    top = 1.0
    if notes:
        fig.text(0.01, 0.995, "\n".join(notes), ha="left", va="top", color="tab:red", fontsize=9, weight="bold")
        top = 1.0 - 0.03 * len(notes)
    fig.suptitle("Audit of the study's generators: bars = value, whiskers = 95% interval, text = that figure's verdict", fontsize=10,
                 y=top - 0.005, va="top")
    top -= 0.03
    fig.tight_layout(rect=(0, 0.04, 1, top))
    return fig, labels


def plot_audits(records: dict[str, dict], path: Path, notes: Sequence[str] = ()) -> Path | None:
    """Write :func:`audit_figure` to ``path`` (atomically); None, and no file, when no audit is done."""
    fig, _ = audit_figure(records, notes)
    if fig is None:
        return None
    return _save_figure(fig, path)


def _save_figure(fig, path: Path) -> Path:
    """Write a matplotlib figure to ``path`` through a ``.partial.png`` sibling (kill-safe), and close it."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".partial.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def audit_markdown(records: dict[str, dict], study_dir: Path) -> list[str]:
    """The report's audit section: per study-trained generator, the four verdicts and the headline
    figures of its ``audit.json`` (see :func:`mammoshare.audit.audit_summary`)."""
    audits = sorted((r for r in records.values() if r.get("kind") == "audit"), key=lambda r: r["id"])
    if not audits:
        return []
    lines = ["### Privacy and quality audit of the generators", "",
             "Each generator the study trained, audited by `mammoshare audit` before it would be shared: samples of "
             "the generator against the centre B lesion patches it trained on (train) and centre A's lesion patches of "
             "the task (holdout: unseen patients of another centre, see the deviations). Verdicts pass / warn / fail "
             "per family, thresholds calibrated on the real data of the run; figures with their 95% interval or the "
             "real-vs-real baseline in brackets. Copy rate: share of samples closer to a training patch (pixel NCC, "
             "flips included) than the 1st percentile of holdout-to-train distances (real: 1%). Attack AUC: distance "
             "attack telling training from holdout patients (chance 0.5).", "",
             "| generator | samples / train / holdout | features | memorisation | membership | diversity | fidelity | "
             "copy rate (pixel) | authenticity | attack AUC | MS-SSIM | Fréchet distance | precision | coverage |",
             "|---|---|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    failed = []
    for r in audits:
        if r.get("status") != "done":
            failed.append(r)
            continue
        s = r["outputs"]["summary"]
        f, v = s["figures"], s["verdicts"]
        folder = Path(r.get("dir", ""))
        lines.append(
            f"| [{GENERATORS[r['config']['generator']][2]}, {r['config']['task']}]({(folder / r['outputs']['report']).as_posix()}) "
            f"| {s['samples']} / "
            f"{s['train_patches']} / {s['holdout_patches']} | {s['features']} | {v['memorisation']} | {v['membership']} | "
            f"{v['diversity']} | {v['fidelity']} | {_value(f, 'memorisation', 'copy_rate_pixel', interval=True)} | "
            f"{_value(f, 'memorisation', 'authenticity_pixel', baseline=True)} | "
            f"{_value(f, 'membership', 'distance_attack_pixel_auc', interval=True)} | "
            f"{_value(f, 'diversity', 'msssim_synthetic_pairs', baseline=True)} | "
            f"{_value(f, 'fidelity', 'frechet_distance', baseline=True)} | {_value(f, 'fidelity', 'precision', baseline=True)} | "
            f"{_value(f, 'fidelity', 'coverage', baseline=True)} |")
    for r in failed:
        lines.append(f"| {r.get('label', r['id'])} | failed: {str(r.get('error')).replace('|', '/')} "
                     "| | | | | | | | | | | | |")
    if _done_audits(records):
        lines += ["", f"![audit figures]({AUDIT_FIGURE})", "",
                  f"`{AUDIT_FIGURE}` puts these headline figures of every audited generator side by side, the GANs "
                  "(blue) and the diffusion model (orange, hatched): copy rate and distance-attack AUC with their 95% "
                  "intervals (chance 0.5), MS-SSIM of synthetic pairs and Fréchet distance beside their real baselines "
                  "(black diamonds), so the families' memorisation, membership leakage, diversity and fidelity compare "
                  "at a glance (diffusion models are reported to memorise more than GANs on small datasets: Dar et al. "
                  "2024; Akbar et al. 2025)."]
    lines += ["", "Every figure, interval, threshold and rule: each audit's `audit.json` and `audit.md` (with its PNG "
              "sheets) in `stages/audits/`. An empirical audit against these attacks and this data, not a formal "
              "privacy guarantee; a failed memorisation or membership verdict would stop `mammoshare pack` without "
              "`--accept-risk`.", ""]
    return lines


def _report(plan, options, records, cells, tables_md, paired_md, env, stage_seconds, seconds, ran, reused) -> str:
    preset = plan.preset
    lines = [f"# Study report: preset `{preset.name}`", ""]
    lines += [f"Written {_dt.datetime.now().astimezone().isoformat(timespec='seconds')} by mammoshare {env['mammoshare']}.",
              ""]
    if preset.name == "demo":
        lines += [DEMO_STATEMENT, ""]
    failed_cells = [c for c in cells if c["status"] == "failed"]
    failed_stages = [r for r in records.values() if r.get("status") == "failed" and r.get("kind") != "cell"]
    done_cells = [c for c in cells if c["status"] == "done"]
    not_run = [c for c in cells if c["status"] == "not_run"]
    lines += [
        "## Outcome", "",
        f"- cells: {len(cells)} in the matrix; {len(done_cells)} done, {len(failed_cells)} failed, {len(not_run)} not run "
        "(by design: a source not given, or not selected)",
        f"- stages run in this invocation: {len(ran)}; reused from earlier runs: {len(reused)}",
    ]
    if failed_cells or failed_stages:
        lines += ["- **failures** (the exit status is non-zero):"]
        for r in failed_stages:
            lines.append(f"  - stage `{r['id']}`: {r.get('error')}")
        errors = Counter(c.get("error") for c in failed_cells)
        for error, count in errors.items():
            lines.append(f"  - {count} cell(s): {error}")
    reasons = Counter(c["reason"] for c in not_run)
    if reasons:
        lines += ["- not run:"] + [f"  - {count} cell(s): {reason}" for reason, count in reasons.items()]
    lines += [""]

    # setup
    lines += ["## Setup", ""]
    lines += [f"- preset `{preset.name}`: {preset.description}"]
    lines += [f"- seeds: {plan.seeds} (classifier seeds; datalists split with seed {preset.data_seed}, GANs trained "
              f"with seed {preset.gan_seed}, synthetic sets drawn with seed {preset.synthetic_seed})"]
    lines += [f"- selection: rows {plan.selection['rows']}, tasks {plan.selection['tasks']}, classifiers "
              f"{plan.selection['classifiers']}, training data {[fraction_label(f) for f in plan.selection['fractions']]}"]
    lines += [f"- positive class of F1 / AUROC / AUPRC and of the validation AUPRC that keeps the best checkpoint: "
              f"**{options.positive_class}**"]
    inputs = plan.inputs
    lines += [f"- centre A ({options.centre_a_format}): {inputs.centre_a_root} ({inputs.centre_a_option})"]
    lines += [f"- centre B (BCDR): {inputs.bcdr_root if inputs.bcdr_root else 'not given'}"
              + (f" ({inputs.bcdr_option})" if inputs.bcdr_root else "")]
    for task, files in inputs.generator_files.items():
        lines += [f"- BCDR generator files for the task {task}: DCGAN {files['dcgan']}, WGAN-GP {files['wgangp']}"]
    lines += [f"- centre C (OPTIMAM): {inputs.optimam_file} ({inputs.optimam_option})" if inputs.optimam_file
              else f"- centre C (OPTIMAM): not run: {inputs.optimam_reason}"]
    for note in inputs.notes:
        lines += [f"- {note}"]
    gan_lines = []
    for generator, settings in preset.gans.items():
        gan_lines.append(f"{GENERATORS[generator][2]}: {settings.describe()}")
    lines += ["- generators of centre B (when trained by the study): " + "; ".join(gan_lines)
              + ". The DCGAN's synthetic set spreads its samples over all kept snapshots (the paper's scheme); "
              "the WGAN-GP's comes from its last weights, the DDPM's from its EMA weights (beyond the paper)."]
    clf = "; ".join(
        f"{CLASSIFIERS[k]}: at most {v.max_epochs} epoch{'s' if v.max_epochs != 1 else ''}"
        + (f" of {v.epoch_length} batch{'es' if v.epoch_length != 1 else ''}" if v.epoch_length else "")
        + f", batch size {v.batch_size}" for k, v in preset.classifiers.items())
    lines += [f"- classifiers: {clf}; SGD lr 0.001 momentum 0.9; best checkpoint by validation AUPRC"]
    lines += [f"- synthetic patches per cell: {preset.synthetic_count} in equal shares per source; real BCDR lesions: "
              f"{preset.real_lesion_count}; bootstrap: {preset.n_bootstrap} patient-level resamples (95% intervals)"]
    if preset.audit is not None:
        lines += [f"- audit of every generator the study trains: {preset.audit.num_samples} samples, {preset.audit.features} "
                  f"features, {preset.audit.msssim_pairs} MS-SSIM pairs, seed {preset.synthetic_seed}"]
    lines += [""]

    # data counts
    lines += ["### Data", ""]
    datalists = [r for r in records.values() if r.get("kind") == "datalist" and r.get("status") == "done"]
    if datalists:
        lines += ["| datalist | subset | patients | lesion | healthy | lesions by type |", "|---|---|---:|---:|---:|---|"]
        for r in sorted(datalists, key=lambda r: r["id"]):
            types = r["outputs"].get("lesion_type_counts") or {}
            for subset, c in r["outputs"]["counts"].items():
                by_type = ", ".join(f"{k} {v}" for k, v in (types.get(subset) or {}).items())
                lines.append(f"| {r.get('label', r['id'])} | {subset} | {c['patients']} | {c['lesion']} | {c['healthy']} "
                             f"| {by_type} |")
        lines += [""]
        for r in sorted(datalists, key=lambda r: r["id"]):
            out = r["outputs"]
            policy = out.get("calcifications")
            lines.append(f"- {r.get('label', r['id'])}: "
                         + (f"calcifications: one patch per {policy}; " if policy else "")
                         + f"apply_voi {out.get('apply_voi')}")
        gans = [r for r in records.values() if r.get("kind") == "gan" and r.get("status") == "done"]
        for r in sorted(gans, key=lambda r: r["id"]):
            trained = (r.get("outputs") or {}).get("trained_on")
            if trained:
                lines.append(f"- {r.get('label', r['id'])}: {trained['patches']} lesion patches of {trained['patients']} "
                             f"patients (subsets {', '.join(trained['subsets'])})")
        lines += [""]
    synthetic = [r for r in records.values() if r.get("kind") == "synthetic" and r.get("status") == "done"]
    if synthetic:
        lines += ["Synthetic sets: " + "; ".join(f"{r.get('label', r['id'])}: {r['outputs']['count']} patches"
                                                for r in sorted(synthetic, key=lambda r: r["id"])), ""]
    first_seed = plan.seeds[0]
    shown = {}
    for c in done_cells:
        if c["seed"] == first_seed and c.get("training_counts"):
            shown.setdefault((c["task"], c["fraction"], c["row"]), c)
    if shown:
        lines += [f"Training sets per cell (from the cells' training sets, seed {first_seed}; the classifiers of a "
                  "row share it; other seeds draw other patients and patches in the same amounts):", "",
                  "| task | training data | augmentation | lesion (by source) | healthy (by source) |",
                  "|---|---|---|---|---|"]
        row_order = [r.key for r in ROWS]
        for (task, fraction, row), c in sorted(shown.items(), key=lambda kv: (kv[0][0], -kv[0][1], row_order.index(kv[0][2]))):
            lesion, healthy = _counts_text(c["training_counts"])
            lines.append(f"| {task} | {fraction_label(fraction)} | {dict((r.key, r.label) for r in ROWS)[row]} | {lesion} | {healthy} |")
        tests = {(c["task"]): c.get("test_counts") for c in done_cells if c.get("test_counts")}
        lines += [""] + [f"- centre A test subset, task {task}: {counts.get('lesion', 0)} lesion, "
                         f"{counts.get('healthy', 0)} healthy patches" for task, counts in sorted(tests.items())] + [""]

    # environment and time
    lines += ["## Environment", ""]
    for key in ("mammoshare", "monai", "torch", "python", "platform", "machine", "processor", "cpu_count",
                "torch_threads", "device", "gpus", "parallel_workers"):
        if env.get(key) not in (None, [], ""):
            lines.append(f"- {key}: {env[key]}")
    where = Counter(c.get("ran_on") or "not recorded" for c in cells if c["status"] in ("done", "failed"))
    if where:
        lines.append("- cells ran on: " + "; ".join(f"{place}: {n}" for place, n in sorted(where.items()))
                     + " (each cell's `ran_on` in runs.json)")
    lines += ["", "## Time", "", f"This invocation: {seconds:.1f} s.", "",
              "| stage kind | run now | reused | failed | wall time now (s) | recorded time of all done stages (s) |",
              "|---|---:|---:|---:|---:|---:|"]
    by_kind: dict[str, list[dict]] = defaultdict(list)
    for r in records.values():
        by_kind[r.get("kind", "?")].append(r)
    for kind in ("datalist", "gan", "synthetic", "audit", "cell"):
        rs = by_kind.get(kind, [])
        now_ids = set(ran)
        recorded = sum(r.get("seconds") or 0 for r in rs if r.get("status") == "done")
        lines.append(f"| {kind} | {sum(r['id'] in now_ids for r in rs)} | {sum(bool(r.get('reused')) for r in rs)} | "
                     f"{sum(r.get('status') == 'failed' for r in rs)} | {stage_seconds.get(kind, 0.0):.1f} | {recorded:.1f} |")
    lines += [f"| planning (inputs, phantom data) | | | | {stage_seconds.get('planning (inputs, phantom data)', 0.0):.1f} | |"]
    cell_times = defaultdict(list)
    for c in done_cells:
        if c.get("timings", {}).get("total_s") is not None:
            cell_times[c["classifier"]].append(c["timings"]["total_s"])
    if cell_times:
        lines += ["", "Time per cell (train + evaluate): " + "; ".join(
            f"{CLASSIFIERS[k]} mean {np.mean(v):.1f} s over {len(v)} cells" for k, v in cell_times.items())]
    lines += [""]

    # results
    lines += ["## Results", ""]
    lines += ["Files: `table1_all_lesions.md` / `.csv`, `table2_masses.md` / `.csv`, `paired_comparison.md` / `.csv`, "
              "`deltas_vs_none.png`, `runs.json` (every cell: config, hash, status, metrics, intervals, timings, "
              "errors). Tables hold every row of the matrix; cells that were not selected or whose source was not "
              "given read 'not run' with the reason in a footnote.", ""]
    for task in TASKS:
        lines += [tables_md[task].replace("## ", "### ", 1), ""]
    lines += [paired_md.replace("## ", "### ", 1), "", "![deltas](deltas_vs_none.png)", ""]
    lines += audit_markdown(records, plan.study_dir)

    # deviations
    lines += ["## Where this implementation differs from the original code", "",
              "The project implements the paper; where the authors' code differs (defects included), it follows the "
              "paper and says so here.", "",
              "| topic | this implementation (and the original code) | to get the original behaviour |", "|---|---|---|"]
    for topic, here, original in deviations(preset):
        cells = [text.replace("|", "\\|") for text in (topic, here, original)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [""]
    return "\n".join(lines)

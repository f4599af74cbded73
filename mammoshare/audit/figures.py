"""The audit's PNG sheets: samples, worst nearest-neighbour pairs, MS-SSIM and distance histograms,
per-snapshot diversity. The nearest-neighbour sheet shows real training patches: it stays in the
centre with the rest of the audit folder (only the summary is shared). A ``note`` (phantom data)
is written in red at the top of every sheet."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

__all__ = ["write_sheets"]

_FLIP_NAMES = ("", "flipped H", "flipped V", "flipped H+V")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _flip(patch: np.ndarray, flip: int) -> np.ndarray:
    if flip in (1, 3):
        patch = patch[:, ::-1]
    if flip in (2, 3):
        patch = patch[::-1]
    return patch


def _mosaic(tiles: list[np.ndarray], cols: int, gap: int = 4) -> np.ndarray:
    """Tiles ``(S, S)`` laid out row by row with a white gap: one image, drawn with one ``imshow``."""
    size = tiles[0].shape[0]
    rows = math.ceil(len(tiles) / cols)
    canvas = np.ones((rows * (size + gap) - gap, cols * (size + gap) - gap), dtype=np.float32)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, cols)
        canvas[r * (size + gap) : r * (size + gap) + size, c * (size + gap) : c * (size + gap) + size] = tile
    return canvas


def _save(plt, fig, path: Path, dpi: int, tight_box: bool = False, note: str | None = None) -> Path:
    """Write ``fig`` to ``path`` (laid out tightly, or cropped to its drawing with ``tight_box``), with
    ``note`` in red at the top, and close it."""
    if note:
        fig.text(0.5, 0.999, note, ha="center", va="top", color="tab:red", fontsize=9, weight="bold")
    if tight_box:
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
    else:
        fig.tight_layout()
        fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def _histograms(ax, bins, series, lines, title: str, fontsize: int) -> None:
    """Overlaid density histograms (``series``: ``(values, label)``), vertical ``lines``
    (``axvline`` keyword dicts), a title and a legend."""
    for values, label in series:
        ax.hist(values, bins=bins, alpha=0.6, density=True, label=label)
    for line in lines:
        ax.axvline(**{"color": "k", "linestyle": "--", "linewidth": 1, **line})
    ax.set_title(title, fontsize=fontsize)
    ax.legend(fontsize=fontsize - 2)


def _samples(out: Path, syn, seed: int, note: str | None = None) -> Path:
    plt = _plt()
    rng = np.random.default_rng(seed)
    n = min(64, len(syn))
    pick = np.sort(rng.choice(len(syn), n, replace=False))
    cols = math.ceil(math.sqrt(n))
    fig, ax = plt.subplots(figsize=(8, 8 * math.ceil(n / cols) / cols + 0.4))
    ax.imshow(_mosaic([syn.patches[i] for i in pick], cols), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    ax.set_title(f"{n} random synthetic samples of {len(syn)}", fontsize=9)
    return _save(plt, fig, out / "samples.png", 100, tight_box=True, note=note)


def _neighbours(out: Path, syn, real, n_t: int, worst, note: str | None = None) -> Path:
    plt = _plt()
    idx, t_idx, h_idx, flips_t, flips_h, arr = worst
    tiles, labels = [], []
    for i, t, h, ft, fh in zip(idx, t_idx, h_idx, flips_t, flips_h):
        tiles += [syn.patches[i], _flip(real[t], ft), _flip(real[n_t + h], fh)]
        labels += [f"synthetic #{i}", f"train NCC {1 - arr['d_train'][i]:.3f} {_FLIP_NAMES[ft]}",
                   f"holdout NCC {1 - arr['d_holdout'][i]:.3f} {_FLIP_NAMES[fh]}"]
    rows, size, gap = len(idx), 128, 4
    fig, ax = plt.subplots(figsize=(6, 2 * rows + 0.6))
    ax.imshow(_mosaic(tiles, 3, gap), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    for k, label in enumerate(labels):
        r, c = divmod(k, 3)
        ax.text(c * (size + gap) + 2, r * (size + gap) + 10, label, color="yellow", fontsize=6,
                bbox={"facecolor": "black", "alpha": 0.5, "pad": 1, "linewidth": 0})
    ax.axis("off")
    ax.set_title("Samples closest to a training patch (pixel NCC, flips included): sample | nearest train | "
                 "nearest holdout\nREAL PATIENT PATCHES: do not share", fontsize=7)
    return _save(plt, fig, out / "nearest_neighbours.png", 100, tight_box=True, note=note)


def _msssim(out: Path, msssim: dict, family: dict, note: str | None = None) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    thr = family["figures"]["msssim_synthetic_pairs"]["threshold"]
    lines = [{"x": thr[key], "linestyle": style, "label": f"{key} threshold"}
             for key, style in (("warn", "--"), ("fail", ":")) if thr[key] is not None]
    _histograms(ax, np.linspace(0, 1, 41), [(msssim["msssim_real"], "real pairs"),
                (msssim["msssim_synthetic"], "synthetic pairs")], lines, f"diversity: {family['verdict']}", 9)
    ax.set_xlabel("MS-SSIM of a random pair")
    return _save(plt, fig, out / "msssim_hist.png", 90, note=note)


def _ratios(out: Path, arrays: dict, family: dict, note: str | None = None) -> Path:
    plt = _plt()
    fig, axes = plt.subplots(2, 2, figsize=(8, 5.6))
    for col, space in enumerate(("pixel", "feature")):
        a = arrays[space]
        hi = float(np.quantile(np.concatenate([a["d_train"], a["d_train_holdout"]]), 0.995)) or 1.0
        _histograms(axes[0, col], np.linspace(0, hi, 41),
                    [(a["d_train_holdout"], "holdout -> train"), (a["d_train"], "synthetic -> train")],
                    [{"x": a["tau"], "label": "copy distance (1st pct)"}],
                    f"{space}: distance to the nearest training patch", 8)
        hi = float(np.quantile(np.concatenate([a["ratio"], a["ratio_holdout"]]), 0.995)) or 2.0
        _histograms(axes[1, col], np.linspace(0, max(hi, 1.05), 41),
                    [(a["ratio_holdout"], "real holdout"), (a["ratio"], "synthetic")],
                    [{"x": a["rho"], "label": "1st pct of real"},
                     {"x": 1.0, "color": "grey", "linestyle": "-", "linewidth": 0.8}],
                    f"{space}: nearest-train / nearest-holdout distance", 8)
    fig.suptitle(f"memorisation: {family['verdict']}", fontsize=9)
    return _save(plt, fig, out / "distance_ratio_hist.png", 90, note=note)


def _snapshots(out: Path, snapshots: list, family: dict, note: str | None = None) -> Path:
    plt = _plt()
    fig, ax1 = plt.subplots(figsize=(max(5, 0.4 * len(snapshots)), 3.4))
    names = [s["snapshot"] for s in snapshots]
    x = np.arange(len(names))
    ax1.plot(x, [np.nan if s["msssim_mean"] is None else s["msssim_mean"] for s in snapshots], "o-", label="MS-SSIM synthetic")
    ax1.axhline(family["figures"]["msssim_synthetic_pairs"]["baseline"], color="C0", linestyle="--", label="MS-SSIM real")
    ax1.set_ylabel("mean MS-SSIM")
    ax2 = ax1.twinx()
    ax2.plot(x, [s["cluster_ratio"] for s in snapshots], "s-", color="C1", label="cluster ratio")
    ax2.set_ylabel("clusters synthetic / real")
    ax1.set_xticks(x, names, rotation=60, fontsize=6, ha="right")
    ax1.legend(loc="upper left", fontsize=6)
    ax2.legend(loc="upper right", fontsize=6)
    ax1.set_title("diversity per snapshot", fontsize=9)
    return _save(plt, fig, out / "snapshots.png", 90, note=note)


def write_sheets(out: Path, *, syn, real, n_t, worst, arrays, msssim, snapshots, families, seed, note: str | None = None) -> dict:
    """Write every sheet into ``out`` (``note`` in red on each); returns ``{name: file name}``."""
    files = {
        "samples": _samples(out, syn, seed, note),
        "nearest_neighbours": _neighbours(out, syn, real, n_t, worst, note),
        "msssim_hist": _msssim(out, msssim, families["diversity"], note),
        "distance_ratio_hist": _ratios(out, arrays, families["memorisation"], note),
    }
    if snapshots:
        files["snapshots"] = _snapshots(out, snapshots, families["diversity"], note)
    files = {k: Path(v).name for k, v in files.items()}
    files.update({"audit_json": "audit.json", "audit_md": "audit.md", "worst_pairs": "worst_pairs.json"})
    return files

"""A picture of canonical patches with their labels, to look at what the data side produces."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from transforms import DecodedImageCache

from .data import canonical_patch_transform, loader_record
from .datalist import SUBSETS, load_datalist

__all__ = ["pick_records", "patch_grid"]


def pick_records(datalist: dict, n: int, seed: int = 0) -> list[tuple[str, dict]]:
    """About half lesion and half healthy records, drawn with the seed from all subsets; returns
    ``(subset, record)`` pairs, lesions first."""
    rng = np.random.RandomState(seed)
    pairs = [(s, r) for s in SUBSETS for r in datalist.get(s, [])]
    lesions = [p for p in pairs if p[1]["label"] == 1]
    healthy = [p for p in pairs if p[1]["label"] == 0]
    n_lesion = min(len(lesions), max(n - len(healthy), (n + 1) // 2))
    n_healthy = min(len(healthy), n - n_lesion)
    chosen = [lesions[i] for i in sorted(rng.choice(len(lesions), n_lesion, replace=False))] if n_lesion else []
    chosen += [healthy[i] for i in sorted(rng.choice(len(healthy), n_healthy, replace=False))] if n_healthy else []
    return chosen


def patch_grid(datalist_path: str | os.PathLike, out: str | os.PathLike, n: int = 64, seed: int = 0) -> Path:
    """Write a PNG grid of ``n`` canonical patches of a datalist, each titled with its label,
    lesion types and subset; the figure title says when the data is a phantom."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datalist = load_datalist(datalist_path)
    chosen = pick_records(datalist, n, seed)
    if not chosen:
        raise ValueError(f"{datalist_path}: the datalist has no records to show")
    loader = canonical_patch_transform(cache=DecodedImageCache())
    cols = math.ceil(math.sqrt(len(chosen)))
    rows = math.ceil(len(chosen) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.75 * rows + 0.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (subset, record) in zip(axes.flat, chosen):
        patch = loader(loader_record(record, None))["image"]
        ax.imshow(np.asarray(patch[0]), cmap="gray", vmin=0.0, vmax=1.0)
        if record["label"] == 1:
            title = "lesion: " + ",".join(record.get("lesion_types") or ["?"])
        else:
            title = "healthy"
        ax.set_title(f"{title}\n{subset}", fontsize=6, color="firebrick" if record["label"] else "seagreen")
    name = datalist.get("dataset", "?")
    heading = f"{name} ({datalist.get('task', '?')} task): {len(chosen)} canonical 128x128 patches"
    if datalist.get("phantom"):
        heading += "\nPHANTOM DATA: synthetic, no clinical meaning"
    fig.suptitle(heading, fontsize=9)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out

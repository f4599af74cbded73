"""Batched, chunked nearest-neighbour search: flip-invariant NCC in pixel space, L2 in feature space.

Pixel space: the distance of two canonical patches is ``1 - max_g NCC(a, g(b))`` over the four flips
``g`` (none, horizontal, vertical, both), since the GANs train with random flips and a memorised
patch may come out mirrored. The four flips cost one matrix product, not four: a patch splits into
four parts that are even or odd under each flip (``x_ab``, ``a`` horizontal, ``b`` vertical parity);
the parts are orthogonal, each is fixed by one 64x64 quadrant, and a flip only changes the sign of
some parts, so ``<a, g(b)> = sum_ab chi_ab(g) <a_ab, b_ab>`` with ``chi = +-1``. The search keeps
four ``(n, 4096)`` quadrant matrices per set and combines their products per flip.

Both searches run over row chunks x column chunks (a set against itself: each pair of blocks once) (a few tens of MB at a time), so memory stays
bounded whatever the set sizes, and return, for every query, the nearest reference of each group
(e.g. train and holdout) and, for every reference, its nearest query.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["FlipBasis", "flip_basis", "NearestResult", "nearest_flip_ncc", "nearest_l2", "best_flip", "FLIPS"]

#: flip names, in the order of :func:`best_flip`'s index
FLIPS = ("none", "horizontal", "vertical", "both")


@dataclass
class FlipBasis:
    """Zero-mean, unit-norm patches as their four flip-parity quadrants ``(4, n, (S/2)^2)`` float32."""

    parts: torch.Tensor

    def __len__(self) -> int:
        return self.parts.shape[1]


def flip_basis(patches: np.ndarray | torch.Tensor, chunk: int = 2048) -> FlipBasis:
    """Patches ``(n, S, S)`` (or ``(n, 1, S, S)``), S even -> :class:`FlipBasis`.

    Each patch is centred and scaled to unit norm (a constant patch stays zero: NCC 0 with all).
    Part ``ab`` on the top-left quadrant is ``(x + a fh(x) + b fv(x) + ab fhv(x)) / 4``, scaled by 2
    so that quadrant dot products equal full-image dot products of the parts.
    """
    x = torch.as_tensor(patches)
    if x.ndim == 4:
        x = x[:, 0]
    n, size, width = x.shape
    if size != width or size % 2:
        raise ValueError(f"square patches of even size are expected, got {tuple(x.shape[1:])}")
    h = size // 2
    parts = torch.empty((4, n, h * h), dtype=torch.float32)
    for start in range(0, n, chunk):
        block = x[start : start + chunk].to(torch.float32)
        block = block - block.mean(dim=(1, 2), keepdim=True)
        norm = block.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1)
        block = torch.where(norm > 1e-8, block / norm, torch.zeros_like(block))
        tl = block[:, :h, :h]
        tr = block[:, :h, h:].flip(2)  # fh(x) on the top-left quadrant
        bl = block[:, h:, :h].flip(1)  # fv(x)
        br = block[:, h:, h:].flip(1).flip(2)  # fhv(x)
        for k, (a, b) in enumerate(((1, 1), (1, -1), (-1, 1), (-1, -1))):
            parts[k, start : start + len(block)] = (0.5 * (tl + a * tr + b * bl + a * b * br)).flatten(1)
    return FlipBasis(parts)


def _flip_ncc_block(qa: torch.Tensor, rb: torch.Tensor, with_flip: bool = False):
    """NCC maximised over flips for query parts ``(4, q, d)`` x reference parts ``(4, r, d)``."""
    g = torch.bmm(qa, rb.transpose(1, 2))  # (4, q, r): ++, +-, -+, --
    pp, pm, mp, mm = g
    a, b = pp + mm, pm + mp  # none = a + b, both = a - b
    c, d = pp - mm, pm - mp  # horizontal = c + d, vertical = c - d
    best = torch.maximum(a + b.abs(), c + d.abs())
    if not with_flip:
        return best
    stacked = torch.stack([a + b, c + d, c - d, a - b])
    return best, stacked.argmax(0)


@dataclass
class NearestResult:
    """Per query: nearest distance and index in each reference group; per reference: nearest query."""

    distance: dict[str, np.ndarray]  # group -> (n_queries,)
    index: dict[str, np.ndarray]  # group -> (n_queries,) index into that group's references
    reverse_distance: np.ndarray  # (n_references,)
    reverse_index: np.ndarray  # (n_references,)


def _search(block_fn, n_queries: int, n_refs: int, groups: np.ndarray, names: list[str], exclude_self: bool,
            row_chunk: int, col_chunk: int, progress=None) -> NearestResult:
    groups = np.asarray(groups)
    if len(groups) != n_refs:
        raise ValueError("one group label per reference is needed")
    group_ids = {name: i for i, name in enumerate(names)}
    code = torch.as_tensor(np.array([group_ids[g] for g in groups]), dtype=torch.long)
    local = np.zeros(n_refs, dtype=np.int64)  # index of each reference inside its group
    for name in names:
        members = np.flatnonzero(groups == name)
        local[members] = np.arange(len(members))
    best = torch.full((len(names), n_queries), float("inf"))
    best_idx = torch.full((len(names), n_queries), -1, dtype=torch.long)
    rev = torch.full((n_refs,), float("inf"))
    rev_idx = torch.full((n_refs,), -1, dtype=torch.long)
    def update_rows(dist: torch.Tensor, r0: int, r1: int, c0: int, c1: int) -> None:
        block_code = code[c0:c1]
        for gi in range(len(names)):
            mask = block_code == gi
            if not bool(mask.any()):
                continue
            cols = torch.nonzero(mask).flatten()
            gmin, garg = dist[:, cols].min(dim=1)
            better = gmin < best[gi, r0:r1]
            best[gi, r0:r1] = torch.where(better, gmin, best[gi, r0:r1])
            best_idx[gi, r0:r1] = torch.where(better, cols[garg] + c0, best_idx[gi, r0:r1])

    # a set against itself is symmetric: each pair of blocks once, used for both of its row ranges
    symmetric = exclude_self and n_queries == n_refs
    if symmetric:
        col_chunk = row_chunk
    for r0 in range(0, n_queries, row_chunk):
        r1 = min(r0 + row_chunk, n_queries)
        for c0 in range(r0 if symmetric else 0, n_refs, col_chunk):
            c1 = min(c0 + col_chunk, n_refs)
            dist = block_fn(r0, r1, c0, c1)  # (rows, cols)
            if exclude_self and r0 < c1 and c0 < r1:
                rows = torch.arange(max(r0, c0), min(r1, c1))
                dist[rows - r0, rows - c0] = float("inf")
            update_rows(dist, r0, r1, c0, c1)
            if symmetric and c0 != r0:
                update_rows(dist.T, c0, c1, r0, r1)
            if not symmetric:
                cmin, carg = dist.min(dim=0)
                better = cmin < rev[c0:c1]
                rev[c0:c1] = torch.where(better, cmin, rev[c0:c1])
                rev_idx[c0:c1] = torch.where(better, carg + r0, rev_idx[c0:c1])
        if progress is not None:
            progress.update(r1 - r0)
    if symmetric:  # the nearest query of a reference is its nearest reference
        overall, which = best.min(dim=0)
        rev, rev_idx = overall, best_idx.gather(0, which[None])[0]
    distance = {name: best[i].numpy().astype(np.float64) for i, name in enumerate(names)}
    index = {name: np.where(best_idx[i].numpy() >= 0, local[best_idx[i].numpy().clip(0)], -1) for i, name in enumerate(names)}
    return NearestResult(distance, index, rev.numpy().astype(np.float64), rev_idx.numpy())


def nearest_flip_ncc(queries: FlipBasis, references: FlipBasis, groups, exclude_self: bool = False,
                     row_chunk: int = 1024, col_chunk: int = 4096, progress=None) -> NearestResult:
    """Nearest references by ``1 - max-over-flips NCC``; ``groups`` labels each reference (e.g.
    ``"train"``/``"holdout"``); ``exclude_self`` when queries and references are the same set."""
    names = list(dict.fromkeys(np.asarray(groups).tolist()))

    def block(r0, r1, c0, c1):
        return 1.0 - _flip_ncc_block(queries.parts[:, r0:r1], references.parts[:, c0:c1])

    return _search(block, len(queries), len(references), groups, names, exclude_self, row_chunk, col_chunk, progress)


def nearest_l2(queries: np.ndarray, references: np.ndarray, groups, exclude_self: bool = False,
               row_chunk: int = 2048, col_chunk: int = 8192) -> NearestResult:
    """Nearest references by Euclidean distance between feature vectors ``(n, k)``."""
    q = torch.as_tensor(np.asarray(queries, dtype=np.float32))
    r = torch.as_tensor(np.asarray(references, dtype=np.float32))
    qn, rn = (q * q).sum(1), (r * r).sum(1)
    names = list(dict.fromkeys(np.asarray(groups).tolist()))

    def block(r0, r1, c0, c1):
        d2 = qn[r0:r1, None] + rn[None, c0:c1] - 2.0 * q[r0:r1] @ r[c0:c1].T
        return d2.clamp_min(0.0).sqrt()

    return _search(block, len(q), len(r), groups, names, exclude_self, row_chunk, col_chunk)


def best_flip(a: FlipBasis, ia: np.ndarray, b: FlipBasis, ib: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For pairs ``(a[ia[k]], b[ib[k]])``: the flip of ``b`` that matches best (index into
    :data:`FLIPS`) and the NCC at that flip."""
    qa = a.parts[:, torch.as_tensor(ia)]
    rb = b.parts[:, torch.as_tensor(ib)]
    g = (qa * rb).sum(-1)  # (4, k)
    pp, pm, mp, mm = g
    # none; horizontal (parts odd horizontally change sign); vertical; both
    stacked = torch.stack([pp + pm + mp + mm, pp + pm - mp - mm, pp - pm + mp - mm, pp - pm - mp + mm])
    ncc, flip = stacked.max(0)
    return flip.numpy(), ncc.numpy()

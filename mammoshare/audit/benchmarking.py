"""Benchmarks of the audit: the nearest-neighbour search against the naive way, and a whole audit at scale.

- :func:`benchmark` (``python benchmarks/run.py --only audit``): synthetic samples searched per
  second against a set of real patches by the audit's batched, chunked flip-invariant NCC search
  (:func:`~mammoshare.audit.neighbours.nearest_flip_ncc`: the four flips in one matrix product)
  against a naive loop, one sample at a time with each of its four flips correlated with every
  reference; both find the same neighbours (checked). Then one whole audit of file-based data.
- :func:`audit_at_scale` (``python benchmarks/audit_scale.py``): the issue's scale, 10,000 samples
  against 5,000 training and 5,000 holdout patches, with wall time per stage and peak memory.

The patches are synthetic textures (blurred noise with a bright blob, like phantom lesions); a
share of the samples are flipped, slightly noisy copies of training patches, so the memorisation
search has something to find. Nothing is downloaded.
"""

from __future__ import annotations

import resource
import statistics
import time
from pathlib import Path

import numpy as np

__all__ = ["textures", "benchmark", "audit_at_scale", "naive_nearest_flip_ncc", "SIZES"]

#: per mode: references, queries of the naive loop and of the chunked search, rounds, the whole audit
SIZES = {
    "quick": {"references": 1000, "naive": 16, "fast": 500, "rounds": 2,
              "whole": {"samples": 1000, "train": 500, "holdout": 500, "features": "pixel"}},
    "full": {"references": 5000, "naive": 64, "fast": 5000, "rounds": 4,
             "whole": {"samples": 10000, "train": 5000, "holdout": 5000, "features": "encoder"}},
}


def textures(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` patches ``(128, 128)`` in [0, 1]: smooth random tissue and one blob each."""
    import cv2

    out = np.empty((n, 128, 128), dtype=np.float32)
    yy, xx = np.mgrid[0:128, 0:128]
    for i in range(n):
        tissue = cv2.GaussianBlur(rng.standard_normal((128, 128)).astype(np.float32), (0, 0), rng.uniform(2, 6))
        tissue = (tissue - tissue.mean()) / (tissue.std() + 1e-6)
        cx, cy, r = rng.uniform(30, 98), rng.uniform(30, 98), rng.uniform(8, 25)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
        out[i] = np.clip(0.45 + 0.08 * tissue + 0.35 * blob, 0, 1)
    return out


def _with_copies(real: np.ndarray, n_train: int, n_samples: int, share: float, rng: np.random.Generator) -> np.ndarray:
    """``n_samples`` patches: ``share`` of them flipped, noisy copies of the first ``n_train`` real ones."""
    n_copies = int(n_samples * share)
    copies = real[rng.integers(0, n_train, n_copies)][:, ::-1] + rng.normal(0, 0.01, (n_copies, 128, 128)).astype(np.float32)
    return np.concatenate([np.clip(copies, 0, 1), textures(n_samples - n_copies, rng)])


def naive_nearest_flip_ncc(queries: np.ndarray, references: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The reference way: for each query ``(S, S)`` and each of its four flips, the NCC with every
    reference ``(n, S, S)`` (one query at a time); returns ``1 - max NCC`` and its index per query."""
    refs = references.reshape(len(references), -1).astype(np.float64)
    refs = refs - refs.mean(1, keepdims=True)
    refs /= np.maximum(np.linalg.norm(refs, axis=1, keepdims=True), 1e-12)
    distance = np.empty(len(queries))
    index = np.empty(len(queries), dtype=np.int64)
    for i, query in enumerate(queries):
        best = np.full(len(refs), -np.inf)
        for flipped in (query, query[:, ::-1], query[::-1], query[::-1, ::-1]):
            q = flipped.reshape(-1).astype(np.float64)
            q = q - q.mean()
            q /= max(np.linalg.norm(q), 1e-12)
            best = np.maximum(best, refs @ q)
        index[i] = int(best.argmax())
        distance[i] = 1.0 - best[index[i]]
    return distance, index


def _median_rates(ways: dict, rounds: int) -> dict[str, float]:
    """Each way's block in turn (A, B, A, B...) after one warm-up round; items/s of the median block."""
    rates: dict[str, list[float]] = {name: [] for name in ways}
    for r in range(1 + rounds):
        for name, block in ways.items():
            start = time.perf_counter()
            items = block()
            if r:
                rates[name].append(items / (time.perf_counter() - start))
    return {name: statistics.median(v) for name, v in rates.items()}


def _write_sets(work: Path, real: np.ndarray, synthetic: np.ndarray, n_train: int) -> tuple[Path, Path]:
    """The patches as 8-bit PNG files with their datalists (real: training = train, validation = holdout)."""
    from PIL import Image

    from ..datalist import make_record, write_datalist

    def pngs(folder: Path, patches: np.ndarray, prefix: str) -> list[str]:
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, patch in enumerate(patches):
            path = folder / f"{prefix}{i:05d}.png"
            Image.fromarray((patch * 255).round().astype(np.uint8)).save(path, compress_level=1)
            paths.append(str(path))
        return paths

    records = [make_record(p, f"patient{i:05d}", 1, None, "bench") for i, p in enumerate(pngs(work / "real", real, "r"))]
    real_list = write_datalist({"dataset": "bench", "task": "mass", "phantom": True, "training": records[:n_train],
                                "validation": records[n_train:], "test": []}, work / "real.json")
    syn_records = [make_record(p, "synthetic:bench", 1, None, "bench") for p in pngs(work / "synthetic", synthetic, "s")]
    syn_list = write_datalist({"dataset": "synthetic", "task": "mass", "phantom": True, "training": syn_records,
                               "validation": [], "test": []}, work / "synthetic.json")
    return real_list, syn_list


def audit_at_scale(work: str | Path, samples: int = 10000, train: int = 5000, holdout: int = 5000,
                   features: str = "encoder", seed: int = 0, progress: bool = True, msssim_pairs: int | None = None) -> dict:
    """One whole audit of ``samples`` (5% copies) against ``train`` + ``holdout`` real patches,
    written as PNG files into ``work``; returns its wall time, time per stage and peak memory."""
    from .runner import run_audit

    work = Path(work)
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    real = textures(train + holdout, rng)
    synthetic = _with_copies(real, train, samples, 0.05, rng)
    real_list, syn_list = _write_sets(work, real, synthetic, train)
    prepared = time.perf_counter() - start
    del real, synthetic
    start = time.perf_counter()
    audit = run_audit(synthetic=syn_list, train=real_list, holdout=real_list, holdout_subsets=["validation"],
                      out=work / "audit", features=features, seed=seed, cache_dir=work / "cache", progress=progress,
                      **({"msssim_pairs": msssim_pairs} if msssim_pairs else {}))
    seconds = time.perf_counter() - start
    return {
        "samples": samples, "train": train, "holdout": holdout, "features": features,
        "audit_seconds": round(seconds, 1), "stage_seconds": audit["run"]["seconds"],
        "peak_memory_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),  # kB on Linux
        "data_preparation_seconds": round(prepared, 1), "verdicts": audit["verdicts"],
        "copy_rate_pixel": audit["families"]["memorisation"]["figures"]["copy_rate_pixel"]["value"],
    }


def benchmark(workdir: str | Path, quick: bool = False, device: str = "cpu") -> dict:
    """The audit's case of ``benchmarks/run.py``: the chunked, vectorised flip-NCC search against the
    naive per-sample loop (samples/s, same queries and references, same neighbours), then one whole
    audit (pixel features in quick mode). The audit runs on the CPU (``device`` is recorded)."""
    from .neighbours import flip_basis, nearest_flip_ncc

    sizes = SIZES["quick" if quick else "full"]
    n_refs, n_naive, n_fast = sizes["references"], sizes["naive"], sizes["fast"]
    rng = np.random.default_rng(0)
    references = textures(n_refs, rng)
    queries = _with_copies(references, n_refs, n_fast, 0.05, rng)
    basis_refs = flip_basis(references)
    groups = np.array(["train"] * n_refs)
    subset = rng.choice(n_fast, n_naive, replace=False)

    def fast() -> int:
        nearest_flip_ncc(flip_basis(queries), basis_refs, groups)
        return n_fast

    def naive() -> int:
        naive_nearest_flip_ncc(queries[subset], references)
        return n_naive

    fast_result = nearest_flip_ncc(flip_basis(queries[subset]), basis_refs, groups)
    naive_distance, naive_index = naive_nearest_flip_ncc(queries[subset], references)
    agree = bool(np.array_equal(fast_result.index["train"], naive_index)
                 and np.allclose(fast_result.distance["train"], naive_distance, atol=1e-4))
    rates = _median_rates({"chunked_vectorised": fast, "naive_per_sample": naive}, rounds=sizes["rounds"])
    whole = audit_at_scale(Path(workdir) / "whole", progress=False, **sizes["whole"])
    return {
        "unit": "samples/s", "rates": {k: round(v, 2) for k, v in rates.items()},
        "ratio": round(rates["chunked_vectorised"] / rates["naive_per_sample"], 3),
        "ratio_of": "chunked_vectorised / naive_per_sample",
        "references": n_refs, "queries": {"chunked_vectorised": n_fast, "naive_per_sample": n_naive},
        "same_neighbours": agree, "device": "cpu (the audit's search)", "requested_device": str(device),
        "target": ">= 10", "whole_audit": whole,
    }

"""Benchmark of ``mammoshare audit`` at the issue's scale: 10,000 synthetic samples against 5,000
training and 5,000 holdout patches, on the CPU. Prints wall time per stage and peak memory.

    python benchmarks/audit_scale.py                 # 10,000 vs 5,000 + 5,000 (minutes)
    python benchmarks/audit_scale.py --quick         # 2,000 vs 1,000 + 1,000
    python benchmarks/audit_scale.py --features pixel --out /tmp/audit_bench

The patches are synthetic textures (blurred noise with a bright blob, like phantom lesions), written
as 8-bit PNG files with their datalists: the same files and code path as a real audit. 5% of the
synthetic samples are flipped, slightly noisy copies of training patches, so the memorisation search
has something to find. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mammoshare.datalist import make_record, write_datalist  # noqa: E402


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


def write_pngs(folder: Path, patches: np.ndarray, prefix: str) -> list[str]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, patch in enumerate(patches):
        path = folder / f"{prefix}{i:05d}.png"
        Image.fromarray((patch * 255).round().astype(np.uint8)).save(path, compress_level=1)
        paths.append(str(path))
    return paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=5000)
    parser.add_argument("--holdout", type=int, default=5000)
    parser.add_argument("--samples", type=int, default=10000)
    parser.add_argument("--quick", action="store_true", help="2,000 samples vs 1,000 + 1,000")
    parser.add_argument("--features", default="encoder")
    parser.add_argument("--out", type=Path, help="working folder (default: a temporary one, removed)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        args.train, args.holdout, args.samples = 1000, 1000, 2000
    work = args.out or Path(tempfile.mkdtemp(prefix="audit_bench_"))
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    real = textures(args.train + args.holdout, rng)
    n_copies = args.samples // 20
    copies = real[rng.integers(0, args.train, n_copies)][:, ::-1] + rng.normal(0, 0.01, (n_copies, 128, 128)).astype(np.float32)
    synthetic = np.concatenate([np.clip(copies, 0, 1), textures(args.samples - n_copies, rng)])
    real_paths = write_pngs(work / "real", real, "r")
    records = [make_record(p, f"patient{i:05d}", 1, None, "bench") for i, p in enumerate(real_paths)]
    real_list = write_datalist({"dataset": "bench", "task": "mass", "phantom": True, "training": records[: args.train],
                                "validation": records[args.train :], "test": []}, work / "real.json")
    syn_records = [make_record(p, "synthetic:bench", 1, None, "bench") for p in write_pngs(work / "synthetic", synthetic, "s")]
    syn_list = write_datalist({"dataset": "synthetic", "task": "mass", "phantom": True, "training": syn_records,
                               "validation": [], "test": []}, work / "synthetic.json")
    prepared = time.perf_counter() - start
    del real, synthetic, copies

    from mammoshare.audit import run_audit

    start = time.perf_counter()
    audit = run_audit(synthetic=syn_list, train=real_list, holdout=real_list, holdout_subsets=["validation"],
                      out=work / "audit", features=args.features, seed=args.seed, cache_dir=work / "cache")
    seconds = time.perf_counter() - start
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux
    report = {
        "samples": args.samples, "train": args.train, "holdout": args.holdout, "features": args.features,
        "audit_seconds": round(seconds, 1), "stage_seconds": audit["run"]["seconds"], "peak_memory_gib": round(peak_gib, 2),
        "data_preparation_seconds": round(prepared, 1), "verdicts": audit["verdicts"],
        "copy_rate_pixel": audit["families"]["memorisation"]["figures"]["copy_rate_pixel"]["value"],
    }
    print(json.dumps(report, indent=1))
    if args.out is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

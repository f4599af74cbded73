"""Benchmark of ``mammoshare audit`` at the issue's scale: 10,000 synthetic samples against 5,000
training and 5,000 holdout patches, on the CPU. Prints wall time per stage and peak memory.

    python benchmarks/audit_scale.py                 # 10,000 vs 5,000 + 5,000 (minutes)
    python benchmarks/audit_scale.py --quick         # 2,000 vs 1,000 + 1,000
    python benchmarks/audit_scale.py --features pixel --out audit_bench

The data and the measurement are :func:`mammoshare.audit.benchmarking.audit_at_scale` (also the whole
audit of ``python benchmarks/run.py --only audit``). Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import work_folder  # noqa: E402
from mammoshare.audit.benchmarking import audit_at_scale  # noqa: E402


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
    print(f"audit benchmark: {args.samples} samples vs {args.train} + {args.holdout} patches, {args.features} features",
          file=sys.stderr, flush=True)
    if args.out is not None:
        report = audit_at_scale(args.out, samples=args.samples, train=args.train, holdout=args.holdout,
                                features=args.features, seed=args.seed)
    else:
        with work_folder() as work:  # removed at the end, on Ctrl-C, SIGTERM and SIGHUP
            report = audit_at_scale(work, samples=args.samples, train=args.train, holdout=args.holdout,
                                    features=args.features, seed=args.seed)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

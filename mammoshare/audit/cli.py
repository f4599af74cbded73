"""``mammoshare audit``: the command line of the privacy and quality audit (imports lazily)."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_audit_parser"]


def _features(value: str) -> str:
    if value in ("encoder", "pixel"):
        return value
    if not Path(value).is_file():
        raise argparse.ArgumentTypeError(f"{value}: use 'encoder', 'pixel' or a classifier weights FILE that exists")
    return value


def _cmd_audit(args: argparse.Namespace) -> int:
    from .api import run_audit

    if (args.bundle_dir is None) == (args.synthetic is None):
        raise ValueError("give a generator bundle folder (BUNDLE_DIR) or --synthetic DATALIST, not both and not neither")
    settings = {"steps": args.encoder_steps} if args.encoder_steps is not None else None
    audit = run_audit(
        bundle_dir=args.bundle_dir, synthetic=args.synthetic, train=args.train, holdout=args.holdout, out=args.out,
        num_samples=args.num_samples, features=args.features, seed=args.seed, checkpoint=args.checkpoint,
        snapshot_dir=args.snapshot_dir, num_inference_steps=args.num_inference_steps, inception=args.inception, train_subsets=args.train_subsets,
        holdout_subsets=args.holdout_subsets, labels=args.labels, skip_bad=args.skip_bad, cache_dir=args.cache_dir,
        encoder_settings=settings, device=args.device,
    )
    for family, verdict in audit["verdicts"].items():
        print(f"{family:>13}: {verdict}")
    print(f"wrote {Path(args.out) / 'audit.json'}, audit.md and the PNG sheets")
    return 0


def add_audit_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "audit",
        help="privacy and quality audit of a generator bundle or a synthetic datalist (memorisation, membership, diversity, fidelity)",
        description="Sample a generator bundle (or read --synthetic DATALIST) and compare it with the patches it was "
        "trained on and unseen holdout patches; thresholds are calibrated on that real data.",
    )
    p.add_argument("bundle_dir", nargs="?", type=Path, help="a generator bundle folder (configs/inference.json, models/model.pt)")
    p.add_argument("--synthetic", type=Path, help="audit a finished synthetic datalist instead of sampling a bundle")
    p.add_argument("--train", required=True, type=Path, help="datalist of the patches the generator was trained on")
    p.add_argument("--holdout", required=True, type=Path, help="datalist of real patches of patients it never saw")
    p.add_argument("--out", required=True, type=Path, help="a new or empty folder for audit.json, audit.md and the sheets")
    p.add_argument("--num_samples", "--num-samples", dest="num_samples", type=int, default=None,
                   help="samples to draw from the bundle (default 2000) or to pick from --synthetic (default all)")
    p.add_argument("--features", type=_features, default="encoder",
                   help="feature space: 'encoder' (self-supervised, trained and cached by the audit; default), 'pixel' "
                   "(PCA of 32x32 pixels) or a classifier checkpoint FILE of the project (penultimate layer)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", type=Path, help="another weights file of the bundle than models/model.pt")
    p.add_argument("--snapshot_dir", "--snapshot-dir", dest="snapshot_dir", type=Path,
                   help="sample every *.pt snapshot of this folder; diversity is reported per snapshot")
    p.add_argument("--num_inference_steps", "--num-inference-steps", dest="num_inference_steps", type=int, default=None,
                   help="diffusion bundles only: sampling steps instead of those of its inference.json (e.g. 5 for a "
                   "quick audit; fewer steps give blurrier samples than the ones shared)")
    p.add_argument("--inception", type=Path, help="local torchvision Inception-v3 weights: adds the standard FID (nothing is downloaded)")
    p.add_argument("--train-subsets", "--train_subsets", dest="train_subsets", nargs="+", default=["training"])
    p.add_argument("--holdout-subsets", "--holdout_subsets", dest="holdout_subsets", nargs="+", default=["validation", "test"])
    p.add_argument("--labels", choices=["lesion", "healthy", "all"], default="lesion", help="which real patches (default lesion)")
    p.add_argument("--skip-bad", "--skip_bad", dest="skip_bad", action="store_true", help="skip unreadable patches (counted in the report)")
    p.add_argument("--cache-dir", "--cache_dir", dest="cache_dir", type=Path, help="where trained audit encoders are cached")
    p.add_argument("--encoder-steps", "--encoder_steps", dest="encoder_steps", type=int, help="training steps of the audit encoder (default 200)")
    p.add_argument("--device", default="cpu", help="device that samples the bundle")
    p.set_defaults(func=_cmd_audit)
    return p

"""The ``mammoshare`` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from pathlib import Path

__all__ = ["main", "build_parser"]

logger = logging.getLogger("mammoshare")


def _cmd_phantom(args: argparse.Namespace) -> int:
    from .phantom import PHANTOM_WRITERS, write_phantoms

    roots = write_phantoms(args.out, seed=args.seed, datasets=args.datasets or PHANTOM_WRITERS)
    for name, root in roots.items():
        print(f"{name}: {root}  (PHANTOM: synthetic data, no clinical meaning)")
    return 0


def _cmd_datalist(args: argparse.Namespace) -> int:
    from .datalist import SUBSETS, write_datalist
    from .readers import build_datalist

    datalist, bad_cases = build_datalist(
        args.dataset,
        args.root,
        task=args.task,
        seed=args.seed,
        split_file=args.split,
        skip_bad=args.skip_bad,
        healthy_per_image=args.healthy_per_image,
        healthy_box_size=args.healthy_box_size,
    )
    out = write_datalist(datalist, args.out, bad_cases)
    for subset in SUBSETS:
        records = datalist[subset]
        labels = Counter(r["label"] for r in records)
        patients = len({r["patient_id"] for r in records})
        print(f"{subset:>10}: {patients:4d} patients, {labels[1]:5d} lesion, {labels[0]:5d} healthy patches")
    if datalist["phantom"]:
        print("PHANTOM dataset: synthetic images with no clinical meaning")
    if bad_cases:
        print(f"skipped {len(bad_cases)} bad case(s), listed in {out.with_name(out.stem + '.skipped.json')}")
    print(f"wrote {out}")
    return 0


def _cmd_grid(args: argparse.Namespace) -> int:
    from .grid import patch_grid

    out = patch_grid(args.datalist, args.out, n=args.n, seed=args.seed)
    print(f"wrote {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mammoshare",
        description="Share generative models of mammography lesions instead of patient data.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("phantom", help="write the synthetic phantom datasets (INbreast, BCDR, CBIS-DDSM layouts)")
    p.add_argument("--out", required=True, type=Path, help="folder to write DIR/inbreast, DIR/bcdr, DIR/cbis-ddsm into")
    p.add_argument("--seed", type=int, default=2021)
    p.add_argument("--datasets", nargs="+", choices=["inbreast", "bcdr", "cbis-ddsm"], help="only these layouts")
    p.set_defaults(func=_cmd_phantom)

    p = sub.add_parser("datalist", help="turn a raw dataset into a datalist JSON split by patient")
    p.add_argument("--dataset", required=True, choices=["inbreast", "bcdr", "cbis-ddsm"])
    p.add_argument("--root", required=True, type=Path, help="the dataset's root folder")
    p.add_argument("--task", choices=["all", "mass"], default="all", help="all lesion types, or masses only")
    p.add_argument("--out", required=True, type=Path, help="the datalist JSON to write")
    p.add_argument("--seed", type=int, default=2021, help="seed of the split and of the healthy boxes")
    p.add_argument("--split", type=Path, help="external split file: JSON or CSV patient_id -> subset")
    p.add_argument("--skip-bad", action="store_true", help="skip bad cases (listed beside the datalist) instead of stopping")
    p.add_argument("--healthy-per-image", "--healthy_per_image", dest="healthy_per_image", type=int, default=5)
    p.add_argument("--healthy-box-size", "--healthy_box_size", dest="healthy_box_size", type=int, default=128)
    p.set_defaults(func=_cmd_datalist)

    p = sub.add_parser("grid", help="a PNG grid of canonical patches of a datalist, with labels")
    p.add_argument("datalist", type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--n", type=int, default=64, help="number of patches")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_grid)

    # sharing generators between centres, and the study (their own modules import torch lazily)
    from .exchange.archive import add_keygen_parser, add_pack_parser, add_unpack_parser
    from .exchange.medigan_bridge import add_medigan_export_parser, add_medigan_import_parser
    from .exchange.verify import add_verify_parser

    for add in (add_pack_parser, add_verify_parser, add_unpack_parser, add_keygen_parser,
                add_medigan_import_parser, add_medigan_export_parser):
        add(sub)
    from .study.cli import add_study_parser

    add_study_parser(sub)
    from .audit.cli import add_audit_parser

    add_audit_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("openjpeg").setLevel(logging.WARNING)  # one line per encoded tile otherwise
    from .datalist import DatalistError

    from transforms import MammogramError

    try:
        return args.func(args)
    except (DatalistError, MammogramError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

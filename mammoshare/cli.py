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
        split=args.split,
        skip_bad=args.skip_bad,
        healthy_per_image=args.healthy_per_image,
        healthy_box_size=args.healthy_box_size,
        margin=args.margin,
        margin_mm=args.margin_mm,
        healthy_box_mm=args.healthy_box_mm,
        default_pixel_spacing=args.default_pixel_spacing,
        apply_voi=args.apply_voi,
        calcifications=args.calcifications,
        healthy_reserve_per_image=args.healthy_reserve_per_image,
    )
    out = write_datalist(datalist, args.out, bad_cases)
    for subset in SUBSETS:
        records = datalist[subset]
        labels = Counter(r["label"] for r in records)
        patients = len({r["patient_id"] for r in records})
        types = ", ".join(f"{k} {v}" for k, v in datalist.get("lesion_type_counts", {}).get(subset, {}).items())
        print(f"{subset:>10}: {patients:4d} patients, {labels[1]:5d} lesion, {labels[0]:5d} healthy patches"
              + (f" (lesions: {types})" if types else ""))
    settings = [f"apply_voi {datalist['apply_voi']}"] if "apply_voi" in datalist else []
    if datalist.get("calcifications"):
        settings.append(f"calcifications: one patch per {datalist['calcifications']}")
    for name in ("margin", "healthy_box"):
        if name in datalist:
            settings.append(f"{name.replace('_', ' ')} " + ", ".join(f"{v:g} {k}" for k, v in datalist[name].items()))
    if settings:
        print("settings: " + "; ".join(settings))
    if datalist["phantom"]:
        print("PHANTOM dataset: synthetic images with no clinical meaning")
    if datalist.get("notes"):
        print(f"{len(datalist['notes'])} case(s) give no record by the dataset's definition (listed under 'notes'):")
        for note in datalist["notes"]:
            print(f"  - {note['file']} [{note['case']}]: {note['problem']}")
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

    p = sub.add_parser(
        "phantom", help="write the synthetic phantom datasets (INbreast, BCDR, CBIS-DDSM, mini-MIAS layouts)"
    )
    p.add_argument(
        "--out", required=True, type=Path, help="folder to write DIR/inbreast, DIR/bcdr, DIR/cbis-ddsm, DIR/mias into"
    )
    p.add_argument("--seed", type=int, default=2021)
    p.add_argument("--datasets", nargs="+", choices=["inbreast", "bcdr", "cbis-ddsm", "mias"], help="only these layouts")
    p.set_defaults(func=_cmd_phantom)

    from .datalist import DEFAULT_RESERVE_PER_IMAGE

    p = sub.add_parser("datalist", help="turn a raw dataset into a datalist JSON split by patient")
    p.add_argument("--dataset", required=True, choices=["inbreast", "bcdr", "cbis-ddsm", "mias"])
    p.add_argument("--root", required=True, type=Path, help="the dataset's root folder")
    p.add_argument("--task", choices=["all", "mass"], default="all", help="all lesion types, or masses only")
    p.add_argument("--out", required=True, type=Path, help="the datalist JSON to write")
    p.add_argument("--seed", type=int, default=2021, help="seed of the split and of the healthy boxes")
    p.add_argument(
        "--split",
        help="random (seeded patient split, stratified by label and density), official (the dataset's own "
        "training/test split, validation drawn from its training patients; CBIS-DDSM only, and its default), "
        "or a split file: JSON or CSV patient_id -> subset. Default: official for CBIS-DDSM, random otherwise",
    )
    p.add_argument("--skip-bad", action="store_true", help="skip bad cases (listed beside the datalist) instead of stopping")
    p.add_argument("--healthy-per-image", "--healthy_per_image", dest="healthy_per_image", type=int, default=5)
    p.add_argument("--healthy-reserve-per-image", "--healthy_reserve_per_image", dest="healthy_reserve_per_image",
                   type=int, metavar="N",
                   help="spare healthy boxes per healthy training image, kept in the datalist for class balancing "
                        f"when lesions are added (default {DEFAULT_RESERVE_PER_IMAGE}; 0: none)")
    p.add_argument("--healthy-box-size", "--healthy_box_size", dest="healthy_box_size", type=int, default=128,
                   help="healthy box side in pixels (the paper: 128); also the smallest lesion box side")
    p.add_argument("--margin", type=int, default=60, help="lesion box margin in pixels on every side (the paper: 60)")
    p.add_argument("--margin-mm", "--margin_mm", dest="margin_mm", type=float,
                   help="lesion box margin in mm instead of pixels, converted with each image's pixel spacing")
    p.add_argument("--healthy-box-mm", "--healthy_box_mm", dest="healthy_box_mm", type=float,
                   help="healthy box side (and smallest lesion box side) in mm instead of pixels")
    p.add_argument("--default-pixel-spacing", "--default_pixel_spacing", dest="default_pixel_spacing", type=float,
                   metavar="MM", help="pixel spacing for files that state none (needed by the mm options)")
    p.add_argument("--apply-voi", "--apply_voi", dest="apply_voi", choices=["auto", "yes", "no"], default="auto",
                   help="apply the DICOM VOI LUT / window before the per-image scaling; auto: the dataset's default "
                        "(no for INbreast, CBIS-DDSM and BCDR: the study scaled the raw values)")
    p.add_argument("--calcifications", choices=["roi", "cluster"],
                   help="INbreast: one patch per calcification ROI (roi, the paper's count; the default) or per "
                        "5 mm cluster of ROIs (cluster)")
    p.set_defaults(func=_cmd_datalist)

    p = sub.add_parser("grid", help="a PNG grid of canonical patches of a datalist, with labels")
    p.add_argument("datalist", type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--n", type=int, default=64, help="number of patches")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_grid)

    # sharing generators between centres, and the study (their own modules import torch lazily)
    from .exchange.cli import (
        add_keygen_parser,
        add_medigan_export_parser,
        add_medigan_import_parser,
        add_pack_parser,
        add_unpack_parser,
        add_verify_parser,
    )

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

    try:
        return args.func(args)
    except Exception as e:
        # transforms (torch, MONAI) is looked up only when loaded: commands that never decode an image stay light
        decoding = sys.modules.get("transforms")
        expected = (DatalistError, FileNotFoundError, ValueError) + ((decoding.MammogramError,) if decoding else ())
        if not isinstance(e, expected):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""``mammoshare study``: the command line of the study runner (``add_study_parser(subparsers)``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .presets import CLASSIFIERS, FRACTIONS, PRESETS, ROW_KEYS, TASKS

__all__ = ["add_study_parser", "options_from_args", "cmd_study"]

EPILOG = """\
rows (--only): none wgangp dcgan optimam both_a both_b real_bcdr ddpm both_c (the last two beyond
the paper: centre B's diffusion model ddpm_bcdr, alone and with OPTIMAM).
Sources: centre A (--centre-a, INbreast or CBIS-DDSM) trains and tests the classifiers; centre B
(--bcdr: GANs trained per task; or --bcdr-generators mass=DCGAN.pt,WGAN.pt all=DCGAN.pt,WGAN.pt);
centre C (--optimam-generator: medigan 00002 malign_mass_gen or MALIGN_DCGAN.zip). A row whose
source is not given is reported as not run. The demo preset runs on phantom data written under
--out. Re-running the same command reuses every finished stage (only the tables are rewritten).
Exit status: 0 when every runnable cell succeeded, 1 when one failed.
"""


def add_study_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``study`` sub-command to an argparse ``subparsers``; it sets ``func`` (returns the exit status)."""
    p = subparsers.add_parser(
        "study",
        help="run the paper's experiment matrix and write Tables 1 and 2",
        description="Run the study's experiment matrix (augmentation x training data x task x classifier x seed) "
        "with the bundles, resumably, and write Tables 1 and 2, runs.json, a paired comparison, a plot and a report.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--preset", required=True, choices=sorted(PRESETS), help="demo: phantom data, tiny settings; paper: the paper's settings")
    p.add_argument("--out", required=True, type=Path, help="the study folder (created; an existing one is resumed)")
    p.add_argument("--centre-a", type=Path, help="centre A's raw dataset root (demo: phantom data when not given)")
    p.add_argument("--centre-a-format", choices=["inbreast", "cbis-ddsm"], default="inbreast", help="centre A's dataset layout")
    p.add_argument("--bcdr", type=Path, help="BCDR's raw dataset root (centre B; demo: phantom data when not given)")
    p.add_argument("--bcdr-generators", nargs="+", metavar="TASK=DCGAN,WGANGP",
                   help="shared BCDR generator files per task instead of training them, e.g. mass=dcgan.pt,wgangp.pt")
    p.add_argument("--optimam-generator", type=Path, metavar="FILE",
                   help="the OPTIMAM DCGAN (medigan 00002: malign_mass_gen or MALIGN_DCGAN.zip)")
    p.add_argument("--seeds", type=int, help="number of classifier seeds (demo 1, paper 3)")
    p.add_argument("--only", nargs="+", metavar="ROW", help=f"run these augmentation rows only: {' '.join(ROW_KEYS)}")
    p.add_argument("--tasks", nargs="+", choices=list(TASKS), help="run these tasks only")
    p.add_argument("--classifiers", nargs="+", choices=list(CLASSIFIERS), help="run these classifiers only")
    p.add_argument("--fractions", nargs="+", type=float, choices=list(FRACTIONS), help="run these training fractions only")
    p.add_argument("--positive-class", choices=["lesion", "healthy"], default="lesion",
                   help="positive class of F1/AUROC/AUPRC (healthy = the paper's convention)")
    p.add_argument("--device", help="device of every bundle (default: CUDA when available)")
    p.add_argument("--num-workers", type=int, help="data loader worker processes of the bundles (default 0)")
    p.add_argument("--bundles", type=Path, help="the folder of the bundles (default: bundles/ of the current folder, else of the checkout "
                   "the package runs from; an installed package needs it)")
    p.add_argument("--skip-bad", action="store_true", help="skip bad dataset cases when building datalists")
    p.add_argument("--gpus", type=_gpu_list, metavar="0,1,...",
                   help="GPUs to run the cells and GAN trainings on, one at a time per GPU (default: every GPU "
                        "when there are several; on CPU the cells run one after the other)")
    p.add_argument("--sequential", action="store_true", help="run every stage in this process even with several GPUs")
    p.add_argument("--no-progress", action="store_true", help="no overall progress bar")
    p.set_defaults(func=cmd_study)
    return p


def _gpu_list(text: str) -> list[int]:
    try:
        gpus = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--gpus {text!r}: give GPU indices separated by commas, e.g. 0,1") from None
    if not gpus or any(g < 0 for g in gpus) or len(set(gpus)) != len(gpus):
        raise argparse.ArgumentTypeError(f"--gpus {text!r}: give distinct GPU indices >= 0, e.g. 0,1")
    return gpus


def options_from_args(args: argparse.Namespace):
    from .runner import StudyOptions

    return StudyOptions(
        preset=args.preset,
        out=args.out,
        centre_a=args.centre_a,
        centre_a_format=args.centre_a_format,
        bcdr=args.bcdr,
        bcdr_generators=args.bcdr_generators,
        optimam_generator=args.optimam_generator,
        seeds=args.seeds,
        only=args.only,
        tasks=args.tasks,
        classifiers=args.classifiers,
        fractions=args.fractions,
        positive_class=args.positive_class,
        device=args.device,
        num_workers=args.num_workers,
        bundles_dir=args.bundles,
        skip_bad=args.skip_bad,
        parallel=False if args.sequential else None,
        gpus=getattr(args, "gpus", None),
        progress=not args.no_progress,
        verbose=bool(getattr(args, "verbose", False)),
    )


def cmd_study(args: argparse.Namespace) -> int:
    from .runner import run_study

    result = run_study(options_from_args(args))
    done = sum(c["status"] == "done" for c in result.cells)
    failed = sum(c["status"] == "failed" for c in result.cells)
    not_run = sum(c["status"] == "not_run" for c in result.cells)
    print(f"study in {result.study_dir}: {done} cells done, {failed} failed, {not_run} not run; "
          f"{len(result.ran)} stages run, {len(result.reused)} reused, {result.seconds:.0f} s")
    for name in ("table1_all_lesions.md", "table2_masses.md", "runs.json", "report.md"):
        print(f"  {result.outputs[name]}")
    for stage in result.failed:
        print(f"FAILED {stage}: {result.records[stage].get('error')}")
    return result.exit_status

"""The exchange's command lines: ``mammoshare pack``, ``verify``, ``unpack``, ``keygen``,
``medigan-import`` and ``medigan-export`` (each ``add_*_parser`` adds one subcommand)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from .layout import RECEIPT, SIGNATURE, ExchangeError, PackError, UnpackError
from .medigan.models import OFFLINE_ENV
from .pack import load_pack_audit, pack_bundle
from .signing import SigningError, generate_signing_key
from .unpack import unpack_bundle
from .verify import verify_bundle

__all__ = [
    "add_pack_parser", "add_verify_parser", "add_unpack_parser", "add_keygen_parser", "add_medigan_import_parser",
    "add_medigan_export_parser", "add_verify_options",
]


def _pack_audit(args: argparse.Namespace):
    """The audit ``pack`` gates on: loaded (``--audit``), run here (``--audit-train`` /
    ``--audit-holdout``), or None (``--no-audit``)."""
    run = args.audit_train is not None or args.audit_holdout is not None
    if sum((args.audit is not None, run, args.no_audit)) != 1:
        raise PackError("give exactly one of --audit DIR (a finished audit), --audit-train DATALIST --audit-holdout DATALIST "
                        "(run the audit now), or --no-audit (share it recorded as not audited)")
    if args.audit is not None:
        return load_pack_audit(args.audit)
    if not run:
        return None
    if args.audit_train is None or args.audit_holdout is None:
        raise PackError("--audit-train and --audit-holdout go together: the generator's training datalist and unseen patients' datalist")
    if Path(args.out).exists():
        raise PackError(f"{args.out}: exists; an archive is never overwritten (remove it or choose another name)")
    from mammoshare.audit import run_or_load_audit

    out = args.audit_out or Path(args.out).with_name(Path(args.out).stem + ".audit")
    print(f"auditing {args.bundle_dir} ({args.audit_num_samples} samples, {args.audit_features} features) into {out}")
    return run_or_load_audit(bundle_dir=args.bundle_dir, train=args.audit_train, holdout=args.audit_holdout, out=out,
                             num_samples=args.audit_num_samples, features=args.audit_features, seed=args.audit_seed,
                             num_inference_steps=args.audit_num_inference_steps)


def _cmd_pack(args: argparse.Namespace) -> int:
    try:
        audit = _pack_audit(args)
        result = pack_bundle(args.bundle_dir, args.out, train_datalist=args.train_datalist, sign_key=args.sign,
                             audit=audit, accept_risk=args.accept_risk, no_audit=args.no_audit)
    except (ExchangeError, SigningError, ValueError, OSError) as e:
        print(f"pack refused: {e}", file=sys.stderr)
        return 1
    if audit is None:
        print("WARNING: --no-audit: NOT AUDITED for memorisation or membership inference; recorded in the manifest and the model card")
    else:
        verdicts = ", ".join(f"{k} {v}" for k, v in audit["verdicts"].items())
        print(f"audit: {verdicts}")
        if args.accept_risk and any(audit["verdicts"][f] == "fail" for f in ("memorisation", "membership")):
            print(f"WARNING: shared despite a failed privacy audit; accepted risk recorded in the signed manifest: {args.accept_risk.strip()}")
    for name in result.files:
        print(f"  {name}")
    print(f"wrote {result.path} ({len(result.files)} files)")
    if result.left_out:
        print("left out of the archive (not shared):")
        for line in result.left_out:
            print(f"  {line}")
    if result.signed:
        print(f"signed: {SIGNATURE} (OpenSSF model-signing format, Ed25519); key fingerprint {result.fingerprint}")
    else:
        print("NOT signed (--sign KEY signs it); receivers refuse it unless they pass --allow-unsigned")
    print(f"archive SHA-256: {result.sha256}")
    print("Give the receiver this SHA-256 (and your public key) by another channel than the archive; they check with")
    print(f"  mammoshare verify {result.path.name} --expect-sha256 {result.sha256}" + (" --trusted-key YOUR_KEY.pub" if result.signed else " --allow-unsigned"))
    return 0


def _cmd_unpack(args: argparse.Namespace) -> int:
    try:
        report = unpack_bundle(
            args.archive, args.out, trust=args.trust, schema=args.schema, expect_sha256=args.expect_sha256,
            trusted_keys=args.trusted_key, allow_unsigned=args.allow_unsigned, train_datalist=args.train_datalist,
            torchscript=args.torchscript,
        )
    except UnpackError as e:
        if e.report is not None:
            print(e.report.text())
        print(f"unpack refused: {e}", file=sys.stderr)
        return 1
    except (ExchangeError, SigningError, ValueError, OSError) as e:
        print(f"unpack refused: {e}", file=sys.stderr)
        return 1
    print(report.text())
    if args.trust and not report.passed(trust=False):
        print(f"WARNING: --trust: the sender's configs/inference.json is NOT the pinned one and may run arbitrary code; "
              f"your consent is recorded in {Path(args.out).as_posix()}/{RECEIPT}")
    print(f"unpacked into {args.out} (receipt: {RECEIPT})")
    print(
        f"run it: python -m monai.bundle run --config_file {Path(args.out).as_posix()}/configs/inference.json "
        f"--bundle_root {Path(args.out).as_posix()} --num_samples N --output_dir OUT --seed S"
    )
    return 0


def git_work_tree_of(path: Path) -> Path | None:
    """The git work tree that holds ``path`` (a folder above it with a ``.git`` folder or file), or None."""
    for folder in Path(path).absolute().parents:
        if (folder / ".git").exists():
            return folder
    return None


def _cmd_keygen(args: argparse.Namespace) -> int:
    private, public = Path(f"{args.out}.key"), Path(f"{args.out}.pub")
    try:
        fingerprint = generate_signing_key(private, public)
    except (SigningError, OSError) as e:
        print(f"keygen refused: {e}", file=sys.stderr)
        return 1
    work_tree = git_work_tree_of(private)
    if work_tree is not None:
        print(f"WARNING: the private key {private} is inside the git work tree {work_tree}: never commit it; "
              "keep keys outside any checkout (e.g. ~/.mammoshare/keys)", file=sys.stderr)
    print(f"private key: {private} (keep it secret; it signs archives: mammoshare pack ... --sign {private})")
    print(f"public key:  {public} (give it to the receivers: mammoshare verify ... --trusted-key {public})")
    print(f"fingerprint: {fingerprint}")
    return 0


def add_verify_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--schema", type=Path, help="MONAI metadata schema file (default: the copy shipped with mammoshare)")
    parser.add_argument("--expect-sha256", dest="expect_sha256", help="the archive's SHA-256 received from the sender out of band")
    parser.add_argument("--trusted-key", dest="trusted_key", type=Path, action="append",
                        help="a sender's Ed25519 public key (PEM); repeat for several. The archive must be signed by one of them")
    parser.add_argument("--allow-unsigned", dest="allow_unsigned", action="store_true",
                        help="accept an archive that is unsigned or signed by an unknown key (then only --expect-sha256 ties it to the sender)")
    parser.add_argument("--train-datalist", dest="train_datalist", type=Path,
                        help="the sender's own check: refuse if any file holds a patient id of this datalist")


def add_pack_parser(subparsers) -> argparse.ArgumentParser:
    """``mammoshare pack BUNDLE_DIR --out FILE.zip (--audit DIR | --audit-train DL --audit-holdout DL | --no-audit)
    [--accept-risk REASON] [--train-datalist FILE] [--sign KEY]``."""
    p = subparsers.add_parser(
        "pack",
        help="pack a generator bundle into a data-only, signed, verifiable exchange archive",
        description="Pack a generator bundle as data only: metadata, generator.json, the pinned inference.json, "
        "safetensors weights, model card, licence, a SHA-256 manifest and an optional model-signing signature.",
    )
    p.add_argument("bundle_dir", type=Path, help="the generator bundle folder")
    p.add_argument("--out", required=True, type=Path, help="the archive to write (never overwritten)")
    p.add_argument("--train-datalist", dest="train_datalist", type=Path, help="the datalist the generator was trained on: refuse if any file holds one of its patient ids")
    p.add_argument("--sign", type=Path, help="Ed25519 private key (PEM, mammoshare keygen) that signs the archive")
    g = p.add_argument_group("privacy audit (one of --audit, --audit-train/--audit-holdout, --no-audit is required)")
    g.add_argument("--audit", type=Path, metavar="DIR", help="the generator's finished audit (mammoshare audit ... --out DIR)")
    g.add_argument("--audit-train", dest="audit_train", type=Path, metavar="DATALIST", help="run the audit now: the generator's training datalist")
    g.add_argument("--audit-holdout", dest="audit_holdout", type=Path, metavar="DATALIST", help="run the audit now: a datalist of patients the generator never saw")
    g.add_argument("--audit-out", dest="audit_out", type=Path, metavar="DIR", help="where the audit run here goes (default: OUT without .zip, plus .audit)")
    g.add_argument("--audit-num-samples", dest="audit_num_samples", type=int, default=2000, metavar="N", help="samples the audit draws (default 2000)")
    g.add_argument("--audit-features", dest="audit_features", default="encoder", metavar="KIND",
                   help="encoder (default), pixel, or a classifier checkpoint file (see mammoshare audit)")
    g.add_argument("--audit-seed", dest="audit_seed", type=int, default=0, help="seed of the audit run here")
    g.add_argument("--audit-num-inference-steps", dest="audit_num_inference_steps", type=int, metavar="N",
                   help="a diffusion bundle's sampling steps for the audit run here (default: its inference.json's)")
    g.add_argument("--accept-risk", dest="accept_risk", metavar="REASON",
                   help="share a generator whose memorisation or membership audit failed; the reason is recorded in the signed manifest")
    g.add_argument("--no-audit", dest="no_audit", action="store_true",
                   help="pack without an audit, recorded as NOT AUDITED in the manifest and the model card")
    p.set_defaults(func=_cmd_pack)
    return p


def add_unpack_parser(subparsers) -> argparse.ArgumentParser:
    """``mammoshare unpack FILE.zip --out DIR [--trust] [--trusted-key PUB] [--allow-unsigned] ...``."""
    p = subparsers.add_parser(
        "unpack",
        help="verify an exchange archive and, if it passes, extract it with the receiver's pinned config",
        description="Verify the archive (as mammoshare verify), then write it into a new or empty folder with the "
        "pinned inference.json regenerated here and a receipt.json; nothing is written when a check fails.",
    )
    p.add_argument("archive", type=Path, help="the archive (.zip)")
    p.add_argument("--out", required=True, type=Path, help="a new or empty folder")
    p.add_argument("--trust", action="store_true", help="consent to a non-pinned inference.json (only that check is waived; recorded)")
    p.add_argument("--torchscript", action="store_true", help="also write models/model.ts, scripted here from the verified weights")
    add_verify_options(p)
    p.set_defaults(func=_cmd_unpack)
    return p


def add_keygen_parser(subparsers) -> argparse.ArgumentParser:
    """``mammoshare keygen --out PREFIX``: PREFIX.key (private) and PREFIX.pub (public)."""
    p = subparsers.add_parser("keygen", help="make an Ed25519 key pair for signing exchange archives")
    p.add_argument("--out", required=True, help="writes PREFIX.key (private, mode 0600) and PREFIX.pub (public)")
    p.set_defaults(func=_cmd_keygen)
    return p


def _cmd_verify(args: argparse.Namespace) -> int:
    try:
        report = verify_bundle(args.source, schema=args.schema, expect_sha256=args.expect_sha256, trusted_keys=args.trusted_key,
                               allow_unsigned=args.allow_unsigned, train_datalist=args.train_datalist)
    except (ExchangeError, SigningError, OSError, ValueError) as e:
        print(f"verify refused: {e}", file=sys.stderr)
        return 1
    print(report.text())
    return 0 if report.passed() else 1


def add_verify_parser(subparsers) -> argparse.ArgumentParser:
    """``mammoshare verify FILE.zip|DIR [--trusted-key PUB ...] [--allow-unsigned] [--expect-sha256 HASH] ...``."""
    p = subparsers.add_parser(
        "verify",
        help="check a generator archive (or unpacked folder) without running, importing or unpickling anything from it",
        description="Check container limits, allow-list, payloads, hashes, signature, metadata, generator.json, the pinned "
        "inference config and the weights; exit 0 only when every check passes.",
    )
    p.add_argument("source", type=Path, help="the archive (.zip) or an unpacked bundle folder")
    add_verify_options(p)
    p.set_defaults(func=_cmd_verify)
    return p


def _cmd_import(args: argparse.Namespace) -> int:
    from mammoshare.gan.weights import WeightsError

    from .medigan.importer import MediganPackageError, fetch_medigan_package, import_medigan_package

    try:
        if args.package is None:
            if args.model_id is None:
                raise MediganPackageError("give the package FILE (zip, folder or weights file), or --model-id ID to fetch it with medigan")
            with tempfile.TemporaryDirectory() as tmp:
                package = fetch_medigan_package(args.model_id, tmp)
                out = import_medigan_package(package, args.out, model_id=args.model_id, name=args.name, overwrite=args.force)
        else:
            out = import_medigan_package(args.package, args.out, model_id=args.model_id, name=args.name, overwrite=args.force)
    except (MediganPackageError, WeightsError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    meta = json.loads((out / "configs" / "metadata.json").read_text())
    origin = meta.get("origin", {})
    print(f"{origin.get('medigan_model_id')} -> {out / 'models' / 'model.safetensors'} (bundle {meta.get('name')} {meta.get('version')})")
    print(f"generate: python -m monai.bundle run --config_file {out / 'configs' / 'inference.json'} --num_samples 1200 --output_dir synthetic/{meta.get('name')}")
    return 0


def add_medigan_import_parser(subparsers) -> argparse.ArgumentParser:
    """``mammoshare medigan-import FILE --out BUNDLE_DIR [--model-id ID] [--name NAME] [--force]``."""
    p = subparsers.add_parser(
        "medigan-import",
        help="turn a medigan model package (00002, 00005, 00006) into a generator bundle",
        description=(
            "Convert a medigan model package (zip, folder, or its weights file alone) into a mammoshare generator "
            "bundle, or install its weights into an existing bundle of the same architecture (e.g. "
            "bundles/dcgan_optimam). The package's code is never executed. Without FILE, --model-id fetches the "
            f"package through medigan when the network is reachable (never when {OFFLINE_ENV}=1)."
        ),
    )
    p.add_argument("package", nargs="?", type=Path, metavar="FILE",
                   help="MALIGN_DCGAN.zip, 00005_DCGAN_MMG_MASS_ROI.zip, a package folder, malign_mass_gen, 500.pt, 10000.pt")
    p.add_argument("--out", required=True, type=Path, metavar="BUNDLE_DIR", help="a new or empty folder, or an existing bundle")
    p.add_argument("--model-id", "--model_id", dest="model_id", metavar="ID",
                   help="medigan model id (00002_DCGAN_MMG_MASS_ROI, 00005..., 00006... or 2/5/6); default: detected")
    p.add_argument("--name", help="name of a new bundle (default per model, e.g. dcgan_optimam)")
    p.add_argument("--force", action="store_true", help="replace the weights of an existing bundle")
    p.set_defaults(func=_cmd_import)
    return p


def _cmd_export(args: argparse.Namespace) -> int:
    from mammoshare.gan.weights import WeightsError

    from .medigan.exporter import MediganPackageError, export_medigan_package

    try:
        package = export_medigan_package(args.bundle, args.out, args.model_id, checkpoint=args.checkpoint, audit=args.audit)
    except (MediganPackageError, WeightsError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"medigan package: {package} (zip {package.with_suffix('.zip')})")
    if args.audit is None:
        print("privacy_preservation: left empty (no --audit DIR given; medigan users see no privacy information)")
    else:
        print(f"privacy_preservation: filled from the audit {args.audit}")
    print(f"global.json entry: {package.parent / 'global.json'}; merge it into config/global.json of medigan's working directory")
    return 0


def add_medigan_export_parser(subparsers) -> argparse.ArgumentParser:
    """``mammoshare medigan-export BUNDLE_DIR --out DIR [--model-id ID] [--checkpoint FILE] [--audit DIR]``."""
    p = subparsers.add_parser(
        "medigan-export",
        help="write a generator bundle as a medigan model package (+ its global.json entry)",
        description=(
            "Write a generator bundle as a medigan model package (folder and zip: __init__.py with generate(), "
            "needing torch, numpy and PIL only, and the weights) and a global.json entry whose package_link is the "
            "local zip. medigan 1.0.0 runs it offline from a working directory whose config/global.json holds the entry."
        ),
    )
    p.add_argument("bundle", type=Path, metavar="BUNDLE_DIR")
    p.add_argument("--out", required=True, type=Path, metavar="DIR")
    p.add_argument("--model-id", "--model_id", dest="model_id", metavar="ID", help="default mammoshare_<name>_v<version>")
    p.add_argument("--checkpoint", type=Path, help="weights to export instead of the bundle's models/model.pt")
    p.add_argument("--audit", type=Path, metavar="DIR",
                   help="the finished audit of these weights (mammoshare audit): fills medigan's privacy_preservation field")
    p.set_defaults(func=_cmd_export)
    return p

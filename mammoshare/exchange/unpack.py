"""``mammoshare unpack``: a verified archive -> a bundle folder with the receiver's own pinned
``configs/inference.json`` and a ``receipt.json``; kill-safe (a ``.partial`` sibling moved into
place only when all passed)."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import zipfile
from pathlib import Path

from mammoshare.atomic import fsync_dir, partial_name, remove_stale_partials
from mammoshare.hashing import sha256_file

from mammoshare.gan.configs import logging_conf

from .layout import GENERATOR, INFERENCE, LOGGING_CONF, MODEL, RECEIPT, TORCHSCRIPT, UnpackError, is_allowed_name
from .reader import ZipSource
from .verify import verify_bundle

__all__ = ["unpack_bundle"]


def _target_is_usable(out: Path) -> bool:
    """Refuses a non-empty or non-folder target; returns whether it exists (empty)."""
    if out.is_symlink():
        raise UnpackError(f"{out}: is a symbolic link; unpack into a new or empty folder")
    if out.exists():
        if not out.is_dir():
            raise UnpackError(f"{out}: exists and is not a folder; unpack into a new or empty folder")
        if any(out.iterdir()):
            raise UnpackError(f"{out}: the folder is not empty; unpack into a new or empty folder (nothing was written)")
        return True
    return False


def _write_file(path: Path, data: bytes | None = None, copy=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    with os.fdopen(fd, "wb") as f:
        if copy is not None:
            copy(f)
        else:
            f.write(data)
        f.flush()
        os.fsync(f.fileno())


def unpack_bundle(
    archive: str | os.PathLike,
    out: str | os.PathLike,
    trust: bool = False,
    schema: str | os.PathLike | None = None,
    expect_sha256: str | None = None,
    trusted_keys: list | tuple | str | os.PathLike | None = None,
    allow_unsigned: bool = False,
    train_datalist: str | os.PathLike | None = None,
    torchscript: bool = False,
):
    """Verify ``archive`` and, when it passes, write it into ``out`` with the receiver's own pinned
    ``configs/inference.json`` and a ``receipt.json`` (what was checked, by which key, any consent).

    Everything is written into a ``.partial`` sibling folder first and moved into place only when
    all passed; a failure or a kill leaves nothing at ``out``. ``trust`` waives the config pinning
    only (the sender's differing ``inference.json`` is then written, and the consent recorded).
    ``torchscript`` adds ``models/model.ts`` traced here from the receiver's own network.

    Raises:
        UnpackError: the archive failed verification or ``out`` is not a new or empty folder.
    """
    archive, out = Path(archive), Path(out)
    if not archive.is_file() or not zipfile.is_zipfile(archive):
        raise UnpackError(f"{archive}: not a zip archive")
    remove_stale_partials(out)
    exists = _target_is_usable(out)
    report = verify_bundle(archive, schema=schema, expect_sha256=expect_sha256, trusted_keys=trusted_keys,
                           allow_unsigned=allow_unsigned, train_datalist=train_datalist)
    if not report.passed(trust=trust):
        failed = ", ".join(c.name for c in report.failures(trust=trust))
        hint = " (--trust would let the config through, nothing else)" if report.failures() and not report.failures(trust=True) else ""
        raise UnpackError(f"{archive}: refused, nothing was written: failed checks: {failed}{hint}", report)
    if torchscript and report.spec.family != "dcgan":
        raise UnpackError(f"{archive}: --torchscript exports DCGAN generators only; a {report.spec.family} generator is sampled "
                          "with its pinned configs/inference.json (unpack without --torchscript); nothing was written", report)
    use_senders_config = trust and not report.passed(trust=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = partial_name(out)
    work.mkdir()
    try:
        src = ZipSource(archive)
        try:
            for name, sha in sorted(report.verified_files.items()):
                if name == INFERENCE and not use_senders_config:
                    continue
                if not is_allowed_name(name):  # verified already; kept as a last guard
                    raise UnpackError(f"{name}: not an allowed file name")
                _write_file(work / name, copy=lambda f, n=name, s=sha: src.copy_to(n, f, s))
        finally:
            src.close()
        if not use_senders_config:
            _write_file(work / INFERENCE, report.pinned_inference)
        # written by the receiver, like the pinned config: MONAI's run looks for configs/logging.conf
        _write_file(work / LOGGING_CONF, logging_conf())
        extra = {LOGGING_CONF: sha256_file(work / LOGGING_CONF)}
        if torchscript:
            extra[TORCHSCRIPT] = _export_torchscript(work, report.spec)
        receipt = {
            "archive": archive.name,
            "archive_sha256": sha256_file(archive),
            "unpacked_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "unpacked_by": "mammoshare unpack",
            "signature": report.signature_status,
            "signer_key": report.signer_key,
            "inference_config": ("the sender's, NOT pinned: let through by --trust" if use_senders_config
                                 else f"pinned: regenerated from {GENERATOR} by this installation"),
            "trust": {"given": bool(trust), "waived": [c.name for c in report.failures()] if use_senders_config else [],
                      "consent": "the receiver accepted a config that may run arbitrary code" if use_senders_config else None},
            "receiver_files": extra,
            "checks": {c.name: c.status for c in report.checks},
        }
        _write_file(work / RECEIPT, (json.dumps(receipt, indent=2, sort_keys=True) + "\n").encode("utf-8"))
        for folder, dirs, _ in os.walk(work):
            fsync_dir(folder)
        if exists:
            out.rmdir()
        os.rename(work, out)
        fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return report


def _export_torchscript(folder: Path, spec) -> str:
    """``models/model.ts`` scripted from the receiver's own network with the verified weights."""
    import torch

    from mammoshare.gan.weights import build_generator, read_safetensors

    network = build_generator(spec)
    network.load_state_dict(read_safetensors((folder / MODEL).read_bytes(), MODEL, spec), strict=True)
    path = folder / TORCHSCRIPT
    torch.jit.save(torch.jit.script(network.eval()), str(path))
    return sha256_file(path)

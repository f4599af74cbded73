"""Kill-safe file writes: a file (or folder) is either the previous complete one or the new one.

Every write goes to a temporary sibling named ``.<name>.<pid>.<random>.partial`` (unique per
process and call), is flushed and fsynced, renamed over the target with :func:`os.replace`, and
the folder is fsynced so the rename itself survives a crash. A process killed at any moment leaves
at most a ``.partial`` sibling, which :func:`remove_stale_partials` (called by the next run that
writes the same target) deletes once the process that made it is gone.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "atomic_torch_save",
    "partial_name",
    "remove_stale_partials",
    "fsync_dir",
    "atomic_call",
    "PARTIAL_SUFFIX",
]

PARTIAL_SUFFIX = ".partial"
_PARTIAL = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{16}\.partial")


def partial_name(target: str | os.PathLike) -> Path:
    """A unique temporary sibling of ``target``: ``.<name>.<pid>.<16 hex>.partial``."""
    target = Path(target)
    return target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(8)}{PARTIAL_SUFFIX}")


def fsync_dir(folder: str | os.PathLike) -> None:
    """fsync a folder so that a rename inside it is durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_partials(target: str | os.PathLike) -> list[Path]:
    """Delete the ``.partial`` siblings of ``target`` left by processes that no longer run (a
    killed pack, unpack or training run); returns what was removed."""
    target = Path(target)
    folder = target.parent
    if not folder.is_dir():
        return []
    removed = []
    for entry in folder.iterdir():
        match = _PARTIAL.fullmatch(entry.name)
        if match is None or match.group("name") != target.name or _alive(int(match.group("pid"))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


@contextlib.contextmanager
def atomic_write(target: str | os.PathLike, mode: int = 0o644, overwrite: bool = True) -> Iterator[IO[bytes]]:
    """``with atomic_write(path) as f: f.write(...)``: the data appear at ``path`` complete, or not at all.

    ``overwrite=False`` refuses (``FileExistsError``) a target that exists when the write ends.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(target)
    tmp = partial_name(target)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if not overwrite:
            # link() fails on an existing target: no window in which another writer's file is replaced
            os.link(tmp, target)
            tmp.unlink()
        else:
            os.replace(tmp, target)
        fsync_dir(target.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(target: str | os.PathLike, data: bytes, mode: int = 0o644, overwrite: bool = True) -> Path:
    """Write ``data`` to ``target`` kill-safely (see :func:`atomic_write`)."""
    with atomic_write(target, mode, overwrite) as f:
        f.write(data)
    return Path(target)


def atomic_torch_save(obj: Any, target: str | os.PathLike) -> Path:
    """``torch.save`` kill-safely: training checkpoints (``last.pt``, ``model.pt``, snapshots)."""
    import torch

    with atomic_write(target) as f:
        torch.save(obj, f)
    return Path(target)


def atomic_call(target: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Let ``write(tmp_path)`` write a file by path (libraries that take a file name), then move
    it into place kill-safely."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(target)
    tmp = partial_name(target)
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target

"""Reading a received archive (or an unpacked folder) with limits, without extracting anything.

A zip is opened with limits on the number of entries, each file's and the total uncompressed size,
the compression ratio (zip bombs) and the sizes the entries declare against the archive's own size;
every entry must use the same compression method (stored or deflated), none may be encrypted,
a link or a special file, and names must be normal: no backslashes, drive letters, absolute paths,
``..``, empty or ``.`` parts, NUL or control characters, only Unicode NFC, and no two names equal
once case-folded (duplicates, or collisions on case-insensitive file systems). Reads are capped at
the declared size, so an entry that inflates beyond what it declared is refused too.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import Path

from mammoshare.hashing import sha256_file

__all__ = ["ArchiveLimits", "LIMITS", "ReadError", "ZipSource", "DirSource", "open_source", "name_problems"]


class ReadError(ValueError):
    """A file of a received archive that cannot be read within the limits; names the file."""


@dataclass(frozen=True)
class ArchiveLimits:
    max_entries: int = 256
    max_total_bytes: int = 4 << 30
    max_file_bytes: int = 1 << 30
    max_text_bytes: int = 4 << 20
    max_ratio: int = 100


LIMITS = ArchiveLimits()
#: folder entries that zip tools add and that are harmless
ALLOWED_DIRS = frozenset({"configs/", "models/", "models/snapshots/", "docs/"})


def name_problems(name: str) -> list[str]:
    """Why an entry name is not a normal relative path (empty when it is)."""
    reasons = []
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        reasons.append("holds NUL or control characters")
    if "\\" in name:
        reasons.append("holds a backslash")
    if name.startswith("/") or re.match(r"[A-Za-z]:", name):
        reasons.append("an absolute path or drive letter")
    parts = name.rstrip("/").split("/")
    if ".." in parts:
        reasons.append("escapes the target folder ('..')")
    if any(p in ("", ".") for p in parts) and not name.startswith("/"):
        reasons.append("has empty or '.' path parts")
    if unicodedata.normalize("NFC", name) != name:
        reasons.append("is not in Unicode normal form NFC")
    return reasons


def _fold(name: str) -> str:
    return unicodedata.normalize("NFKC", name).casefold()


class ZipSource:
    """The entries of a zip archive that passed the container checks (``names``), the reasons of
    those that did not (``problems``), and capped reads."""

    kind = "archive"

    def __init__(self, path: Path, limits: ArchiveLimits = LIMITS):
        self.path, self.limits = path, limits
        self.zf = zipfile.ZipFile(path)
        infos = self.zf.infolist()
        self.problems: list[str] = []
        if len(infos) > limits.max_entries:
            self.problems.append(f"{len(infos)} entries, more than the {limits.max_entries} accepted")
            infos = infos[: limits.max_entries]
        archive_size = path.stat().st_size
        methods = {i.compress_type for i in infos if not i.is_dir()}
        if len(methods) > 1:
            self.problems.append(f"entries use several compression methods {sorted(methods)}; one is accepted")
        total = 0
        self.infos: dict[str, zipfile.ZipInfo] = {}
        seen: dict[str, str] = {}
        for info in infos:
            name = info.filename
            reasons = name_problems(info.orig_filename)  # zipfile cuts a name at a NUL; the original holds it
            mode = (info.external_attr >> 16) & 0xFFFF
            kind = stat.S_IFMT(mode)
            if kind == stat.S_IFLNK:
                reasons.append("a symbolic link")
            elif kind not in (0, stat.S_IFREG) and not (kind == stat.S_IFDIR and name.endswith("/")):
                reasons.append(f"a special file (mode {oct(mode)})")
            if info.flag_bits & 0x1:
                reasons.append("encrypted")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                reasons.append(f"compression method {info.compress_type} (stored or deflated only)")
            if info.file_size > limits.max_file_bytes:
                reasons.append(f"declares {info.file_size} bytes, more than the {limits.max_file_bytes} accepted per file")
            if info.file_size > max(info.compress_size, 1) * limits.max_ratio and info.file_size > 1 << 16:
                reasons.append(f"compression ratio {info.file_size // max(info.compress_size, 1)} above {limits.max_ratio} (a zip bomb?)")
            if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
                reasons.append("a stored entry whose sizes disagree")
            folded = _fold(name)
            if folded in seen:
                reasons.append("a duplicate name" if seen[folded] == name else f"collides with {seen[folded]!r} once case-folded")
            seen.setdefault(folded, name)
            if name.endswith("/") or info.is_dir():
                if name in ALLOWED_DIRS and not reasons:
                    continue
                reasons.append("a directory entry")
            total += info.file_size
            if reasons:
                self.problems.append(f"{name!r}: " + ", ".join(reasons))
                self.infos.pop(name, None)
                continue
            self.infos[name] = info
        if total > limits.max_total_bytes:
            self.problems.append(f"entries declare {total} bytes in all, more than the {limits.max_total_bytes} accepted")
        compressed = sum(i.compress_size for i in infos)
        if compressed > archive_size:
            self.problems.append(f"entries declare {compressed} compressed bytes in a {archive_size}-byte archive")
        self.names = sorted(self.infos)

    def size(self, name: str) -> int:
        return self.infos[name].file_size

    def read(self, name: str, limit: int | None = None) -> bytes:
        info = self.infos[name]
        limit = self.limits.max_file_bytes if limit is None else limit
        if info.file_size > limit:
            raise ReadError(f"{name}: {info.file_size} bytes, more than the {limit} accepted for this file")
        try:
            with self.zf.open(info) as f:
                data = f.read(info.file_size + 1)
        except (zipfile.BadZipFile, OSError, RuntimeError, EOFError) as e:
            raise ReadError(f"{name}: unreadable ({e})") from None
        if len(data) != info.file_size:
            raise ReadError(f"{name}: holds {'more' if len(data) > info.file_size else 'fewer'} bytes than it declares")
        return data

    def head(self, name: str, count: int) -> bytes:
        """The first ``count`` bytes of an entry (no more is read)."""
        try:
            with self.zf.open(self.infos[name]) as f:
                return f.read(count)
        except (zipfile.BadZipFile, OSError, RuntimeError, EOFError) as e:
            raise ReadError(f"{name}: unreadable ({e})") from None

    def _stream(self, name: str, target=None) -> tuple[str, int]:
        """``(sha256, size)`` of an entry read in blocks, capped at its declared size; each block is
        also written to ``target`` (an open binary file) when given."""
        info = self.infos[name]
        # streamed and capped, so mammoshare.hashing's whole-file helpers do not fit here
        digest, size = hashlib.sha256(), 0
        try:
            with self.zf.open(info) as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    size += len(block)
                    if size > info.file_size:
                        raise ReadError(f"{name}: holds more bytes than it declares")
                    digest.update(block)
                    if target is not None:
                        target.write(block)
        except (zipfile.BadZipFile, OSError, RuntimeError, EOFError) as e:
            raise ReadError(f"{name}: unreadable ({e})") from None
        return digest.hexdigest(), size

    def digest(self, name: str) -> tuple[str, int]:
        return self._stream(name)

    def copy_to(self, name: str, target, expected_sha256: str) -> None:
        """Stream an entry into an open binary file, re-hashing it."""
        if self._stream(name, target)[0] != expected_sha256:
            raise ReadError(f"{name}: changed since it was verified")

    def close(self) -> None:
        self.zf.close()


class DirSource:
    """An unpacked bundle folder read with the same limits; links and special files are refused."""

    kind = "folder"

    def __init__(self, path: Path, limits: ArchiveLimits = LIMITS):
        self.path, self.limits = path, limits
        self.problems: list[str] = []
        names = []
        seen: dict[str, str] = {}
        total = 0
        for folder, dirs, files in os.walk(path, followlinks=False):
            for d in list(dirs):
                full = Path(folder, d)
                if full.is_symlink():
                    self.problems.append(f"{full.relative_to(path).as_posix()!r}: a symbolic link (folder)")
                    dirs.remove(d)
            for f in files:
                full = Path(folder, f)
                rel = full.relative_to(path).as_posix()
                st = os.lstat(full)
                reasons = name_problems(rel)
                if stat.S_ISLNK(st.st_mode):
                    reasons.append("a symbolic link")
                elif not stat.S_ISREG(st.st_mode):
                    reasons.append("a special file")
                elif st.st_size > limits.max_file_bytes:
                    reasons.append(f"{st.st_size} bytes, more than the {limits.max_file_bytes} accepted per file")
                folded = _fold(rel)
                if folded in seen:
                    reasons.append(f"collides with {seen[folded]!r} once case-folded")
                seen.setdefault(folded, rel)
                if reasons:
                    self.problems.append(f"{rel!r}: " + ", ".join(reasons))
                else:
                    names.append(rel)
                    total += st.st_size
            if len(names) > limits.max_entries:
                self.problems.append(f"more than {limits.max_entries} files")
                break
        if total > limits.max_total_bytes:
            self.problems.append(f"{total} bytes in all, more than the {limits.max_total_bytes} accepted")
        self.names = sorted(names)

    def size(self, name: str) -> int:
        return (self.path / name).stat().st_size

    def read(self, name: str, limit: int | None = None) -> bytes:
        limit = self.limits.max_file_bytes if limit is None else limit
        with open(self.path / name, "rb") as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise ReadError(f"{name}: more than the {limit} bytes accepted for this file")
        return data

    def head(self, name: str, count: int) -> bytes:
        with open(self.path / name, "rb") as f:
            return f.read(count)

    def digest(self, name: str) -> tuple[str, int]:
        return sha256_file(self.path / name), self.size(name)

    def close(self) -> None:
        pass


def open_source(path: Path, limits: ArchiveLimits = LIMITS):
    """A :class:`ZipSource` for a file, a :class:`DirSource` for a folder."""
    return DirSource(path, limits) if path.is_dir() else ZipSource(path, limits)

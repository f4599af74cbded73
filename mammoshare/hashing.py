"""SHA-256 digests: the one hashing helper of the project (files, bytes, text)."""

from __future__ import annotations

import hashlib
import os

_BLOCK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    """bytes -> hex SHA-256 digest."""
    return hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    """str (UTF-8) -> hex SHA-256 digest."""
    return sha256_bytes(text.encode("utf-8"))


def sha256_file(path: str | os.PathLike) -> str:
    """A file's hex SHA-256 digest, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()

"""The data-only generator archive's format: its file names, the manifest, and the errors.

The archive (``mammoshare pack BUNDLE_DIR --out FILE.zip``) holds ONLY data, at its root:

====================================  ==========================================================
``configs/metadata.json``             the bundle's metadata (MONAI schema; its ``version`` in its
                                      ``changelog``; no ``$``/``@``/``%`` expression anywhere)
``configs/generator.json``            the declarative generator: family, parameters, image size,
                                      channels, output decoding (:mod:`mammoshare.gan.weights`)
``configs/inference.json``            the PINNED inference config: produced byte for byte from
                                      ``generator.json`` by the family's fixed template
``models/model.safetensors``          the generator's tensors (safetensors: never a pickle)
``models/snapshots/*.safetensors``    optional generator snapshots
``docs/README.md``, ``LICENSE``       the model card and the licence
``manifest.json``                     every other file's SHA-256 and size, the bundle's name and
                                      version, and the ``audit`` record (the gate's decision and the
                                      audit summary, or ``not audited``)
``model.sig``                         optional: the OpenSSF model-signing signature (Ed25519, DSSE,
                                      in-toto) over every file, the manifest included
====================================  ==========================================================
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = [
    "ExchangeError", "PackError", "UnpackError", "is_allowed_name", "manifest_bytes",
    "MANIFEST", "SIGNATURE", "METADATA", "GENERATOR", "INFERENCE", "MODEL", "MODEL_CARD", "LICENSE", "RECEIPT",
    "TORCHSCRIPT", "FIXED_FILES", "REQUIRED_FILES", "TEXT_FILES", "SNAPSHOT_PATTERN", "MANIFEST_FORMAT",
    "MANIFEST_VERSION", "MAX_AUDIT_BYTES", "ZIP_DATE",
]

#: the OpenSSF model-signing signature (:mod:`.signing`)
SIGNATURE = "model.sig"

MANIFEST = "manifest.json"
METADATA = "configs/metadata.json"
GENERATOR = "configs/generator.json"
INFERENCE = "configs/inference.json"
MODEL = "models/model.safetensors"
MODEL_CARD = "docs/README.md"
LICENSE = "LICENSE"
#: written by the receiver's unpack: what was checked, and any consent given
RECEIPT = "receipt.json"
#: written by the receiver's ``unpack --torchscript``: traced here from the receiver's own network
TORCHSCRIPT = "models/model.ts"
#: every fixed name an archive may hold
FIXED_FILES = (METADATA, GENERATOR, INFERENCE, MODEL, MODEL_CARD, LICENSE, MANIFEST, SIGNATURE)
#: what an archive must hold
REQUIRED_FILES = (METADATA, GENERATOR, MODEL, MODEL_CARD, LICENSE, MANIFEST)
#: generator snapshots: ``models/snapshots/<name>.safetensors``, no sub-folders
SNAPSHOT_PATTERN = re.compile(r"models/snapshots/[A-Za-z0-9][A-Za-z0-9._-]{0,63}\.safetensors")
MANIFEST_FORMAT = "mammoshare-bundle-archive"
MANIFEST_VERSION = 2
#: the largest audit summary a manifest carries
MAX_AUDIT_BYTES = 256 << 10
#: fixed zip entry timestamp (the earliest a zip can hold)
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
TEXT_FILES = (METADATA, GENERATOR, INFERENCE, MODEL_CARD, LICENSE, MANIFEST, SIGNATURE)


class ExchangeError(ValueError):
    """A bundle archive that cannot be packed, verified or unpacked; says which file and why."""


class PackError(ExchangeError):
    """``mammoshare pack`` refused the bundle."""


class UnpackError(ExchangeError):
    """``mammoshare unpack`` refused the archive or the target folder; nothing was written."""

    def __init__(self, message: str, report: Any = None):
        super().__init__(message)
        self.report = report


def is_allowed_name(name: str) -> bool:
    """Whether ``name`` (an archive entry or a path relative to a bundle folder) is on the allow-list."""
    return name in FIXED_FILES or SNAPSHOT_PATTERN.fullmatch(name) is not None


def manifest_bytes(files: dict[str, tuple[str, int]], name: str, version: str, audit: dict | None = None) -> bytes:
    """The manifest for ``{entry: (sha256, size)}`` (every entry but the manifest and the signature).
    ``audit`` is the optional audit summary (a JSON object), covered by the signature like the rest."""
    manifest: dict[str, Any] = {
        "bundle": {"name": name, "version": version},
        "files": {n: {"sha256": sha, "size": size} for n, (sha, size) in sorted(files.items())},
        "format": MANIFEST_FORMAT,
        "format_version": MANIFEST_VERSION,
        "hash": "sha256",
    }
    if audit is not None:
        if not isinstance(audit, dict):
            raise ExchangeError(f"{MANIFEST}: the audit summary must be a JSON object, got {type(audit).__name__}")
        manifest["audit"] = audit
    data = (json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=True) + "\n").encode("ascii")
    if audit is not None and len(json.dumps(audit)) > MAX_AUDIT_BYTES:
        raise ExchangeError(f"{MANIFEST}: the audit summary is larger than {MAX_AUDIT_BYTES} bytes")
    return data

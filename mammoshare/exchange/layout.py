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
                                      version, the ``audit`` record (the gate's decision and the
                                      audit summary, or ``not audited``) and the ``training`` record
                                      (what the generator was trained on, and how long)
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
    "TORCHSCRIPT", "LOGGING_CONF", "FIXED_FILES", "REQUIRED_FILES", "TEXT_FILES", "SNAPSHOT_PATTERN", "MANIFEST_FORMAT",
    "MANIFEST_VERSION", "MAX_AUDIT_BYTES", "ZIP_DATE", "TRAINING_FIELDS", "training_record_problems",
    "training_summary",
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
#: written by the receiver's ``unpack``: the project's own logging config (never shipped)
LOGGING_CONF = "configs/logging.conf"
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


#: the manifest's ``training`` record of a generator whose training run wrote one: field -> type
TRAINING_FIELDS: dict[str, type | tuple[type, ...]] = {
    "dataset": str,
    "task": str,
    "datalist": str,
    "phantom": bool,
    "subsets": list,
    "patches": int,
    "patients": int,
    "seed": int,
    "epochs": int,
    "iterations": int,
    "generator_updates": int,
    "mammoshare_version": str,
}


def training_record_problems(record: Any) -> list[str]:
    """What is wrong with a manifest's ``training`` record (``[]``: a record pack writes): either
    ``{"recorded": false, "detail": str}`` or ``{"recorded": true}`` with every
    :data:`TRAINING_FIELDS` field of its type (short texts, counts >= 0)."""
    if not isinstance(record, dict):
        return [f"the training record is a {type(record).__name__}, not a JSON object"]
    if record.get("recorded") is False:
        return [] if isinstance(record.get("detail"), str) and set(record) == {"recorded", "detail"} else ["an unrecorded training record holds more than its detail"]
    if record.get("recorded") is not True:
        return ["the training record says neither recorded true nor false"]
    problems = [f"unknown field {k!r}" for k in sorted(set(record) - set(TRAINING_FIELDS) - {"recorded"})]
    for key, kind in TRAINING_FIELDS.items():
        value = record.get(key)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            problems.append(f"{key}: {type(value).__name__}, not {kind.__name__}")
        elif isinstance(value, str) and (len(value) > 200 or not value.isprintable()):
            problems.append(f"{key}: not a short printable text")
        elif isinstance(value, int) and not isinstance(value, bool) and value < 0 and key != "seed":
            problems.append(f"{key}: negative")
        elif isinstance(value, list) and not all(isinstance(v, str) and len(v) <= 40 for v in value):
            problems.append(f"{key}: not a list of short texts")
    return problems


def training_summary(record: dict) -> str:
    """One line of a manifest's training record, for the model card and ``verify``."""
    if not record.get("recorded"):
        return "not recorded: " + str(record.get("detail", ""))
    return (f"{'PHANTOM data (synthetic, no clinical meaning): ' if record['phantom'] else ''}{record['dataset']} ({record['datalist']}), "
            f"task {record['task']}, {record['patches']} lesion patches of {record['patients']} patients "
            f"(subsets {', '.join(record['subsets'])}); {record['epochs']} epochs, {record['generator_updates']} generator updates, "
            f"seed {record['seed']}, mammoshare {record['mammoshare_version']}")


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


def manifest_bytes(files: dict[str, tuple[str, int]], name: str, version: str, audit: dict | None = None,
                   training: dict | None = None) -> bytes:
    """The manifest for ``{entry: (sha256, size)}`` (every entry but the manifest and the signature).
    ``audit`` is the optional audit summary and ``training`` the optional training record (JSON
    objects, see :func:`training_record_problems`), covered by the signature like the rest."""
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
    if training is not None:
        problems = training_record_problems(training)
        if problems:
            raise ExchangeError(f"{MANIFEST}: the training record is not valid: " + "; ".join(problems[:5]))
        manifest["training"] = training
    data = (json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=True) + "\n").encode("ascii")
    if audit is not None and len(json.dumps(audit)) > MAX_AUDIT_BYTES:
        raise ExchangeError(f"{MANIFEST}: the audit summary is larger than {MAX_AUDIT_BYTES} bytes")
    return data

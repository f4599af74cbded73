"""Packing, signing and unpacking generator bundles for exchange between centres.

The archive (``mammoshare pack BUNDLE_DIR --out FILE.zip``) is a zip holding ONLY these files, at
its root, whatever else the bundle folder holds (``last.pt``, TensorBoard logs, datalists,
previews, ``logging.conf``, training configs are never packed):

=================================  =============================================================
``configs/metadata.json``          the bundle's metadata (its ``version`` must be in its
                                   ``changelog``), plus ``output_decoding``, ``snapshots`` (file
                                   names and SHA-256) and the packages the packed inference needs
``configs/inference.json``         written by the packer (:mod:`mammoshare.exchange.selfcontained`):
                                   runs with MONAI and torch alone; the bundle's own is not copied
``models/model.pt``                generator tensors only (a flat ``state_dict``), copied byte for byte
``models/snapshots/*.pt``          optional, generator tensors only
``models/model.ts``                optional TorchScript export, copied as is (never loaded)
``docs/README.md``, ``LICENSE``    the model card and the licence
``manifest.json``                  SHA-256 and size of every other file (see below)
``signature.sig``                  optional: Ed25519 signature of ``manifest.json``
=================================  =============================================================

Packing refuses, naming the file and the reason: a missing required file; weights that are not a
flat dict of generator tensors loadable with ``weights_only=True`` (a ``last.pt`` with
discriminator/critic or optimizer state, pickled Python objects, tensors of another network); a
metadata file failing the MONAI schema or whose version is not in its changelog; weights that do
not match the bundle's configured geometry; and, with ``--train-datalist``, any text file of the
archive (metadata, configs, model card, licence, manifest) or file name containing a patient id of
that datalist (every ``patient_id`` of every record, matched as a whole word, case-insensitively).

Manifest (``manifest.json``, UTF-8 JSON, keys sorted, one-space indent, trailing newline)::

    {"bundle": {"name": ..., "version": ...},
     "files": {"LICENSE": {"sha256": "<hex>", "size": <bytes>}, ...},
     "format": "mammoshare-bundle-archive", "format_version": 1, "hash": "sha256",
     "signing_key_sha256": "<hex>"}          # only in signed archives

What is signed: ``signature.sig`` is one line of ASCII, the standard base64 encoding of the 64-byte
Ed25519 signature (RFC 8032, the ``cryptography`` library) of the exact bytes of the
``manifest.json`` entry. Since the manifest holds the SHA-256 of every other file, the signature
covers every file's content and name; only ``signature.sig`` itself and the zip container (entry
order, timestamps) are outside it, and the verifier refuses any file not listed. The manifest's
``signing_key_sha256`` is the SHA-256 of the signer's raw 32-byte public key (its fingerprint).

Determinism: entries sorted by name, stored uncompressed (so no zlib version can change the
bytes), timestamp 1980-01-01 00:00:00, Unix permissions 0644, no directory entries, no comment:
the same bundle packs to the same archive, byte for byte, and so to the same SHA-256, which the
packer prints for the receiver to compare out of band (``mammoshare verify --expect-sha256``).

Unpacking (``mammoshare unpack FILE.zip --out DIR``) runs :func:`mammoshare.exchange.verify.verify_bundle`
first and writes nothing (DIR is not even created) unless every check passes; ``--trust`` waives
the config allow-list check only. It writes only the manifest's files (plus the manifest and the
signature), re-hashing each against the verified manifest, and refuses a non-empty DIR.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import re
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where weights are read: the command line starts fast
    import torch

__all__ = [
    "ExchangeError",
    "PackError",
    "UnpackError",
    "PackResult",
    "pack_bundle",
    "unpack_bundle",
    "generate_signing_key",
    "load_private_key",
    "load_public_key",
    "key_fingerprint",
    "sign_manifest",
    "verify_signature",
    "load_generator_tensors",
    "is_allowed_name",
    "manifest_bytes",
    "archive_sha256",
    "find_patient_ids",
    "add_pack_parser",
    "add_unpack_parser",
    "add_keygen_parser",
    "MANIFEST",
    "SIGNATURE",
    "REQUIRED_FILES",
    "FIXED_FILES",
    "SNAPSHOT_PATTERN",
    "MANIFEST_FORMAT",
]

MANIFEST = "manifest.json"
SIGNATURE = "signature.sig"
METADATA = "configs/metadata.json"
INFERENCE = "configs/inference.json"
MODEL = "models/model.pt"
TORCHSCRIPT = "models/model.ts"
MODEL_CARD = "docs/README.md"
LICENSE = "LICENSE"
#: every fixed name an archive may hold
FIXED_FILES = (METADATA, INFERENCE, MODEL, TORCHSCRIPT, MODEL_CARD, LICENSE, MANIFEST, SIGNATURE)
#: what an archive must hold
REQUIRED_FILES = (METADATA, INFERENCE, MODEL, MODEL_CARD, LICENSE, MANIFEST)
#: generator snapshots: ``models/snapshots/<name>.pt``, no sub-folders
SNAPSHOT_PATTERN = re.compile(r"models/snapshots/[A-Za-z0-9][A-Za-z0-9._-]*\.pt")
#: files whose text is searched for patient ids
TEXT_FILES = (METADATA, INFERENCE, MODEL_CARD, LICENSE, MANIFEST)
MANIFEST_FORMAT = "mammoshare-bundle-archive"
MANIFEST_VERSION = 1
#: fixed zip entry timestamp (the earliest a zip can hold)
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
#: words that mark training state that must never be shared
_TRAINING_STATE = re.compile(r"disc|critic|net_?d\b|optim|adam|sgd|momentum|exp_avg", re.IGNORECASE)
#: the records of a torch.save zip
_TORCH_RECORD = re.compile(r"[^/]+/(data\.pkl|\.format_version|\.storage_alignment|byteorder|version|\.data/serialization_id|data/\d+)")
_GENERATOR_KEY = re.compile(r"\d+\.(weight|bias|running_mean|running_var|num_batches_tracked)")


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


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def archive_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- weights ----------------------------------------------------------------------------------


def _training_state_words(obj: Any, depth: int = 0) -> list[str]:
    found: list[str] = []
    if depth > 3:
        return found
    if isinstance(obj, dict):
        for key, value in obj.items():
            if isinstance(key, str) and _TRAINING_STATE.search(key):
                found.append(key)
            found += _training_state_words(value, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for value in obj[:16]:
            found += _training_state_words(value, depth + 1)
    return found


def load_generator_tensors(data: bytes, name: str) -> dict[str, "torch.Tensor"]:
    """Load weights bytes with ``torch.load(weights_only=True)`` and accept only a flat dict of
    plain tensors with generator keys (``<layer index>.<weight|bias|running_mean|running_var|num_batches_tracked>``).

    Raises :class:`ExchangeError` naming ``name`` and what the file holds instead: discriminator or
    critic state, optimizer state, Python objects that ``weights_only`` refuses, non-tensor values.
    """
    import torch

    if zipfile.is_zipfile(io.BytesIO(data)):  # torch.save's format: only its own records, nothing smuggled beside
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                records = zf.namelist()
        except zipfile.BadZipFile as e:
            raise ExchangeError(f"{name}: a damaged torch file ({e})") from e
        prefixes = {r.split("/", 1)[0] for r in records}
        foreign = [r for r in records if not _TORCH_RECORD.fullmatch(r)]
        if len(prefixes) != 1 or foreign:
            raise ExchangeError(
                f"{name}: holds records that torch.save does not write {foreign[:6] or sorted(prefixes)}; "
                "only generator tensors may be shared"
            )
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # pickled code or classes, truncated or foreign files
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ExchangeError(
            f"{name}: cannot be loaded as plain tensors with torch.load(weights_only=True) "
            f"({type(e).__name__}: {first_line[:300]}); only generator tensors may be shared"
        ) from e
    if not isinstance(obj, dict):
        raise ExchangeError(f"{name}: holds a {type(obj).__name__}; a flat dict of generator tensors is expected")
    marked = _training_state_words(obj)
    if marked:
        raise ExchangeError(
            f"{name}: holds training state that must not be shared (discriminator/critic or optimizer: "
            f"{sorted(set(marked))[:6]}); only the generator's tensors may be packed (model.pt, snapshots/*.pt, never last.pt)"
        )
    bad_keys = [k for k in obj if not isinstance(k, str)]
    if bad_keys:
        raise ExchangeError(f"{name}: non-string keys {bad_keys[:6]}; a flat dict of generator tensors is expected")
    not_tensors = [f"{k} ({type(v).__name__})" for k, v in obj.items() if type(v) not in (torch.Tensor, torch.nn.Parameter)]
    if not_tensors:
        raise ExchangeError(
            f"{name}: values that are not plain tensors: {not_tensors[:6]}; a flat dict of generator tensors is expected"
        )
    odd = [k for k, v in obj.items() if v.layout != torch.strided or v.is_quantized or v.device.type != "cpu"]
    if odd:
        raise ExchangeError(f"{name}: tensors that are not dense CPU tensors: {odd[:6]}")
    foreign = [k for k in obj if not _GENERATOR_KEY.fullmatch(k)]
    if foreign:
        raise ExchangeError(
            f"{name}: keys {foreign[:6]} are not keys of the generator's torch.nn.Sequential "
            "('0.weight', '1.running_mean', ...): not generator weights"
        )
    return {k: (v.detach() if isinstance(v, torch.nn.Parameter) else v) for k, v in obj.items()}


# --- keys and signatures ----------------------------------------------------------------------


def _crypto():
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
    except ImportError as e:  # pragma: no cover - cryptography is a dependency
        raise ExchangeError("signing and signature checks need the 'cryptography' package (pip install 'cryptography>=42')") from e
    return serialization, Ed25519PrivateKey, Ed25519PublicKey, InvalidSignature


def key_fingerprint(public_key) -> str:
    """SHA-256 (hex) of an Ed25519 public key's raw 32 bytes."""
    serialization, *_ = _crypto()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return _sha256(raw)


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def generate_signing_key(private_path: str | os.PathLike, public_path: str | os.PathLike) -> str:
    """Write a new Ed25519 key pair: the private key (PEM, PKCS#8, unencrypted, mode 0600: keep it
    secret, it signs archives) and the public key (PEM, SubjectPublicKeyInfo: give it to the
    receivers, by a channel they trust). Refuses existing files. Returns the key's fingerprint."""
    serialization, Ed25519PrivateKey, _, _ = _crypto()
    private_path, public_path = Path(private_path), Path(public_path)
    for path in (private_path, public_path):
        if path.exists():
            raise ExchangeError(f"{path}: exists; a key file is never overwritten")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    for path in (private_path, public_path):
        path.parent.mkdir(parents=True, exist_ok=True)
    _write_new(private_path, private_pem, 0o600)
    try:
        _write_new(public_path, public_pem, 0o644)
    except BaseException:
        private_path.unlink(missing_ok=True)
        raise
    return key_fingerprint(key.public_key())


def load_private_key(path: str | os.PathLike):
    """An Ed25519 private key from a PEM file (unencrypted)."""
    serialization, Ed25519PrivateKey, _, _ = _crypto()
    path = Path(path)
    if not path.is_file():
        raise ExchangeError(f"{path}: signing key not found")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as e:
        raise ExchangeError(f"{path}: not an unencrypted PEM private key ({e})") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise ExchangeError(f"{path}: a {type(key).__name__}; an Ed25519 private key is expected (mammoshare keygen)")
    return key


def load_public_key(path: str | os.PathLike):
    """An Ed25519 public key from a PEM file."""
    serialization, _, Ed25519PublicKey, _ = _crypto()
    path = Path(path)
    if not path.is_file():
        raise ExchangeError(f"{path}: trusted public key not found")
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (ValueError, TypeError) as e:
        raise ExchangeError(f"{path}: not a PEM public key ({e})") from e
    if not isinstance(key, Ed25519PublicKey):
        raise ExchangeError(f"{path}: a {type(key).__name__}; an Ed25519 public key is expected")
    return key


def sign_manifest(manifest: bytes, private_key) -> bytes:
    """The content of ``signature.sig``: base64 of the Ed25519 signature of the manifest bytes, newline."""
    return base64.b64encode(private_key.sign(manifest)) + b"\n"


def verify_signature(manifest: bytes, signature_file: bytes, public_key) -> None:
    """Raise :class:`ExchangeError` unless ``signature_file`` is a valid signature of ``manifest``."""
    *_, InvalidSignature = _crypto()
    try:
        signature = base64.b64decode(signature_file.strip(), validate=True)
    except ValueError as e:
        raise ExchangeError(f"{SIGNATURE}: not base64 text ({e})") from e
    if len(signature) != 64:
        raise ExchangeError(f"{SIGNATURE}: {len(signature)} bytes; an Ed25519 signature has 64")
    try:
        public_key.verify(signature, manifest)
    except InvalidSignature as e:
        raise ExchangeError(
            f"{SIGNATURE}: INVALID: {MANIFEST} was not signed by the trusted key (another key, or a changed manifest)"
        ) from e


# --- manifest and patient ids -----------------------------------------------------------------


def manifest_bytes(files: dict[str, tuple[str, int]], name: str, version: str, fingerprint: str | None = None) -> bytes:
    """The manifest for ``{entry: (sha256, size)}`` (every entry but the manifest and the signature)."""
    manifest: dict[str, Any] = {
        "bundle": {"name": name, "version": version},
        "files": {n: {"sha256": sha, "size": size} for n, (sha, size) in sorted(files.items())},
        "format": MANIFEST_FORMAT,
        "format_version": MANIFEST_VERSION,
        "hash": "sha256",
    }
    if fingerprint:
        manifest["signing_key_sha256"] = fingerprint
    return (json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=True) + "\n").encode("ascii")


def _datalist_patient_ids(path: str | os.PathLike) -> set[str]:
    from mammoshare.datalist import SUBSETS, load_datalist

    data = load_datalist(path)
    ids = set()
    for subset in SUBSETS:
        for record in data.get(subset, []):
            value = record.get("patient_id")
            if value is not None and str(value).strip():
                ids.add(str(value).strip())
    return ids


def find_patient_ids(texts: dict[str, str], patient_ids: set[str] | list[str]) -> list[str]:
    """Every occurrence of a patient id in the texts, as ``"<file> line <n>: patient id '<id>'"``.
    An id matches as a whole word (no letter, digit or underscore right before or after it),
    ignoring case, so ``D01_3`` is found in ``patient D01_3.`` but not in ``D01_30``."""
    ids = sorted({str(i) for i in patient_ids if str(i).strip()}, key=lambda s: (-len(s), s))
    if not ids:
        return []
    pattern = re.compile(r"(?<!\w)(" + "|".join(re.escape(i) for i in ids) + r")(?!\w)", re.IGNORECASE)
    hits = []
    for name, text in texts.items():
        for number, line in enumerate(text.splitlines(), start=1):
            for match in pattern.finditer(line):
                hits.append(f"{name} line {number}: patient id {match.group(1)!r} of the training datalist")
    return hits


# --- packing ----------------------------------------------------------------------------------


@dataclass
class PackResult:
    path: Path
    sha256: str
    files: list[str]
    signed: bool = False
    fingerprint: str | None = None


def _read_json(path: Path, name: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PackError(f"{name}: not readable JSON ({e})") from e
    if not isinstance(data, dict):
        raise PackError(f"{name}: a JSON object is expected")
    return data


def _literal_int(config: dict, key: str, default: int) -> int:
    value = config.get(key, default)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else default


def _installed_version(distribution: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def _zip_info(name: str, size: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
    info.compress_type = zipfile.ZIP_STORED
    info.create_system = 3
    info.external_attr = (0o100644 & 0xFFFF) << 16
    info.file_size = size
    return info


def _check_network(arch, tensors: dict, metadata: dict, name: str) -> None:
    import torch

    from .selfcontained import build_network, network_layers

    network = build_network(network_layers(arch))
    try:
        network.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise PackError(f"{name}: does not load into the generator read from it ({e})") from e
    fmt = metadata.get("network_data_format", {})
    image = fmt.get("inputs", {}).get("image", {})
    pred = fmt.get("outputs", {}).get("pred", {})
    problems = []
    if image.get("num_channels") != arch.latent_size or list(image.get("spatial_shape", [])) != [1, 1]:
        problems.append(
            f"input 'image' is {image.get('num_channels')} channels x {image.get('spatial_shape')}, "
            f"the weights take a latent of {arch.latent_size} x [1, 1]"
        )
    with torch.no_grad():
        out = network.eval()(torch.zeros(1, arch.latent_size, 1, 1))
    if pred.get("num_channels") != out.shape[1] or list(pred.get("spatial_shape", [])) != list(out.shape[2:]):
        problems.append(
            f"output 'pred' is {pred.get('num_channels')} channels x {pred.get('spatial_shape')}, "
            f"the generator makes {out.shape[1]} x {list(out.shape[2:])}"
        )
    if problems:
        raise PackError(f"{METADATA}: network_data_format does not describe {name}: " + "; ".join(problems))


def pack_bundle(
    bundle_dir: str | os.PathLike,
    out: str | os.PathLike,
    train_datalist: str | os.PathLike | None = None,
    sign_key: str | os.PathLike | None = None,
) -> PackResult:
    """Pack a generator bundle folder into a deterministic exchange archive (see the module docstring).

    Raises:
        PackError: naming the file and the reason; nothing is written then.
    """
    from .selfcontained import (
        bundle_generator_settings,
        check_against_settings,
        check_safe_names,
        infer_architecture,
        self_contained_inference,
    )
    from .verify import check_config, check_metadata

    bundle = Path(bundle_dir)
    out = Path(out)
    if not bundle.is_dir():
        raise PackError(f"{bundle}: bundle folder not found")
    if out.exists():
        raise PackError(f"{out}: exists; an archive is never overwritten (remove it or choose another name)")
    private_key = load_private_key(sign_key) if sign_key is not None else None
    patient_ids = _datalist_patient_ids(train_datalist) if train_datalist is not None else None

    missing = [n for n in (METADATA, INFERENCE, MODEL, MODEL_CARD, LICENSE) if not (bundle / n).is_file()]
    if missing:
        raise PackError(f"{bundle}: required file(s) missing: {', '.join(missing)}")

    metadata = _read_json(bundle / METADATA, METADATA)
    own_inference = _read_json(bundle / INFERENCE, INFERENCE)
    version = metadata.get("version")
    changelog = metadata.get("changelog")
    if not isinstance(version, str) or not isinstance(changelog, dict) or version not in changelog:
        raise PackError(
            f"{METADATA}: version {version!r} is not in its changelog "
            f"({sorted(changelog) if isinstance(changelog, dict) else 'no changelog'}); add a changelog entry for it"
        )
    try:
        check_safe_names(str(metadata.get("name", "")), version)
        settings = bundle_generator_settings(own_inference, metadata, INFERENCE)
    except ValueError as e:
        raise PackError(str(e)) from e

    # the weights: read once, hashed, validated from the same bytes
    model_bytes = (bundle / MODEL).read_bytes()
    try:
        tensors = load_generator_tensors(model_bytes, MODEL)
        arch = infer_architecture(tensors, MODEL)
        check_against_settings(arch, settings, MODEL)
    except ValueError as e:
        raise PackError(str(e)) from e
    arch.leaky_slope = settings["leaky_slope"]
    _check_network(arch, tensors, metadata, MODEL)
    sources: dict[str, Path] = {MODEL: bundle / MODEL}
    hashes: dict[str, tuple[str, int]] = {MODEL: (_sha256(model_bytes), len(model_bytes))}
    del model_bytes

    snapshots = []
    snapshot_dir = bundle / "models" / "snapshots"
    if snapshot_dir.is_dir():
        for path in sorted(p for p in snapshot_dir.iterdir() if p.suffix == ".pt"):
            name = f"models/snapshots/{path.name}"
            if not path.is_file():
                continue
            if not SNAPSHOT_PATTERN.fullmatch(name):
                raise PackError(f"{name}: snapshot file names may only hold letters, digits and . _ - (rename it)")
            data = path.read_bytes()
            try:
                snap_arch = infer_architecture(load_generator_tensors(data, name), name)
            except ValueError as e:
                raise PackError(str(e)) from e
            if (snap_arch.latent_size, snap_arch.channels, snap_arch.out_channels, snap_arch.conv_bias) != (
                arch.latent_size, arch.channels, arch.out_channels, arch.conv_bias
            ):
                raise PackError(
                    f"{name}: a generator of another geometry than {MODEL} (latent {snap_arch.latent_size}, widths "
                    f"{snap_arch.channels} against latent {arch.latent_size}, widths {arch.channels})"
                )
            sources[name] = path
            hashes[name] = (_sha256(data), len(data))
            snapshots.append({"file": name, "sha256": hashes[name][0]})
    if (bundle / TORCHSCRIPT).is_file():
        data = (bundle / TORCHSCRIPT).read_bytes()
        if not zipfile.is_zipfile(io.BytesIO(data)):
            raise PackError(f"{TORCHSCRIPT}: not a TorchScript archive (torch.jit.save writes a zip)")
        sources[TORCHSCRIPT] = bundle / TORCHSCRIPT
        hashes[TORCHSCRIPT] = (_sha256(data), len(data))

    # the packed metadata and the self-contained inference config
    packed_meta = {k: v for k, v in metadata.items() if k not in ("output_decoding", "snapshots", "packed_inference")}
    pillow = _installed_version("pillow")
    packed_meta["required_packages_version"] = {"pillow": pillow} if pillow else {}
    packed_meta["output_decoding"] = settings["decoding"]
    if snapshots:
        packed_meta["snapshots"] = snapshots
    packed_meta["packed_inference"] = (
        "configs/inference.json needs only monai, torch, numpy and pillow: python -m monai.bundle run "
        "--config_file configs/inference.json --bundle_root <this folder> --num_samples N --output_dir OUT --seed S"
    )
    inference = self_contained_inference(
        arch,
        packed_meta,
        hashes[MODEL][0],
        decoding=settings["decoding"],
        task=settings["task"],
        num_samples=_literal_int(own_inference, "num_samples", 1200),
        batch_size=_literal_int(own_inference, "batch_size", 64),
    )
    texts: dict[str, bytes] = {
        METADATA: (json.dumps(packed_meta, indent=4, ensure_ascii=False) + "\n").encode("utf-8"),
        INFERENCE: (json.dumps(inference, indent=4) + "\n").encode("utf-8"),
        MODEL_CARD: (bundle / MODEL_CARD).read_bytes(),
        LICENSE: (bundle / LICENSE).read_bytes(),
    }
    problems = check_metadata(packed_meta, None)[1]
    problems += check_config(inference, INFERENCE) + check_config(packed_meta, METADATA)
    if problems:
        raise PackError(f"{bundle}: the packed bundle would not pass verification: " + "; ".join(problems[:8]))
    for name, data in texts.items():
        hashes[name] = (_sha256(data), len(data))
    fingerprint = key_fingerprint(private_key.public_key()) if private_key is not None else None
    manifest = manifest_bytes(hashes, str(metadata.get("name", "")), version, fingerprint)

    if patient_ids is not None:
        decoded = {}
        for name, data in {**texts, MANIFEST: manifest}.items():
            try:
                decoded[name] = data.decode("utf-8")
            except UnicodeDecodeError as e:
                raise PackError(f"{name}: not UTF-8 text ({e}); cannot be checked for patient ids") from e
        decoded["(file names)"] = "\n".join(sorted(hashes))
        hits = find_patient_ids(decoded, patient_ids)
        if hits:
            raise PackError(
                f"patient ids of {train_datalist} found in the bundle's files; remove them before sharing: " + "; ".join(hits[:10])
                + (f" (and {len(hits) - 10} more)" if len(hits) > 10 else "")
            )

    entries: dict[str, bytes | Path] = {**texts, **sources, MANIFEST: manifest}
    if private_key is not None:
        entries[SIGNATURE] = sign_manifest(manifest, private_key)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, "w") as archive:
            for name in sorted(entries):
                item = entries[name]
                if isinstance(item, bytes):
                    archive.writestr(_zip_info(name, len(item)), item)
                    continue
                sha, size = hashes[name]
                digest = hashlib.sha256()
                with open(item, "rb") as src, archive.open(_zip_info(name, size), "w") as dst:
                    for block in iter(lambda: src.read(1 << 20), b""):
                        digest.update(block)
                        dst.write(block)
                if digest.hexdigest() != sha:
                    raise PackError(f"{name}: the file changed while the bundle was being packed; pack again")
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return PackResult(
        path=out,
        sha256=archive_sha256(out),
        files=sorted(entries),
        signed=private_key is not None,
        fingerprint=fingerprint,
    )


# --- unpacking --------------------------------------------------------------------------------


def _target_is_usable(out: Path) -> bool:
    """Refuses a non-empty or non-folder target; returns whether it must be created."""
    if out.is_symlink():
        raise UnpackError(f"{out}: is a symbolic link; unpack into a new or empty folder")
    if out.exists():
        if not out.is_dir():
            raise UnpackError(f"{out}: exists and is not a folder; unpack into a new or empty folder")
        if any(out.iterdir()):
            raise UnpackError(f"{out}: the folder is not empty; unpack into a new or empty folder (nothing was written)")
        return False
    return True


def unpack_bundle(
    archive: str | os.PathLike,
    out: str | os.PathLike,
    trust: bool = False,
    schema: str | os.PathLike | None = None,
    expect_sha256: str | None = None,
    trusted_key: str | os.PathLike | None = None,
):
    """Verify ``archive`` and, when it passes, write its listed files into ``out``.

    ``trust`` waives the config allow-list check only (hashes, signature, weights, paths never).

    Returns:
        the :class:`~mammoshare.exchange.verify.VerifyReport`.

    Raises:
        UnpackError: the archive failed verification or ``out`` is not a new or empty folder;
            nothing was written (its ``report`` holds the verification report, if any).
    """
    from .verify import verify_bundle

    archive, out = Path(archive), Path(out)
    if not archive.is_file() or not zipfile.is_zipfile(archive):
        raise UnpackError(f"{archive}: not a zip archive")
    create = _target_is_usable(out)
    report = verify_bundle(archive, schema=schema, expect_sha256=expect_sha256, trusted_key=trusted_key)
    if not report.passed(trust=trust):
        failed = ", ".join(c.name for c in report.failures(trust=trust))
        hint = " (--trust would let the config through, nothing else)" if report.failures(trust=False) and not report.failures(trust=True) else ""
        raise UnpackError(f"{archive}: refused, nothing was written: failed checks: {failed}{hint}", report)
    expected = dict(report.verified_files)
    written: list[Path] = []
    made: list[Path] = []
    root = out.absolute()
    try:
        if create:
            out.mkdir(parents=True)
            made.append(out)
        with zipfile.ZipFile(archive) as zf:
            for name in sorted(expected):
                if not is_allowed_name(name):  # verified already; kept as a last guard
                    raise UnpackError(f"{name}: not an allowed file name")
                target = (root / name).absolute()
                if os.path.commonpath([root, target]) != str(root):
                    raise UnpackError(f"{name}: would be written outside {out}")
                parent = target.parent
                missing_dirs = []
                while parent != root and not parent.exists():
                    missing_dirs.append(parent)
                    parent = parent.parent
                for d in reversed(missing_dirs):
                    d.mkdir()
                    made.append(d)
                digest = hashlib.sha256()
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
                written.append(target)
                with os.fdopen(fd, "wb") as dst, zf.open(name) as src:
                    for block in iter(lambda: src.read(1 << 20), b""):
                        digest.update(block)
                        dst.write(block)
                if digest.hexdigest() != expected[name]:
                    raise UnpackError(f"{name}: changed since it was verified; nothing was kept")
    except BaseException:
        for path in reversed(written):
            path.unlink(missing_ok=True)
        for d in reversed(made):
            try:
                d.rmdir()
            except OSError:
                pass
        raise
    return report


# --- command line -----------------------------------------------------------------------------


def _cmd_pack(args: argparse.Namespace) -> int:
    try:
        result = pack_bundle(args.bundle_dir, args.out, train_datalist=args.train_datalist, sign_key=args.sign)
    except (ExchangeError, ValueError, OSError) as e:
        print(f"pack refused: {e}", file=sys.stderr)
        return 1
    for name in result.files:
        print(f"  {name}")
    print(f"wrote {result.path} ({len(result.files)} files)")
    if result.signed:
        print(f"signed: {SIGNATURE} = Ed25519 signature of {MANIFEST}; key fingerprint {result.fingerprint}")
    else:
        print("not signed (--sign KEY signs the manifest)")
    print(f"archive SHA-256: {result.sha256}")
    print("Give the receiver this SHA-256 by another channel than the archive; they check it with")
    print(f"  mammoshare verify {result.path.name} --expect-sha256 {result.sha256}" + (" --trusted-key YOUR_KEY.pub" if result.signed else ""))
    return 0


def _cmd_unpack(args: argparse.Namespace) -> int:
    try:
        report = unpack_bundle(
            args.archive, args.out, trust=args.trust, schema=args.schema, expect_sha256=args.expect_sha256, trusted_key=args.trusted_key
        )
    except UnpackError as e:
        if e.report is not None:
            print(e.report.text())
        print(f"unpack refused: {e}", file=sys.stderr)
        return 1
    except (ExchangeError, ValueError, OSError) as e:
        print(f"unpack refused: {e}", file=sys.stderr)
        return 1
    print(report.text())
    if args.trust and not report.passed(trust=False):
        print("WARNING: the config allow-list check failed and was waived by --trust: its configs may run arbitrary code")
    print(f"unpacked {len(report.verified_files)} files into {args.out}")
    print(
        f"run it: python -m monai.bundle run --config_file {Path(args.out).as_posix()}/configs/inference.json "
        f"--bundle_root {Path(args.out).as_posix()} --num_samples N --output_dir OUT --seed S"
    )
    return 0


def _cmd_keygen(args: argparse.Namespace) -> int:
    private, public = Path(f"{args.out}.key"), Path(f"{args.out}.pub")
    try:
        fingerprint = generate_signing_key(private, public)
    except (ExchangeError, OSError) as e:
        print(f"keygen refused: {e}", file=sys.stderr)
        return 1
    print(f"private key: {private} (keep it secret; it signs archives: mammoshare pack ... --sign {private})")
    print(f"public key:  {public} (give it to the receivers: mammoshare verify ... --trusted-key {public})")
    print(f"fingerprint: {fingerprint}")
    return 0


def _add_verify_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--schema", type=Path, help="MONAI metadata schema file (default: the copy shipped with mammoshare)")
    parser.add_argument("--expect-sha256", dest="expect_sha256", help="the archive's SHA-256 received from the sender out of band")
    parser.add_argument("--trusted-key", dest="trusted_key", type=Path, help="the sender's Ed25519 public key (PEM): the signature must verify with it")


def add_pack_parser(subparsers) -> argparse.ArgumentParser:
    """``mammoshare pack BUNDLE_DIR --out FILE.zip [--train-datalist FILE] [--sign KEY]``."""
    p = subparsers.add_parser(
        "pack",
        help="pack a generator bundle into a deterministic, verifiable exchange archive",
        description="Pack only the shareable files of a generator bundle (metadata, a self-contained inference.json, "
        "generator weights, model card, licence) with a SHA-256 manifest; print the archive's SHA-256.",
    )
    p.add_argument("bundle_dir", type=Path, help="the generator bundle folder")
    p.add_argument("--out", required=True, type=Path, help="the archive to write (never overwritten)")
    p.add_argument("--train-datalist", dest="train_datalist", type=Path, help="the datalist the generator was trained on: refuse if any text file holds one of its patient ids")
    p.add_argument("--sign", type=Path, help="Ed25519 private key (PEM, mammoshare keygen) that signs the manifest")
    p.set_defaults(func=_cmd_pack)
    return p


def add_unpack_parser(subparsers) -> argparse.ArgumentParser:
    """``mammoshare unpack FILE.zip --out DIR [--trust] [--schema FILE] [--expect-sha256 HASH] [--trusted-key PUB]``."""
    p = subparsers.add_parser(
        "unpack",
        help="verify an exchange archive and, if it passes, extract it",
        description="Verify the archive (as mammoshare verify) and write its listed files into a new or empty folder; "
        "nothing is written when a check fails.",
    )
    p.add_argument("archive", type=Path, help="the archive (.zip)")
    p.add_argument("--out", required=True, type=Path, help="a new or empty folder")
    p.add_argument("--trust", action="store_true", help="let configs that fail the allow-list through (only that check is waived)")
    _add_verify_options(p)
    p.set_defaults(func=_cmd_unpack)
    return p


def add_keygen_parser(subparsers) -> argparse.ArgumentParser:
    """``mammoshare keygen --out PREFIX``: PREFIX.key (private) and PREFIX.pub (public)."""
    p = subparsers.add_parser("keygen", help="make an Ed25519 key pair for signing exchange archives")
    p.add_argument("--out", required=True, help="writes PREFIX.key (private, mode 0600) and PREFIX.pub (public)")
    p.set_defaults(func=_cmd_keygen)
    return p

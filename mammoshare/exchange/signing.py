"""Ed25519 keys and signatures in the OpenSSF model-signing format.

``model.sig`` is a Sigstore bundle (``application/vnd.dev.sigstore.bundle.v0.3+json``) as the
``model-signing`` package (v1.x) writes for key-based signing: its ``dsseEnvelope`` (DSSE v1) holds
an in-toto Statement v1 (``https://in-toto.io/Statement/v1``) with predicate type
``https://model_signing/signature/v1.0``; the predicate's ``resources`` list every file of the
bundle but ``model.sig`` with its SHA-256 (sorted by name), ``serialization`` says how
(``files``, ``sha256``, no symbolic links, ignored paths), and the single subject's digest is the
SHA-256 over the concatenated raw digests in that order. The DSSE signature is over the
pre-authentication encoding ``DSSEv1 <len> application/vnd.in-toto+json <len> <payload>``;
``verificationMaterial.publicKey.hint`` is the SHA-256 (hex) of the signer's public key in PEM
(SubjectPublicKeyInfo), as model-signing computes it, and is the key fingerprint shown everywhere.

Written here rather than through the ``model-signing`` package: its key-based signer and verifier
accept elliptic-curve keys (P-256/384/521) only, not Ed25519, and it pulls in the whole Sigstore
client; the format is small and is produced and checked here per its specification.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mammoshare.hashing import sha256_bytes

from .layout import RECEIPT, SIGNATURE, TORCHSCRIPT

__all__ = [
    "SigningError",
    "SignatureCheck",
    "generate_signing_key",
    "load_private_key",
    "load_public_key",
    "key_fingerprint",
    "sign_files",
    "check_signature",
    "statement_for",
    "pae",
    "BUNDLE_MEDIA_TYPE",
    "PAYLOAD_TYPE",
    "STATEMENT_TYPE",
    "PREDICATE_TYPE",
    "IGNORED_PATHS",
]

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
#: files outside the signature: the signature itself and what the receiver adds when unpacking
IGNORED_PATHS = (SIGNATURE, RECEIPT, TORCHSCRIPT)
MAX_SIGNATURE_BYTES = 1 << 20


class SigningError(ValueError):
    """A key or signature problem; says which file and why."""


def _crypto():
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    return serialization, Ed25519PrivateKey, Ed25519PublicKey, InvalidSignature


def key_fingerprint(public_key) -> str:
    """SHA-256 (hex) of the public key's PEM (SubjectPublicKeyInfo): model-signing's key hint."""
    serialization, *_ = _crypto()
    pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return sha256_bytes(pem)


def generate_signing_key(private_path: str | os.PathLike, public_path: str | os.PathLike) -> str:
    """Write a new Ed25519 key pair: the private key (PEM, PKCS#8, unencrypted, mode 0600: keep it
    secret) and the public key (PEM: give it to the receivers by a channel they trust). Refuses
    existing files. Returns the key's fingerprint."""
    from mammoshare.atomic import atomic_write_bytes

    serialization, Ed25519PrivateKey, _, _ = _crypto()
    private_path, public_path = Path(private_path), Path(public_path)
    for path in (private_path, public_path):
        if path.exists():
            raise SigningError(f"{path}: exists; a key file is never overwritten")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        atomic_write_bytes(private_path, private_pem, mode=0o600, overwrite=False)
        atomic_write_bytes(public_path, public_pem, mode=0o644, overwrite=False)
    except FileExistsError as e:
        raise SigningError(f"{e.filename or public_path}: exists; a key file is never overwritten") from None
    except BaseException:
        private_path.unlink(missing_ok=True)
        raise
    return key_fingerprint(key.public_key())


def _load_pem_key(path: str | os.PathLike, load: Callable[[bytes], Any], expected: type, kind: str, missing: str,
                  not_pem: str):
    """A key of type ``expected`` (``kind``: what it is called) read from the PEM file ``path`` by
    ``load``; every problem is a SigningError naming the file (``missing``, ``not_pem``: the words
    for a missing file and for one that ``load`` refuses)."""
    path = Path(path)
    if not path.is_file():
        raise SigningError(f"{path}: {missing} not found")
    try:
        key = load(path.read_bytes())
    except (ValueError, TypeError) as e:
        raise SigningError(f"{path}: not {not_pem} ({e})") from None
    if not isinstance(key, expected):
        raise SigningError(f"{path}: a {type(key).__name__}; an Ed25519 {kind} is expected (mammoshare keygen)")
    return key


def load_private_key(path: str | os.PathLike):
    """An Ed25519 private key from a PEM file (unencrypted)."""
    serialization, Ed25519PrivateKey, _, _ = _crypto()
    return _load_pem_key(path, lambda data: serialization.load_pem_private_key(data, password=None), Ed25519PrivateKey,
                         "private key", "signing key", "an unencrypted PEM private key")


def load_public_key(path: str | os.PathLike):
    """An Ed25519 public key from a PEM file."""
    serialization, _, Ed25519PublicKey, _ = _crypto()
    return _load_pem_key(path, lambda data: serialization.load_pem_public_key(data[:65536]), Ed25519PublicKey,
                         "public key", "public key", "a PEM public key")


def pae(payload: bytes, payload_type: str = PAYLOAD_TYPE) -> bytes:
    """DSSE v1 pre-authentication encoding."""
    return b" ".join([f"DSSEv1 {len(payload_type)} {payload_type} {len(payload)}".encode("utf-8"), payload])


def statement_for(files: dict[str, str], model_name: str) -> dict:
    """The in-toto statement over ``{file name: sha256 hex}`` (every signed file)."""
    names = sorted(files)
    root = sha256_bytes(b"".join(bytes.fromhex(files[n]) for n in names))
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": model_name, "digest": {"sha256": root}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "serialization": {"method": "files", "hash_type": "sha256", "allow_symlinks": False, "ignore_paths": list(IGNORED_PATHS)},
            "resources": [{"name": n, "algorithm": "sha256", "digest": files[n]} for n in names],
        },
    }


def sign_files(files: dict[str, str], model_name: str, private_key) -> bytes:
    """The content of ``model.sig`` for ``{file name: sha256 hex}``."""
    payload = json.dumps(statement_for(files, model_name), sort_keys=True, separators=(",", ":")).encode("utf-8")
    signature = private_key.sign(pae(payload))
    bundle = {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": key_fingerprint(private_key.public_key())}, "tlogEntries": []},
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode("ascii"),
            "payloadType": PAYLOAD_TYPE,
            "signatures": [{"sig": base64.b64encode(signature).decode("ascii"), "keyid": ""}],
        },
    }
    return (json.dumps(bundle, indent=2, sort_keys=True) + "\n").encode("ascii")


@dataclass
class SignatureCheck:
    """``status``: ``trusted`` (valid, by a trusted key), ``unknown key`` (signed by a key that is
    not trusted: not checkable), ``invalid`` (a trusted key's hint but a signature or statement
    that does not verify); ``files`` the signed ``{name: sha256}`` when trusted."""

    status: str
    fingerprint: str | None
    detail: str
    files: dict[str, str] | None = None


def check_signature(data: bytes, public_keys: list) -> SignatureCheck:
    """Check ``model.sig`` bytes against the trusted keys. Malformed input is ``invalid``, never a crash."""
    _, _, _, InvalidSignature = _crypto()
    if len(data) > MAX_SIGNATURE_BYTES:
        return SignatureCheck("invalid", None, f"{SIGNATURE}: {len(data)} bytes, more than {MAX_SIGNATURE_BYTES}")
    try:
        bundle = json.loads(data.decode("utf-8"))
        if bundle.get("mediaType") != BUNDLE_MEDIA_TYPE:
            raise ValueError(f"mediaType {str(bundle.get('mediaType'))[:60]!r}, expected {BUNDLE_MEDIA_TYPE}")
        hint = bundle["verificationMaterial"]["publicKey"]["hint"]
        envelope = bundle["dsseEnvelope"]
        if envelope.get("payloadType") != PAYLOAD_TYPE:
            raise ValueError(f"payloadType {str(envelope.get('payloadType'))[:60]!r}, expected {PAYLOAD_TYPE}")
        payload = base64.b64decode(envelope["payload"], validate=True)
        signatures = envelope["signatures"]
        if not isinstance(signatures, list) or len(signatures) != 1:
            raise ValueError("exactly one DSSE signature expected")
        signature = base64.b64decode(signatures[0]["sig"], validate=True)
        if not isinstance(hint, str):
            raise ValueError("the public key hint is not a string")
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as e:
        return SignatureCheck("invalid", None, f"{SIGNATURE}: not a model-signing Sigstore bundle ({str(e)[:200]})")
    keys = {key_fingerprint(k): k for k in public_keys}
    if hint not in keys:
        return SignatureCheck("unknown key", hint, f"signed by key {hint}, which is not a trusted key")
    try:
        keys[hint].verify(signature, pae(payload))
    except InvalidSignature:
        return SignatureCheck("invalid", hint, f"{SIGNATURE}: INVALID signature for the trusted key {hint} (a changed statement or a forged signature)")
    try:
        statement = json.loads(payload.decode("utf-8"))
        if statement.get("_type") != STATEMENT_TYPE or statement.get("predicateType") != PREDICATE_TYPE:
            raise ValueError("not an in-toto v1 statement of model-signing v1.0")
        resources = statement["predicate"]["resources"]
        files = {}
        for item in resources:
            if item.get("algorithm") != "sha256" or not isinstance(item.get("name"), str) or item["name"] in files:
                raise ValueError("resources must be unique names with sha256 digests")
            files[item["name"]] = str(item["digest"])
        names = sorted(files)
        root = sha256_bytes(b"".join(bytes.fromhex(files[n]) for n in names))
        subjects = statement["subject"]
        if len(subjects) != 1 or subjects[0]["digest"]["sha256"] != root:
            raise ValueError("the subject digest does not match the resources")
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as e:
        return SignatureCheck("invalid", hint, f"{SIGNATURE}: signed, but not a valid model-signing statement ({str(e)[:200]})")
    return SignatureCheck("trusted", hint, f"valid Ed25519 signature by the trusted key {hint}", files)

"""Packing and unpacking data-only generator archives for exchange between centres.

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

Nothing of an archive is ever evaluated, imported or unpickled by the receiver: ``generator.json``
is checked against the known families' parameter ranges, the weights are read as safetensors with
limits, and the inference config that runs is the receiver's own (``verify`` regenerates it and
refuses any other; ``unpack`` writes the regenerated one). ``--trust`` lets a non-pinned config
through as explicit, recorded consent (``receipt.json``); nothing else is ever waived.

Packing refuses, naming the file and the reason: a missing required file; weights that are not a
generator's tensors (``last.pt`` with discriminator or optimizer state, pickled objects, another
network, a medigan checkpoint not yet imported); a generator outside the known families' ranges;
metadata failing the MONAI schema, with an expression, or whose version is not in its changelog;
and, with ``--train-datalist``, any patient id of that datalist in any file name, text, JSON key or
value, or safetensors header of the archive (ids are matched after Unicode NFKC normalisation,
with zero-width and other invisible characters removed, case-folded, ``_ - . / \\`` treated as
one separator, as a whole token: ``<fileid>_<patientid>_MG_R_CC_ANON``, ``patient_<id>``,
``epoch_<id>.pt`` are found, ``<id>0`` is not).

The audit gate: ``pack`` needs the generator's privacy audit (:mod:`mammoshare.audit`), a finished
one (``--audit DIR``) or one it runs (``--audit-train`` / ``--audit-holdout``), of these very weights
(the audited weights' SHA-256 must be the packed source file's). A memorisation or membership
verdict ``fail`` refuses the generator unless ``--accept-risk "reason"`` is given; the gate's record
(decision, verdicts, accepted risk, audit summary) goes into the signed manifest and the audit's
section is appended to the packed model card. ``--no-audit`` packs without one, recorded as
``not audited`` in the manifest and the model card for the receiver to see.

Determinism: entries sorted by name, stored uncompressed, timestamp 1980-01-01, mode 0644, no
folder entries: the same bundle packs to the same bytes (unsigned; a signature is deterministic
too, Ed25519 being deterministic), whose SHA-256 the packer prints for the receiver to compare out
of band. Writes are kill-safe (:mod:`mammoshare.atomic`): a killed ``pack`` or ``unpack`` leaves
only a ``.partial`` sibling that the next run removes.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import re
import shutil
import sys
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mammoshare.atomic import atomic_write, fsync_dir, partial_name, remove_stale_partials

from .signing import SIGNATURE, SigningError, generate_signing_key, key_fingerprint, load_private_key, sign_files

__all__ = [
    "ExchangeError",
    "PackError",
    "UnpackError",
    "PackResult",
    "pack_bundle",
    "unpack_bundle",
    "is_allowed_name",
    "manifest_bytes",
    "archive_sha256",
    "find_patient_ids",
    "canonical_text",
    "datalist_patient_ids",
    "add_pack_parser",
    "add_unpack_parser",
    "add_keygen_parser",
    "MANIFEST",
    "SIGNATURE",
    "METADATA",
    "GENERATOR",
    "INFERENCE",
    "MODEL",
    "MODEL_CARD",
    "LICENSE",
    "RECEIPT",
    "REQUIRED_FILES",
    "FIXED_FILES",
    "SNAPSHOT_PATTERN",
    "MANIFEST_FORMAT",
]

MANIFEST = "manifest.json"
METADATA = "configs/metadata.json"
GENERATOR = "configs/generator.json"
INFERENCE = "configs/inference.json"
MODEL = "models/model.safetensors"
MODEL_CARD = "docs/README.md"
LICENSE = "LICENSE"
#: written by the receiver's unpack: what was checked, and any consent given
RECEIPT = "receipt.json"
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
_OWN_GENERATOR = "mammoshare.networks.DCGANGenerator"
_DCGAN_ARGS = frozenset({"latent_size", "ngf", "multipliers", "out_channels", "leaky_slope"})
_PACKED_SEQUENTIAL = "$torch.nn.Sequential(*@network_layers)"


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


# --- manifest ---------------------------------------------------------------------------------


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


# --- patient ids ------------------------------------------------------------------------------

#: separators that join an id to the words around it: all become one
_SEPARATORS = str.maketrans({c: "_" for c in "_-./\\\u2010\u2011\u2012\u2013\u2014\u2015\u2212"})


def canonical_text(text: str) -> str:
    """Text as the patient-id scan compares it: NFKC, invisible format characters (zero-width
    space/joiners, BOM, soft hyphen...) removed, case-folded, separators ``_ - . / \\`` unified."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(c for c in text if unicodedata.category(c) != "Cf")
    return text.casefold().translate(_SEPARATORS)


def datalist_patient_ids(path: str | os.PathLike) -> set[str]:
    """Every ``patient_id`` of every record of a datalist."""
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
    """Every occurrence of a patient id in the texts, as ``"<where> line <n>: patient id '<id>'"``.

    Texts and ids are compared in :func:`canonical_text` form; an id matches as a whole token: no
    letter or digit right before or after it (``_ - . /`` and spaces separate), so ``D01_3`` is
    found in ``patient_D01_3.png`` but not in ``D01_30``."""
    canon = {}
    for pid in patient_ids:
        c = canonical_text(str(pid)).strip("_ ")
        if c:
            canon.setdefault(c, str(pid))
    if not canon:
        return []
    ids = sorted(canon, key=lambda s: (-len(s), s))
    pattern = re.compile(r"(?<![^\W_])(" + "|".join(re.escape(i) for i in ids) + r")(?![^\W_])")
    hits = []
    for name, text in texts.items():
        for number, line in enumerate(text.splitlines(), start=1):
            for match in pattern.finditer(canonical_text(line)):
                hits.append(f"{name} line {number}: patient id {canon[match.group(1)]!r} of the training datalist")
    return hits


def _json_strings(value: Any, out: list[str], depth: int = 0) -> None:
    if depth > 64:
        return
    if isinstance(value, dict):
        for k, v in value.items():
            out.append(str(k))
            _json_strings(v, out, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _json_strings(v, out, depth + 1)
    elif isinstance(value, str):
        out.append(value)


def scan_texts_of(name: str, data: bytes) -> dict[str, str]:
    """What the patient-id scan reads of one file: text (JSON: also every key and value decoded,
    so escapes cannot hide an id); safetensors: the header (tensor names, metadata)."""
    from mammoshare.gan.weights import is_safetensors

    texts: dict[str, str] = {}
    if is_safetensors(data[:16]):
        length = int.from_bytes(data[:8], "little")
        texts[f"{name} (safetensors header)"] = data[8 : 8 + length].decode("utf-8", errors="replace")
        return texts
    text = data.decode("utf-8", errors="replace")
    texts[name] = text
    if name.endswith(".json"):
        try:
            parsed = json.loads(text)
        except (ValueError, RecursionError):
            parsed = None
        strings: list[str] = []
        _json_strings(parsed, strings)
        texts[f"{name} (keys and values)"] = "\n".join(s.replace("\n", " ") for s in strings)
    return texts


# --- reading a bundle folder without evaluating it --------------------------------------------


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
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise PackError(f"{name}: not readable JSON ({e})") from None
    if not isinstance(data, dict):
        raise PackError(f"{name}: a JSON object is expected")
    return data


def _literal(config: dict, value: Any, what: str, seen: tuple = ()) -> Any:
    """A config value that is a JSON literal, or an ``@id`` reference to a top-level literal."""
    if isinstance(value, str) and re.fullmatch(r"@\w+", value):
        ref = value[1:]
        if ref in seen or ref not in config:
            raise PackError(f"{what}: reference {value} cannot be resolved to a value of the config")
        return _literal(config, config[ref], what, seen + (ref,))
    if isinstance(value, str) and value[:1] in ("$", "%", "@"):
        raise PackError(f"{what}: {value[:60]!r} is an expression; a plain value is needed to describe the generator")
    if isinstance(value, list):
        return [_literal(config, v, what, seen) for v in value]
    return value


def bundle_generator_settings(config: dict, metadata: dict, name: str = INFERENCE) -> dict:
    """What a bundle's own ``inference.json`` says about its generator, read as JSON (never
    evaluated): ``network_def`` must be ``mammoshare.networks.DCGANGenerator`` with literal (or
    ``@``-referenced literal) arguments, or an older packed layer list. Returns ``leaky_slope``,
    ``latent_size``, ``ngf``, ``multipliers``, ``out_channels`` (None where not stated) and
    ``decoding`` (``metadata.output_decoding`` or the config's ``decoding``, which must agree; else
    ``clip01`` for a generator converted from medigan 00005/00006, else ``tanh``)."""
    settings: dict[str, Any] = dict.fromkeys(("leaky_slope", "latent_size", "ngf", "multipliers", "out_channels"))
    network_def = config.get("network_def")
    if network_def == _PACKED_SEQUENTIAL and isinstance(config.get("network_layers"), list):
        layers = config["network_layers"]
        slopes = {float(l.get("negative_slope", 0.01)) for l in layers if isinstance(l, dict) and l.get("_target_") == "torch.nn.LeakyReLU"}
        if len(slopes) > 1:
            raise PackError(f"{name}: LeakyReLU layers with different slopes {sorted(slopes)}")
        settings["leaky_slope"] = slopes.pop() if slopes else None
    elif isinstance(network_def, dict) and network_def.get("_target_") == _OWN_GENERATOR:
        unknown = sorted(k for k in network_def if k != "_target_" and k not in _DCGAN_ARGS)
        if unknown:
            raise PackError(f"{name}: network_def has arguments {unknown} that the packer does not know")
        for key in _DCGAN_ARGS:
            if key in network_def:
                try:
                    settings[key] = _literal(config, network_def[key], f"{name}: network_def#{key}")
                except PackError:
                    if key == "leaky_slope":  # the activation cannot be read from the weights
                        raise
                    settings[key] = None  # the geometry is read from the weights; no cross-check then
        slope = settings["leaky_slope"]
        if slope is not None and (isinstance(slope, bool) or not isinstance(slope, (int, float))):
            raise PackError(f"{name}: network_def#leaky_slope must be a number or null, got {slope!r}")
    else:
        target = network_def.get("_target_") if isinstance(network_def, dict) else network_def
        raise PackError(f"{name}: network_def {str(target)[:80]!r} is not {_OWN_GENERATOR}; cannot tell the generator's "
                        "activation (add configs/generator.json)")
    decodings = {}
    if metadata.get("output_decoding") is not None:
        decodings["metadata.json output_decoding"] = metadata["output_decoding"]
    for key in ("decoding", "output_decoding"):
        if config.get(key) is not None:
            decodings[f"inference.json {key}"] = _literal(config, config[key], f"{name}: {key}")
    from mammoshare.gan.weights import DECODINGS

    for where, value in decodings.items():
        if value not in DECODINGS:
            raise PackError(f"{where}: unknown output decoding {value!r}; use one of {list(DECODINGS)}")
    if len(set(decodings.values())) > 1:
        raise PackError(f"the bundle states different output decodings: {decodings}")
    if decodings:
        settings["decoding"] = next(iter(decodings.values()))
    else:
        origin = metadata.get("origin") if isinstance(metadata.get("origin"), dict) else {}
        settings["decoding"] = "clip01" if str(origin.get("medigan_model_id", "")).startswith(("00005", "00006")) else "tanh"
    return settings


def _check_against_settings(parameters: dict, settings: dict, name: str) -> None:
    problems = []
    if settings.get("latent_size") is not None and settings["latent_size"] != parameters["latent_size"]:
        problems.append(f"latent size {settings['latent_size']} in the config, {parameters['latent_size']} in the weights")
    if settings.get("out_channels") is not None and settings["out_channels"] != parameters["out_channels"]:
        problems.append(f"{settings['out_channels']} output channels in the config, {parameters['out_channels']} in the weights")
    ngf = settings.get("ngf")
    multipliers = settings.get("multipliers") or ((16, 8, 4, 2, 1) if ngf is not None else None)
    if ngf is not None and multipliers is not None:
        try:
            widths = [int(ngf) * int(m) for m in multipliers]
        except (TypeError, ValueError):
            raise PackError(f"{INFERENCE}: ngf {ngf!r} / multipliers {multipliers!r} are not integers") from None
        if widths != parameters["widths"]:
            problems.append(f"hidden widths {widths} (ngf {ngf}) in the config, {parameters['widths']} in the weights")
    if problems:
        raise PackError(f"{name}: the weights do not match the bundle's inference.json: " + "; ".join(problems))


def metadata_expression_problems(value: Any, where: str = METADATA, depth: int = 0) -> list[str]:
    """MONAI loads metadata.json as ``_meta_`` of a config: no ``$`` / ``@`` / ``%`` strings and no
    ``_special_`` keys may be in it, at any depth."""
    if depth > 32:
        return [f"{where}: nested deeper than 32 levels"]
    problems = []
    if isinstance(value, dict):
        for key, item in value.items():
            key = str(key)
            if key[:1] in ("$", "@", "%") or (key.startswith("_") and key.endswith("_") and len(key) > 2):
                problems.append(f"{where}: key {key[:60]!r} is a MONAI expression or special key")
            problems += metadata_expression_problems(item, f"{where}#{key[:40]}", depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            problems += metadata_expression_problems(item, f"{where}#{i}", depth + 1)
    elif isinstance(value, str) and value[:1] in ("$", "@", "%"):
        problems.append(f"{where}: {value[:60]!r} is a MONAI expression, reference or macro; metadata is data only")
    return problems


def _weights_file(bundle: Path, stem: Path) -> Path:
    candidates = [p for p in (stem.with_suffix(".safetensors"), stem.with_suffix(".pt")) if p.is_file()]
    if not candidates:
        raise PackError(f"{bundle}: required file missing: {stem.relative_to(bundle).as_posix()}.pt or .safetensors")
    if len(candidates) > 1:
        raise PackError(f"{bundle}: both {candidates[0].name} and {candidates[1].name}: keep one weights file")
    return candidates[0]


def _generator_tensors(path: Path, name: str) -> dict:
    from mammoshare.gan.weights import WeightsError, load_generator_weights

    try:
        weights = load_generator_weights(path)
    except WeightsError as e:
        raise PackError(str(e).replace(str(path), name, 1)) from None
    if weights.layout == "last":
        raise PackError(
            f"{name}: holds training state that must not be shared (discriminator/critic or optimizer: "
            f"{weights.facts.get('training_state', [])[:6]}); only the generator's tensors may be packed (model.pt, snapshots, never last.pt)"
        )
    if weights.layout.startswith("medigan"):
        raise PackError(f"{name}: a medigan checkpoint ({weights.layout}); import it first: mammoshare medigan-import FILE --out BUNDLE_DIR")
    return weights.state_dict


def _zip_info(name: str, size: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
    info.compress_type = zipfile.ZIP_STORED
    info.create_system = 3
    info.external_attr = (0o100644 & 0xFFFF) << 16
    info.file_size = size
    return info


def _installed_version(distribution: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def _check_data_format(spec, metadata: dict) -> None:
    fmt = metadata.get("network_data_format", {})
    image = fmt.get("inputs", {}).get("image", {}) if isinstance(fmt, dict) else {}
    pred = fmt.get("outputs", {}).get("pred", {}) if isinstance(fmt, dict) else {}
    problems = []
    latent = spec.latent_shape
    if image.get("num_channels") != latent[0] or list(image.get("spatial_shape", [])) != latent[1:]:
        problems.append(f"input 'image' is {image.get('num_channels')} x {image.get('spatial_shape')}, the generator takes {latent[0]} x {latent[1:]}")
    if pred.get("num_channels") != spec.channels or list(pred.get("spatial_shape", [])) != spec.image_size:
        problems.append(f"output 'pred' is {pred.get('num_channels')} x {pred.get('spatial_shape')}, the generator makes {spec.channels} x {spec.image_size}")
    if problems:
        raise PackError(f"{METADATA}: network_data_format does not describe the generator: " + "; ".join(problems))


def pack_bundle(
    bundle_dir: str | os.PathLike,
    out: str | os.PathLike,
    train_datalist: str | os.PathLike | None = None,
    sign_key: str | os.PathLike | None = None,
    audit: dict | str | os.PathLike | None = None,
    accept_risk: str | None = None,
    no_audit: bool = False,
) -> PackResult:
    """Pack a generator bundle folder into a data-only exchange archive (see the module docstring).

    Args:
        audit: the generator's finished audit (the dict of :func:`mammoshare.audit.load_audit`, or
            its folder / ``audit.json``); it must be of the packed weights and pass the gate.
        accept_risk: the reason to share a generator whose memorisation or membership audit failed
            (recorded in the signed manifest and the model card).
        no_audit: pack without an audit, recorded as ``not audited``; one of ``audit`` and
            ``no_audit`` is required.

    Raises:
        PackError: naming the file and the reason; nothing is written then.
    """
    import torch

    from mammoshare.gan.weights import (
        WeightsError,
        build_generator,
        pinned_inference,
        read_generator_spec,
        recognise_generator,
        safetensors_bytes,
    )

    from .verify import check_metadata

    bundle, out = Path(bundle_dir), Path(out)
    if not bundle.is_dir():
        raise PackError(f"{bundle}: bundle folder not found")
    remove_stale_partials(out)
    if out.exists():
        raise PackError(f"{out}: exists; an archive is never overwritten (remove it or choose another name)")
    if (audit is None) == (not no_audit):
        raise PackError(
            "no audit given: pass the generator's audit (--audit DIR, or --audit-train DATALIST --audit-holdout DATALIST "
            "to run it), or --no-audit to share it recorded as not audited" if audit is None
            else "give either an audit or --no-audit, not both"
        )
    if audit is not None and not isinstance(audit, dict):
        audit = _load_audit(audit)
    private_key = load_private_key(sign_key) if sign_key is not None else None
    patient_ids = datalist_patient_ids(train_datalist) if train_datalist is not None else None
    missing = [n for n in (METADATA, MODEL_CARD, LICENSE) if not (bundle / n).is_file()]
    if not (bundle / GENERATOR).is_file() and not (bundle / INFERENCE).is_file():
        missing.append(f"{GENERATOR} (or the bundle's own {INFERENCE})")
    if missing:
        raise PackError(f"{bundle}: required file(s) missing: {', '.join(missing)}")
    metadata = _read_json(bundle / METADATA, METADATA)
    version, changelog = metadata.get("version"), metadata.get("changelog")
    if not isinstance(version, str) or not isinstance(changelog, dict) or version not in changelog:
        raise PackError(
            f"{METADATA}: version {version!r} is not in its changelog "
            f"({sorted(changelog) if isinstance(changelog, dict) else 'no changelog'}); add a changelog entry for it"
        )
    model_path = _weights_file(bundle, bundle / "models" / "model")
    audit_record = audit_gate(audit, accept_risk, _file_sha256(model_path)) if audit is not None else NOT_AUDITED
    state = _generator_tensors(model_path, f"models/{model_path.name}")
    try:
        if (bundle / GENERATOR).is_file():
            spec = read_generator_spec((bundle / GENERATOR).read_bytes(), GENERATOR)
            from mammoshare.gan.weights import check_tensors_against, TensorInfo

            check_tensors_against({k: TensorInfo("I64" if k.endswith("num_batches_tracked") else "F32", tuple(v.shape), 0, 0)
                                   for k, v in state.items()}, spec, f"models/{model_path.name}")
        else:
            settings = bundle_generator_settings(_read_json(bundle / INFERENCE, INFERENCE), metadata)
            spec = recognise_generator(state, f"models/{model_path.name}", leaky_slope=settings["leaky_slope"], decoding=settings["decoding"])
            _check_against_settings(spec.parameters, settings, f"models/{model_path.name}")
        network = build_generator(spec)
        network.load_state_dict(state, strict=True)
    except (WeightsError, RuntimeError) as e:
        raise PackError(str(e).splitlines()[0]) from None
    _check_data_format(spec, metadata)
    with torch.no_grad():
        made = network(torch.zeros(1, *spec.latent_shape))
    if list(made.shape[1:]) != [spec.channels, *spec.image_size]:
        raise PackError(f"models/{model_path.name}: the generator makes {list(made.shape[1:])}, not {[spec.channels, *spec.image_size]}")
    del network, made

    packed_meta = {k: v for k, v in metadata.items() if k not in ("snapshots", "packed_inference")}
    packed_meta["required_packages_version"] = {
        k: v for k, v in (("safetensors", _installed_version("safetensors")), ("pillow", _installed_version("pillow"))) if v
    }
    packed_meta["output_decoding"] = spec.output_decoding
    problems = metadata_expression_problems(packed_meta) + check_metadata(packed_meta, None)[1]
    if problems:
        raise PackError(f"{bundle}: the packed bundle would not pass verification: " + "; ".join(problems[:8]))

    snapshot_dir = bundle / "models" / "snapshots"
    snapshot_paths = sorted(p for p in snapshot_dir.iterdir() if p.suffix in (".pt", ".safetensors") and p.is_file()) if snapshot_dir.is_dir() else []
    stems = [p.stem for p in snapshot_paths]
    if len(set(stems)) != len(stems):
        raise PackError(f"{snapshot_dir}: snapshots with the same name in two formats; keep one")

    work = partial_name(out)  # converted weights wait here, one file in memory at a time
    out.parent.mkdir(parents=True, exist_ok=True)
    work.mkdir()
    try:
        sources: dict[str, Path] = {}
        hashes: dict[str, tuple[str, int]] = {}

        def add_weights(name: str, tensors: dict) -> None:
            data = safetensors_bytes(tensors, {"format": "pt"})
            path = work / name.replace("/", "__")
            path.write_bytes(data)
            sources[name], hashes[name] = path, (_sha256(data), len(data))

        add_weights(MODEL, state)
        del state
        for path in snapshot_paths:
            name = f"models/snapshots/{path.stem}.safetensors"
            if not SNAPSHOT_PATTERN.fullmatch(name):
                raise PackError(f"models/snapshots/{path.name}: snapshot file names may only hold letters, digits and . _ - (rename it)")
            tensors = _generator_tensors(path, f"models/snapshots/{path.name}")
            shapes = {k: tuple(v.shape) for k, v in tensors.items()}
            if shapes != spec.tensor_shapes():
                raise PackError(f"models/snapshots/{path.name}: a generator of another geometry than models/{model_path.name}")
            add_weights(name, tensors)
            del tensors
        texts: dict[str, bytes] = {
            METADATA: (json.dumps(packed_meta, indent=4, ensure_ascii=False) + "\n").encode("utf-8"),
            GENERATOR: spec.to_json(),
            INFERENCE: pinned_inference(spec, packed_meta.get("name"), version, hashes[MODEL][0]),
            MODEL_CARD: model_card_with_audit((bundle / MODEL_CARD).read_bytes(), audit, audit_record),
            LICENSE: (bundle / LICENSE).read_bytes(),
        }
        for name, data in texts.items():
            hashes[name] = (_sha256(data), len(data))
        manifest = manifest_bytes(hashes, str(packed_meta.get("name", "")), version, audit_record)

        if patient_ids is not None:
            scanned: dict[str, str] = {"(file names)": "\n".join(sorted(hashes) + [f"models/{model_path.name}"] + [f"models/snapshots/{p.name}" for p in snapshot_paths])}
            for name, data in {**texts, MANIFEST: manifest}.items():
                scanned.update(scan_texts_of(name, data))
            for name, path in sources.items():
                with open(path, "rb") as f:
                    head = f.read(16)
                    length = int.from_bytes(head[:8], "little")
                    f.seek(0)
                    scanned.update(scan_texts_of(name, f.read(8 + length)))
            hits = find_patient_ids(scanned, patient_ids)
            if hits:
                raise PackError(
                    f"patient ids of {train_datalist} found in the bundle's files; remove them before sharing: " + "; ".join(hits[:10])
                    + (f" (and {len(hits) - 10} more)" if len(hits) > 10 else "")
                )

        entries: dict[str, bytes | Path] = {**texts, **sources, MANIFEST: manifest}
        fingerprint = None
        if private_key is not None:
            signed = {n: sha for n, (sha, _) in hashes.items()}
            signed[MANIFEST] = _sha256(manifest)
            entries[SIGNATURE] = sign_files(signed, str(packed_meta.get("name", bundle.name)), private_key)
            fingerprint = key_fingerprint(private_key.public_key())
        try:
            with atomic_write(out, overwrite=False) as raw, zipfile.ZipFile(raw, "w") as archive:
                for name in sorted(entries):
                    item = entries[name]
                    if isinstance(item, bytes):
                        archive.writestr(_zip_info(name, len(item)), item)
                        continue
                    with open(item, "rb") as src, archive.open(_zip_info(name, hashes[name][1]), "w") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
        except FileExistsError:
            raise PackError(f"{out}: appeared while packing; an archive is never overwritten") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return PackResult(path=out, sha256=archive_sha256(out), files=sorted(entries), signed=private_key is not None, fingerprint=fingerprint)


# --- the audit gate ----------------------------------------------------------------------------

#: the manifest's audit record of a generator packed with ``--no-audit``
NOT_AUDITED = {
    "decision": "not audited",
    "detail": "packed with --no-audit: no privacy audit of memorisation or membership inference was run on this generator",
}


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _load_audit(audit_dir) -> dict:
    from mammoshare.audit import AuditError, load_audit

    try:
        return load_audit(audit_dir)
    except AuditError as e:
        raise PackError(str(e)) from None


def audit_gate(audit: dict, accept_risk: str | None, weights_sha256: str) -> dict:
    """The manifest's audit record: :func:`mammoshare.audit.gate` on the weights file to be packed
    (``weights_sha256``, of the bundle's source file, which the audit sampled); raises
    :class:`PackError` with the gate's reason when it refuses."""
    from mammoshare.audit import AuditError, gate

    try:
        record = gate(audit, accept_risk=accept_risk, weights_sha256=weights_sha256)
    except (AuditError, KeyError, TypeError) as e:
        raise PackError(str(e) if isinstance(e, AuditError) else f"{audit.get('_path', 'the audit')}: incomplete audit ({e!r}); run the audit again") from None
    return {**record, "audited_weights_sha256": weights_sha256}


def model_card_with_audit(card: bytes, audit: dict | None, record: dict) -> bytes:
    """The bundle's model card with the audit's section appended (or a "not audited" one), in
    place of a section a previous pack appended."""
    if audit is not None:
        from mammoshare.audit import model_card_section

        reason = (record.get("accepted_risk") or {}).get("reason")
        section = model_card_section(audit, accepted_risk=reason)
    else:
        section = "## Privacy and quality audit\n\nNOT AUDITED: this generator was packed with `--no-audit`; nobody checked it for " \
                  "memorisation of training patches or membership inference. Audit it before any use (`mammoshare audit`).\n"
    # a repacked (received) bundle already ends with the section of its last pack: replace it
    head, found, _ = card.rpartition(b"\n## Privacy and quality audit\n")
    return (head if found else card).rstrip(b"\n") + b"\n\n" + section.encode("utf-8")


# --- unpacking --------------------------------------------------------------------------------


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
    from .reader import ZipSource
    from .verify import verify_bundle

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
        extra = {}
        if torchscript:
            extra["models/model.ts"] = _export_torchscript(work, report.spec)
        receipt = {
            "archive": archive.name,
            "archive_sha256": archive_sha256(archive),
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
    path = folder / "models" / "model.ts"
    torch.jit.save(torch.jit.script(network.eval()), str(path))
    return archive_sha256(path)


# --- command line -----------------------------------------------------------------------------


def _pack_audit(args: argparse.Namespace):
    """The audit ``pack`` gates on: loaded (``--audit``), run here (``--audit-train`` /
    ``--audit-holdout``), or None (``--no-audit``)."""
    run = args.audit_train is not None or args.audit_holdout is not None
    if sum((args.audit is not None, run, args.no_audit)) != 1:
        raise PackError("give exactly one of --audit DIR (a finished audit), --audit-train DATALIST --audit-holdout DATALIST "
                        "(run the audit now), or --no-audit (share it recorded as not audited)")
    if args.audit is not None:
        return _load_audit(args.audit)
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
                             num_samples=args.audit_num_samples, features=args.audit_features, seed=args.audit_seed)


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


def _cmd_keygen(args: argparse.Namespace) -> int:
    private, public = Path(f"{args.out}.key"), Path(f"{args.out}.pub")
    try:
        fingerprint = generate_signing_key(private, public)
    except (SigningError, OSError) as e:
        print(f"keygen refused: {e}", file=sys.stderr)
        return 1
    print(f"private key: {private} (keep it secret; it signs archives: mammoshare pack ... --sign {private})")
    print(f"public key:  {public} (give it to the receivers: mammoshare verify ... --trusted-key {public})")
    print(f"fingerprint: {fingerprint}")
    return 0


def _add_verify_options(parser: argparse.ArgumentParser) -> None:
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
    _add_verify_options(p)
    p.set_defaults(func=_cmd_unpack)
    return p


def add_keygen_parser(subparsers) -> argparse.ArgumentParser:
    """``mammoshare keygen --out PREFIX``: PREFIX.key (private) and PREFIX.pub (public)."""
    p = subparsers.add_parser("keygen", help="make an Ed25519 key pair for signing exchange archives")
    p.add_argument("--out", required=True, help="writes PREFIX.key (private, mode 0600) and PREFIX.pub (public)")
    p.set_defaults(func=_cmd_keygen)
    return p

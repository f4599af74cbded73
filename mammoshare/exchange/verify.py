"""The receiver's checks of a data-only generator archive (or an unpacked bundle folder).

``mammoshare verify FILE.zip|DIR [--trusted-key PUB ...] [--allow-unsigned] [--expect-sha256 HASH]
[--schema FILE] [--train-datalist FILE]`` reports every check as OK, WARN, FAIL or SKIPPED with its
reason, naming the file, and exits 0 only when none failed:

======================  ==========================================================================
``archive sha256``      the archive's SHA-256 against the one the sender gave out of band
``container``           the zip's limits and names (:mod:`.reader`): entry count, sizes, ratio, one
                        compression method, no encryption, links, duplicates or unsafe names
``allow-list``          no file outside the archive layout of :mod:`.layout`
``required files``      metadata, generator.json, weights, model card, licence, manifest
``content``             no file is a pickle, a zip (torch, TorchScript, package) or a numpy file,
                        whatever its name; text files are UTF-8 without NUL
``manifest``            every file listed with a matching SHA-256 and size, no unlisted file
``signature``           ``trusted`` (model-signing signature by a ``--trusted-key``), ``unknown key``
                        or ``unsigned`` (both refused unless ``--allow-unsigned``), ``invalid``
                        (always refused); the signed files must be exactly the archive's
``metadata schema``     MONAI's metadata schema (the shipped copy unless ``--schema``)
``metadata``            version in changelog, safe name and version, no ``$``/``@``/``%``
                        expression or special key, network_data_format against generator.json
``generator``           generator.json: a known family, every parameter in its range (nothing built
                        before this passes)
``inference config``    the pinned config: regenerated from generator.json by the family's fixed
                        template; a shipped one must be byte-equal (``--trust`` waives this only)
``weights``             each safetensors file in turn: header cap, tensor count and shapes exactly
                        the family's, dtype allow-list; loaded strictly into the receiver's own
                        network, run once, released before the next
``patient ids``         with ``--train-datalist`` (the sender's own check): no patient id anywhere
``training``            the sender's training record: dataset, datalist name, task, lesion patches
                        and patients, epochs and generator updates, seed, project version; WARN
                        for PHANTOM training data or no record, FAIL for a malformed one
``audit``               the sender's audit gate record: the four verdicts (memorisation, membership,
                        diversity, fidelity) and sizes; WARN when shared under an accepted risk
                        or ``--no-audit``, FAIL for a failed privacy verdict without one
======================  ==========================================================================

Verification reads the archive in memory, one file at a time, within the limits; it never extracts,
evaluates, imports or unpickles anything, and every failure is a refusal with a reason, never a
traceback. Memory is bounded by the per-file cap and the families' parameter caps.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mammoshare.hashing import sha256_bytes, sha256_file

from .layout import (
    GENERATOR,
    INFERENCE,
    MANIFEST,
    MANIFEST_FORMAT,
    METADATA,
    MODEL,
    RECEIPT,
    REQUIRED_FILES,
    SIGNATURE,
    SNAPSHOT_PATTERN,
    TEXT_FILES,
    ExchangeError,
    is_allowed_name,
    training_record_problems,
    training_summary,
)
from .policy import (
    FAIL,
    OK,
    SKIPPED,
    WARN,
    check_data_format,
    datalist_patient_ids,
    find_patient_ids,
    metadata_expression_problems,
    metadata_problems,
    scan_texts_of,
    sniff_payload,
    validate_metadata_schema,
)
from .reader import LIMITS, ArchiveLimits, ReadError, open_source
from .signing import SigningError, check_signature, load_public_key

__all__ = ["Check", "VerifyReport", "verify_bundle", "CONFIG_CHECK", "OK", "WARN", "FAIL", "SKIPPED"]

#: the check that ``--trust`` may waive
CONFIG_CHECK = "inference config"


@dataclass


class Check:
    name: str
    status: str
    detail: str


@dataclass
class VerifyReport:
    """Every check with its status and reason; ``verified_files`` maps each file whose SHA-256
    matched the manifest (plus the manifest and the signature) to its SHA-256; ``spec`` and
    ``pinned_inference`` are the checked generator and the receiver's regenerated config."""

    source: str
    checks: list[Check] = field(default_factory=list)
    verified_files: dict[str, str] = field(default_factory=dict)
    spec: Any = None
    pinned_inference: bytes | None = None
    signature_status: str = "unsigned"
    signer_key: str | None = None
    audit: dict | None = None
    training: dict | None = None

    def add(self, name: str, status: str, detail: str) -> None:
        self.checks.append(Check(name, status, detail))

    def status(self, name: str) -> str | None:
        return next((c.status for c in self.checks if c.name == name), None)

    def failures(self, trust: bool = False) -> list[Check]:
        return [c for c in self.checks if c.status == FAIL and not (trust and c.name == CONFIG_CHECK)]

    def passed(self, trust: bool = False) -> bool:
        return bool(self.checks) and not self.failures(trust)

    def text(self) -> str:
        width = max(len(c.name) for c in self.checks) if self.checks else 0
        lines = [f"verifying {self.source}"]
        for c in self.checks:
            lines.append(f"  {c.status:<7} {c.name:<{width}}  {c.detail}")
        verdict = "PASSED" if self.passed() else "REFUSED"
        lines.append(f"{verdict}: {sum(c.status == OK for c in self.checks)} OK, {sum(c.status == FAIL for c in self.checks)} FAIL, "
                     f"{sum(c.status == SKIPPED for c in self.checks)} SKIPPED"
                     + (f", {sum(c.status == WARN for c in self.checks)} WARN" if any(c.status == WARN for c in self.checks) else "")
                     + f"; signature: {self.signature_status}")
        return "\n".join(lines)


def verify_bundle(
    source: str | os.PathLike,
    schema: str | os.PathLike | None = None,
    expect_sha256: str | None = None,
    trusted_keys: list | tuple | str | os.PathLike | None = None,
    allow_unsigned: bool = False,
    train_datalist: str | os.PathLike | None = None,
    limits: ArchiveLimits = LIMITS,
) -> VerifyReport:
    """Run every check on an archive (read in memory, never extracted) or an unpacked folder."""
    path = Path(source)
    report = VerifyReport(str(path))
    if isinstance(trusted_keys, (str, os.PathLike)):
        trusted_keys = [trusted_keys]
    if path.is_dir():
        if expect_sha256:
            report.add("archive sha256", FAIL, "a folder has no archive SHA-256: verify the archive itself with --expect-sha256")
        else:
            report.add("archive sha256", SKIPPED, "a folder, not an archive")
    elif path.is_file():
        actual = sha256_file(path)
        if expect_sha256:
            wanted = expect_sha256.strip().lower()
            report.add("archive sha256", OK if actual == wanted else FAIL,
                       f"{actual} as expected" if actual == wanted else f"MISMATCH: the archive is {actual}, expected {wanted}")
        else:
            report.add("archive sha256", SKIPPED, f"no --expect-sha256 given; the archive is {actual}: compare it with the sender's")
    else:
        report.add("archive sha256", FAIL, f"{path}: not found")
        return report
    try:
        src = open_source(path, limits)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, RuntimeError) as e:
        report.add("container", FAIL, f"{path.name}: not a readable zip archive ({str(e)[:200]})")
        return report
    try:
        _run_checks(report, src, schema, list(trusted_keys or []), allow_unsigned, train_datalist)
    except (ReadError, ExchangeError, SigningError) as e:  # a last guard: a refusal, never a traceback
        report.add("internal", FAIL, str(e)[:500])
    except (MemoryError, RecursionError, OverflowError, zipfile.BadZipFile, OSError, EOFError, RuntimeError) as e:
        report.add("internal", FAIL, f"verification stopped: {type(e).__name__}: {str(e)[:300]}")
    finally:
        src.close()
    return report


def _run_checks(report: VerifyReport, src, schema, trusted_keys: list, allow_unsigned: bool, train_datalist) -> None:
    from mammoshare.gan.weights import WeightsError, pinned_inference, read_generator_spec

    receiver: dict[str, str] = {}
    names = set(src.names)
    if src.kind == "folder" and RECEIPT in names:  # what the receiver's unpack added
        names.discard(RECEIPT)
        try:
            receipt = json.loads(src.read(RECEIPT, 1 << 20))
            receiver = dict(receipt.get("receiver_files") or {})
        except (ValueError, AttributeError, TypeError, ReadError):
            receiver = {}
        for name in list(receiver):
            if name in names and src.digest(name)[0] == receiver[name]:
                names.discard(name)
    # container
    if src.problems:
        report.add("container", FAIL, "refused entries: " + "; ".join(src.problems[:10]))
    else:
        report.add("container", OK, f"{len(names)} files within the limits, normal names, no links, duplicates or encryption")
    outside = sorted(n for n in names if not is_allowed_name(n))
    report.add("allow-list", FAIL if outside else OK,
               f"files outside the archive layout: {outside[:10]}" + (" (TorchScript is code: never shipped)" if any(n.endswith(".ts") for n in outside) else "")
               if outside else "only files of the archive layout")
    missing = [n for n in REQUIRED_FILES if n not in names]
    report.add("required files", FAIL if missing else OK, f"missing: {missing}" if missing else ", ".join(REQUIRED_FILES))

    # content: every file, whatever its name
    problems, texts = [], {}
    for name in sorted(names):
        try:
            head = src.read(name, 1 << 20) if src.size(name) <= 1 << 20 else src.head(name, 1 << 20)
        except ReadError as e:
            problems.append(str(e))
            continue
        what = sniff_payload(head)
        if what:
            problems.append(f"{name}: {what}")
        elif name in TEXT_FILES or not name.endswith(".safetensors"):
            if src.size(name) > src.limits.max_text_bytes:
                problems.append(f"{name}: {src.size(name)} bytes, more than the {src.limits.max_text_bytes} accepted for a text file")
                continue
            try:
                text = head.decode("utf-8")
            except UnicodeDecodeError as e:
                problems.append(f"{name}: not UTF-8 text ({e.reason} at byte {e.start})")
                continue
            if "\x00" in text:
                problems.append(f"{name}: holds NUL characters")
                continue
            texts[name] = head
    report.add("content", FAIL if problems else OK,
               "; ".join(problems[:8]) if problems else "no pickle, zip, numpy or binary payload in any file; texts are UTF-8")

    # manifest
    manifest, manifest_raw, listed = None, None, {}
    if MANIFEST in texts:
        manifest_raw = texts[MANIFEST]
        try:
            manifest = json.loads(manifest_raw.decode("utf-8"))
            listed = manifest["files"]
            if manifest.get("format") != MANIFEST_FORMAT or manifest.get("hash") != "sha256" or not isinstance(listed, dict):
                raise ValueError(f"not a {MANIFEST_FORMAT} manifest with sha256 hashes")
            if "audit" in manifest and not isinstance(manifest["audit"], dict):
                raise ValueError("its audit summary is not a JSON object")
        except (ValueError, KeyError, TypeError, RecursionError) as e:
            report.add("manifest", FAIL, f"{MANIFEST}: unreadable ({str(e)[:200]})")
            manifest, listed = None, {}
    elif MANIFEST in names:
        report.add("manifest", FAIL, f"{MANIFEST}: not a readable text file")
    else:
        report.add("manifest", FAIL, f"no {MANIFEST}")
    actual: dict[str, str] = {}
    if manifest is not None:
        problems = []
        for name, entry in sorted(listed.items()):
            if not is_allowed_name(name) or name in (MANIFEST, SIGNATURE):
                problems.append(f"{str(name)[:80]}: listed but not an allowed file")
            elif name not in names:
                problems.append(f"{name}: listed but absent")
            else:
                sha, size = src.digest(name)
                if not isinstance(entry, dict) or sha != entry.get("sha256") or size != entry.get("size"):
                    problems.append(f"{name}: SHA-256 MISMATCH (file {sha}, manifest {entry.get('sha256') if isinstance(entry, dict) else entry})")
                else:
                    actual[name] = sha
        unlisted = sorted(names - set(listed) - {MANIFEST, SIGNATURE, INFERENCE})
        if unlisted:
            problems.append(f"files not in the manifest: {unlisted[:10]}")
        if problems:
            report.add("manifest", FAIL, "; ".join(problems[:10]))
        else:
            actual[MANIFEST] = sha256_bytes(manifest_raw)
            report.verified_files = dict(actual)
            report.add("manifest", OK, f"{len(actual) - 1} files match their SHA-256 and size, none unlisted")
            report.audit = manifest.get("audit")
            report.training = manifest.get("training")

    # signature
    _check_signature(report, src, names, texts, trusted_keys, allow_unsigned, actual)

    # metadata
    metadata = None
    if METADATA in texts:
        try:
            metadata = json.loads(texts[METADATA].decode("utf-8"))
        except (ValueError, RecursionError) as e:
            report.add("metadata schema", FAIL, f"{METADATA}: not readable JSON ({str(e)[:200]})")
    if metadata is None:
        if not report.status("metadata schema"):
            report.add("metadata schema", FAIL, f"no readable {METADATA}")
        report.add("metadata", SKIPPED, "no readable metadata")
    else:
        status, detail = validate_metadata_schema(metadata, schema)
        report.add("metadata schema", status, f"{METADATA}: {detail}")

    # generator.json
    spec = None
    if GENERATOR in texts:
        try:
            spec = read_generator_spec(texts[GENERATOR], GENERATOR)
            report.spec = spec
            p = spec.parameters
            report.add("generator", OK, f"{GENERATOR}: family {spec.family}, " + ", ".join(f"{k} {v}" for k, v in sorted(p.items()))
                       + f"; makes {spec.channels} x {spec.image_size}, decoded {spec.output_decoding}")
        except WeightsError as e:
            report.add("generator", FAIL, str(e))
    else:
        report.add("generator", FAIL, f"no readable {GENERATOR}")
    if metadata is not None:
        problems = metadata_problems(metadata) + metadata_expression_problems(metadata)
        if isinstance(metadata, dict) and spec is not None:
            try:
                check_data_format(spec, metadata)
            except ExchangeError as e:
                problems.append(str(e))
            if metadata.get("output_decoding", spec.output_decoding) != spec.output_decoding:
                problems.append(f"output_decoding {metadata.get('output_decoding')!r} differs from {GENERATOR}'s {spec.output_decoding!r}")
        report.add("metadata", FAIL if problems else OK,
                   f"{METADATA}: " + "; ".join(problems[:8]) if problems else f"{METADATA}: data only, version in changelog, I/O as {GENERATOR}")

    # the pinned inference config
    if spec is None or not isinstance(metadata, dict) or MODEL not in names:
        report.add(CONFIG_CHECK, FAIL, f"{INFERENCE}: cannot be regenerated without a valid {GENERATOR}, {METADATA} and {MODEL}")
    else:
        try:
            weights_sha = actual.get(MODEL) or src.digest(MODEL)[0]
            phantom = isinstance(report.training, dict) and report.training.get("phantom") is True
            report.pinned_inference = pinned_inference(spec, metadata.get("name"), metadata.get("version"), weights_sha, phantom=phantom)
        except WeightsError as e:
            report.add(CONFIG_CHECK, FAIL, str(e))
        else:
            if INFERENCE not in names:
                report.add(CONFIG_CHECK, OK, f"{INFERENCE} not shipped: unpack writes the pinned one, regenerated from {GENERATOR}")
            elif INFERENCE in texts and texts[INFERENCE] == report.pinned_inference:
                report.add(CONFIG_CHECK, OK, f"{INFERENCE} is byte for byte the pinned config regenerated from {GENERATOR}")
                if INFERENCE not in report.verified_files and report.verified_files:
                    report.verified_files[INFERENCE] = sha256_bytes(texts[INFERENCE])
            else:
                report.add(CONFIG_CHECK, FAIL, f"{INFERENCE} differs from the pinned config regenerated from {GENERATOR}: "
                           "a free-form config can run any code; refused (--trust is the explicit, recorded consent)")

    # weights, one file at a time
    _check_weights(report, src, names, spec)

    # patient ids (the sender's own check, or an auditor's)
    if train_datalist is None:
        report.add("patient ids", SKIPPED, "no --train-datalist (the sender checks its archive with it before sending)")
    else:
        ids = datalist_patient_ids(train_datalist)
        scanned = {"(file names)": "\n".join(sorted(names))}
        for name in sorted(names):
            try:
                data = texts.get(name)
                if data is None:
                    data = src.head(name, 8 + min(int.from_bytes(src.head(name, 8), "little"), 1 << 20))
                scanned.update(scan_texts_of(name, data))
            except ReadError as e:
                scanned[name] = str(e)
        hits = find_patient_ids(scanned, ids)
        report.add("patient ids", FAIL if hits else OK, "; ".join(hits[:8]) if hits else f"no patient id of {Path(train_datalist).name} in any file")

    _check_training(report)
    _check_audit(report)


def _check_training(report: VerifyReport) -> None:
    """The sender's training record, shown plainly; PHANTOM training data and a missing record warn."""
    record = report.training
    if record is None:
        report.add("training", WARN, "no training record in the manifest (packed by an older version): nothing is known of the training data")
        return
    problems = training_record_problems(record)
    if problems:
        report.add("training", FAIL, f"{MANIFEST}: the training record is not one pack writes: " + "; ".join(problems[:5]))
    elif not record["recorded"] or record["phantom"]:
        report.add("training", WARN, training_summary(record))
    else:
        report.add("training", OK, training_summary(record))


#: the audit families whose ``fail`` the sender's gate refuses unless a risk is accepted
_GATED = ("memorisation", "membership")


def _check_audit(report: VerifyReport) -> None:
    """The sender's audit record, shown plainly: the decision, the four verdicts, any accepted risk.
    A failed privacy family without an accepted risk (not something ``pack`` writes) is refused."""
    record = report.audit
    if record is None:
        report.add("audit", SKIPPED, "no audit record in the manifest (packed before the audit gate): nothing is known of memorisation or membership inference")
        return
    decision = record.get("decision")
    if decision == "not audited":
        report.add("audit", WARN, "NOT AUDITED: the sender packed it with --no-audit; nothing is known of memorisation or membership inference")
        return
    verdicts = record.get("verdicts") if isinstance(record.get("verdicts"), dict) else {}
    shown = ", ".join(f"{k} {str(v)[:12]}" for k, v in verdicts.items()) or "no verdicts"
    summary = record.get("summary") if isinstance(record.get("summary"), dict) else {}
    sizes = (f" ({summary.get('samples')} samples vs {summary.get('train_patches')} training / {summary.get('holdout_patches')} holdout "
             f"patches, {summary.get('features')} features)") if summary else ""
    failed = [f for f in _GATED if verdicts.get(f) == "fail"]
    risk = record.get("accepted_risk") if isinstance(record.get("accepted_risk"), dict) else None
    if decision not in ("pass", "accepted-risk") or any(verdicts.get(f) not in ("pass", "warn", "fail") for f in _GATED):
        report.add("audit", FAIL, f"the manifest's audit record is not one the gate writes (decision {str(decision)[:20]!r}; {shown})")
    elif failed and not (risk and str(risk.get("reason", "")).strip()):
        report.add("audit", FAIL, f"the privacy audit failed ({', '.join(failed)}) and no risk was accepted: {shown}")
    elif failed:
        report.add("audit", WARN, f"FAILED privacy audit ({', '.join(failed)}), shared under the sender's accepted risk: "
                   f"{str(risk.get('reason'))[:300]!r}; {shown}{sizes}")
    else:
        report.add("audit", OK, f"{shown}{sizes}")


def _check_signature(report: VerifyReport, src, names: set, texts: dict, trusted_keys: list, allow_unsigned: bool, actual: dict) -> None:
    loose = " (accepted: --allow-unsigned)" if allow_unsigned else "; refused (give the sender's --trusted-key, or --allow-unsigned)"
    if SIGNATURE not in names:
        report.signature_status = "unsigned"
        report.add("signature", SKIPPED if allow_unsigned else FAIL, f"{SIGNATURE}: UNSIGNED: the archive has no {SIGNATURE}{loose}")
        return
    keys = []
    for path in trusted_keys:
        try:
            keys.append(load_public_key(path))
        except SigningError as e:
            report.add("signature", FAIL, str(e))
            return
    if SIGNATURE not in texts:
        report.signature_status = "invalid"
        report.add("signature", FAIL, f"{SIGNATURE}: not a readable signature")
        return
    result = check_signature(texts[SIGNATURE], keys)
    report.signer_key = result.fingerprint
    if result.status == "unknown key":
        report.signature_status = "signed by an unknown key"
        report.add("signature", SKIPPED if allow_unsigned else FAIL, f"{SIGNATURE}: SIGNED BY AN UNKNOWN KEY: {result.detail}{loose}")
        return
    if result.status == "invalid":
        report.signature_status = "invalid"
        report.add("signature", FAIL, result.detail)
        return
    files = {n: src.digest(n)[0] for n in sorted(names - {SIGNATURE})}
    if result.files != files:
        extra = sorted(set(files) - set(result.files))
        absent = sorted(set(result.files) - set(files))
        changed = sorted(n for n in set(files) & set(result.files) if files[n] != result.files[n])
        report.signature_status = "invalid"
        report.add("signature", FAIL, f"{SIGNATURE}: the signed files are not the archive's: unsigned {extra[:6]}, "
                   f"signed but absent {absent[:6]}, changed since signing {changed[:6]}")
        return
    report.signature_status = "trusted"
    report.add("signature", OK, f"{SIGNATURE}: TRUSTED: {result.detail}; it covers all {len(files)} files")
    if report.verified_files:
        report.verified_files[SIGNATURE] = sha256_bytes(texts[SIGNATURE])


def _check_weights(report: VerifyReport, src, names: set, spec) -> None:
    import torch

    from mammoshare.gan.weights import WeightsError, build_generator, read_safetensors

    weight_names = [n for n in sorted(names) if n == MODEL or SNAPSHOT_PATTERN.fullmatch(n)]
    if not weight_names:
        report.add("weights", FAIL, f"no {MODEL}")
        return
    if spec is None:
        report.add("weights", SKIPPED, f"not read: {GENERATOR} did not pass (nothing is built before it does)")
        return
    problems = []
    network = build_generator(spec)
    for name in weight_names:
        try:
            state = read_safetensors(src.read(name), name, spec)
            network.load_state_dict(state, strict=True)
            del state
            if name != MODEL:
                continue  # a snapshot has the model's shapes (checked above): one run of the network is enough
            made = spec.family_impl.trial_output(network, spec.parameters)
            if list(made.shape[1:]) != [spec.channels, *spec.image_size]:
                problems.append(f"{name}: makes {list(made.shape[1:])}, not {[spec.channels, *spec.image_size]}")
            elif not torch.isfinite(made).all():
                problems.append(f"{name}: the generator's output is not finite")
        except (WeightsError, ReadError) as e:
            problems.append(str(e))
        except RuntimeError as e:
            problems.append(f"{name}: does not load into the generator of {GENERATOR} ({str(e).splitlines()[0][:200]})")
    del network
    if problems:
        report.add("weights", FAIL, "; ".join(problems[:6]))
    else:
        report.add("weights", OK, f"{len(weight_names)} safetensors file(s) hold exactly the tensors of {GENERATOR}'s generator, "
                   f"load strictly into the receiver's own network; {MODEL} makes {spec.channels} x {spec.image_size}")

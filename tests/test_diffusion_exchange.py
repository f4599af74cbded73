"""Sharing the diffusion bundle like the GANs: its ``diffusion_unet`` family in generator.json,
pack / verify / unpack, the receiver's pinned config sampling without the project (the same pixels
as the project's own inference), the medigan export run by medigan itself, and the refusals."""

from __future__ import annotations

import ast
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
from monai.bundle import run as bundle_run
from PIL import Image

from mammoshare.datalist import write_datalist
from mammoshare.diffusion.inference import generate_diffusion_patches, load_diffusion_weights
from mammoshare.exchange.layout import GENERATOR, PackError, UnpackError
from mammoshare.exchange.medigan.exporter import export_medigan_package
from mammoshare.exchange.pack import pack_bundle
from mammoshare.exchange.unpack import unpack_bundle
from mammoshare.exchange.verify import FAIL, OK, verify_bundle
from mammoshare.gan.weights import FAMILIES, WeightsError, pinned_inference, read_generator_spec, template_sha256

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py

REPO = Path(__file__).resolve().parents[1]
# the tiny UNet of tests/test_diffusion_bundle.py, 20 training timesteps
NET = {"channels": [8, 8, 8, 8], "attention_levels": [False, False, False, False], "num_head_channels": 8, "norm_num_groups": 8}
SAMPLING = {"num_samples": 5, "batch_size": 2, "num_inference_steps": 3, "task": "all", "lesion_type": "calcification", "seed": 4}


def tiny_unet():
    from monai.networks.nets import DiffusionModelUNet

    return DiffusionModelUNet(spatial_dims=2, in_channels=1, out_channels=1, num_res_blocks=1, num_class_embeds=4, **NET)


@pytest.fixture(scope="module")
def data(phantom_root, tmp_path_factory):
    from mammoshare.readers import build_datalist

    datalist, _ = build_datalist("bcdr", phantom_root / "bcdr", task="all")
    return write_datalist(datalist, tmp_path_factory.mktemp("ddpm_share") / "bcdr_all.json")


@pytest.fixture(scope="module")
def bundle(data, tmp_path_factory):
    """A copy of bundles/ddpm_bcdr whose inference.json states the tiny UNet, trained one epoch into its models/."""
    bundle = tmp_path_factory.mktemp("centre_b") / "ddpm_bcdr"
    shutil.copytree(REPO / "bundles" / "ddpm_bcdr", bundle, ignore=shutil.ignore_patterns("models"))
    config = json.loads((bundle / "configs" / "inference.json").read_text())
    config.update(NET, num_train_timesteps=20)
    (bundle / "configs" / "inference.json").write_text(json.dumps(config, indent=4))
    bundle_run(config_file=str(bundle / "configs" / "train.json"), logging_file=False, datalist=str(data),
               output_dir=str(bundle / "models"), max_epochs=1, batch_size=16, device="cpu", num_workers=0,
               num_train_timesteps=20, preview_every=0, preview_steps=2, **NET)
    return bundle


@pytest.fixture(scope="module")
def archive(bundle, data):
    result = pack_bundle(bundle, bundle.parent / "ddpm_bcdr.zip", train_datalist=data, no_audit=True)
    assert any(entry.startswith("models/last.pt (training state") for entry in result.left_out)
    return result.path


def _project_samples(out: Path, checkpoint: Path, **overrides) -> dict[str, np.ndarray]:
    generate_diffusion_patches(tiny_unet(), output_dir=out, checkpoint=checkpoint, generator_name="ddpm_bcdr", generator_version="0.1.0",
                               num_train_timesteps=20, device="cpu", progress=False, **{**SAMPLING, **overrides})
    return _pngs(out)


def _pngs(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))}


def _blocked_environment(tmp_path: Path) -> dict[str, str]:
    """PYTHONPATH starts with packages ``mammoshare`` and ``transforms`` that refuse to import."""
    blocker = tmp_path / "blocker"
    for package in ("mammoshare", "transforms"):
        (blocker / package).mkdir(parents=True)
        (blocker / package / "__init__.py").write_text(f"raise ImportError('{package} is not installed at the receiving centre')\n")
    return {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "PYTHONPATH": str(blocker), "PYTHONWARNINGS": "ignore",
            "OMP_NUM_THREADS": "1"}


def test_the_archive_declares_the_unet_and_its_schedule(archive, bundle):
    with zipfile.ZipFile(archive) as z:
        names = set(z.namelist())
        spec = read_generator_spec(z.read(GENERATOR))
        manifest = json.loads(z.read("manifest.json"))
    assert "models/model.safetensors" in names and not any(n.endswith((".pt", ".py")) for n in names)
    assert spec.family == "diffusion_unet" and spec.image_size == [128, 128] and spec.latent_shape == [1, 128, 128]
    assert spec.parameters == {**NET, "num_res_blocks": 1, "num_class_embeds": 4, "class_names": ["mass", "calcification", "other", "any"],
                               "image_size": 128, "training_scheduler": "ddpm", "num_train_timesteps": 20, "sampler": "ddim",
                               "num_inference_steps": 20}
    assert manifest["training"]["phantom"] is True and manifest["training"]["generator_updates"] == manifest["training"]["iterations"]
    assert template_sha256(FAMILIES["diffusion_unet"]) == FAMILIES["diffusion_unet"].template_sha256


def test_verify_and_unpack_pass_with_the_pinned_config(archive, tmp_path):
    report = verify_bundle(archive, allow_unsigned=True)
    assert report.passed(), report.text()
    statuses = {c.name: c.status for c in report.checks}
    assert statuses["generator"] == statuses["weights"] == statuses["inference config"] == OK
    assert "family diffusion_unet" in next(c.detail for c in report.checks if c.name == "generator")
    unpack_bundle(archive, tmp_path / "received", allow_unsigned=True)
    config = (tmp_path / "received" / "configs" / "inference.json").read_bytes()
    assert config == report.pinned_inference and b"mammoshare" not in config
    assert json.loads(config)["network_def"] == "$monai.networks.nets.DiffusionModelUNet(**@network_parameters)"
    with pytest.raises(UnpackError, match="--torchscript exports DCGAN generators only"):
        unpack_bundle(archive, tmp_path / "ts", allow_unsigned=True, torchscript=True)
    assert not (tmp_path / "ts").exists()


def test_pinned_sampling_without_the_project_gives_the_projects_pixels(archive, bundle, tmp_path):
    target = tmp_path / "received"
    unpack_bundle(archive, target, allow_unsigned=True)
    env = _blocked_environment(tmp_path)
    out = tmp_path / "synthetic"
    overrides = [item for key, value in SAMPLING.items() for item in (f"--{key}", str(value))]
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(target / "configs" / "inference.json"),
               "--bundle_root", str(target), "--output_dir", str(out), "--device", "cpu", *overrides]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    received = _pngs(out)
    assert sorted(received) == [f"synthetic_{i:05d}.png" for i in range(5)]
    # the same noise, scheduler and class label as the project's own inference of the sender's model.pt
    ours = _project_samples(tmp_path / "ours", bundle / "models" / "model.pt")
    assert all(np.array_equal(received[name], ours[name]) for name in ours)
    assert np.std(np.stack(list(received.values()))) > 1
    # and the project samples the received safetensors the same way
    assert load_diffusion_weights(target / "models" / "model.safetensors").layout == "safetensors"
    again = _project_samples(tmp_path / "again", target / "models" / "model.safetensors")
    assert all(np.array_equal(again[name], ours[name]) for name in ours)
    text = Image.open(out / "synthetic_00000.png").text
    assert (text["synthetic"], text["phantom"], text["lesion_type"], text["sampler"]) == ("true", "true", "calcification", "ddim-3")
    assert "PHANTOM" in text["Description"]
    datalist = json.loads((out / "synthetic_datalist.json").read_text())
    assert datalist["generator"]["family"] == "diffusion" and datalist["generator"]["class_label"] == 1
    assert [r["lesion_types"] for r in datalist["training"]] == [["calcification"]] * 5
    # the ancestral sampler draws its noise from the seeded global generator, in both
    ancestral = subprocess.run(command[:command.index("--output_dir") + 1] + [str(tmp_path / "ddpm")] + command[command.index("--output_dir") + 2:]
                               + ["--sampler", "ddpm"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert ancestral.returncode == 0, ancestral.stderr[-3000:]
    ours_ddpm = _project_samples(tmp_path / "ours_ddpm", bundle / "models" / "model.pt", sampler="ddpm")
    assert all(np.array_equal(_pngs(tmp_path / "ddpm")[name], ours_ddpm[name]) for name in ours_ddpm)
    assert not all(np.array_equal(ours_ddpm[name], ours[name]) for name in ours)
    # a bad override: one line naming it
    bad = subprocess.run(command[:-2 * len(SAMPLING)] + ["--task", "mass", "--lesion_type", "other", "--num_samples", "1"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "the mass task takes masses only" in bad.stderr


def test_pack_refuses_training_state_and_other_weights(bundle, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(bundle, other)
    shutil.copyfile(other / "models" / "last.pt", other / "models" / "model.pt")
    (other / "models" / "training_counts.json").unlink()
    with pytest.raises(PackError, match="holds training state that must not be shared .*training network and optimizer"):
        pack_bundle(other, tmp_path / "a.zip", no_audit=True)
    shutil.copyfile(bundle / "models" / "model.pt", other / "models" / "model.pt")
    config = json.loads((other / "configs" / "inference.json").read_text())
    config["channels"] = [16, 16, 16, 16]
    (other / "configs" / "inference.json").write_text(json.dumps(config))
    with pytest.raises(PackError, match=r"not the weights of the configured UNet \(channels \[16, 16, 16, 16\]"):
        pack_bundle(other, tmp_path / "b.zip", no_audit=True)
    assert not (tmp_path / "a.zip").exists() and not (tmp_path / "b.zip").exists()


@pytest.mark.parametrize("change, message", [
    ({"sampler": "rflow"}, "does not sample a model trained with 'ddpm'"),
    ({"channels": [8, 8, 12, 8]}, "not divisible by norm_num_groups"),
    ({"class_names": ["mass", "any"]}, "class_names must be 4 different names"),
    ({"num_inference_steps": 21}, "outside the accepted range"),
    ({"image_size": 100}, "not divisible by 2 \\*\\* 3"),
    ({"channels": [2048] * 6, "attention_levels": [True] * 6, "norm_num_groups": 32}, "more than the 200,000,000 accepted"),
    ({"activation": "relu"}, "unknown \\['activation'\\]"),
    # a class name is written into the receiver's config: an expression, reference or macro is refused
    ({"class_names": ["$__import__('os').system('id')", "@network", "%macro", "any"]}, "class_names must be 4 different names"),
    ({"channels": "$[8] * 4"}, "channels must be a list"),
])
def test_generator_json_is_checked_before_anything_is_built(archive, change, message):
    with zipfile.ZipFile(archive) as z:
        data = json.loads(z.read(GENERATOR))
    data["parameters"].update(change)
    with pytest.raises(WeightsError, match=message):
        read_generator_spec(json.dumps(data).encode())


def test_a_tampered_generator_json_is_refused_by_the_weights_check(archive, tmp_path):
    """generator.json rewritten (a wider UNet), manifest recomputed, unsigned: the pinned config follows
    the new description, but the weights do not load into it."""
    from mammoshare.exchange.layout import manifest_bytes
    from mammoshare.hashing import sha256_bytes

    with zipfile.ZipFile(archive) as z:
        files = {n: z.read(n) for n in z.namelist()}
    data = json.loads(files[GENERATOR])
    data["parameters"]["channels"] = [16, 16, 16, 16]
    files[GENERATOR] = json.dumps(data).encode()
    spec = read_generator_spec(files[GENERATOR])
    meta = json.loads(files["configs/metadata.json"])
    files["configs/inference.json"] = pinned_inference(spec, meta["name"], meta["version"], sha256_bytes(files["models/model.safetensors"]),
                                                       phantom=True)
    manifest = json.loads(files["manifest.json"])
    hashes = {n: (sha256_bytes(b), len(b)) for n, b in files.items() if n != "manifest.json"}
    files["manifest.json"] = manifest_bytes(hashes, meta["name"], meta["version"], manifest["audit"], manifest["training"])
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(tampered, "w") as z:
        for name in sorted(files):
            z.writestr(name, files[name])
    report = verify_bundle(tampered, allow_unsigned=True)
    statuses = {c.name: c.status for c in report.checks}
    assert statuses["inference config"] == OK and statuses["weights"] == FAIL, report.text()
    assert not report.passed()


def test_medigan_export_runs_in_medigan_without_the_project(bundle, tmp_path):
    package = export_medigan_package(bundle, tmp_path / "export", "mammoshare_test_ddpm")
    imported = {
        (alias.name if isinstance(node, ast.Import) else node.module).split(".")[0]
        for node in ast.walk(ast.parse((package / "__init__.py").read_text()))
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    assert imported <= {"os", "functools", "numpy", "torch", "PIL", "monai"}, imported
    entry = json.loads((tmp_path / "export" / "global.json").read_text())["mammoshare_test_ddpm"]
    assert "monai" in entry["execution"]["dependencies"] and entry["selection"]["type"] == "DDPM"
    assert entry["selection"]["condition"] == ["mass", "calcification", "other", "any"]
    entry["execution"]["generate_method"]["args"]["custom"].update(lesion_type="calcification", num_inference_steps=3, batch_size=2)
    work = tmp_path / "medigan_work"
    (work / "config").mkdir(parents=True)
    (work / "config" / "global.json").write_text(json.dumps({"mammoshare_test_ddpm": entry}))
    script = (
        "import socket, numpy as np\n"
        "socket.socket.connect = socket.create_connection = lambda *a, **k: (_ for _ in ()).throw(RuntimeError('network use'))\n"
        "from medigan import Generators\n"
        "images = Generators().generate(model_id='mammoshare_test_ddpm', num_samples=5, save_images=False, install_dependencies=False, seed=4)\n"
        "np.save('ddpm.npy', np.stack(images))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=work, env=_blocked_environment(tmp_path), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ours = _project_samples(tmp_path / "ours", bundle / "models" / "model.pt")
    assert np.array_equal(np.load(work / "ddpm.npy"), np.stack(list(ours.values())))


def test_the_layouts_of_the_diffusion_weights(bundle):
    weights = load_diffusion_weights(bundle / "models" / "model.pt")
    assert weights.layout == "diffusion" and weights.family == "diffusion_unet"
    last = load_diffusion_weights(bundle / "models" / "last.pt")
    assert last.layout == "diffusion-last" and last.training_state
    assert all(torch.equal(weights.state_dict[k], last.state_dict[k]) for k in weights.state_dict)  # model.pt is the EMA of last.pt


def test_pack_runs_the_audit_of_the_diffusion_bundle(bundle, data, tmp_path):
    """``pack --audit-train/--audit-holdout`` samples the UNet (few steps), gates on the verdicts and
    records the audit of these very weights in the signed manifest; verify shows it."""
    import argparse

    from mammoshare.exchange.cli import add_pack_parser
    from mammoshare.hashing import sha256_file

    parser = argparse.ArgumentParser(prog="mammoshare")
    add_pack_parser(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "audited.zip"
    args = parser.parse_args(["pack", str(bundle), "--out", str(out), "--audit-train", str(data), "--audit-holdout", str(data),
                              "--audit-num-samples", "12", "--audit-features", "pixel", "--audit-num-inference-steps", "2",
                              "--accept-risk", "test: a one-epoch tiny UNet on phantom data"])
    assert args.func(args) == 0
    with zipfile.ZipFile(out) as z:
        record = json.loads(z.read("manifest.json"))["audit"]
        card = z.read("docs/README.md").decode()
    assert record["audited_weights_sha256"] == sha256_file(bundle / "models" / "model.pt")
    assert set(record["verdicts"]) == {"memorisation", "membership", "diversity", "fidelity"}
    assert "## Privacy and quality audit" in card
    audit = json.loads((tmp_path / "audited.audit" / "audit.json").read_text())
    assert audit["generator"]["weights"][0]["sha256"] == record["audited_weights_sha256"]
    report = verify_bundle(out, allow_unsigned=True)
    assert report.passed(), report.text()
    assert report.status("audit") in (OK, "WARN")

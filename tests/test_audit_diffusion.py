"""The audit of a diffusion bundle (``ddpm_bcdr``): ``mammoshare audit BUNDLE_DIR`` recognises its
DiffusionModelUNet, samples it with the diffusion inference and the settings of its inference.json
(``--num_inference_steps`` overriding the steps), exactly as the bundle's own inference does; the
GAN bundles keep the GAN inference; bad settings are one line naming the file and the fix."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mammoshare.audit import load_audit
from mammoshare.audit.data import DIFFUSION_NETWORK, bundle_family
from mammoshare.datalist import SYNTHETIC_DATALIST, load_datalist, write_datalist

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
# the tiny UNet of tests/test_diffusion_bundle.py and few timesteps; the copy's inference.json keeps
# the bundle's 50 DDIM steps, more than these 20 timesteps: the audit must be told fewer
NET = {"channels": [8, 8, 8, 8], "attention_levels": [False, False, False, False], "num_head_channels": 8,
       "norm_num_groups": 8, "num_train_timesteps": 20}


@pytest.fixture(scope="module")
def tiny_ddpm(tmp_path_factory):
    """A copy of ddpm_bcdr with a tiny UNet, trained for one epoch on the phantom BCDR training
    lesions (all types) into its own models/."""
    from monai.bundle import run as bundle_run

    from mammoshare.phantom import write_phantoms
    from mammoshare.readers import build_datalist

    root = tmp_path_factory.mktemp("audit_ddpm")
    write_phantoms(root / "phantom", seed=2021, datasets=["bcdr"])
    datalist, _ = build_datalist("bcdr", root / "phantom" / "bcdr", task="all")
    datalist_file = write_datalist(datalist, root / "bcdr_all.json")
    bundle = root / "ddpm_tiny"
    shutil.copytree(REPO / "bundles" / "ddpm_bcdr", bundle, ignore=shutil.ignore_patterns("models"))
    config = json.loads((bundle / "configs" / "inference.json").read_text())
    config.update(NET)
    (bundle / "configs" / "inference.json").write_text(json.dumps(config, indent=1))
    bundle_run(config_file=str(bundle / "configs" / "train.json"), logging_file=False, **NET, device="cpu",
               num_workers=0, batch_size=16, max_epochs=1, preview_every=0, preview_steps=2, datalist=str(datalist_file),
               output_dir=str(bundle / "models"))
    return {"bundle": bundle, "datalist": datalist_file, "root": root}


def _audit_args(tiny_ddpm, out, *extra) -> list[str]:
    d = str(tiny_ddpm["datalist"])
    return ["audit", str(tiny_ddpm["bundle"]), "--train", d, "--holdout", d, "--out", str(out), "--features", "pixel",
            "--seed", "0", *extra]


def test_bundle_family_of_the_shipped_bundles():
    families = {}
    for name in ("dcgan_bcdr", "wgangp_bcdr", "dcgan_optimam", "ddpm_bcdr"):
        config = json.loads((REPO / "bundles" / name / "configs" / "inference.json").read_text())
        families[name] = bundle_family(config)
    assert families == {"dcgan_bcdr": "gan", "wgangp_bcdr": "gan", "dcgan_optimam": "gan", "ddpm_bcdr": "diffusion"}
    assert bundle_family({"network_def": {"_target_": "DiffusionModelUNet"}}) == "diffusion"  # MONAI's short name
    assert bundle_family({"network_def": {"_target_": DIFFUSION_NETWORK + "X"}}) == "gan"
    assert bundle_family({}) == "gan"


def test_the_audit_samples_a_diffusion_bundle_like_its_own_inference(tiny_ddpm, tmp_path):
    from monai.bundle import run as bundle_run

    from mammoshare.cli import main

    bundle = tiny_ddpm["bundle"]
    out = tmp_path / "audit"
    assert main([*_audit_args(tiny_ddpm, out), "--num_samples", "12", "--num_inference_steps", "2"]) == 0
    result = load_audit(out)
    generator = result["generator"]
    assert (generator["name"], generator["family"], generator["sampler"], generator["num_inference_steps"]) == (
        "ddpm_bcdr", "diffusion", "ddim", 2)
    assert (generator["training_scheduler"], generator["lesion_type"]) == ("ddpm", "mass")  # the copy's task: mass
    sha = hashlib.sha256((bundle / "models" / "model.pt").read_bytes()).hexdigest()
    assert [w["sha256"] for w in generator["weights"]] == [sha]
    assert result["data"]["synthetic"]["sampled_by_audit"] and result["data"]["synthetic"]["patches"] == 12
    assert set(result["verdicts"]) == {"memorisation", "membership", "diversity", "fidelity"}
    assert result["features"]["kind"] == "pixel"
    samples = sorted((out / "synthetic").glob("*.png"))
    assert len(samples) == 12
    with Image.open(samples[0]) as image:
        assert image.text["mammoshare:sampler"] == "ddim-2" and image.text["mammoshare:phantom"] == "true"
    assert "ddim" in (out / "audit.md").read_text()
    # the same files as the bundle's own inference.json with the same seed, count and steps
    own = tmp_path / "own"
    bundle_run(config_file=str(bundle / "configs" / "inference.json"), logging_file=False, bundle_root=str(bundle),
               num_samples=12, num_inference_steps=2, seed=0, device="cpu", output_dir=str(own))
    assert [p.read_bytes() for p in samples] == [p.read_bytes() for p in sorted(own.glob("*.png"))]
    assert load_datalist(own / SYNTHETIC_DATALIST)["generator"]["weights"] == generator["weights"]
    images = np.stack([np.asarray(Image.open(p)) for p in samples])
    assert images.std() > 0 and len({im.tobytes() for im in images}) == 12


def test_bad_diffusion_audits_are_one_line_naming_the_file_and_the_fix(tiny_ddpm, tmp_path, capsys):
    from mammoshare.cli import main

    config_file = tiny_ddpm["bundle"] / "configs" / "inference.json"

    def error(args) -> str:
        capsys.readouterr()
        assert main(args) == 2
        message = capsys.readouterr().err.strip()
        assert message.startswith("error: ") and "\n" not in message
        return message

    # the bundle's 50 DDIM steps exceed the copy's 20 timesteps: nothing is sampled
    message = error(_audit_args(tiny_ddpm, tmp_path / "a", "--num_samples", "4"))
    assert str(config_file) in message and "between 1 and 20" in message and "--num_inference_steps" in message
    assert not (tmp_path / "a" / "synthetic").exists()
    message = error(_audit_args(tiny_ddpm, tmp_path / "b", "--num_samples", "4", "--num_inference_steps", "2",
                                "--snapshot_dir", str(tmp_path)))
    assert str(config_file) in message and "--checkpoint FILE" in message
    message = error(_audit_args(tiny_ddpm, tmp_path / "c", "--num_samples", "4", "--num_inference_steps", "0"))
    assert "at least 1" in message
    # a GAN bundle takes no diffusion steps, and neither does a finished synthetic set
    d = str(tiny_ddpm["datalist"])
    gan = REPO / "bundles" / "dcgan_bcdr"
    message = error(["audit", str(gan), "--train", d, "--holdout", d, "--out", str(tmp_path / "d"), "--num_inference_steps", "2"])
    assert str(gan / "configs" / "inference.json") in message and "GAN" in message and "leave the option out" in message
    message = error(["audit", "--synthetic", d, "--train", d, "--holdout", d, "--out", str(tmp_path / "e"),
                     "--num_inference_steps", "2"])
    assert "leave the option out" in message
    # an untrained copy: where the weights are missing and how to train them
    untrained = tmp_path / "untrained"
    shutil.copytree(tiny_ddpm["bundle"], untrained, ignore=shutil.ignore_patterns("models"))
    message = error(["audit", str(untrained), "--train", d, "--holdout", d, "--out", str(tmp_path / "f"),
                     "--num_inference_steps", "2", "--num_samples", "4"])
    assert str(untrained / "models" / "model.pt") in message and "configs/train.json" in message
    # a UNet that is not the trained one: the options to set in the bundle's inference.json
    wider = tmp_path / "wider"
    shutil.copytree(tiny_ddpm["bundle"], wider)
    config = json.loads((wider / "configs" / "inference.json").read_text())
    config["channels"] = [16, 16, 16, 16]
    (wider / "configs" / "inference.json").write_text(json.dumps(config))
    message = error(["audit", str(wider), "--train", d, "--holdout", d, "--out", str(tmp_path / "g"),
                     "--num_inference_steps", "2", "--num_samples", "4"])
    assert "another UNet" in message and str(wider / "configs" / "inference.json") in message

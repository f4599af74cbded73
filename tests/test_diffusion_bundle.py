"""The ddpm_bcdr diffusion bundle: training through monai.bundle, EMA weights, resume, sampling
determinism, files and provenance, the lesion-type override, RFlow, and bad input."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
from monai.bundle import run as bundle_run
from monai.networks.nets import DiffusionModelUNet
from PIL import Image

from mammoshare.bundle import SCHEMA_FILE
from mammoshare.datalist import load_datalist
from mammoshare.diffusion.conditioning import (
    ANY_LESION,
    ClassConditionedDiffusionInferer,
    LesionDiffusionPrepareBatch,
    lesion_class,
    sampling_scheduler,
    training_scheduler,
)
from mammoshare.diffusion.inference import generate_diffusion_patches
from mammoshare.datalist import SYNTHETIC_DATALIST
from mammoshare.gan.weights import WeightsError

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "ddpm_bcdr"
# a tiny UNet (4 levels so that the always-present middle attention sees 16x16 tokens) and few timesteps
NET = {"channels": [8, 8, 8, 8], "attention_levels": [False, False, False, False], "num_head_channels": 8, "norm_num_groups": 8}
TINY = {**NET, "num_train_timesteps": 20, "device": "cpu", "num_workers": 0}
TRAIN = {**TINY, "batch_size": 8, "preview_steps": 2, "preview_per_class": 2, "preview_every": 1}


def tiny_unet(num_class_embeds: int | None = 4) -> DiffusionModelUNet:
    return DiffusionModelUNet(spatial_dims=2, in_channels=1, out_channels=1, num_res_blocks=1, num_class_embeds=num_class_embeds, **NET)


@pytest.fixture(scope="module")
def datalists(phantom_root, tmp_path_factory):
    from mammoshare.datalist import write_datalist
    from mammoshare.readers import build_datalist

    root = tmp_path_factory.mktemp("ddpm_data")
    out = {}
    for task in ("mass", "all"):
        datalist, _ = build_datalist("bcdr", phantom_root / "bcdr", task=task)
        out[task] = write_datalist(datalist, root / f"bcdr_{task}.json")
    return out


def _train(output_dir, datalist, **overrides) -> Path:
    settings = {**TRAIN, "datalist": str(datalist), "output_dir": str(output_dir), **overrides}
    bundle_run(config_file=str(BUNDLE / "configs" / "train.json"), logging_file=False, **settings)
    return Path(output_dir)


def _sample(output_dir, checkpoint, **overrides) -> Path:
    settings = {**TINY, "num_samples": 3, "num_inference_steps": 2, "batch_size": 2, "checkpoint": str(checkpoint)}
    settings.update(output_dir=str(output_dir), **overrides)
    bundle_run(config_file=str(BUNDLE / "configs" / "inference.json"), logging_file=False, **settings)
    return Path(output_dir)


@pytest.fixture(scope="module")
def trained(datalists, tmp_path_factory):
    """One short training on the all-lesion phantom data (mass, calcification and other patches)."""
    return _train(tmp_path_factory.mktemp("ddpm_run") / "run", datalists["all"], max_epochs=1, batch_size=16)


def test_training_through_monai_bundle_from_a_foreign_directory(tmp_path):
    """The real command line from another directory, on the phantom default (no dataset given)."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(BUNDLE / "configs" / "train.json"),
           "--output_dir", str(out), "--max_epochs", "1", "--batch_size", "16", "--preview_every", "1"]
    for key, value in {**TINY, "preview_steps": 2, "preview_per_class": 2}.items():
        cmd += [f"--{key}", str(value)]
    before = {p: p.stat().st_mtime_ns for p in (BUNDLE / "models").rglob("*")}  # a user's own runs may be there
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert "PHANTOM" in log and "lesion classes of the training patches: calcification" in log
    weights = torch.load(out / "model.pt", weights_only=True)
    assert set(weights) == set(tiny_unet().state_dict()) and all(isinstance(v, torch.Tensor) for v in weights.values())
    state = torch.load(out / "last.pt", weights_only=True)
    assert {"network", "ema", "optimizer", "scalers", "epoch", "iteration", "seed"} <= set(state) and state["epoch"] == 1
    assert state["training_scheduler"] == "ddpm"
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert {p: p.stat().st_mtime_ns for p in (BUNDLE / "models").rglob("*")} == before
    with Image.open(out / "previews" / "epoch_0001.png") as preview:
        # rows: mass, calcification, other, any; 2 per class of 128 px with 2 px padding
        assert preview.mode == "L" and preview.size == (2 * 130 + 2, 4 * 130 + 2)


def test_shared_weights_are_the_ema_ones(trained):
    weights = torch.load(trained / "model.pt", weights_only=True)
    state = torch.load(trained / "last.pt", weights_only=True)
    assert all(torch.equal(weights[k], state["ema"][k]) for k in weights)
    assert not all(torch.equal(weights[k], state["network"][k]) for k in weights)  # EMA lags the network


def test_resume_is_bitwise_equal_to_an_uninterrupted_run(datalists, tmp_path, cause_chain):
    data = datalists["mass"]
    # the straight run draws no previews, the interrupted one does: previews must not disturb training
    straight = _train(tmp_path / "straight", data, max_epochs=2, preview_every=0)
    assert not (straight / "previews").exists()
    one_epoch = torch.load(_train(tmp_path / "resumed", data, max_epochs=1) / "model.pt", weights_only=True)
    resumed = _train(tmp_path / "resumed", data, max_epochs=2, resume=True)
    a, b = (torch.load(p / "model.pt", weights_only=True) for p in (straight, resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)
    last_a, last_b = (torch.load(p / "last.pt", weights_only=True) for p in (straight, resumed))
    assert all(torch.equal(last_a["network"][k], last_b["network"][k]) for k in last_a["network"])
    assert last_a["iteration"] == last_b["iteration"] and last_b["epoch"] == 2
    assert not all(torch.equal(a[k], one_epoch[k]) for k in a)
    other = _train(tmp_path / "other", data, max_epochs=1, seed=7, preview_every=0)  # the comparison can fail
    c = torch.load(other / "model.pt", weights_only=True)
    assert not all(torch.equal(one_epoch[k], c[k]) for k in c)
    with pytest.raises(Exception) as info:
        _train(tmp_path / "resumed", data, max_epochs=3, resume=True, seed=5)
    assert "resume with the same --seed" in cause_chain(info.value)
    with pytest.raises(Exception) as info:
        _train(tmp_path / "empty", data, max_epochs=1, resume=True)
    assert "last.pt: no training state to resume from" in cause_chain(info.value)


def _png_bytes(folder: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(folder.glob("*.png"))]


def test_files_format_provenance_and_determinism(trained, tmp_path):
    out = _sample(tmp_path / "a", trained / "model.pt", seed=3)
    sha = hashlib.sha256((trained / "model.pt").read_bytes()).hexdigest()
    assert sorted(p.name for p in out.iterdir()) == [f"synthetic_{i:05d}.png" for i in range(3)] + [SYNTHETIC_DATALIST]
    for i, path in enumerate(sorted(out.glob("*.png"))):
        raw = path.read_bytes()
        assert raw[:8] == b"\x89PNG\r\n\x1a\n" and (raw[24], raw[25]) == (8, 0)  # 8-bit greyscale
        with Image.open(path) as image:
            assert image.mode == "L" and image.size == (128, 128)
            text = image.text
        assert text["Description"] == ("SYNTHETIC lesion patch generated by ddpm_bcdr 0.1.0; not a patient image; "
                                       "the generator was trained on PHANTOM data (no clinical meaning)")
        assert text["mammoshare:phantom"] == "true"  # its training counts say phantom
        assert text["mammoshare:synthetic"] == "true" and text["mammoshare:generator"] == "ddpm_bcdr"
        assert text["mammoshare:weights_file"] == "model.pt" and text["mammoshare:weights_sha256"] == sha
        assert (text["mammoshare:seed"], text["mammoshare:index"], text["mammoshare:task"]) == ("3", str(i), "mass")
        assert (text["mammoshare:lesion_type"], text["mammoshare:sampler"]) == ("mass", "ddim-2")
    data = json.loads((out / SYNTHETIC_DATALIST).read_text())
    assert (data["dataset"], data["task"], data["seed"], data["batch_size"]) == ("synthetic", "mass", 3, 2)
    generator = data["generator"]
    assert (generator["family"], generator["sampler"], generator["num_inference_steps"]) == ("diffusion", "ddim", 2)
    assert generator["weights"] == [{"file": "model.pt", "sha256": sha, "layout": "diffusion", "samples": 3}]
    assert all(r["lesion_types"] == ["mass"] and r["label"] == 1 and r["box"] is None for r in data["training"])
    assert len(load_datalist(out / SYNTHETIC_DATALIST)["training"]) == 3
    images = np.stack([np.asarray(Image.open(p)) for p in sorted(out.glob("*.png"))])
    assert images.std() > 0 and len({im.tobytes() for im in images}) == 3  # not blank, not all alike

    assert _png_bytes(_sample(tmp_path / "b", trained / "model.pt", seed=3)) == _png_bytes(out)  # same seed
    assert _png_bytes(_sample(tmp_path / "c", trained / "model.pt", seed=4)) != _png_bytes(out)
    # the training state's EMA entry gives the same images
    last = _sample(tmp_path / "d", trained / "last.pt", seed=3)
    assert [np.asarray(Image.open(p)).tobytes() for p in sorted(last.glob("*.png"))] == [im.tobytes() for im in images]


def test_lesion_type_override_and_task_all(trained, tmp_path, cause_chain):
    calc = _sample(tmp_path / "calc", trained / "model.pt", task="all", lesion_type="calcification")
    anything = _sample(tmp_path / "any", trained / "model.pt", task="all")
    data = json.loads((calc / SYNTHETIC_DATALIST).read_text())
    assert data["task"] == "all" and data["generator"]["lesion_type"] == "calcification"
    assert all(r["lesion_types"] == ["calcification"] for r in data["training"])
    with Image.open(calc / "synthetic_00000.png") as image:
        assert image.text["mammoshare:lesion_type"] == "calcification"
    data = json.loads((anything / SYNTHETIC_DATALIST).read_text())
    assert data["generator"]["lesion_type"] == "any" and data["generator"]["class_label"] == ANY_LESION
    assert all(r["lesion_types"] == [] for r in data["training"])
    assert _png_bytes(calc) != _png_bytes(anything)  # the class embedding changes the samples
    with pytest.raises(Exception) as info:
        _sample(tmp_path / "bad", trained / "model.pt", task="mass", lesion_type="calcification")
    assert "the mass task takes masses only" in cause_chain(info.value)
    assert not (tmp_path / "bad").exists()


def test_rflow_training_and_sampling(datalists, tmp_path, cause_chain):
    run = _train(tmp_path / "run", datalists["mass"], max_epochs=1, scheduler="rflow")
    assert torch.load(run / "last.pt", weights_only=True)["training_scheduler"] == "rflow"
    out = _sample(tmp_path / "out", run / "model.pt", training_scheduler="rflow")
    data = json.loads((out / SYNTHETIC_DATALIST).read_text())
    assert data["generator"]["sampler"] == "rflow" and len(list(out.glob("*.png"))) == 3
    with pytest.raises(Exception) as info:
        _sample(tmp_path / "mismatch", run / "model.pt", training_scheduler="rflow", sampler="ddim")
    assert "needs a model trained with --scheduler ddpm" in cause_chain(info.value)


def test_bad_weights_and_output_folder(trained, tmp_path):
    common = dict(num_samples=2, generator_name="g", generator_version="0", num_inference_steps=2, num_train_timesteps=20, progress=False)
    wider = DiffusionModelUNet(spatial_dims=2, in_channels=1, out_channels=1, num_res_blocks=1, num_class_embeds=4,
                               channels=[16, 16, 16, 16], attention_levels=[False] * 4, num_head_channels=8, norm_num_groups=8)
    with pytest.raises(WeightsError, match="weights of another UNet than the configured one"):
        generate_diffusion_patches(wider, output_dir=tmp_path / "w", checkpoint=trained / "model.pt", **common)
    (tmp_path / "junk.pt").write_bytes(b"not torch")
    with pytest.raises(WeightsError, match="junk.pt: not a readable torch checkpoint.*a diffusion bundle takes its models/model.pt"):
        generate_diffusion_patches(tiny_unet(), output_dir=tmp_path / "j", checkpoint=tmp_path / "junk.pt", **common)
    with pytest.raises(FileNotFoundError, match="no diffusion model weights.*configs/train.json"):
        generate_diffusion_patches(tiny_unet(), output_dir=tmp_path / "m", default_checkpoint=tmp_path / "models" / "model.pt", **common)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        generate_diffusion_patches(tiny_unet(), output_dir=tmp_path / "full", checkpoint=trained / "model.pt", **common)


def test_batch_preparation_conditioning_and_rflow_target():
    torch.manual_seed(0)
    batch = {"image": torch.rand(6, 1, 8, 8), "class_label": torch.tensor([0, 1, 2, 0, 1, 2])}
    images, target, _, kwargs = LesionDiffusionPrepareBatch(20, uncond_prob=0.0)(batch)
    assert torch.equal(target, kwargs["noise"]) and torch.equal(kwargs["condition"], batch["class_label"])
    _, _, _, kwargs = LesionDiffusionPrepareBatch(20, uncond_prob=1.0)(batch)
    assert (kwargs["condition"] == ANY_LESION).all()
    rflow = training_scheduler("rflow", 20)
    images, target, _, kwargs = LesionDiffusionPrepareBatch(20, uncond_prob=0.0, scheduler=rflow)(batch)
    assert torch.allclose(target, images - kwargs["noise"])  # velocity
    # the inferer feeds the condition to the class embedding
    net = tiny_unet().eval()
    inferer = ClassConditionedDiffusionInferer(training_scheduler("ddpm", 20))
    x, noise, t = torch.rand(2, 1, 128, 128), torch.randn(2, 1, 128, 128), torch.tensor([5, 5])
    with torch.no_grad():
        for parameter in net.parameters():  # MONAI zero-initialises the output convolutions
            if not parameter.any():
                parameter.normal_(0.0, 0.1)
        a = inferer(x, net, noise, t, condition=torch.tensor([0, 0]))
        b = inferer(x, net, noise, t, condition=torch.tensor([1, 1]))
    assert not torch.allclose(a, b)


def test_lesion_class_rule_and_sampler_checks():
    assert lesion_class(["calcification", "mass"]) == "mass"
    assert lesion_class(["calcification", "distortion"]) == "calcification"
    assert lesion_class(["distortion"]) == "other" and lesion_class([]) == "other"
    assert len(sampling_scheduler("ddim", "ddpm", 50).timesteps) == 50
    with pytest.raises(ValueError, match="between 1 and 1000"):
        sampling_scheduler("ddim", "ddpm", 0)


def test_metadata_and_defaults():
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    jsonschema.validate(meta, json.loads(SCHEMA_FILE.read_text()))
    assert meta["version"] in meta["changelog"] and meta["name"] == "ddpm_bcdr"
    train = json.loads((BUNDLE / "configs" / "train.json").read_text())
    infer = json.loads((BUNDLE / "configs" / "inference.json").read_text())
    assert (train["num_train_timesteps"], train["scheduler"], train["num_class_embeds"]) == (1000, "ddpm", 4)
    # the MONAI model-zoo mednist_ddpm defaults
    assert (train["channels"], train["attention_levels"], train["num_res_blocks"], train["num_head_channels"]) == (
        [64, 128, 128], [False, True, True], 1, 128)
    assert (train["lr"], train["max_epochs"], train["batch_size"]) == (2.5e-05, 75, 8)
    assert train["amp"] == "$torch.device(@device).type == 'cuda'"
    assert infer["num_inference_steps"] == 50 and infer["sampler"] == "$'rflow' if @training_scheduler == 'rflow' else 'ddim'"
    for key in ("channels", "attention_levels", "num_res_blocks", "num_head_channels", "norm_num_groups", "num_class_embeds"):
        assert train[key] == infer[key]
    assert (BUNDLE / "LICENSE").is_file() and (BUNDLE / "docs" / "README.md").is_file()

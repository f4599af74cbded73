"""Synthetic patches from the GAN bundles: mammoshare.gan.inference and configs/inference.json."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mammoshare.data import patch_dataset
from mammoshare.datalist import SYNTHETIC_DATALIST, load_datalist
from mammoshare.gan.inference import (
    MissingWeightsError,
    generate_synthetic_patches,
    safe_name,
    sampling_counts,
    snapshot_files,
    spread_samples,
    weights_file,
)
from mammoshare.gan.weights import WeightsError
from mammoshare.networks import DCGANDiscriminator, DCGANGenerator

REPO = Path(__file__).resolve().parents[1]
BUNDLES = ("dcgan_bcdr", "wgangp_bcdr")
NAME, VERSION = "test_gan", "0.0.1"
TINY = 4  # ngf of the tiny generators


def make_generator(ngf: int = TINY, seed: int = 0) -> DCGANGenerator:
    """A generator with random weights scaled so that its images use the whole grey range (DCGAN's
    N(0, 0.02) init makes flat grey images), and non-trivial BatchNorm statistics (eval mode matters)."""
    torch.manual_seed(seed)
    net = DCGANGenerator(latent_size=100, ngf=ngf)
    for module in net.modules():
        if isinstance(module, torch.nn.ConvTranspose2d):
            taps = 16 if module.stride[0] == 1 else 4  # kernel taps that reach one output pixel
            module.weight.data.normal_(0.0, (3.0 / (module.in_channels * taps)) ** 0.5)
        elif isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    return net.eval()


def save_ours(path: Path, ngf: int = TINY, seed: int = 0) -> dict:
    state = make_generator(ngf, seed).state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def medigan_generator_dict(state: dict, embed: bool) -> dict:
    """The published layout: ``main.N.*`` (the whole generator), ``first_layers.{0,1,3,4}.*`` (the
    same tensors) and, for 00005's 500.pt, an unused ``embed_nn`` (Linear 1->100, BatchNorm1d 100)."""
    out = {f"first_layers.{k}": v for k, v in state.items() if k.split(".")[0] in ("0", "1", "3", "4")}
    out.update({f"main.{k}": v for k, v in state.items()})
    if embed:
        linear, norm = torch.nn.Linear(1, 100), torch.nn.BatchNorm1d(100)
        out.update({f"embed_nn.0.{k}": v for k, v in linear.state_dict().items()})
        out.update({f"embed_nn.1.{k}": v for k, v in norm.state_dict().items()})
    return out


def reference_images(state: dict, ngf: int, seed: int, n: int, decoding: str, select=slice(None)) -> np.ndarray:
    """What the generator with ``state`` makes for the first ``n`` latents of ``seed`` (uint8)."""
    net = DCGANGenerator(latent_size=100, ngf=ngf)
    net.load_state_dict(state)
    net.eval()
    latents = torch.randn(n, 100, generator=torch.Generator().manual_seed(seed))[select]
    with torch.no_grad():
        out = net(latents)
    x = ((out + 1) / 2).clamp(0, 1) if decoding == "tanh" else out.clamp(0, 1)
    return (x[:, 0] * 255).round().to(torch.uint8).numpy()


def generate(tmp_path: Path, out: str = "out", ngf: int = TINY, **kwargs) -> Path:
    kwargs.setdefault("generator_name", NAME)
    kwargs.setdefault("generator_version", VERSION)
    kwargs.setdefault("progress", False)
    return generate_synthetic_patches(DCGANGenerator(100, ngf), output_dir=tmp_path / out, **kwargs)


def pngs(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.png"))


def pixels(folder: Path) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p)) for p in pngs(folder)])


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """Full-width (ngf 64, nz 100) weights in the published medigan layouts and the reference state."""
    root = tmp_path_factory.mktemp("published")
    state = make_generator(64, seed=5).state_dict()
    torch.save({"generator": medigan_generator_dict(state, embed=True)}, root / "500.pt")
    torch.save({"generator": medigan_generator_dict(state, embed=False)}, root / "10000.pt")
    with zipfile.ZipFile(root / "00005_DCGAN_MMG_MASS_ROI.zip", "w") as archive:
        archive.writestr("00005_DCGAN_MMG_MASS_ROI/__init__.py", "def generate(**kwargs):\n    pass\n")
        archive.write(root / "500.pt", "00005_DCGAN_MMG_MASS_ROI/500.pt")
    return root, state


def test_files_format_and_provenance(tmp_path):
    weights = tmp_path / "model.pt"
    save_ours(weights)
    datalist_path = generate(tmp_path, num_samples=7, seed=1, checkpoint=weights, batch_size=3)
    out = tmp_path / "out"
    assert datalist_path == out / SYNTHETIC_DATALIST
    assert sorted(p.name for p in out.iterdir()) == [f"synthetic_{i:05d}.png" for i in range(7)] + [SYNTHETIC_DATALIST]
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    for i, path in enumerate(pngs(out)):
        raw = path.read_bytes()
        assert raw[:8] == b"\x89PNG\r\n\x1a\n" and raw[12:16] == b"IHDR"
        assert (raw[24], raw[25]) == (8, 0)  # 8-bit greyscale
        image = Image.open(path)
        assert image.format == "PNG" and image.mode == "L" and image.size == (128, 128)
        text = image.text
        assert text["Description"].startswith(f"SYNTHETIC lesion patch generated by {NAME} {VERSION}")
        assert "not a patient image" in text["Description"]
        assert text["Software"].startswith("mammoshare ")
        assert text["mammoshare:synthetic"] == "true" and text["mammoshare:phantom"] == "false"
        assert text["mammoshare:generator"] == NAME and text["mammoshare:generator_version"] == VERSION
        assert text["mammoshare:weights_sha256"] == sha
        assert (text["mammoshare:seed"], text["mammoshare:index"]) == ("1", str(i))
    data = json.loads(datalist_path.read_text())
    assert (data["dataset"], data["task"], data["phantom"], data["seed"]) == ("synthetic", "mass", False, 1)
    assert (data["batch_size"], data["device"]) == (3, "cpu")
    assert data["generator"]["name"] == NAME and data["generator"]["version"] == VERSION
    assert data["generator"]["weights"] == [
        {"file": "model.pt", "sha256": sha, "layout": "ours", "decoding": "tanh", "samples": 7}
    ]
    assert data["validation"] == [] and data["test"] == []
    assert len(data["training"]) == 7
    for i, record in enumerate(data["training"]):
        assert record["image"] == f"synthetic_{i:05d}.png"  # relative to the datalist
        assert record["patient_id"] == f"synthetic:{NAME}" and record["label"] == 1 and record["box"] is None
        assert record["lesion_types"] == ["mass"] and record["source"] == NAME
        assert record["weights_sha256"] == sha and record["seed"] == 1


def test_a_phantom_trained_generator_says_so_in_every_png_and_the_datalist(tmp_path):
    """The training counts next to the weights (or above a snapshots folder) say phantom: so do the
    PNG chunks and the datalist."""
    from mammoshare.datalist import write_training_counts

    save_ours(tmp_path / "models" / "model.pt")
    save_ours(tmp_path / "models" / "snapshots" / "epoch_0001.pt", seed=1)
    write_training_counts(tmp_path / "models", {"phantom": True, "dataset": "bcdr"})
    for name, source in (("a", {"checkpoint": tmp_path / "models" / "model.pt"}),
                         ("b", {"snapshot_dir": tmp_path / "models" / "snapshots"})):
        data = json.loads(generate(tmp_path, name, num_samples=2, seed=0, **source).read_text())
        assert data["phantom"] is True
        for path in pngs(tmp_path / name):
            text = Image.open(path).text
            assert text["mammoshare:phantom"] == "true" and "trained on PHANTOM data" in text["Description"]
    # an explicit answer wins over the record
    data = json.loads(generate(tmp_path, "c", num_samples=1, checkpoint=tmp_path / "models" / "model.pt", phantom=False).read_text())
    assert data["phantom"] is False


def test_tanh_decoding_last_layout_and_task_all(tmp_path):
    state = save_ours(tmp_path / "model.pt", seed=2)
    generate(tmp_path, "a", num_samples=5, seed=4, checkpoint=tmp_path / "model.pt")
    expected = reference_images(state, TINY, seed=4, n=5, decoding="tanh")
    np.testing.assert_array_equal(pixels(tmp_path / "a"), expected)
    # our full training state last.pt: its generator entry, same images
    critic = DCGANDiscriminator(ndf=TINY, batch_norm=False).state_dict()
    torch.save({"generator": state, "discriminator": critic, "epoch": 3}, tmp_path / "last.pt")
    path = generate(tmp_path, "b", num_samples=5, seed=4, checkpoint=tmp_path / "last.pt", task="all")
    np.testing.assert_array_equal(pixels(tmp_path / "b"), expected)
    data = json.loads(path.read_text())
    assert data["task"] == "all" and data["generator"]["weights"][0]["layout"] == "last"
    assert all(r["lesion_types"] == [] for r in data["training"])


def test_determinism(tmp_path):
    save_ours(tmp_path / "model.pt")
    for out, seed in (("a", 3), ("b", 3), ("c", 4)):
        generate(tmp_path, out, num_samples=5, seed=seed, checkpoint=tmp_path / "model.pt", batch_size=2)
    same = [(p.read_bytes(), q.read_bytes()) for p, q in zip(sorted((tmp_path / "a").iterdir()), sorted((tmp_path / "b").iterdir()))]
    assert len(same) == 6 and all(x == y for x, y in same)  # the PNGs and the datalist
    assert not np.array_equal(pixels(tmp_path / "a"), pixels(tmp_path / "c"))


def test_snapshot_spreading(tmp_path):
    snapshots = tmp_path / "snapshots"
    states = {epoch: save_ours(snapshots / f"epoch_{epoch}.pt", seed=epoch) for epoch in (2000, 500, 1000)}
    assert [p.name for p in snapshot_files(snapshots)] == ["epoch_500.pt", "epoch_1000.pt", "epoch_2000.pt"]
    assert spread_samples(10, 3) == [4, 3, 3] and spread_samples(2, 3) == [1, 1, 0]
    path = generate(tmp_path, num_samples=10, seed=7, snapshot_dir=snapshots)  # one batch per snapshot
    data = json.loads(path.read_text())
    weights = data["generator"]["weights"]
    assert [(w["file"], w["samples"]) for w in weights] == [("epoch_500.pt", 4), ("epoch_1000.pt", 3), ("epoch_2000.pt", 3)]
    shas = [w["sha256"] for w in weights]
    assert [r["weights_sha256"] for r in data["training"]] == [shas[0]] * 4 + [shas[1]] * 3 + [shas[2]] * 3
    assert [Image.open(p).text["mammoshare:weights_file"] for p in pngs(tmp_path / "out")][3:5] == ["epoch_500.pt", "epoch_1000.pt"]
    images = pixels(tmp_path / "out")
    for epoch, part in ((500, slice(0, 4)), (1000, slice(4, 7)), (2000, slice(7, 10))):
        np.testing.assert_array_equal(images[part], reference_images(states[epoch], TINY, 7, 10, "tanh", part))


def test_published_layouts_match_reference(tmp_path, published):
    root, state = published
    expected = reference_images(state, 64, seed=11, n=2, decoding="clip01")
    for i, name in enumerate(("500.pt", "10000.pt", "00005_DCGAN_MMG_MASS_ROI.zip")):
        path = generate(tmp_path, f"out{i}", ngf=64, num_samples=2, seed=11, checkpoint=root / name)
        np.testing.assert_array_equal(pixels(tmp_path / f"out{i}"), expected)
        weights = json.loads(path.read_text())["generator"]["weights"][0]
        assert (weights["file"], weights["layout"], weights["decoding"]) == (name, "medigan", "clip01")


def test_wrong_architecture(tmp_path, published):
    root, _ = published
    with pytest.raises(WeightsError, match="another architecture"):
        generate(tmp_path, num_samples=2, checkpoint=root / "10000.pt")  # ngf 64 file, ngf 4 network
    snapshots = tmp_path / "snapshots"
    save_ours(snapshots / "epoch_500.pt")
    save_ours(snapshots / "epoch_550.pt", ngf=8)
    with pytest.raises(WeightsError, match=r"epoch_550\.pt: weights of another architecture"):
        generate(tmp_path, num_samples=4, snapshot_dir=snapshots)
    assert not (tmp_path / "out").exists()  # every file is checked before anything is written


def test_missing_weights_says_how_to_get_some(tmp_path):
    default = tmp_path / "dcgan_bcdr" / "models" / "model.pt"
    with pytest.raises(MissingWeightsError) as info:
        generate(tmp_path, num_samples=2, default_checkpoint=default)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, WeightsError)
    message = str(info.value)
    for part in ("python -m monai.bundle run --config_file", "dcgan_bcdr/configs/train.json", "--checkpoint", "500.pt", "10000.pt"):
        assert part in message
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingWeightsError, match="no generator snapshots"):
        generate(tmp_path, num_samples=2, snapshot_dir=tmp_path / "empty")
    with pytest.raises(MissingWeightsError, match="not found"):
        generate(tmp_path, num_samples=2, checkpoint=tmp_path / "nowhere.pt")
    assert not (tmp_path / "out").exists()


def test_non_empty_output_dir_refused(tmp_path):
    save_ours(tmp_path / "model.pt")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        generate(tmp_path, num_samples=2, checkpoint=tmp_path / "model.pt")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["notes.txt"]


def test_datalist_goes_through_patch_dataset(tmp_path):
    save_ours(tmp_path / "model.pt")
    path = generate(tmp_path, num_samples=3, checkpoint=tmp_path / "model.pt")
    data = load_datalist(path)
    records = data["training"]
    assert [Path(r["image"]) for r in records] == pngs(tmp_path / "out")
    dataset = patch_dataset(records, cache="none")
    for i in range(3):
        item = dataset[i]
        assert tuple(item["image"].shape) == (1, 128, 128) and item["label"] == 1
        assert 0.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0


def _bundle_run(bundle: str, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    config = REPO / "bundles" / bundle / "configs" / "inference.json"
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(config), "--device", "cpu", "--ngf", str(TINY), *args]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.mark.parametrize("bundle", BUNDLES)
def test_bundle_run_from_another_directory(tmp_path, bundle):
    metadata = json.loads((REPO / "bundles" / bundle / "configs" / "metadata.json").read_text())
    work = tmp_path / "elsewhere"
    work.mkdir()
    if bundle == "dcgan_bcdr":
        save_ours(tmp_path / "model.pt")
        _bundle_run(bundle, work, "--num_samples", "8", "--output_dir", str(tmp_path / "cli"), "--seed", "3", "--checkpoint", str(tmp_path / "model.pt"))
        # the bundle run and the Python function make the same bytes
        generate_synthetic_patches(
            DCGANGenerator(100, TINY), 8, tmp_path / "py", seed=3, checkpoint=tmp_path / "model.pt",
            generator_name=metadata["name"], generator_version=metadata["version"], progress=False,
        )
        cli, py = sorted((tmp_path / "cli").iterdir()), sorted((tmp_path / "py").iterdir())
        assert [p.name for p in cli] == [p.name for p in py] and len(cli) == 9
        assert all(p.read_bytes() == q.read_bytes() for p, q in zip(cli, py))
        out = tmp_path / "cli"
    else:
        for epoch in (3000, 2950):
            save_ours(tmp_path / "snapshots" / f"epoch_{epoch}.pt", seed=epoch)
        # a relative output folder is relative to the working directory
        _bundle_run(bundle, work, "--num_samples", "5", "--output_dir", "synthetic", "--snapshot_dir", str(tmp_path / "snapshots"), "--task", "all")
        out = work / "synthetic"
        assert sorted(p.name for p in work.iterdir()) == ["synthetic"]
    data = load_datalist(out / SYNTHETIC_DATALIST)
    assert data["generator"]["name"] == metadata["name"] and data["generator"]["version"] == metadata["version"]
    assert len(pngs(out)) == len(data["training"]) and len(list(out.iterdir())) == len(data["training"]) + 1
    if bundle == "wgangp_bcdr":
        assert [(w["file"], w["samples"]) for w in data["generator"]["weights"]] == [("epoch_2950.pt", 3), ("epoch_3000.pt", 2)]
        assert data["task"] == "all"


def test_repo_generator_inference_configs_come_from_the_one_template():
    """bundles/{dcgan_bcdr,wgangp_bcdr,dcgan_optimam}/configs/inference.json are the template's rendering
    (``python -m mammoshare.gan.configs bundles`` rewrites them)."""
    from mammoshare.gan.configs import REPO_GENERATORS, render_generator_inference

    repo = Path(__file__).resolve().parents[1]
    for name, geometry in REPO_GENERATORS.items():
        path = repo / "bundles" / name / "configs" / "inference.json"
        assert path.read_text() == render_generator_inference(**geometry), f"{path}: run python -m mammoshare.gan.configs bundles"


def test_weights_file_sampling_counts_and_safe_name(tmp_path):
    """The helpers that GAN and diffusion sampling share."""
    given = tmp_path / "given.pt"
    with pytest.raises(MissingWeightsError, match="given.pt: weights file not found"):
        weights_file(given, None, lambda default: "unused")
    given.write_bytes(b"x")
    assert weights_file(given, tmp_path / "other.pt", lambda default: "unused") == given
    default = tmp_path / "models" / "model.pt"
    with pytest.raises(MissingWeightsError, match=r"no weights at .*model.pt"):
        weights_file(None, default, lambda d: f"no weights at {d}", (".safetensors",))
    default.parent.mkdir()
    default.with_suffix(".safetensors").write_bytes(b"x")
    assert weights_file(None, default, str, (".safetensors", ".pt")) == default.with_suffix(".safetensors")
    with pytest.raises(MissingWeightsError, match="no weights given"):
        weights_file(None, None, lambda d: "no weights given" if d is None else str(d))

    assert sampling_counts("3", 1.0, 2) == (3, 1, 2)
    with pytest.raises(ValueError, match="num_samples must be at least 1"):
        sampling_counts(0, 0, 1)
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        sampling_counts(1, 0, 0)
    assert safe_name("my gen/1.0") == "my_gen_1.0" and safe_name("///") == "generator"

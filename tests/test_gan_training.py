"""GAN bundles: training through monai.bundle, outputs, snapshots, resume, n_critic, gradient penalty."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.bundle import run as bundle_run
from PIL import Image

from mammoshare.bundle import SCHEMA_FILE
from mammoshare.datalist import DatalistError
from mammoshare.gan.data import StreamBatchSampler, gan_dataloader, gan_training_records
from mammoshare.gan.handlers import NaNGuard
from mammoshare.gan.losses import DCGANLoss, gradient_penalty
from mammoshare.gan.trainers import WGANGPTrainer
from mammoshare.networks import DCGANDiscriminator, DCGANGenerator

REPO = Path(__file__).resolve().parents[1]
BUNDLES = ["dcgan_bcdr", "wgangp_bcdr"]
TINY = {"ngf": 4, "ndf": 4, "batch_size": 4, "device": "cpu", "num_workers": 0}


@pytest.fixture(scope="module")
def bcdr_mass_datalist(phantom_root, tmp_path_factory):
    from mammoshare.datalist import write_datalist
    from mammoshare.readers import build_datalist

    datalist, _ = build_datalist("bcdr", phantom_root / "bcdr", task="mass")
    return write_datalist(datalist, tmp_path_factory.mktemp("gan_data") / "bcdr_mass.json")


def _train(bundle, output_dir, datalist, **overrides):
    """Run a bundle's train.json in this process (tiny widths), without touching logging."""
    settings = {**TINY, "datalist": str(datalist), "output_dir": str(output_dir), "preview_every": 1, **overrides}
    bundle_run(config_file=str(REPO / "bundles" / bundle / "configs" / "train.json"), logging_file=False, **settings)
    return Path(output_dir)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_training_through_monai_bundle_from_a_foreign_directory(bundle, tmp_path):
    """The real command line, from another working directory, on the phantom default (no dataset given)."""
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "monai.bundle", "run",
        "--config_file", str(REPO / "bundles" / bundle / "configs" / "train.json"),
        "--output_dir", str(out), "--max_epochs", "2", "--ngf", "4", "--ndf", "4", "--batch_size", "4",
        "--device", "cpu", "--snapshot_start", "1", "--snapshot_every", "1", "--preview_every", "1",
    ]
    models = REPO / "bundles" / bundle / "models"
    before = {p: p.stat().st_mtime_ns for p in models.rglob("*")}  # a user's own runs may have left files there
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert "PHANTOM" in log  # says that it trains on phantom data
    assert f"{bundle} on cpu: epoch 2/2" in log  # one bar over the iterations, naming the device
    generator = torch.load(out / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in generator.values())
    assert set(generator) == set(DCGANGenerator(ngf=4).state_dict())  # generator only, nothing else
    state = torch.load(out / "last.pt", weights_only=True)
    assert {"generator", "discriminator", "g_optimizer", "d_optimizer", "epoch"} <= set(state) and state["epoch"] == 2
    assert sorted(p.name for p in (out / "snapshots").iterdir()) == ["epoch_0001.pt", "epoch_0002.pt"]
    assert sorted(p.name for p in (out / "previews").iterdir()) == ["epoch_0001.png", "epoch_0002.png"]
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert {p: p.stat().st_mtime_ns for p in models.rglob("*")} == before  # --output_dir was honoured
    # the training record that pack puts in an archive: data, length, and which weights it describes
    record = json.loads((out / "training_counts.json").read_text())
    assert record["phantom"] is True and record["dataset"] == "bcdr" and record["task"] == "mass"
    assert record["datalist"] == "bcdr_mass_datalist.json" and record["seed"] == 2021 and record["epochs"] == 2
    assert 0 < record["generator_updates"] <= record["iterations"] and record["patches"] > 0 and record["patients"] > 0
    assert record["weights_sha256"] == hashlib.sha256((out / "model.pt").read_bytes()).hexdigest()
    with Image.open(out / "previews" / "epoch_0002.png") as preview:
        assert preview.mode == "L" and preview.width > 8 * 128


def test_snapshot_cadence_and_model_at_any_length(bcdr_mass_datalist, tmp_path):
    out = _train("dcgan_bcdr", tmp_path / "a", bcdr_mass_datalist, max_epochs=7, snapshot_start=3, snapshot_every=2)
    assert sorted(p.name for p in (out / "snapshots").iterdir()) == ["epoch_0004.pt", "epoch_0006.pt"]
    assert (out / "model.pt").is_file()
    out = _train("dcgan_bcdr", tmp_path / "b", bcdr_mass_datalist, max_epochs=1)  # shorter than the first snapshot
    assert (out / "model.pt").is_file() and not (out / "snapshots").exists()


@pytest.mark.parametrize("bundle", BUNDLES)
def test_resume_is_bitwise_equal_to_an_uninterrupted_run(bundle, bcdr_mass_datalist, tmp_path):
    straight = _train(bundle, tmp_path / "straight", bcdr_mass_datalist, max_epochs=3)
    _train(bundle, tmp_path / "resumed", bcdr_mass_datalist, max_epochs=2)
    resumed = _train(bundle, tmp_path / "resumed", bcdr_mass_datalist, max_epochs=3, resume=True)
    a = torch.load(straight / "model.pt", weights_only=True)
    b = torch.load(resumed / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    last_a = torch.load(straight / "last.pt", weights_only=True)
    last_b = torch.load(resumed / "last.pt", weights_only=True)
    assert all(torch.equal(last_a["discriminator"][k], last_b["discriminator"][k]) for k in last_a["discriminator"])
    assert last_a["iteration"] == last_b["iteration"] and last_a["engine_state"] == last_b["engine_state"]
    counts = [json.loads((run / "training_counts.json").read_text()) for run in (straight, resumed)]
    assert counts[0] == counts[1] and counts[0]["epochs"] == 3  # a resumed run records its whole length
    # and a different seed trains differently: the comparison can fail
    other = _train(bundle, tmp_path / "other", bcdr_mass_datalist, max_epochs=3, seed=7)
    c = torch.load(other / "model.pt", weights_only=True)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_resume_needs_last_pt_and_the_same_seed(bcdr_mass_datalist, tmp_path, cause_chain):
    with pytest.raises(Exception) as info:
        _train("dcgan_bcdr", tmp_path / "empty", bcdr_mass_datalist, max_epochs=1, resume=True)
    assert "last.pt: no training state to resume from" in cause_chain(info.value)
    _train("dcgan_bcdr", tmp_path / "r", bcdr_mass_datalist, max_epochs=1)
    with pytest.raises(Exception) as info:
        _train("dcgan_bcdr", tmp_path / "r", bcdr_mass_datalist, max_epochs=2, resume=True, seed=5)
    assert "resume with the same --seed" in cause_chain(info.value)


def _tiny_wgan(n_batches, n_critic, epochs, batch_size=2):
    generator = DCGANGenerator(latent_size=8, ngf=2)
    critic = DCGANDiscriminator(ndf=2, batch_norm=False)
    data = [{"image": torch.full((batch_size, 1, 128, 128), float(i))} for i in range(n_batches)]
    g_opt = torch.optim.Adam(generator.parameters(), 1e-4, betas=(0.5, 0.9))
    c_opt = torch.optim.Adam(critic.parameters(), 1e-4, betas=(0.5, 0.9))
    loader = torch.utils.data.DataLoader(data, batch_size=None)
    trainer = WGANGPTrainer("cpu", epochs, loader, generator, critic, g_opt, c_opt, latent_size=8, n_critic=n_critic)
    seen = []
    original = trainer.loss.critic_loss

    def critic_loss(fake, real):
        seen.append(float(real[0, 0, 0, 0]))
        return original(fake, real)

    trainer.loss.critic_loss = critic_loss
    return trainer, seen


def test_n_critic_counts_five_fresh_batches_per_generator_update():
    trainer, seen = _tiny_wgan(n_batches=7, n_critic=5, epochs=2)
    trainer.run()
    assert trainer.state.critic_updates == 14 and trainer.state.generator_updates == 2
    assert seen[:7] == [0, 1, 2, 3, 4, 5, 6]  # every critic update sees a new real batch
    short, _ = _tiny_wgan(n_batches=2, n_critic=5, epochs=3)  # fewer batches than n_critic: data cycles
    short.run()
    assert short.state.epoch_length == 5 and short.state.generator_updates == 3  # one per epoch


def test_gradient_penalty_known_case():
    weight = torch.zeros(1, 1, 4, 4)
    weight[0, 0, 1, 2] = 3.0
    weight[0, 0, 2, 1] = 4.0  # |w| = 5, so the critic's gradient norm is 5 everywhere

    def critic(x):
        return (x * weight).flatten(1).sum(1)

    real, fake = torch.rand(6, 1, 4, 4), torch.rand(6, 1, 4, 4)
    assert float(gradient_penalty(critic, real, fake)) == pytest.approx(16.0)
    weight /= 5.0  # a 1-Lipschitz critic pays no penalty
    assert float(gradient_penalty(critic, real, fake)) == pytest.approx(0.0, abs=1e-10)


def test_dcgan_label_smoothing_on_logits():
    loss = DCGANLoss(DCGANDiscriminator(ndf=2))
    torch.manual_seed(0)
    labels = loss.real_labels(20000, torch.device("cpu"))
    assert 0.8 <= float(labels.min()) and float(labels.max()) <= 1.1 and (labels > 1).any()
    assert float(labels.mean()) == pytest.approx(0.95, abs=0.01)
    images = torch.rand(3, 1, 128, 128) * 2 - 1
    assert torch.isfinite(loss.discriminator_loss(images, images)) and torch.isfinite(loss.generator_loss(images))


def test_nan_loss_stops_with_a_clear_error():
    engine = Engine(lambda e, b: None)
    engine.state.epoch, engine.state.iteration = 3, 17
    engine.state.output = {"d_loss": float("nan"), "g_loss": 0.5}
    with pytest.raises(FloatingPointError, match=r"non-finite loss at epoch 3, iteration 17: \{'d_loss': nan\}"):
        NaNGuard()(engine)
    engine.state.output = {"d_loss": 1.0, "g_loss": float("nan"), "generator_updated": False}
    NaNGuard()(engine)  # WGAN-GP before its first generator update: nothing to check yet


def test_bad_training_data(bcdr_mass_datalist, tmp_path):
    with pytest.raises(DatalistError, match="task 'mass', but this run is for the task 'all'"):
        gan_training_records(datalist=bcdr_mass_datalist, task="all")
    data = json.loads(Path(bcdr_mass_datalist).read_text())
    for subset in ("training", "validation", "test"):
        data[subset] = [r for r in data[subset] if r["label"] == 0]
    (tmp_path / "healthy_only.json").write_text(json.dumps(data))
    with pytest.raises(DatalistError, match="no lesion patches"):
        gan_training_records(datalist=tmp_path / "healthy_only.json", task="mass")
    with pytest.raises(ValueError, match="batch size 16 is larger than the 5 lesion patches"):
        gan_dataloader(list(range(5)), batch_size=16)


def test_stream_sampler_epochs_are_full_passes_and_reproducible():
    sampler = StreamBatchSampler(10, 4, seed=1)
    epochs = []
    for epoch in (1, 2, 3):
        sampler.set_epoch(epoch)
        epochs.append(list(sampler))
    assert all(len(batches) == 2 and all(len(b) == 4 for b in batches) for batches in epochs)
    stream = [i for batches in epochs for b in batches for i in b]
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:20]) == list(range(10))
    again = StreamBatchSampler(10, 4, seed=1)
    again.set_epoch(2)
    assert list(again) == epochs[1]  # an epoch depends on nothing but the seed and its number


@pytest.mark.parametrize("bundle", BUNDLES)
def test_metadata_is_schema_valid(bundle):
    meta = json.loads((REPO / "bundles" / bundle / "configs" / "metadata.json").read_text())
    jsonschema.validate(meta, json.loads(SCHEMA_FILE.read_text()))
    assert meta["version"] in meta["changelog"]
    assert meta["network_data_format"]["inputs"]["image"]["num_channels"] == 100
    assert meta["network_data_format"]["outputs"]["pred"]["spatial_shape"] == [128, 128]


def test_paper_defaults_in_configs():
    dcgan = json.loads((REPO / "bundles/dcgan_bcdr/configs/train.json").read_text())
    wgan = json.loads((REPO / "bundles/wgangp_bcdr/configs/train.json").read_text())
    assert (dcgan["max_epochs"], dcgan["batch_size"]) == (3000, 16)
    assert dcgan["task"] == wgan["task"] == "$mammoshare.readers.datalist_task(@datalist, default='mass')"
    assert (dcgan["snapshot_start"], dcgan["snapshot_every"], dcgan["real_label_range"]) == (500, 50, [0.8, 1.1])
    assert wgan["max_epochs"] == "$10000 if @task == 'mass' else 2700"
    assert (wgan["n_critic"], wgan["gp_weight"], wgan["betas"], wgan["g_lr"]) == (5, 10.0, [0.5, 0.9], 0.0001)
    assert wgan["discriminator_def"]["batch_norm"] is False
    for config in (dcgan, wgan):
        assert config["bundle_root"] == "$mammoshare.bundle.bundle_root()"


def test_real_batches_reach_the_networks_as_plain_tensors():
    from monai.data import MetaTensor

    from mammoshare.gan.trainers import prepare_real_batch

    batch = {"image": MetaTensor(torch.rand(2, 1, 128, 128), meta={"filename_or_obj": "x"})}
    real = prepare_real_batch(batch, "cpu")
    assert type(real) is torch.Tensor and torch.equal(real, batch["image"].as_tensor())


def test_networks_package_reexports_its_modules():
    """``mammoshare.networks.X`` (the bundle configs' ``_target_``) is the class of its module."""
    import mammoshare.networks as networks
    from mammoshare.networks import classifier, gan

    for name in networks.__all__:
        home = gan if hasattr(gan, name) else classifier
        assert getattr(networks, name) is getattr(home, name)
    assert DCGANGenerator is gan.DCGANGenerator and networks.PatchCNN is classifier.PatchCNN


def test_sample_previews_at_their_epochs_and_the_grid_layout(tmp_path):
    """The shared preview base: every ``every``-th epoch and the last; the grid pads with white."""
    from mammoshare.gan.handlers import SamplePreviewer
    from mammoshare.handlers import image_grid

    grid = image_grid(np.zeros((5, 3, 4), np.uint8), columns=2)
    assert grid.shape == (3 * 5 + 2, 2 * 6 + 2) and grid[0, 0] == 255 and grid[2, 2] == 0
    torch.manual_seed(0)
    generator = DCGANGenerator(latent_size=8, ngf=2)
    previewer = SamplePreviewer(generator, tmp_path, latent_size=8, every=2, num_images=4)
    engine = Engine(lambda engine, batch: None)
    previewer.attach(engine)
    engine.run([0], max_epochs=5)
    assert sorted(p.name for p in (tmp_path / "previews").iterdir()) == [
        "epoch_0002.png", "epoch_0004.png", "epoch_0005.png"
    ]
    assert generator.training  # the generator's mode is restored

"""Training fast paths on CPU: mixed precision, channels_last, torch.compile, no per-iteration host
sync (averaged loss logging), loader settings, and the PNG writer threads."""

import logging
import math

import pytest
import torch
from ignite.engine import Engine, Events

from mammoshare.fastpaths import amp_dtype, classifier_prepare_batch, trainer_amp_kwargs
from mammoshare.gan.trainers import DCGANTrainer, WGANGPTrainer, loss_tensors
from mammoshare.handlers import AveragedLossLogger
from mammoshare.networks import DCGANDiscriminator, DCGANGenerator


def _data(n=3, batch=2):
    torch.manual_seed(1)
    return [{"image": torch.rand(batch, 1, 128, 128) * 2 - 1} for _ in range(n)]


def _trainer(kind="dcgan", epochs=1, seed=0, **switches):
    torch.manual_seed(seed)
    generator = DCGANGenerator(latent_size=8, ngf=2)
    critic = DCGANDiscriminator(ndf=2, batch_norm=kind == "dcgan")
    g_opt = torch.optim.Adam(generator.parameters(), 1e-3, betas=(0.5, 0.9))
    d_opt = torch.optim.Adam(critic.parameters(), 1e-3, betas=(0.5, 0.9))
    loader = torch.utils.data.DataLoader(_data(), batch_size=None)
    if kind == "dcgan":
        return DCGANTrainer("cpu", epochs, loader, generator, critic, g_opt, d_opt, latent_size=8, **switches)
    return WGANGPTrainer("cpu", epochs, loader, generator, critic, g_opt, d_opt, latent_size=8, n_critic=2, **switches)


def _run(trainer):
    torch.manual_seed(123)
    trainer.run()
    return {k: v.detach().clone() for k, v in trainer.generator.state_dict().items()}


@pytest.mark.parametrize("kind", ["dcgan", "wgangp"])
def test_outputs_stay_on_the_device_as_tensors(kind):
    trainer = _trainer(kind)
    outputs = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.append(e.state.output))
    trainer.run()
    losses = loss_tensors(outputs[-1])
    assert losses and all(isinstance(v, torch.Tensor) and v.ndim == 0 and not v.requires_grad for v in losses.values())
    assert trainer.state.generator_updates >= 1 and math.isfinite(trainer.state.last_g_loss)  # stored at epoch end


@pytest.mark.parametrize("kind", ["dcgan", "wgangp"])
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_trains_close_to_float32(kind, amp):
    """Autocast runs on CPU too: with the same seed, the first discriminator/critic loss (before any
    update; fp16's loss scaler may skip its first steps while it calibrates) is float32's within the
    reduced precision, and every weight stays finite while it trains."""

    def first_losses(trainer):
        seen = []
        trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(loss_tensors(e.state.output)))
        weights = _run(trainer)
        return {k: float(v) for k, v in seen[0].items()}, weights

    reference, _ = first_losses(_trainer(kind))
    trainer = _trainer(kind, amp=amp)
    assert trainer.amp_dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    assert trainer.g_scaler.is_enabled() == (amp == "fp16")  # loss scaling for fp16 only
    losses, mixed = first_losses(trainer)
    assert losses.keys() == reference.keys()
    assert losses["d_loss"] == pytest.approx(reference["d_loss"], rel=0.05, abs=0.02)
    initial = _trainer(kind).generator.state_dict()
    assert all(torch.isfinite(v.float()).all() for v in mixed.values())
    assert all(v.dtype == initial[k].dtype for k, v in mixed.items())  # the weights stay float32
    assert any(not torch.equal(mixed[k], initial[k]) for k in mixed)  # it trained


@pytest.mark.parametrize("kind", ["dcgan", "wgangp"])
def test_channels_last_trains_like_the_default_layout(kind):
    plain = _run(_trainer(kind))
    trainer = _trainer(kind, channels_last=True)
    assert trainer.generator[0].weight.is_contiguous(memory_format=torch.channels_last)
    fast = _run(trainer)
    for key in plain:
        assert torch.allclose(plain[key], fast[key], atol=1e-4, rtol=1e-3), key


def test_compile_trains_and_keeps_plain_weight_names():
    plain = _run(_trainer("wgangp"))
    trainer = _trainer("wgangp", compile={"backend": "aot_eager"})
    assert trainer.g_forward is not trainer.generator  # the compiled forward
    compiled = _run(trainer)
    assert set(compiled) == set(plain)  # no "_orig_mod." in what is saved
    for key in plain:
        assert torch.allclose(plain[key], compiled[key], atol=1e-4, rtol=1e-3), key


def test_averaged_loss_logger_reads_the_device_once_per_n_iterations(caplog):
    values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    engine = Engine(lambda e, b: {"d_loss": torch.tensor(values[e.state.iteration - 1])})
    logger = AveragedLossLogger(lambda o: o, every=3, logger_name="test.avg")
    logger.attach(engine)
    means = []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: means.append(getattr(e.state, "averaged_losses", None)))
    with caplog.at_level(logging.INFO, logger="test.avg"):
        engine.run(range(7), max_epochs=1)
    assert means[2] == {"d_loss": 2.0} and means[5] == {"d_loss": 5.0}
    assert engine.state.averaged_losses == {"d_loss": 7.0}  # the rest at the epoch end
    assert len([r for r in caplog.records if r.name == "test.avg"]) == 3  # iterations 3, 6 and the epoch end


def test_averaged_loss_logger_stops_on_a_non_finite_mean():
    losses = iter([1.0, float("nan"), 1.0])
    engine = Engine(lambda e, b: {"d_loss": torch.tensor(next(losses))})
    AveragedLossLogger(lambda o: o, every=3).attach(engine)
    with pytest.raises(FloatingPointError, match=r"non-finite loss at epoch 1, around iteration 3: \{'d_loss': nan\}"):
        engine.run(range(3), max_epochs=1)


def test_wgangp_generator_loss_counts_only_after_updates():
    assert set(loss_tensors({"d_loss": torch.tensor(1.0), "g_loss": torch.tensor(float("nan")),
                             "generator_updated": False})) == {"d_loss"}


def test_switch_parsing_and_channels_last_batches():
    assert amp_dtype(False) is None and amp_dtype("bf16") is torch.bfloat16 and amp_dtype("fp16") is torch.float16
    assert amp_dtype(True, "cpu") is torch.bfloat16
    assert trainer_amp_kwargs(False) == {} and trainer_amp_kwargs("fp16") == {"dtype": torch.float16}
    with pytest.raises(ValueError, match="unknown amp setting 'fp8'"):
        amp_dtype("fp8")
    image, label = classifier_prepare_batch(channels_last=True)({"image": torch.rand(2, 3, 8, 8), "label": torch.tensor([0, 1])}, "cpu")
    assert image.is_contiguous(memory_format=torch.channels_last) and label.tolist() == [0, 1]


def test_png_writer_threads_write_the_same_files(tmp_path):
    from mammoshare.gan.inference import generate_synthetic_patches

    torch.manual_seed(0)
    network = DCGANGenerator(ngf=2)
    weights = tmp_path / "g.pt"
    torch.save(network.state_dict(), weights)
    common = dict(seed=3, checkpoint=weights, generator_name="g", generator_version="1", batch_size=4, progress=False)
    generate_synthetic_patches(network, 10, tmp_path / "threads", writer_threads=2, **common)
    generate_synthetic_patches(network, 10, tmp_path / "inline", writer_threads=0, **common)
    names = sorted(p.name for p in (tmp_path / "threads").glob("*.png"))
    assert len(names) == 10
    assert all((tmp_path / "threads" / n).read_bytes() == (tmp_path / "inline" / n).read_bytes() for n in names)


def test_last_pt_keeps_the_loss_scalers_and_a_resume_must_keep_amp(tmp_path):
    """An fp16 run's GradScaler state (its scale) survives a resume; a resume that switches the
    loss scaling on or off is refused."""
    from mammoshare.handlers import TrainingCheckpointer

    class Checkpointer(TrainingCheckpointer):
        SCALERS = ("g_scaler", "d_scaler")

        def training_state(self, engine):
            return self.progress(engine)

        def restore(self, state, engine):
            pass

    def engine_with(scale):
        engine = Engine(lambda e, b: None)
        engine.state.epoch, engine.state.iteration, engine.state.max_epochs = 3, 30, 5
        if scale is not None:
            engine.g_scaler = torch.amp.GradScaler("cpu", init_scale=scale)
            engine.d_scaler = torch.amp.GradScaler("cpu", init_scale=scale / 2)
        return engine

    Checkpointer(tmp_path, seed=1).save_epoch(engine_with(1024.0))
    resumed = engine_with(2.0)
    Checkpointer(tmp_path, resume=True, seed=1).load_last(resumed)
    assert resumed.g_scaler.get_scale() == 1024.0 and resumed.d_scaler.get_scale() == 512.0
    assert (resumed.state.epoch, resumed.state.iteration) == (3, 30)
    with pytest.raises(ValueError, match="resume with the same --amp"):
        Checkpointer(tmp_path, resume=True, seed=1).load_last(engine_with(None))

"""Ignite handlers of the GAN bundles: checkpoints and resume, sample previews and a NaN guard.

Reproducibility: :class:`mammoshare.handlers.EpochSeeder` reseeds every random source at the start
of each epoch from (seed, epoch). Together with the networks and optimizers restored from
``last.pt``, a resumed run is then bitwise equal to an uninterrupted one on CPU.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from mammoshare.atomic import atomic_torch_save
from mammoshare.handlers import GridPreviewer, TrainingCheckpointer, plain_weights

from .weights import decode_output

__all__ = [
    "gan_losses",
    "GANCheckpointer",
    "SamplePreviewer",
    "NaNGuard",
    "save_atomically",
]

logger = logging.getLogger(__name__)


def gan_losses(output: dict) -> dict[str, float]:
    """The scalars of a GAN iteration's output, for StatsHandler / TensorBoardStatsHandler."""
    keys = ("g_loss", "d_loss", "wasserstein", "gradient_penalty")
    losses = {k: float(output[k]) for k in keys if k in output}
    if output.get("generator_updated") is False and math.isnan(losses.get("g_loss", 0.0)):
        del losses["g_loss"]  # WGAN-GP: no generator update yet
    return losses


def save_atomically(obj: Any, path: str | os.PathLike) -> None:
    """torch.save kill-safely (:func:`mammoshare.atomic.atomic_torch_save`): a unique temporary
    file, fsynced with its folder, then renamed; a run killed at any moment leaves the previous
    complete file or the new one, and its ``.partial`` is removed by the next write."""
    atomic_torch_save(obj, path)


class GANCheckpointer(TrainingCheckpointer):
    """Everything a GAN run keeps, under ``output_dir``.

    - ``last.pt`` at every epoch end: the full training state (generator, discriminator/critic,
      optimizers, epoch, iteration, counters, seed). For resuming only; never shared.
    - ``snapshots/epoch_XXXX.pt``: generator weights only, at every ``snapshot_every``-th epoch from
      ``snapshot_start`` on (the paper: every 50th from 500).
    - ``model.pt`` when the run completes: the final generator weights only, plain tensors.

    With ``resume``, the state of ``last.pt`` is restored when the engine starts.
    """

    STATE_ATTRIBUTES = ("critic_updates", "generator_updates", "last_g_loss")
    SCALERS = ("g_scaler", "d_scaler")
    MODEL_DESCRIPTION = "generator weights"
    generator_state = staticmethod(plain_weights)

    def __init__(
        self,
        output_dir: str | os.PathLike,
        generator: torch.nn.Module,
        discriminator: torch.nn.Module,
        g_optimizer: torch.optim.Optimizer,
        d_optimizer: torch.optim.Optimizer,
        snapshot_start: int = 500,
        snapshot_every: int = 50,
        resume: bool = False,
        seed: int | None = None,
    ):
        if snapshot_every < 1:
            raise ValueError(f"snapshot_every must be >= 1, got {snapshot_every}")
        super().__init__(output_dir, resume=resume, seed=seed)
        self.generator, self.discriminator = generator, discriminator
        self.g_optimizer, self.d_optimizer = g_optimizer, d_optimizer
        self.snapshot_start, self.snapshot_every = int(snapshot_start), int(snapshot_every)

    def snapshot_path(self, epoch: int) -> Path:
        return self.output_dir / "snapshots" / f"epoch_{epoch:04d}.pt"

    def training_state(self, engine: Engine) -> dict[str, Any]:
        return {
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "g_optimizer": self.g_optimizer.state_dict(),
            "d_optimizer": self.d_optimizer.state_dict(),
            **self.progress(engine),
            "engine_state": {k: getattr(engine.state, k) for k in self.STATE_ATTRIBUTES if hasattr(engine.state, k)},
        }

    def save_epoch(self, engine: Engine) -> None:
        super().save_epoch(engine)
        epoch = engine.state.epoch
        if epoch >= self.snapshot_start and epoch % self.snapshot_every == 0:
            save_atomically(plain_weights(self.generator), self.snapshot_path(epoch))

    def model_weights(self) -> dict[str, torch.Tensor]:
        return plain_weights(self.generator)

    def run_length(self, engine: Engine) -> dict[str, int]:
        return {**super().run_length(engine), "generator_updates": int(getattr(engine.state, "generator_updates", 0))}

    def restore(self, state: dict[str, Any], engine: Engine) -> None:
        self.generator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.g_optimizer.load_state_dict(state["g_optimizer"])
        self.d_optimizer.load_state_dict(state["d_optimizer"])
        for key, value in state.get("engine_state", {}).items():
            setattr(engine.state, key, value)


class SamplePreviewer(GridPreviewer):
    """Every ``every`` epochs (and at the last), a PNG grid of samples from one fixed latent batch,
    ``previews/epoch_XXXX.png``, also sent to TensorBoard: the same latents each time, so that mode
    collapse shows as the samples growing alike. The generator runs in eval mode without gradients
    and the latents come from their own generator: training is not disturbed."""

    def __init__(
        self,
        generator: torch.nn.Module,
        output_dir: str | os.PathLike,
        latent_size: int,
        every: int = 50,
        num_images: int = 64,
        seed: int = 0,
        decoding: str = "tanh",
        summary_writer: Any = None,
    ):
        super().__init__(output_dir, every=max(1, int(every)), summary_writer=summary_writer)
        self.generator = generator
        self.decoding = decoding
        self.latents = torch.randn(num_images, latent_size, generator=torch.Generator().manual_seed(int(seed)))

    def sample(self) -> np.ndarray:
        was_training = self.generator.training
        device = next(self.generator.parameters()).device
        self.generator.eval()
        with torch.no_grad():
            images = decode_output(self.generator(self.latents.to(device)), self.decoding)
        self.generator.train(was_training)
        return (images[:, 0].cpu().numpy() * 255).round().astype(np.uint8)


class NaNGuard:
    """Stop with a clear error when a loss is not finite."""

    def __init__(self, output_transform: Callable = gan_losses):
        self.output_transform = output_transform

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        losses = self.output_transform(engine.state.output)
        bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
        if bad:
            raise FloatingPointError(
                f"non-finite loss at epoch {engine.state.epoch}, iteration {engine.state.iteration}: {bad}; "
                "the last good state is last.pt of the previous epoch; lower the learning rate or check the data"
            )

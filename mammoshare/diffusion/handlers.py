"""Ignite handlers of the diffusion bundle: checkpoints and resume, preview grids, the loss scalar.

The GAN bundles' :class:`~mammoshare.gan.handlers.EpochSeeder` (per-epoch reseeding),
:func:`~mammoshare.gan.handlers.save_atomically` and :class:`~mammoshare.gan.handlers.NaNGuard`
are reused as they are; with the network, its EMA copy, the optimizer and the AMP scaler restored
from ``last.pt``, a resumed run is bitwise equal to an uninterrupted one on CPU.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from PIL import Image

from ..gan.handlers import image_grid, save_atomically
from .conditioning import LESION_CLASSES, ClassConditionedDiffusionInferer, sampling_scheduler

__all__ = ["diffusion_loss", "DiffusionCheckpointer", "DiffusionPreviewer"]

logger = logging.getLogger(__name__)


def diffusion_loss(output: dict) -> dict[str, float]:
    """The loss of a ``SupervisedTrainer`` iteration (``decollate=False``), for the stats handlers."""
    return {"loss": float(output["loss"].detach()) if isinstance(output["loss"], torch.Tensor) else float(output["loss"])}


class DiffusionCheckpointer:
    """Everything a diffusion run keeps, under ``output_dir``.

    - ``last.pt`` at every epoch end: network, EMA network, optimizer, AMP scaler, epoch, iteration,
      seed and training scheduler. For resuming only; never shared.
    - ``model.pt`` when the run completes: the EMA weights only, plain tensors (what is shared).

    Every file is written to a temporary name and renamed. With ``resume``, ``last.pt`` is restored
    when the engine starts.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        network: torch.nn.Module,
        ema_network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        resume: bool = False,
        seed: int | None = None,
        training_scheduler: str = "ddpm",
    ):
        self.output_dir = Path(output_dir)
        self.network, self.ema_network, self.optimizer = network, ema_network, optimizer
        self.resume = bool(resume)
        self.seed = seed
        self.training_scheduler = training_scheduler

    @property
    def last_path(self) -> Path:
        return self.output_dir / "last.pt"

    @property
    def model_path(self) -> Path:
        return self.output_dir / "model.pt"

    def attach(self, engine: Engine) -> None:
        if self.resume:
            engine.add_event_handler(Events.STARTED, self.load_last)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.save_epoch)
        engine.add_event_handler(Events.COMPLETED, self.save_model)

    @staticmethod
    def _scaler(engine: Engine):
        return getattr(engine, "scaler", None)

    def save_epoch(self, engine: Engine) -> None:
        scaler = self._scaler(engine)
        state = {
            "network": self.network.state_dict(),
            "ema": self.ema_network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else {},
            "epoch": engine.state.epoch,
            "iteration": engine.state.iteration,
            "max_epochs": engine.state.max_epochs,
            "seed": self.seed,
            "training_scheduler": self.training_scheduler,
        }
        save_atomically(state, self.last_path)

    def save_model(self, engine: Engine) -> None:
        weights = {k: v.detach().cpu().clone() for k, v in self.ema_network.state_dict().items()}
        save_atomically(weights, self.model_path)
        logger.info("EMA weights of the diffusion model: %s (epoch %d)", self.model_path, engine.state.epoch)

    def load_last(self, engine: Engine) -> None:
        if not self.last_path.is_file():
            raise FileNotFoundError(
                f"{self.last_path}: no training state to resume from; run without --resume True to start anew"
            )
        state = torch.load(self.last_path, map_location="cpu", weights_only=True)
        if self.seed is not None and state.get("seed") not in (None, self.seed):
            raise ValueError(
                f"{self.last_path} was written by a run with seed {state.get('seed')}, not {self.seed}: "
                "resume with the same --seed"
            )
        if state.get("training_scheduler", self.training_scheduler) != self.training_scheduler:
            raise ValueError(
                f"{self.last_path} was trained with --scheduler {state['training_scheduler']}, not "
                f"{self.training_scheduler}: resume with the same --scheduler"
            )
        self.network.load_state_dict(state["network"])
        self.ema_network.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        scaler = self._scaler(engine)
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        engine.state.epoch = int(state["epoch"])
        engine.state.iteration = int(state["iteration"])
        logger.info("resumed from %s at epoch %d of %d", self.last_path, engine.state.epoch, engine.state.max_epochs)


class DiffusionPreviewer:
    """Every ``every`` epochs (and at the last; never when ``every`` is 0), a PNG grid of samples of the EMA network from one
    fixed noise batch, one row per lesion class in ``classes``, ``previews/epoch_XXXX.png``, also
    sent to TensorBoard. The noise comes from its own generator and the global random state is
    restored afterwards: training is not disturbed (and stays resumable bit for bit)."""

    def __init__(
        self,
        ema_network: torch.nn.Module,
        output_dir: str | os.PathLike,
        classes: Sequence[int] | None = None,
        per_class: int = 8,
        every: int = 5,
        num_inference_steps: int = 50,
        training_scheduler: str = "ddpm",
        num_train_timesteps: int = 1000,
        seed: int = 0,
        image_size: int = 128,
        summary_writer: Any = None,
    ):
        self.network = ema_network
        self.output_dir = Path(output_dir) / "previews"
        self.classes = list(classes) if classes is not None else None
        self.per_class = int(per_class)
        self.every = int(every)
        self.sampler = "rflow" if training_scheduler == "rflow" else "ddim"
        self.scheduler = sampling_scheduler(self.sampler, training_scheduler, num_inference_steps, num_train_timesteps)
        rows = len(self.classes) if self.classes else 1
        generator = torch.Generator().manual_seed(int(seed))
        self.noise = torch.randn(rows * self.per_class, 1, image_size, image_size, generator=generator)
        self.summary_writer = summary_writer
        self.inferer = ClassConditionedDiffusionInferer(self.scheduler)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        epoch = engine.state.epoch
        if self.every <= 0 or (epoch % self.every and epoch != engine.state.max_epochs):
            return
        device = next(self.network.parameters()).device
        labels = None
        if self.classes:
            labels = torch.tensor([c for c in self.classes for _ in range(self.per_class)], device=device)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            images = self.inferer.sample(self.noise.to(device), self.network, self.scheduler, class_labels=labels)
        pixels = (((images[:, 0].float().cpu() + 1) / 2).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        grid = image_grid(pixels, columns=self.per_class)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(grid).save(self.output_dir / f"epoch_{epoch:04d}.png")
        if self.summary_writer is not None:
            rows = ", ".join(LESION_CLASSES[c] for c in self.classes) if self.classes else "unconditional"
            self.summary_writer.add_image("samples", grid[None], epoch)
            self.summary_writer.add_text("samples/rows", rows, epoch)

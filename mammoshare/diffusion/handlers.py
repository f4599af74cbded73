"""Ignite handlers of the diffusion bundle: checkpoints and resume, preview grids, the loss scalar.

The checkpointer and the previewer build on the shared
:class:`~mammoshare.handlers.TrainingCheckpointer` and :class:`~mammoshare.handlers.GridPreviewer`;
the GAN bundles' :class:`~mammoshare.handlers.EpochSeeder` (per-epoch reseeding) and
:class:`~mammoshare.gan.handlers.NaNGuard` are reused as they are. With the network, its EMA copy,
the optimizer and the AMP scaler restored from ``last.pt``, a resumed run is bitwise equal to an
uninterrupted one on CPU.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine

from ..handlers import GridPreviewer, TrainingCheckpointer, plain_weights
from .conditioning import LESION_CLASSES, ClassConditionedDiffusionInferer, sampling_scheduler

__all__ = ["diffusion_loss", "DiffusionCheckpointer", "DiffusionPreviewer"]


def diffusion_loss(output: dict) -> dict[str, float]:
    """The loss of a ``SupervisedTrainer`` iteration (``decollate=False``), for the stats handlers."""
    return {"loss": float(output["loss"].detach()) if isinstance(output["loss"], torch.Tensor) else float(output["loss"])}


class DiffusionCheckpointer(TrainingCheckpointer):
    """Everything a diffusion run keeps, under ``output_dir``.

    - ``last.pt`` at every epoch end: network, EMA network, optimizer, AMP scaler, epoch, iteration,
      seed and training scheduler (the scaler and progress by the base class). For resuming only;
      never shared.
    - ``model.pt`` when the run completes: the EMA weights only, plain tensors (what is shared).

    Every file is written to a temporary name and renamed. With ``resume``, ``last.pt`` is restored
    when the engine starts.
    """

    MODEL_DESCRIPTION = "EMA weights of the diffusion model"

    def __init__(
        self,
        output_dir: str | os.PathLike,
        network: torch.nn.Module,
        ema_network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        resume: bool = False,
        seed: int | None = None,
        training_scheduler: str = "ddpm",
        num_train_timesteps: int = 1000,
    ):
        super().__init__(output_dir, resume=resume, seed=seed)
        self.network, self.ema_network, self.optimizer = network, ema_network, optimizer
        self.training_scheduler, self.num_train_timesteps = training_scheduler, int(num_train_timesteps)

    def run_length(self, engine: Engine) -> dict[str, int]:
        """Every iteration is one optimizer step of the UNet: its generator updates."""
        return {**super().run_length(engine), "generator_updates": int(engine.state.iteration)}

    def model_facts(self) -> dict[str, Any]:
        """The noise schedule the weights were trained with: ``pack`` declares it to the receiver."""
        return {"diffusion": {"training_scheduler": self.training_scheduler, "num_train_timesteps": self.num_train_timesteps}}

    def training_state(self, engine: Engine) -> dict[str, Any]:
        return {
            "network": self.network.state_dict(),
            "ema": self.ema_network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            **self.progress(engine),
            "training_scheduler": self.training_scheduler,
        }

    def model_weights(self) -> dict[str, torch.Tensor]:
        return plain_weights(self.ema_network)

    def restore(self, state: dict[str, Any], engine: Engine) -> None:
        if state.get("training_scheduler", self.training_scheduler) != self.training_scheduler:
            raise ValueError(
                f"{self.last_path} was trained with --scheduler {state['training_scheduler']}, not "
                f"{self.training_scheduler}: resume with the same --scheduler"
            )
        self.network.load_state_dict(state["network"])
        self.ema_network.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])


class DiffusionPreviewer(GridPreviewer):
    """Every ``every`` epochs (and at the last; never when ``every`` is 0), a PNG grid of samples of
    the EMA network from one fixed noise batch, one row per lesion class in ``classes``,
    ``previews/epoch_XXXX.png``, also sent to TensorBoard. The noise comes from its own generator and
    the global random state is restored afterwards: training is not disturbed (and stays resumable
    bit for bit)."""

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
        classes = list(classes) if classes is not None else None
        rows_text = ", ".join(LESION_CLASSES[c] for c in classes) if classes else "unconditional"
        super().__init__(output_dir, every, columns=int(per_class), summary_writer=summary_writer, rows_text=rows_text)
        self.network = ema_network
        self.classes = classes
        self.per_class = int(per_class)
        self.sampler = "rflow" if training_scheduler == "rflow" else "ddim"
        self.scheduler = sampling_scheduler(self.sampler, training_scheduler, num_inference_steps, num_train_timesteps)
        rows = len(self.classes) if self.classes else 1
        generator = torch.Generator().manual_seed(int(seed))
        self.noise = torch.randn(rows * self.per_class, 1, image_size, image_size, generator=generator)
        self.inferer = ClassConditionedDiffusionInferer(self.scheduler)

    def sample(self) -> np.ndarray:
        device = next(self.network.parameters()).device
        labels = None
        if self.classes:
            labels = torch.tensor([c for c in self.classes for _ in range(self.per_class)], device=device)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            images = self.inferer.sample(self.noise.to(device), self.network, self.scheduler, class_labels=labels)
        return (((images[:, 0].float().cpu() + 1) / 2).clamp(0, 1) * 255).round().to(torch.uint8).numpy()

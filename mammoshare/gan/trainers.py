"""A WGAN-GP trainer on MONAI's ``Trainer`` (Ignite) with a true n_critic.

MONAI's ``GanTrainer(d_train_steps=5)`` updates the critic five times on one batch with fakes that
are not detached: not WGAN-GP's n_critic. Here one Ignite iteration is one critic update on a
fresh real batch, and the generator is updated after every ``n_critic``-th critic update (counted
over the whole run, so resuming keeps the cadence). An epoch is one pass of the real data through
the critic, at least ``n_critic`` iterations; the data loader is cycled when it is shorter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.data import MetaTensor
from monai.engines import Trainer
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from .losses import WGANGPLoss

__all__ = ["WGANGPTrainer", "prepare_real_batch", "latent_maker"]


def prepare_real_batch(batchdata: Any, device=None, non_blocking: bool = False, **kwargs) -> torch.Tensor:
    """A batch of patches ``{"image": (B, 1, 128, 128)}`` (or a tensor) -> a plain image tensor on ``device``."""
    images = batchdata["image"] if isinstance(batchdata, dict) else batchdata
    if isinstance(images, MetaTensor):  # metadata tracking on every op of both networks costs a lot
        images = images.as_tensor()
    return torch.as_tensor(images).to(device=device, non_blocking=non_blocking, **kwargs)


def latent_maker(batch_size: int) -> Callable:
    """``GanTrainer``'s ``g_prepare_batch`` for loaders with a batch sampler (whose ``batch_size`` is
    None): standard normal latents ``(batch_size, latent_size)`` on the device."""

    def make_latents(num_latents: int | None, latent_size: int, device=None, non_blocking: bool = False, **kwargs):
        return torch.randn(num_latents or batch_size, latent_size).to(device=device, non_blocking=non_blocking, **kwargs)

    return make_latents


class WGANGPTrainer(Trainer):
    """WGAN-GP training: ``n_critic`` critic updates (each on a new real batch) per generator update.

    Args:
        device: where the networks live.
        max_epochs: epochs to train.
        train_data_loader: real patches scaled to [-1, 1], ``drop_last=True``.
        generator, critic: the networks; critic without BatchNorm and without Sigmoid.
        g_optimizer, c_optimizer: their optimizers (the paper: Adam, lr 1e-4, betas (0.5, 0.9)).
        latent_size: nz of the generator.
        n_critic: critic updates per generator update (the paper: 5).
        gp_weight: lambda of the gradient penalty (the paper: 10).
        train_handlers: MONAI/Ignite handlers.

    The output of each iteration is ``{"d_loss", "g_loss", "wasserstein", "gradient_penalty",
    "generator_updated"}``; ``g_loss`` is the last generator loss. ``engine.state.critic_updates``
    and ``engine.state.generator_updates`` count the updates.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: DataLoader,
        generator: torch.nn.Module,
        critic: torch.nn.Module,
        g_optimizer: Optimizer,
        c_optimizer: Optimizer,
        latent_size: int = 100,
        n_critic: int = 5,
        gp_weight: float = 10.0,
        epoch_length: int | None = None,
        prepare_batch: Callable = prepare_real_batch,
        train_handlers: Sequence | None = None,
        non_blocking: bool = False,
    ):
        if n_critic < 1:
            raise ValueError(f"n_critic must be >= 1, got {n_critic}")
        if epoch_length is None:
            epoch_length = max(len(train_data_loader), n_critic)  # every epoch updates the generator
        super().__init__(
            device=torch.device(device),
            max_epochs=max_epochs,
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=prepare_batch,
            handlers=train_handlers,
            decollate=False,
        )
        self.generator = generator
        self.critic = critic
        self.g_optimizer = g_optimizer
        self.c_optimizer = c_optimizer
        self.latent_size = latent_size
        self.n_critic = n_critic
        self.loss = WGANGPLoss(critic, gp_weight)
        self.state.critic_updates = 0
        self.state.generator_updates = 0
        self.state.last_g_loss = float("nan")

    def _latents(self, count: int) -> torch.Tensor:
        return torch.randn(count, self.latent_size, device=self.state.device)

    def _iteration(self, engine: WGANGPTrainer, batchdata: Any) -> dict[str, Any]:
        if batchdata is None:
            raise ValueError("must provide batch data for current iteration.")
        real = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking)
        engine.generator.train()
        engine.critic.train()

        with torch.no_grad():
            fake = engine.generator(engine._latents(real.shape[0]))
        engine.c_optimizer.zero_grad(set_to_none=True)
        critic = engine.loss.critic_loss(fake, real)
        critic["loss"].backward()
        engine.c_optimizer.step()
        engine.state.critic_updates += 1

        updated = engine.state.critic_updates % engine.n_critic == 0
        if updated:
            for p in engine.critic.parameters():  # the critic is fixed during the generator update
                p.requires_grad_(False)
            engine.g_optimizer.zero_grad(set_to_none=True)
            g_loss = engine.loss.generator_loss(engine.generator(engine._latents(real.shape[0])))
            g_loss.backward()
            engine.g_optimizer.step()
            for p in engine.critic.parameters():
                p.requires_grad_(True)
            engine.state.generator_updates += 1
            engine.state.last_g_loss = g_loss.item()
        return {
            "d_loss": critic["loss"].item(),
            "g_loss": engine.state.last_g_loss,
            "wasserstein": critic["wasserstein"].item(),
            "gradient_penalty": critic["gradient_penalty"].item(),
            "generator_updated": updated,
        }

"""The GAN trainers on MONAI's ``Trainer`` (Ignite): DCGAN and WGAN-GP with a true n_critic, with
the fast paths of :mod:`mammoshare.fastpaths` and no host synchronisation per iteration.

MONAI's ``GanTrainer`` has no mixed precision, calls the discriminator with fakes that keep their
graph, and its ``d_train_steps=5`` updates the critic five times on one batch with fakes that are
not detached: not WGAN-GP's n_critic. Here:

- :class:`DCGANTrainer`: one iteration = one discriminator update on a real batch and fakes drawn
  without gradients, then one generator update on new latents (the order of GanTrainer's random
  draws, so that the same seed trains the same way);
- :class:`WGANGPTrainer`: one iteration = one critic update on a fresh real batch; the generator is
  updated after every ``n_critic``-th critic update (counted over the whole run, so resuming keeps
  the cadence). An epoch is one pass of the real data through the critic, at least ``n_critic``
  iterations; the data loader is cycled when it is shorter.

Each iteration's output holds the losses as detached 0-d tensors on the device; nothing waits for
the device until a handler reads them (:class:`mammoshare.handlers.AveragedLossLogger` does every N
iterations). The generator and the discriminator may be ``DistributedDataParallel`` wrappers: the
generator step then calls the bare discriminator, whose weights it does not update.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from ignite.engine import Events
from monai.data import MetaTensor
from monai.engines import Trainer
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from ..distributed import unwrap
from ..fastpaths import amp_dtype, autocast, compiled, grad_scaler
from ..fastpaths import channels_last as to_channels_last
from .losses import DCGANLoss, WGANGPLoss

__all__ = ["DCGANTrainer", "WGANGPTrainer", "prepare_real_batch", "latent_maker", "unwrap", "loss_tensors"]


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


def loss_tensors(output: dict) -> dict[str, torch.Tensor]:
    """The losses of a GAN iteration's output, still on the device (no synchronisation); WGAN-GP's
    ``g_loss`` only on iterations that updated the generator."""
    keys = ("d_loss", "g_loss", "wasserstein", "gradient_penalty")
    losses = {k: output[k] for k in keys if k in output}
    if output.get("generator_updated") is False:
        losses.pop("g_loss", None)
    return losses


class _GANTrainer(Trainer):
    """What both GAN trainers share: the networks, the fast paths, latents, and the last generator loss.

    ``device`` is where the networks live, ``max_epochs`` the epochs to train. The keyword options, the same for both trainers: ``latent_size`` (nz of the generator),
    ``epoch_length`` (iterations per epoch; None: the loader's length), ``prepare_batch``,
    ``train_handlers`` (MONAI/Ignite handlers), ``non_blocking``, and the fast paths ``amp``
    (``False``, ``True``, ``"bf16"``, ``"fp16"``), ``channels_last`` (NHWC networks and batches) and
    ``compile`` (``torch.compile`` of the forwards: ``True`` or its keyword arguments).
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: DataLoader,
        generator: torch.nn.Module,
        discriminator: torch.nn.Module,
        g_optimizer: Optimizer,
        d_optimizer: Optimizer,
        *,
        latent_size: int = 100,
        epoch_length: int | None = None,
        prepare_batch: Callable = prepare_real_batch,
        train_handlers: Sequence | None = None,
        non_blocking: bool = False,
        amp: bool | str = False,
        channels_last: bool = False,
        compile: bool | dict = False,
    ):
        device = torch.device(device)
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=prepare_batch,
            handlers=None,
            decollate=False,
        )
        self.generator = to_channels_last(generator, channels_last)
        self.discriminator = to_channels_last(discriminator, channels_last)
        self.g_optimizer, self.d_optimizer = g_optimizer, d_optimizer
        self.latent_size = int(latent_size)
        self.channels_last = bool(channels_last)
        self.amp_dtype = amp_dtype(amp, device)
        self.g_scaler = grad_scaler(device, self.amp_dtype)
        self.d_scaler = grad_scaler(device, self.amp_dtype)
        self.g_forward = compiled(self.generator, compile)
        self.d_forward = compiled(self.discriminator, compile)
        bare = unwrap(self.discriminator)
        self.d_bare = self.d_forward if bare is self.discriminator else compiled(bare, compile)
        self.state.generator_updates = 0
        self.state.last_g_loss = float("nan")
        self._last_g_loss: torch.Tensor | None = None
        # the float copy that last.pt keeps: read once per epoch, not per iteration
        self.add_event_handler(Events.EPOCH_COMPLETED, self._store_last_g_loss)
        if train_handlers:  # after the trainer's own handler, so that last.pt sees the stored loss
            self._register_handlers(train_handlers)

    def _store_last_g_loss(self, engine) -> None:
        if self._last_g_loss is not None:
            self.state.last_g_loss = float(self._last_g_loss)

    def _latents(self, count: int) -> torch.Tensor:
        return torch.randn(count, self.latent_size, device=self.state.device)

    def _real(self, batchdata: Any) -> torch.Tensor:
        if batchdata is None:
            raise ValueError("must provide batch data for current iteration.")
        real = self.prepare_batch(batchdata, self.state.device, self.non_blocking)
        return real.contiguous(memory_format=torch.channels_last) if self.channels_last else real

    def _update(
        self, optimizer: Optimizer, scaler: torch.amp.GradScaler, loss_fn: Callable[[], Any]
    ) -> dict[str, torch.Tensor]:
        """One step of ``optimizer`` on what ``loss_fn()`` computes under autocast: a loss tensor, or a
        dict with it under ``"loss"`` and other terms. Returns them all detached, as float32."""
        optimizer.zero_grad(set_to_none=True)
        with autocast(self.state.device, self.amp_dtype):
            result = loss_fn()
        losses = result if isinstance(result, dict) else {"loss": result}
        # the scaler and backward in float32 (autocast may give half-precision losses)
        scaler.scale(losses["loss"].float()).backward()
        scaler.step(optimizer)
        scaler.update()
        # the iteration's output keeps no graph, so that handlers may hold it
        return {name: value.detach().float() for name, value in losses.items()}

    def _discriminator_step(
        self, batchdata: Any, loss_fn: Callable[[torch.Tensor, torch.Tensor], Any]
    ) -> tuple[int, dict[str, torch.Tensor]]:
        """One discriminator (critic) update on a real batch and as many fakes drawn without
        gradients; ``loss_fn(fake, real)`` as for :meth:`_update`. Returns (batch size, its losses)."""
        real = self._real(batchdata)
        self.generator.train()
        self.discriminator.train()
        with torch.no_grad(), autocast(self.state.device, self.amp_dtype):
            fake = self.g_forward(self._latents(real.shape[0]))
        losses = self._update(self.d_optimizer, self.d_scaler, lambda: loss_fn(fake, real))
        return real.shape[0], losses

    def _generator_step(self, count: int, loss_fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """One generator update on ``count`` new latents; the discriminator's weights are frozen
        meanwhile (no gradients for them). Returns the detached loss."""
        bare = unwrap(self.discriminator)
        for p in bare.parameters():
            p.requires_grad_(False)
        try:
            losses = self._update(
                self.g_optimizer, self.g_scaler, lambda: loss_fn(self.g_forward(self._latents(count)))
            )
        finally:
            for p in bare.parameters():
                p.requires_grad_(True)
        self.state.generator_updates += 1
        self._last_g_loss = losses["loss"]
        return self._last_g_loss

    def _last_g(self) -> torch.Tensor:
        if self._last_g_loss is None:  # a fresh or resumed run before its first generator update
            self._last_g_loss = torch.tensor(float(self.state.last_g_loss), device=self.state.device)
        return self._last_g_loss


class DCGANTrainer(_GANTrainer):
    """DCGAN training, one discriminator and one generator update per real batch.

    Args:
        device, max_epochs: as for :class:`_GANTrainer`.
        train_data_loader: real patches scaled to [-1, 1], full batches.
        generator, discriminator: the networks (the discriminator returns logits).
        g_optimizer, d_optimizer: their optimizers (the paper: Adam, lr 2e-4, betas (0.5, 0.999)).
        real_label_range: one-sided label smoothing of the real label, U(low, high).
        generator_target: the generator's target label.
        options: ``latent_size``, ``epoch_length``, ``train_handlers``, the fast paths ``amp``,
            ``channels_last``, ``compile`` and the rest of :class:`_GANTrainer`'s keyword options.

    The output of each iteration is ``{"d_loss", "g_loss"}`` as device tensors;
    ``engine.state.generator_updates`` counts the updates.
    """

    def __init__(self, *args: Any, real_label_range: Sequence[float] = (0.8, 1.1), generator_target: float = 1.0,
                 **options: Any):
        # device, max_epochs, train_data_loader, generator, discriminator, g_optimizer, d_optimizer (by
        # position or by name) and the options: _GANTrainer's own arguments
        super().__init__(*args, **options)
        self.loss = DCGANLoss(self.d_forward, real_label_range, generator_target)
        self.g_loss = DCGANLoss(self.d_bare, real_label_range, generator_target)

    def _iteration(self, engine: DCGANTrainer, batchdata: Any) -> dict[str, Any]:
        count, d_losses = engine._discriminator_step(batchdata, engine.loss.discriminator_loss)
        g_loss = engine._generator_step(count, engine.g_loss.generator_loss)
        return {"d_loss": d_losses["loss"], "g_loss": g_loss}


class WGANGPTrainer(_GANTrainer):
    """WGAN-GP training: ``n_critic`` critic updates (each on a new real batch) per generator update.

    Args:
        device, max_epochs: as for :class:`_GANTrainer`.
        train_data_loader: real patches scaled to [-1, 1], ``drop_last=True``.
        generator, critic: the networks; critic without BatchNorm and without Sigmoid.
        g_optimizer, c_optimizer: their optimizers (the paper: Adam, lr 1e-4, betas (0.5, 0.9)).
        n_critic: critic updates per generator update (the paper: 5).
        gp_weight: lambda of the gradient penalty (the paper: 10).
        options: ``latent_size``, ``epoch_length`` (None: one pass of the data, at least ``n_critic``
            iterations), ``train_handlers``, the fast paths ``amp``, ``channels_last``, ``compile``
            (as for :class:`DCGANTrainer`) and the rest of :class:`_GANTrainer`'s options. The gradient
            penalty (a gradient of a gradient) runs without ``torch.compile``, and in float32 under
            fp16 (whose range the squared gradient norms can leave); bf16 keeps it in autocast.

    The output of each iteration is ``{"d_loss", "g_loss", "wasserstein", "gradient_penalty",
    "generator_updated"}`` (device tensors, and a bool); ``g_loss`` is the last generator loss.
    ``engine.state.critic_updates`` and ``engine.state.generator_updates`` count the updates.
    """

    def __init__(self, device, max_epochs, train_data_loader, generator, critic, g_optimizer, c_optimizer, *,
                 n_critic: int = 5, gp_weight: float = 10.0, **options: Any):
        if n_critic < 1:
            raise ValueError(f"n_critic must be >= 1, got {n_critic}")
        if options.get("epoch_length") is None:
            options["epoch_length"] = max(len(train_data_loader), n_critic)  # every epoch updates the generator
        super().__init__(device, max_epochs, train_data_loader, generator, critic, g_optimizer, c_optimizer, **options)
        self.critic, self.c_optimizer = self.discriminator, self.d_optimizer
        self.n_critic = n_critic
        # the penalty differentiates twice: the bare critic, never a compiled one (its gradients still
        # reach DDP's reduction, which hooks the parameters, through the same backward pass)
        self.loss = WGANGPLoss(self.d_forward, gp_weight, penalty_critic=unwrap(self.critic),
                               penalty_float32=self.amp_dtype == torch.float16)
        self.g_loss = WGANGPLoss(self.d_bare, gp_weight)
        self.state.critic_updates = 0

    def _iteration(self, engine: WGANGPTrainer, batchdata: Any) -> dict[str, Any]:
        count, critic = engine._discriminator_step(batchdata, engine.loss.critic_loss)
        engine.state.critic_updates += 1

        updated = engine.state.critic_updates % engine.n_critic == 0
        g_loss = engine._generator_step(count, engine.g_loss.generator_loss) if updated else engine._last_g()
        return {
            "d_loss": critic["loss"],
            "g_loss": g_loss,
            "wasserstein": critic["wasserstein"],
            "gradient_penalty": critic["gradient_penalty"],
            "generator_updated": updated,
        }

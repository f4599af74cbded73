"""GAN losses: DCGAN with one-sided label smoothing on logits, WGAN-GP with per-sample interpolates."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["DCGANLoss", "WGANGPLoss", "gradient_penalty"]


class DCGANLoss:
    """The study's DCGAN loss, as the two callables MONAI's ``GanTrainer`` takes.

    Real labels are drawn per sample from U(``real_label_range``) (one-sided label smoothing up to
    1.1), fake labels are 0 and the generator's target is ``generator_target``. The discriminator
    returns logits, so the loss is ``binary_cross_entropy_with_logits``: the same loss as the
    original Sigmoid + ``BCELoss``, which rejects targets above 1.
    """

    def __init__(
        self,
        discriminator: nn.Module,
        real_label_range: Sequence[float] = (0.8, 1.1),
        generator_target: float = 1.0,
    ):
        low, high = float(real_label_range[0]), float(real_label_range[1])
        if not low <= high:
            raise ValueError(f"real_label_range must be (low, high) with low <= high, got {real_label_range}")
        self.discriminator = discriminator
        self.real_label_range = (low, high)
        self.generator_target = float(generator_target)

    def real_labels(self, count: int, device: torch.device) -> torch.Tensor:
        low, high = self.real_label_range
        return torch.rand(count, device=device) * (high - low) + low

    def discriminator_loss(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """``GanTrainer``'s ``d_loss_function(g_output, d_input)``; the fakes are detached here."""
        real_logits = self.discriminator(real)
        fake_logits = self.discriminator(fake.detach())
        real_loss = F.binary_cross_entropy_with_logits(real_logits, self.real_labels(len(real_logits), real.device))
        fake_loss = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        return real_loss + fake_loss

    def generator_loss(self, fake: torch.Tensor) -> torch.Tensor:
        """``GanTrainer``'s ``g_loss_function(g_output)``."""
        logits = self.discriminator(fake)
        return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, self.generator_target))


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """WGAN-GP penalty ``E[(||grad critic(x_hat)||_2 - 1)^2]`` with ``x_hat = a real + (1 - a) fake``,
    ``a ~ U(0, 1)`` drawn per sample. Differentiable (create_graph) so that it trains the critic."""
    alpha = torch.rand(real.shape[0], *([1] * (real.ndim - 1)), device=real.device, dtype=real.dtype)
    interpolates = (alpha * real + (1 - alpha) * fake.detach()).requires_grad_(True)
    scores = critic(interpolates)
    (grads,) = torch.autograd.grad(scores.sum(), interpolates, create_graph=True)
    return ((grads.flatten(1).norm(2, dim=1) - 1.0) ** 2).mean()


class WGANGPLoss:
    """The paper's equation 2: critic loss ``E[C(fake)] - E[C(real)] + lambda * GP``; generator loss
    ``-E[C(fake)]``. ``penalty_critic``: the critic the penalty differentiates twice (default
    ``critic``; a ``torch.compile``-d critic cannot); ``penalty_float32``: the penalty outside
    autocast, in float32 (for fp16 mixed precision).
    """

    def __init__(self, critic: nn.Module, gp_weight: float = 10.0, penalty_critic: nn.Module | None = None,
                 penalty_float32: bool = False):
        self.critic = critic
        self.gp_weight = float(gp_weight)
        self.penalty_critic = critic if penalty_critic is None else penalty_critic
        self.penalty_float32 = bool(penalty_float32)

    def critic_loss(self, fake: torch.Tensor, real: torch.Tensor) -> dict[str, torch.Tensor]:
        real_score = self.critic(real).mean()
        fake_score = self.critic(fake.detach()).mean()
        if self.penalty_float32:
            with torch.autocast(device_type=real.device.type, enabled=False):
                penalty = gradient_penalty(self.penalty_critic, real.float(), fake.float())
        else:
            penalty = gradient_penalty(self.penalty_critic, real, fake)
        return {
            "loss": fake_score - real_score + self.gp_weight * penalty,
            "wasserstein": (real_score - fake_score).detach(),
            "gradient_penalty": penalty.detach(),
        }

    def generator_loss(self, fake: torch.Tensor) -> torch.Tensor:
        return -self.critic(fake).mean()

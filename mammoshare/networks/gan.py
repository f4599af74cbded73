"""GAN networks of the study: the DCGAN generator shared by every GAN bundle, and the DCGAN
discriminator that is also the WGAN-GP critic (``batch_norm=False``).

The generator is a plain ``torch.nn.Sequential`` of torch layers, so its ``state_dict`` keys are
``0.weight``, ``1.running_mean``... and a receiving centre can rebuild it from torch classes alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = [
    "DCGANGenerator",
    "DCGANDiscriminator",
    "generator_layers",
    "init_dcgan_weights",
    "PAPER_GENERATOR_MULTIPLIERS",
    "OPTIMAM_GENERATOR_MULTIPLIERS",
]

#: BCDR DCGAN / WGAN-GP generator: ngf * (16, 8, 4, 2, 1) channels (1024 ... 64 for ngf = 64)
PAPER_GENERATOR_MULTIPLIERS = (16, 8, 4, 2, 1)
#: OPTIMAM DCGAN (medigan 00002): ngf * (10, 8, 4, 2, 1) channels (450 ... 45 for ngf = 45)
OPTIMAM_GENERATOR_MULTIPLIERS = (10, 8, 4, 2, 1)


def generator_layers(
    latent_size: int = 100,
    ngf: int = 64,
    multipliers: Sequence[int] = PAPER_GENERATOR_MULTIPLIERS,
    out_channels: int = 1,
    leaky_slope: float | None = None,
) -> list[nn.Module]:
    """The generator's layers: a k4 s1 p0 transposed conv from the ``(latent, 1, 1)`` latent to 4x4,
    then k4 s2 p1 transposed convs doubling the size (4 -> 128 for five multipliers), each followed
    by BatchNorm and ReLU (LeakyReLU when ``leaky_slope`` is given), and a last k4 s2 p1 transposed
    conv to ``out_channels`` with Tanh. All convolutions are bias-free."""
    channels = [latent_size] + [ngf * m for m in multipliers]
    layers: list[nn.Module] = []
    for i, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:])):
        stride, padding = (1, 0) if i == 0 else (2, 1)
        layers += [
            nn.ConvTranspose2d(c_in, c_out, 4, stride, padding, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(True) if leaky_slope is None else nn.LeakyReLU(leaky_slope, True),
        ]
    layers += [nn.ConvTranspose2d(channels[-1], out_channels, 4, 2, 1, bias=False), nn.Tanh()]
    return layers


def init_dcgan_weights(module: nn.Module) -> None:
    """DCGAN initialisation: conv weights N(0, 0.02), BatchNorm weights N(1, 0.02), biases 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class DCGANGenerator(nn.Sequential):
    """Latent ``(B, latent_size)`` or ``(B, latent_size, 1, 1)`` -> image ``(B, 1, S, S)`` in [-1, 1],
    ``S = 4 * 2 ** len(multipliers)`` (128 for the paper's five).

    Args:
        latent_size: nz (100 for the BCDR GANs, 200 for OPTIMAM).
        ngf: base width (64 for BCDR, 45 for OPTIMAM; small values for tests).
        multipliers: channel multipliers of the hidden layers.
        leaky_slope: LeakyReLU slope instead of ReLU (OPTIMAM: 0.2).
    """

    def __init__(
        self,
        latent_size: int = 100,
        ngf: int = 64,
        multipliers: Sequence[int] = PAPER_GENERATOR_MULTIPLIERS,
        out_channels: int = 1,
        leaky_slope: float | None = None,
    ):
        super().__init__(*generator_layers(latent_size, ngf, multipliers, out_channels, leaky_slope))
        self.latent_size = latent_size
        self.image_size = 4 * 2 ** len(multipliers)
        self.apply(init_dcgan_weights)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        # written for TorchScript too (MONAI's ckpt_export): no super(), no tuple()
        if latent.dim() == 2:
            latent = latent.unsqueeze(-1).unsqueeze(-1)
        if latent.dim() != 4 or latent.shape[1] != self.latent_size or latent.shape[2] != 1 or latent.shape[3] != 1:
            raise ValueError(
                "latent of shape (B, " + str(self.latent_size) + ") or (B, " + str(self.latent_size)
                + ", 1, 1) expected, got " + str(latent.shape)
            )
        for layer in self:
            latent = layer(latent)
        return latent


class DCGANDiscriminator(nn.Sequential):
    """Image ``(B, 1, 128, 128)`` -> one logit (or critic score) per image ``(B,)``.

    The study's kernel-6 discriminator: Conv k6 s2 p2 1 -> ndf, then ndf -> 2 ndf -> 4 ndf -> 8 ndf ->
    16 ndf (k6 s2 p2, each with BatchNorm when ``batch_norm``), LeakyReLU(0.1) throughout, and a last
    Conv k6 s1 p1 16 ndf -> 1 on the 4x4 map. It returns logits: the DCGAN loss is
    ``BCEWithLogitsLoss`` (the original Sigmoid + BCELoss, which rejects smoothed labels above 1);
    the WGAN-GP critic is the same network with ``batch_norm=False``.
    """

    def __init__(self, ndf: int = 64, in_channels: int = 1, batch_norm: bool = True, leaky_slope: float = 0.1):
        channels = [in_channels, ndf, ndf * 2, ndf * 4, ndf * 8, ndf * 16]
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:])):
            layers.append(nn.Conv2d(c_in, c_out, 6, 2, 2, bias=False))
            if batch_norm and i > 0:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.LeakyReLU(leaky_slope, True))
        layers.append(nn.Conv2d(channels[-1], 1, 6, 1, 1, bias=False))
        super().__init__(*layers)
        self.apply(init_dcgan_weights)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.dim() != 4 or image.shape[2] != 128 or image.shape[3] != 128:
            raise ValueError("images of shape (B, C, 128, 128) expected, got " + str(image.shape))
        for layer in self:
            image = layer(image)
        return image.flatten()

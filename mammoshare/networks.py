"""Networks of the study: the DCGAN generator shared by every GAN bundle, its discriminator/critic.

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
    "PatchCNN",
    "SwinClassifier",
    "patch_classifier",
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


class PatchCNN(nn.Module):
    """The study's CNN: patch ``(B, 1, 128, 128)`` -> log-probabilities ``(B, 2)`` (0 healthy, 1 lesion).

    Four blocks Conv 3x3 (with bias, padding 1) -> BatchNorm -> MaxPool 2 -> ReLU with 16/32/64/128
    channels (128 -> 8 pixels), then FC 8192 -> 128 -> BatchNorm1d -> ReLU -> Dropout(0.2) -> FC 128 -> 2
    and log-softmax (trained with NLL loss): 1,146,850 parameters.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2, dropout: float = 0.2):
        super().__init__()
        channels = [in_channels, 16, 32, 64, 128]
        blocks: list[nn.Module] = []
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            blocks += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.MaxPool2d(2), nn.ReLU(True)]
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(128 * 8 * 8, 128),
            nn.BatchNorm1d(128),
            nn.ReLU(True),
            nn.Dropout(dropout),
            nn.Linear(128, num_classes),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.dim() != 4 or image.shape[1] != 1 or image.shape[2] != 128 or image.shape[3] != 128:
            raise ValueError("canonical patches of shape (B, 1, 128, 128) expected, got " + str(image.shape))
        return torch.log_softmax(self.classifier(self.features(image)), dim=1)


class SwinClassifier(nn.Module):
    """Swin-T from timm (``swin_tiny_patch4_window7_224``, 2 classes, randomly initialised as in the
    study): Swin input ``(B, 3, 224, 224)`` -> log-probabilities ``(B, 2)``; 27,520,892 parameters.

    Args:
        pretrained: a local weights file (a timm/torch state_dict, loaded with ``weights_only=True``;
            a classification head of another size is left at its initialisation). Nothing is
            downloaded.
    """

    def __init__(self, num_classes: int = 2, pretrained: str | None = None):
        super().__init__()
        import timm

        self.model = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=num_classes)
        if pretrained:
            self.load_pretrained(pretrained)

    def load_pretrained(self, path: str) -> None:
        from pathlib import Path

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: pretrained Swin weights not found")
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("model", state.get("state_dict", state)) if isinstance(state, dict) else state
        own = self.model.state_dict()
        usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        if not usable:
            raise ValueError(f"{path}: no tensor matches the Swin-T architecture (keys like {list(own)[:3]})")
        self.model.load_state_dict(usable, strict=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.ndim != 4 or tuple(image.shape[1:]) != (3, 224, 224):
            raise ValueError(f"Swin inputs of shape (B, 3, 224, 224) expected, got {tuple(image.shape)}")
        return torch.log_softmax(self.model(image), dim=1)


def patch_classifier(name: str = "cnn", pretrained: str | None = None) -> nn.Module:
    """``cnn`` -> :class:`PatchCNN`; ``swin`` -> :class:`SwinClassifier` (``pretrained``: a local file)."""
    if name == "cnn":
        model = PatchCNN()
        if pretrained:
            model.load_state_dict(torch.load(pretrained, map_location="cpu", weights_only=True))
        return model
    if name == "swin":
        return SwinClassifier(pretrained=pretrained)
    raise ValueError(f"unknown classifier {name!r}; use 'cnn' or 'swin'")

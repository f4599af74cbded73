"""Classifier networks of the study: the patch CNN and the Swin-T classifier, both returning
log-probabilities ``(B, 2)`` (index 0 = healthy, 1 = lesion), and :func:`patch_classifier` that
picks one by name (the bundle configs' ``network_def``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

__all__ = ["PatchCNN", "SwinClassifier", "patch_classifier"]


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

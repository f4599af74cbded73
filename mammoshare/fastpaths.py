"""The training fast paths, each a bundle config switch: mixed precision, ``channels_last``,
``torch.compile``.

- ``amp``: ``False`` (off), ``"bf16"``, ``"fp16"`` or ``True`` (bf16 where the device supports it,
  else fp16). fp16 scales the losses with a ``GradScaler``; bf16 needs none.
- ``channels_last``: networks and image batches in NHWC memory order (faster convolutions on
  tensor cores; the values are the same).
- ``compile``: ``torch.compile`` of the networks' forward (``True``, or a dict of its keyword
  arguments such as ``{"backend": "aot_eager"}``); the saved weights keep their plain names.

Pinned-memory loaders are the bundles' ``num_workers`` and ``pin_memory`` settings (on by default
for CUDA devices).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from monai.data import MetaTensor

__all__ = [
    "AMP_CHOICES",
    "amp_dtype",
    "autocast",
    "grad_scaler",
    "trainer_amp_kwargs",
    "channels_last",
    "compiled",
    "classifier_prepare_batch",
]

AMP_CHOICES = (False, True, "bf16", "fp16")


def amp_dtype(amp: bool | str | None, device: str | torch.device = "cuda") -> torch.dtype | None:
    """The autocast dtype of an ``amp`` switch, or None when it is off."""
    if amp in (None, False, "none", "off", "False", "false"):
        return None
    if amp in (True, "True", "true"):
        device = torch.device(device)
        if device.type == "cuda" and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
            return torch.float16
        return torch.bfloat16
    if amp in ("bf16", "bfloat16"):
        return torch.bfloat16
    if amp in ("fp16", "float16", "half"):
        return torch.float16
    raise ValueError(f"unknown amp setting {amp!r}; use false, true, 'bf16' or 'fp16'")


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` on ``device`` with ``dtype``, or a no-op when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def grad_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """A loss scaler, enabled for fp16 only (bf16 has float32's range)."""
    return torch.amp.GradScaler(torch.device(device).type, enabled=dtype == torch.float16)


def trainer_amp_kwargs(amp: bool | str | None, device: str | torch.device = "cuda") -> dict[str, Any]:
    """``amp_kwargs`` of MONAI's SupervisedTrainer for an ``amp`` switch (its ``amp`` flag is ``bool(dtype)``)."""
    dtype = amp_dtype(amp, device)
    return {} if dtype is None else {"dtype": dtype}


def channels_last(module: torch.nn.Module, enabled: bool = True) -> torch.nn.Module:
    """``module`` in ``channels_last`` memory order when ``enabled`` (in place; returns it)."""
    return module.to(memory_format=torch.channels_last) if enabled else module


def compiled(module: torch.nn.Module, setting: bool | dict | None) -> Callable:
    """``torch.compile(module)`` when ``setting`` is true (a dict: its keyword arguments), else the
    module itself. The compiled callable shares the module's parameters; save ``module``, not it."""
    if not setting:
        return module
    return torch.compile(module, **(setting if isinstance(setting, dict) else {}))


def classifier_prepare_batch(channels_last: bool = False) -> Callable:
    """``prepare_batch`` of the classifier's SupervisedTrainer: ``{"image": (B, C, H, W), "label": (B,)}``
    -> plain tensors on the device (``channels_last`` images when asked), without metadata."""

    def prepare(batchdata: dict, device=None, non_blocking: bool = False, **kwargs):
        image, label = batchdata["image"], batchdata["label"]
        if isinstance(image, MetaTensor):
            image = image.as_tensor()
        if isinstance(label, MetaTensor):
            label = label.as_tensor()
        image = torch.as_tensor(image).to(device=device, non_blocking=non_blocking)
        if channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        return image, torch.as_tensor(label).to(device=device, non_blocking=non_blocking)

    return prepare

"""Lesion-type conditioning, schedulers, the training batch and the inferer of the diffusion bundles.

The UNet is conditioned on a lesion class through MONAI's ``num_class_embeds`` (a learnt embedding
added to the timestep embedding): 0 mass, 1 calcification, 2 other, and 3 "any lesion". During
training the class of a patch is replaced by "any" with probability ``uncond_prob`` (label
dropout), so one model samples a given lesion type, or lesions of every type in the proportions of
its training data (the "all lesions" task), without knowing those proportions.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import partial
from typing import Any

import torch
from monai.engines.utils import DiffusionPrepareBatch
from monai.inferers import DiffusionInferer
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler, RFlowScheduler

from ..obtain import gan_training_records

__all__ = [
    "LESION_CLASSES",
    "ANY_LESION",
    "NUM_LESION_CLASSES",
    "TRAINING_SCHEDULERS",
    "SAMPLERS",
    "lesion_class",
    "class_index",
    "diffusion_training_records",
    "present_classes",
    "training_scheduler",
    "sampling_scheduler",
    "LesionDiffusionPrepareBatch",
    "ClassConditionedDiffusionInferer",
]

logger = logging.getLogger(__name__)

#: the lesion classes of the class embedding, in index order
LESION_CLASSES = ("mass", "calcification", "other", "any")
ANY_LESION = LESION_CLASSES.index("any")
NUM_LESION_CLASSES = len(LESION_CLASSES)
#: how the model is trained: DDPM noise prediction, or rectified flow (velocity prediction)
TRAINING_SCHEDULERS = ("ddpm", "rflow")
#: how it is sampled, and the training each sampler needs
SAMPLERS = {"ddim": "ddpm", "ddpm": "ddpm", "rflow": "rflow"}
#: the side of the canonical patches (RFlow's timestep transform is told the image size)
IMAGE_NUMEL = 128 * 128


def lesion_class(lesion_types: Iterable[str]) -> str:
    """The class of a lesion record: ``mass`` when a mass is among its types (as the mass task
    counts it), else ``calcification`` when a calcification is, else ``other``."""
    types = set(lesion_types)
    if "mass" in types:
        return "mass"
    if "calcification" in types:
        return "calcification"
    return "other"


def class_index(name: str) -> int:
    if name not in LESION_CLASSES:
        raise ValueError(f"unknown lesion type {name!r}; use one of {list(LESION_CLASSES)}")
    return LESION_CLASSES.index(name)


def diffusion_training_records(**kwargs: Any) -> list[dict]:
    """The GAN bundles' training records (:func:`~mammoshare.obtain.gan_training_records`, same
    arguments), each with its ``class_label`` (index into :data:`LESION_CLASSES`)."""
    records = [dict(r) for r in gan_training_records(**kwargs)]
    for record in records:
        record["class_label"] = class_index(lesion_class(record.get("lesion_types", ())))
    counts = Counter(LESION_CLASSES[r["class_label"]] for r in records)
    logger.info("lesion classes of the training patches: %s", ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return records


def present_classes(records: Sequence[dict]) -> list[int]:
    """The classes the training data holds, then "any": the rows of the preview grids."""
    return sorted({int(r["class_label"]) for r in records}) + [ANY_LESION]


def training_scheduler(name: str = "ddpm", num_train_timesteps: int = 1000):
    """The noise schedule of training: ``"ddpm"`` (MONAI ``DDPMScheduler``, linear betas) or
    ``"rflow"`` (``RFlowScheduler``, uniform timesteps)."""
    if name == "ddpm":
        return DDPMScheduler(num_train_timesteps=num_train_timesteps)
    if name == "rflow":
        return RFlowScheduler(
            num_train_timesteps=num_train_timesteps, use_discrete_timesteps=True, spatial_dim=2, base_img_size_numel=IMAGE_NUMEL
        )
    raise ValueError(f"unknown training scheduler {name!r}; use one of {list(TRAINING_SCHEDULERS)}")


def sampling_scheduler(sampler: str, trained_with: str, num_inference_steps: int, num_train_timesteps: int = 1000):
    """A scheduler set to ``num_inference_steps``: ``"ddim"`` (deterministic, eta 0) or ``"ddpm"``
    (ancestral) for a DDPM-trained model, ``"rflow"`` (Euler steps) for an RFlow-trained one."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; use one of {list(SAMPLERS)}")
    if trained_with not in TRAINING_SCHEDULERS:
        raise ValueError(f"unknown training scheduler {trained_with!r}; use one of {list(TRAINING_SCHEDULERS)}")
    if SAMPLERS[sampler] != trained_with:
        raise ValueError(
            f"the {sampler!r} sampler needs a model trained with --scheduler {SAMPLERS[sampler]}, and these weights were "
            f"trained with {trained_with!r} (--training_scheduler): use "
            f"{' or '.join(repr(s) for s, t in SAMPLERS.items() if t == trained_with)}"
        )
    steps = int(num_inference_steps)
    if not 1 <= steps <= num_train_timesteps:
        raise ValueError(f"num_inference_steps must be between 1 and {num_train_timesteps}, got {steps}")
    if sampler == "ddim":
        scheduler = DDIMScheduler(num_train_timesteps=num_train_timesteps)
        scheduler.set_timesteps(steps)
    elif sampler == "ddpm":
        scheduler = DDPMScheduler(num_train_timesteps=num_train_timesteps)
        scheduler.set_timesteps(steps)
    else:
        scheduler = training_scheduler("rflow", num_train_timesteps)
        scheduler.set_timesteps(steps, input_img_size_numel=IMAGE_NUMEL)
    return scheduler


class LesionDiffusionPrepareBatch(DiffusionPrepareBatch):
    """MONAI's ``DiffusionPrepareBatch`` with the lesion class as condition, label dropout to
    "any lesion" with probability ``uncond_prob``, and, for an ``RFlowScheduler``, its timestep
    sampling and velocity target (``image - noise``).

    Returns ``(image, target, (), {"noise", "timesteps", "condition"})`` for
    :class:`ClassConditionedDiffusionInferer`; ``condition`` is the ``(B,)`` class indices.
    """

    def __init__(
        self,
        num_train_timesteps: int,
        condition_name: str | None = "class_label",
        uncond_prob: float = 0.1,
        scheduler: Any = None,
    ):
        super().__init__(num_train_timesteps=num_train_timesteps, condition_name=condition_name)
        if not 0.0 <= uncond_prob <= 1.0:
            raise ValueError(f"uncond_prob must be in [0, 1], got {uncond_prob}")
        self.uncond_prob = float(uncond_prob)
        self.rflow = isinstance(scheduler, RFlowScheduler)
        self.scheduler = scheduler

    def get_timesteps(self, images: torch.Tensor) -> torch.Tensor:
        if self.rflow:
            return self.scheduler.sample_timesteps(images)
        return super().get_timesteps(images)

    def get_target(self, images: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return images - noise if self.rflow else noise

    def __call__(self, batchdata, device=None, non_blocking: bool = False, **kwargs):
        images, target, args, infer_kwargs = super().__call__(batchdata, device, non_blocking, **kwargs)
        condition = infer_kwargs.get("condition")
        if condition is not None:
            condition = torch.as_tensor(condition).long().reshape(-1)
            if self.uncond_prob > 0:
                dropped = torch.rand(condition.shape[0], device=condition.device) < self.uncond_prob
                condition = torch.where(dropped, torch.full_like(condition, ANY_LESION), condition)
            infer_kwargs["condition"] = condition
        return images, target, args, infer_kwargs


class ClassConditionedDiffusionInferer(DiffusionInferer):
    """MONAI's ``DiffusionInferer`` whose condition is the UNet's ``class_labels`` (its
    ``num_class_embeds`` embedding) rather than a cross-attention context."""

    def __call__(self, inputs, diffusion_model, noise, timesteps, condition=None, mode: str = "crossattn", seg=None):
        model = diffusion_model if condition is None else partial(diffusion_model, class_labels=condition)
        return super().__call__(inputs, model, noise, timesteps)

    @torch.no_grad()
    def sample(self, input_noise, diffusion_model, scheduler=None, class_labels=None, verbose: bool = False, **kwargs):
        """``input_noise`` ``(B, 1, H, W)`` -> samples ``(B, 1, H, W)``; ``class_labels`` ``(B,)`` or None."""
        model = diffusion_model if class_labels is None else partial(diffusion_model, class_labels=class_labels)
        return super().sample(input_noise, model, scheduler=scheduler, verbose=verbose, **kwargs)

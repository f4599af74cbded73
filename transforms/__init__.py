"""Shared MONAI transforms for mammography: loading, patch boxes, the canonical patch, augmentation."""

from .boxes import (
    BoxError,
    LesionBox,
    LesionBoxd,
    RandHealthyBoxes,
    RandHealthyBoxesd,
    background_mask,
    lesion_box,
    sample_healthy_boxes,
)
from .io import DecodedImageCache, LoadMammogram, LoadMammogramd, MammogramError, read_mammogram
from .patch import (
    CANONICAL_SIZE,
    CanonicalPatch,
    CanonicalPatchd,
    LoadCanonicalPatchd,
    RandPatchJitter,
    RandPatchJitterd,
    SwinInput,
    SwinInputd,
    area_resize,
)

__all__ = [
    "BoxError",
    "CANONICAL_SIZE",
    "CanonicalPatch",
    "CanonicalPatchd",
    "DecodedImageCache",
    "LesionBox",
    "LesionBoxd",
    "LoadCanonicalPatchd",
    "LoadMammogram",
    "LoadMammogramd",
    "MammogramError",
    "RandHealthyBoxes",
    "RandHealthyBoxesd",
    "RandPatchJitter",
    "RandPatchJitterd",
    "SwinInput",
    "SwinInputd",
    "area_resize",
    "background_mask",
    "lesion_box",
    "read_mammogram",
    "sample_healthy_boxes",
]

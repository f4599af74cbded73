"""Shared MONAI transforms for mammography: loading, patch boxes, the canonical patch, augmentation."""

from .boxes import (
    BoxError,
    LesionBox,
    RandHealthyBoxes,
    background_mask,
    lesion_box,
    sample_healthy_boxes,
)
from .io import DecodedImageCache, LoadMammogram, LoadMammogramd, MammogramError, read_mammogram, read_patch
from .patch import (
    CANONICAL_SIZE,
    IMAGE_TYPES,
    CanonicalPatch,
    CanonicalPatchd,
    LoadCanonicalPatchd,
    RandPatchJitter,
    RandPatchJitterd,
    SwinInput,
    SwinInputd,
    area_resize,
    record_image_type,
)

__all__ = [
    "BoxError",
    "CANONICAL_SIZE",
    "CanonicalPatch",
    "IMAGE_TYPES",
    "CanonicalPatchd",
    "DecodedImageCache",
    "LesionBox",
    "LoadCanonicalPatchd",
    "LoadMammogram",
    "LoadMammogramd",
    "MammogramError",
    "RandHealthyBoxes",
    "RandPatchJitter",
    "RandPatchJitterd",
    "SwinInput",
    "SwinInputd",
    "area_resize",
    "background_mask",
    "lesion_box",
    "read_mammogram",
    "read_patch",
    "record_image_type",
    "sample_healthy_boxes",
]

"""Glue of the classifier bundle's configs: network inputs, weights, records to classify."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from transforms import RandPatchJitterd, SwinInputd
from transforms.io import RASTER_SUFFIXES

from ..datalist import DatalistError, load_datalist

__all__ = ["input_transforms", "training_transforms", "load_classifier_weights", "evaluation_records", "inference_records", "KEEP_KEYS"]

#: record fields that reach the batches: what the reports need
KEEP_KEYS = ("image", "label", "patient_id", "source", "image_path")


def input_transforms(classifier: str) -> list:
    """What turns a canonical patch into the network's input: nothing for the CNN, the 224x224
    three-channel resize for Swin."""
    if classifier == "cnn":
        return []
    if classifier == "swin":
        return [SwinInputd("image")]
    raise ValueError(f"unknown classifier {classifier!r}; use 'cnn' or 'swin'")


def training_transforms(classifier: str, jitter: dict | None = None) -> list:
    """The random and input transforms of a training patch, the same for every source and class:
    :class:`transforms.RandPatchJitterd` (its own defaults are the study's; ``jitter`` overrides
    them, e.g. ``{"shift_std": 0.25, "max_shift": 0.5}``) then :func:`input_transforms`."""
    return [RandPatchJitterd("image", **dict(jitter or {}))] + input_transforms(classifier)


def load_classifier_weights(network: torch.nn.Module, path: str | os.PathLike) -> torch.nn.Module:
    """Load a classifier checkpoint (a plain state_dict, ``weights_only=True``) into ``network``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: classifier weights not found; train the bundle first "
            "(python -m monai.bundle run --config_file bundles/classifier_inbreast/configs/train.json) "
            "or pass --checkpoint FILE"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not loadable as plain tensors with weights_only=True ({e})") from e
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    try:
        network.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{path}: weights of another classifier than the configured one (--classifier): {e}") from e
    return network


def _with_paths(records: list[dict]) -> list[dict]:
    return [{**r, "image_path": r["image"]} for r in records]


def evaluation_records(datalist: dict, subset: str = "test", source: str | os.PathLike = "datalist") -> list[dict]:
    """The records of a subset to evaluate on, with ``image_path``; empty or one-class subsets are errors."""
    from .data import subset_records

    return _with_paths(subset_records(datalist, subset, source))


def inference_records(source: str | os.PathLike) -> list[dict]:
    """Patches to classify: every image file of a folder (whole images: synthetic-style patch files;
    a DICOM file is scaled per image like a mammogram) or every record of a datalist JSON."""
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in RASTER_SUFFIXES + (".dcm",))
        if not files:
            raise DatalistError(f"{path}: no patch images (PNG, TIFF, JPEG, DICOM) in this folder")
        # raster files are patch files (decoded by their encoding); a DICOM is an image, scaled per image
        return [
            {"image": str(p), "image_path": str(p), "box": None,
             "image_type": "mammogram" if p.suffix.lower() == ".dcm" else "patch"}
            for p in files
        ]
    if path.is_file():
        data = load_datalist(path)
        records = [r for s in ("training", "validation", "test") for r in data.get(s, [])]
        if not records:
            raise DatalistError(f"{path}: the datalist has no records")
        return _with_paths(records)
    raise DatalistError(f"{path}: no such folder or datalist")

"""Patch datasets over datalist records, with canonical patches computed once and cached.

A GAN trained for thousands of epochs must not decode a full mammogram per sample: the
deterministic part of the pipeline (decode + crop + area-resize = the canonical patch) runs once
per record, with each mammogram decoded once for all its boxes (:class:`DecodedImageCache`); later
epochs only run the random transforms (jitter, flips) on the cached ``(1, 128, 128)`` patches.

Two caches:
- ``"memory"``: MONAI ``CacheDataset``, for one run;
- ``"disk"``: MONAI ``PersistentDataset`` keyed by the SHA-256 of the image file's content, the box
  and the patch size, so a cached patch is reused across runs and never served for a changed file.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import CacheDataset, Dataset, PersistentDataset
from monai.transforms import Compose, DeleteItemsd, EnsureTyped, RandomizableTrait, Transform

from transforms import CANONICAL_SIZE, DecodedImageCache, LoadCanonicalPatchd, record_image_type

from .extraction import record_apply_voi
from .hashing import sha256_file, sha256_text

__all__ = [
    "FreshItem", "CACHE_MODES", "canonical_patch_transform", "loader_record", "patch_dataset", "file_sha256",
    "record_content_hash",
]

logger = logging.getLogger(__name__)

CACHE_MODES = ("memory", "disk", "none")
#: bump when the canonical patch computation changes, so that disk caches are not reused
PATCH_VERSION = 2
#: what the loader needs of a record besides ``image`` and ``box``; dropped before batching
_LOADER_KEYS = ("box", "image_type", "apply_voi")

_sha_lock = threading.Lock()
_sha_memo: dict[tuple, str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's content, memoised by path, size and modification time."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _sha_lock:
        if key in _sha_memo:
            return _sha_memo[key]
    value = sha256_file(path)
    with _sha_lock:
        _sha_memo[key] = value
    return value


def record_content_hash(record: dict, size: int = CANONICAL_SIZE) -> bytes:
    """The disk-cache key of a record: image content, how it is decoded, box and canonical size (not the path)."""
    key = {
        "image_sha256": file_sha256(record["image"]),
        "image_type": record_image_type(record),
        "apply_voi": bool(record.get("apply_voi")),
        "box": [int(v) for v in record["box"]] if record.get("box") is not None else None,
        "size": size,
        "version": PATCH_VERSION,
    }
    return sha256_text(json.dumps(key, sort_keys=True)).encode()


class FreshItem(RandomizableTrait, Transform):
    """The first step after the cache, run on every fetch (hence a random-transform trait): a
    shallow copy of the item with its tensors and arrays cloned, so that the random transforms
    never alter the cached patch.

    It replaces ``CacheDataset``'s ``copy.deepcopy`` of every item, which goes through torch's
    storage deep copy: about 1 ms (15 ms on a busy machine) for one 64 KiB patch against a few
    microseconds for ``clone()``, the per-sample cost that made pipeline-fed training slower than
    memory-fed training."""

    def __call__(self, data: dict) -> dict:
        return {
            k: v.clone() if isinstance(v, torch.Tensor) else v.copy() if isinstance(v, np.ndarray) else v
            for k, v in data.items()
        }


def canonical_patch_transform(
    size: int = CANONICAL_SIZE,
    cache: DecodedImageCache | None = None,
    base_dir: str | os.PathLike | None = None,
    apply_voi: bool | None = None,
) -> LoadCanonicalPatchd:
    """The deterministic record -> canonical patch transform (``image`` becomes ``(1, size, size)``):
    mammograms cropped (scaled per image), patch files decoded by their encoding; ``apply_voi``
    None follows each record (see :func:`loader_record`)."""
    return LoadCanonicalPatchd(keys="image", box_key="box", size=size, cache=cache, base_dir=base_dir, apply_voi=apply_voi)


def loader_record(record: dict, keep_keys: Sequence[str] | None) -> dict:
    """The fields of a record that a patch dataset item starts from: ``keep_keys`` (all when None),
    plus what the loader needs: ``box``, ``image_type`` (stated or inferred, see
    :func:`transforms.record_image_type`) and ``apply_voi`` (stated, or the source's default)."""
    item = dict(record) if keep_keys is None else {k: record[k] for k in keep_keys if k in record}
    item.update(box=record.get("box"), image_type=record_image_type(record), apply_voi=record_apply_voi(record))
    return item


def patch_dataset(
    records: Sequence[dict],
    random_transforms: Sequence[Any] = (),
    cache: str = "memory",
    cache_dir: str | os.PathLike | None = None,
    size: int = CANONICAL_SIZE,
    num_workers: int = 1,
    progress: bool = True,
    image_cache: DecodedImageCache | None = None,
    keep_keys: Sequence[str] | None = ("image", "label", "patient_id", "source"),
    apply_voi: bool | None = None,
) -> Dataset:
    """A MONAI dataset of canonical patches.

    Args:
        records: datalist records with absolute ``image`` paths and ``box`` (None = whole image).
        random_transforms: transforms applied after the cached canonical patch (jitter, flips...).
        cache: ``"memory"`` (CacheDataset), ``"disk"`` (PersistentDataset in ``cache_dir``) or
            ``"none"`` (recompute every time; for tests and comparisons).
        num_workers: threads that fill the memory cache.
        image_cache: the decoded-mammogram cache to use (one is made otherwise); its
            ``decode_count`` tells how many files were really decoded.
        keep_keys: record fields that the items keep (all when None); the default ones collate
            into batches, unlike ragged fields such as ``lesion_types`` or a missing ``density``.
        apply_voi: apply the DICOM VOI LUT / window to every mammogram (True / False), or None:
            as each record says (the setting its datalist was built with).

    Returns:
        a dataset whose items are the records with ``image`` = ``(1, size, size)`` float patch.
    """
    if cache not in CACHE_MODES:
        raise ValueError(f"unknown cache mode {cache!r}; use one of {list(CACHE_MODES)}")
    if not records:
        raise ValueError("no records: the patch dataset would be empty")
    image_cache = image_cache if image_cache is not None else DecodedImageCache()
    # plain tensors: a disk cache loads them with weights_only=True, and batches collate alike in every mode
    transform = Compose(
        [
            canonical_patch_transform(size, image_cache, apply_voi=apply_voi),
            EnsureTyped("image", track_meta=False),
            # box is None for patch files: it does not collate
            *([] if keep_keys is None else [DeleteItemsd(list(_LOADER_KEYS))]),
            FreshItem(),
            *random_transforms,
        ]
    )
    data = [loader_record(r, keep_keys) for r in records]
    if cache == "memory":
        # FreshItem copies what the random transforms get: no deep copy of the cache per item
        return CacheDataset(data, transform, cache_rate=1.0, num_workers=num_workers, progress=progress, copy_cache=False)
    if cache == "disk":
        if cache_dir is None:
            raise ValueError("cache='disk' needs a cache_dir")
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        return PersistentDataset(data, transform, cache_dir=cache_dir, hash_func=lambda r: record_content_hash(r, size))
    return Dataset(data, transform)

"""The canonical patch and what acts on it.

Every patch, real or synthetic, healthy or lesion, first becomes a canonical ``(1, 128, 128)``
float patch in [0, 1]: a real patch is its square box cropped from the mammogram and area-resized
to 128 (``cv2.INTER_AREA``); a synthetic patch is used as generated. Training-time jitter and the
resize for Swin act on canonical patches only, the same way for every class and source, so that a
classifier cannot tell sources apart by their pre-processing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, RandomizableTransform, Transform

from .io import DecodedImageCache, LoadMammogram

__all__ = [
    "CANONICAL_SIZE",
    "area_resize",
    "CanonicalPatch",
    "CanonicalPatchd",
    "LoadCanonicalPatchd",
    "RandPatchJitter",
    "RandPatchJitterd",
    "SwinInput",
    "SwinInputd",
]

CANONICAL_SIZE = 128
logger = logging.getLogger(__name__)


def area_resize(patch: np.ndarray, size: int) -> np.ndarray:
    """Resize a square ``(h, w)`` float array to ``(size, size)`` with ``cv2.INTER_AREA``; the output
    stays inside the input's value range (area averaging can overshoot it by rounding)."""
    patch = patch.astype(np.float32, copy=False)
    if patch.shape == (size, size):
        return patch
    resized = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
    return np.clip(resized, patch.min(), patch.max(), out=resized)


def _as_numpy_2d(image) -> np.ndarray:
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 3:
        if array.shape[0] != 1:
            raise ValueError(f"a one-channel image (1, H, W) is expected, got shape {tuple(array.shape)}")
        array = array[0]
    if array.ndim != 2:
        raise ValueError(f"a 2D image (1, H, W) is expected, got shape {tuple(array.shape)}")
    return array


class CanonicalPatch(Transform):
    """Image ``(1, H, W)`` + square box -> canonical patch ``(1, size, size)`` float32.

    With a box: the box (``[x0, y0, x1, y1]``, inside the image, square) is cropped and
    area-resized to ``size``. Without a box the whole image is the patch (synthetic patches); a
    square image of another size is area-resized, and the first such resize is logged.
    """

    def __init__(self, size: int = CANONICAL_SIZE):
        self.size = size
        self._resize_logged = False

    def __call__(self, image, box: Sequence[int] | None = None) -> torch.Tensor:
        array = _as_numpy_2d(image)
        height, width = array.shape
        name = image.meta.get("filename_or_obj", "image") if isinstance(image, MetaTensor) else "image"
        if box is not None:
            x0, y0, x1, y1 = (int(v) for v in box)
            if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
                raise ValueError(f"{name}: box {[x0, y0, x1, y1]} does not lie inside the {width}x{height} image")
            if x1 - x0 != y1 - y0:
                raise ValueError(f"{name}: box {[x0, y0, x1, y1]} is not square; patch boxes are square")
            array = array[y0:y1, x0:x1]
        elif height != width:
            raise ValueError(f"{name}: a {width}x{height} patch is not square; a square patch is expected")
        elif height != self.size and not self._resize_logged:
            logger.warning("%s: patches of %dx%d are resized to %dx%d", name, width, height, self.size, self.size)
            self._resize_logged = True
        patch = area_resize(array, self.size)[None]
        out = torch.from_numpy(np.ascontiguousarray(patch))
        if isinstance(image, MetaTensor):
            meta = dict(image.meta)
            meta["patch_box"] = None if box is None else [int(v) for v in box]
            meta["spatial_shape"] = [self.size, self.size]
            return MetaTensor(out, meta=meta)
        return out


class CanonicalPatchd(MapTransform):
    """Dictionary twin of :class:`CanonicalPatch`: ``data[key]`` and ``data[box_key]`` -> patch in ``data[key]``."""

    def __init__(
        self,
        keys: KeysCollection,
        box_key: str = "box",
        size: int = CANONICAL_SIZE,
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        self.box_key = box_key
        self.patcher = CanonicalPatch(size)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.patcher(d[key], d.get(self.box_key))
        return d


class LoadCanonicalPatchd(MapTransform):
    """A datalist record -> its canonical patch: path in ``data[key]`` (relative to ``base_dir``)
    and optional ``data[box_key]`` -> ``(1, size, size)`` MetaTensor in ``data[key]``.

    Mammograms are decoded through a :class:`DecodedImageCache`, so the many boxes of one image
    cost one decode. This transform is deterministic: put it before the random ones in a MONAI
    ``CacheDataset`` and later epochs only jitter.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        box_key: str = "box",
        base_dir: str | os.PathLike | None = None,
        size: int = CANONICAL_SIZE,
        cache: DecodedImageCache | None = None,
        apply_voi: bool = True,
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        self.box_key = box_key
        self.base_dir = Path(base_dir) if base_dir is not None else None
        self.cache = cache if cache is not None else DecodedImageCache()
        self.loader = LoadMammogram(apply_voi=apply_voi, cache=self.cache)
        self.patcher = CanonicalPatch(size)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            path = Path(d[key])
            if self.base_dir is not None and not path.is_absolute():
                path = self.base_dir / path
            d[key] = self.patcher(self.loader(path), d.get(self.box_key))
        return d


class RandPatchJitter(RandomizableTransform):
    """Random zoom-in and translation of a canonical patch ``(C, S, S)`` -> ``(C, S, S)``.

    The zoom factor is ``1 + |N(0, zoom_std)|`` (at most ``max_zoom``); a square of side ``S / zoom``
    is cropped at an offset ``N(0, shift_std * S)`` from the centre in x and in y, clipped
    symmetrically so that the crop stays inside the patch, then area-resized back to ``S``. The
    content is only ever cropped, never padded, and the offset is symmetric around zero.
    """

    def __init__(self, prob: float = 1.0, zoom_std: float = 0.1, shift_std: float = 0.05, max_zoom: float = 1.5):
        super().__init__(prob)
        if max_zoom < 1:
            raise ValueError("max_zoom must be >= 1 (the jitter only zooms in)")
        self.zoom_std, self.shift_std, self.max_zoom = zoom_std, shift_std, max_zoom
        self._zoom = 1.0
        self._shift = (0.0, 0.0)

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        if not self._do_transform:
            return
        self._zoom = float(min(1.0 + abs(self.R.normal(0.0, self.zoom_std)), self.max_zoom))
        self._shift = (float(self.R.normal(0.0, self.shift_std)), float(self.R.normal(0.0, self.shift_std)))

    def crop_window(self, size: int) -> tuple[int, int, int]:
        """The last drawn crop for a patch of side ``size``: ``(x0, y0, side)``."""
        side = max(1, int(round(size / self._zoom)))
        room = (size - side) / 2.0
        dx = float(np.clip(self._shift[0] * size, -room, room))
        dy = float(np.clip(self._shift[1] * size, -room, room))
        return int(round(room + dx)), int(round(room + dy)), side

    def __call__(self, patch, randomize: bool = True):
        if randomize:
            self.randomize()
        if not self._do_transform:
            return patch
        array = patch.detach().cpu().numpy() if isinstance(patch, torch.Tensor) else np.asarray(patch)
        size = array.shape[-1]
        if array.shape[-2] != size:
            raise ValueError(f"a square canonical patch is expected, got shape {tuple(array.shape)}")
        x0, y0, side = self.crop_window(size)
        out = np.stack([area_resize(c[y0 : y0 + side, x0 : x0 + side], size) for c in array])
        tensor = torch.from_numpy(out)
        return MetaTensor(tensor, meta=dict(patch.meta)) if isinstance(patch, MetaTensor) else tensor


class RandPatchJitterd(RandomizableTransform, MapTransform):
    """Dictionary twin of :class:`RandPatchJitter`; all ``keys`` get the same crop."""

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 1.0,
        zoom_std: float = 0.1,
        shift_std: float = 0.05,
        max_zoom: float = 1.5,
        allow_missing_keys: bool = False,
    ):
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.jitter = RandPatchJitter(1.0, zoom_std, shift_std, max_zoom)

    def set_random_state(self, seed=None, state=None):
        super().set_random_state(seed, state)
        self.jitter.set_random_state(state=self.R)
        return self

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        self.jitter.randomize()
        for key in self.key_iterator(d):
            d[key] = self.jitter(d[key], randomize=False)
        return d


class SwinInput(Transform):
    """Canonical patch ``(1, S, S)`` -> Swin input ``(3, size, size)``: bilinear resize, grey stacked to 3 channels."""

    def __init__(self, size: int = 224):
        self.size = size

    def __call__(self, patch):
        tensor = patch.as_tensor() if isinstance(patch, MetaTensor) else torch.as_tensor(patch)
        if tensor.ndim != 3 or tensor.shape[0] != 1:
            raise ValueError(f"a canonical patch (1, S, S) is expected, got shape {tuple(tensor.shape)}")
        resized = torch.nn.functional.interpolate(
            tensor[None].float(), size=(self.size, self.size), mode="bilinear", align_corners=False
        )[0]
        out = resized.repeat(3, 1, 1)
        return MetaTensor(out, meta=dict(patch.meta)) if isinstance(patch, MetaTensor) else out


class SwinInputd(MapTransform):
    """Dictionary twin of :class:`SwinInput`."""

    def __init__(self, keys: KeysCollection, size: int = 224, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.converter = SwinInput(size)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.converter(d[key])
        return d

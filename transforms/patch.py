"""The canonical patch and what acts on it.

Every patch, real or synthetic, healthy or lesion, first becomes a canonical ``(1, 128, 128)``
float patch in [0, 1]: a real patch is its square box cropped from the mammogram (scaled per
image) and area-resized to 128 (``cv2.INTER_AREA``); a synthetic patch file is decoded by its
encoding (8-bit / 255, 16-bit / 65535, never stretched) and used as generated. Training-time
jitter and the resize for Swin act on canonical patches only, the same way for every class and
source, so that a classifier cannot tell sources apart by their pre-processing.
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

from .io import DecodedImageCache, LoadMammogram, read_patch

__all__ = [
    "CANONICAL_SIZE",
    "IMAGE_TYPES",
    "record_image_type",
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
#: what a record's image file is: a whole mammogram (boxes are cut from it, scaled per image) or a
#: patch file (the patch itself, decoded by its encoding)
IMAGE_TYPES = ("mammogram", "patch")
logger = logging.getLogger(__name__)


def record_image_type(record: Mapping[Hashable, Any], type_key: str = "image_type", box_key: str = "box") -> str:
    """``"mammogram"`` or ``"patch"``: the record's ``image_type``; records without one (older
    datalists) are patches when they have no box, mammograms otherwise. A patch with a box is an error."""
    kind = record.get(type_key)
    box = record.get(box_key)
    name = record.get("image", "record")
    if kind is None:
        return "patch" if box is None else "mammogram"
    if kind not in IMAGE_TYPES:
        raise ValueError(f"{name}: unknown image_type {kind!r}; use one of {list(IMAGE_TYPES)}")
    if kind == "patch" and box is not None:
        raise ValueError(f"{name}: a patch file (image_type 'patch') has no box; the box {box} belongs to a mammogram")
    return kind


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

    What the file is comes from the record (:func:`record_image_type`): a mammogram is decoded by
    :class:`LoadMammogram` (scaled per image) and its box cropped; a patch file by
    :func:`~transforms.io.read_patch` (its encoding, never stretched). ``apply_voi`` None takes each
    record's ``data[voi_key]`` (False when absent). Mammograms are decoded through a
    :class:`DecodedImageCache`, so the many boxes of one image cost one decode. This transform is
    deterministic: put it before the random ones in a MONAI ``CacheDataset`` and later epochs only
    jitter.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        box_key: str = "box",
        base_dir: str | os.PathLike | None = None,
        size: int = CANONICAL_SIZE,
        cache: DecodedImageCache | None = None,
        apply_voi: bool | None = None,
        type_key: str = "image_type",
        voi_key: str = "apply_voi",
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        self.box_key, self.type_key, self.voi_key = box_key, type_key, voi_key
        self.base_dir = Path(base_dir) if base_dir is not None else None
        self.cache = cache if cache is not None else DecodedImageCache()
        self.apply_voi = apply_voi
        self.loaders = {voi: LoadMammogram(apply_voi=voi, cache=self.cache) for voi in (False, True)}
        self.patcher = CanonicalPatch(size)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        kind = record_image_type(d, self.type_key, self.box_key)
        for key in self.key_iterator(d):
            path = Path(d[key])
            if self.base_dir is not None and not path.is_absolute():
                path = self.base_dir / path
            if kind == "patch":
                array, meta = read_patch(path)
                image = MetaTensor(torch.from_numpy(array[None]), meta=meta)
                d[key] = self.patcher(image, None)
            else:
                voi = self.apply_voi if self.apply_voi is not None else bool(d.get(self.voi_key) or False)
                d[key] = self.patcher(self.loaders[voi](path), d.get(self.box_key))
        return d


class RandPatchJitter(RandomizableTransform):
    """Random translation and zoom-in of a canonical patch ``(C, S, S)`` -> ``(C, S, S)``, crop only.

    Draws offsets ``u_x, u_y ~ N(0, shift_std)`` (clipped to ``+-max_shift``) in units of the crop
    side, and a zoom ``z = 1 + 2 max(|u_x|, |u_y|) + |N(0, zoom_std)|`` (at most ``max_zoom``): the
    zoom-in that the shift needs plus a random one. A square of side ``S / z`` whose centre lies
    ``u * S / z`` from the patch centre is cropped and area-resized back to ``S``. The patch centre
    (the lesion's centre, for a lesion patch) thus lands ``-u * S`` from the output centre: with the
    defaults its offset has a standard deviation of about 10% of the side in x and in y (12.7 px
    at 128), and the crop always lies inside the patch: nothing is ever padded. The transform only
    sees the canonical patch, so it is the same for real, healthy and synthetic patches.

    Args:
        prob: probability of jittering a patch.
        shift_std: standard deviation of the offset, as a fraction of the crop side.
        max_shift: the largest offset (fraction of the crop side).
        zoom_std: standard deviation of the extra random zoom-in.
        max_zoom: the largest zoom factor; at least ``1 + 2 * max_shift``.
    """

    def __init__(
        self,
        prob: float = 1.0,
        shift_std: float = 0.1,
        max_shift: float = 0.25,
        zoom_std: float = 0.1,
        max_zoom: float = 2.0,
    ):
        super().__init__(prob)
        if shift_std < 0 or zoom_std < 0 or max_shift < 0:
            raise ValueError("shift_std, max_shift and zoom_std must be >= 0")
        if max_zoom < 1 + 2 * max_shift:
            raise ValueError(
                f"max_zoom {max_zoom} is below 1 + 2 * max_shift = {1 + 2 * max_shift}: the largest shift would "
                "need padding; the jitter only crops"
            )
        self.shift_std, self.max_shift, self.zoom_std, self.max_zoom = shift_std, max_shift, zoom_std, max_zoom
        self._zoom = 1.0
        self._shift = (0.0, 0.0)

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        if not self._do_transform:
            return
        ux, uy = (float(np.clip(self.R.normal(0.0, self.shift_std), -self.max_shift, self.max_shift)) for _ in range(2))
        extra = abs(float(self.R.normal(0.0, self.zoom_std)))
        self._zoom = float(min(1.0 + 2.0 * max(abs(ux), abs(uy)) + extra, self.max_zoom))
        self._shift = (ux, uy)

    def crop_window(self, size: int) -> tuple[int, int, int]:
        """The last drawn crop for a patch of side ``size``: ``(x0, y0, side)``, inside the patch."""
        side = max(1, int(round(size / self._zoom)))
        room = size - side
        x0 = int(np.clip(round(room / 2.0 + self._shift[0] * side), 0, room))
        y0 = int(np.clip(round(room / 2.0 + self._shift[1] * side), 0, room))
        return x0, y0, side

    def centre_offset(self, size: int) -> tuple[float, float]:
        """Where the last drawn crop puts the input's centre in the output, relative to the output
        centre, in output pixels ``(dx, dy)``."""
        x0, y0, side = self.crop_window(size)
        scale = size / side
        return ((size / 2.0 - x0) * scale - size / 2.0, (size / 2.0 - y0) * scale - size / 2.0)

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
        shift_std: float = 0.1,
        max_shift: float = 0.25,
        zoom_std: float = 0.1,
        max_zoom: float = 2.0,
        allow_missing_keys: bool = False,
    ):
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.jitter = RandPatchJitter(1.0, shift_std, max_shift, zoom_std, max_zoom)

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
    """Canonical patch ``(1, S, S)`` -> Swin input ``(3, size, size)``: area-consistent resize, grey
    stacked to 3 channels.

    The resize is ``cv2.INTER_AREA``, which when enlarging weights every input pixel by its area
    overlap with the output pixel: the mean over any output footprint is that of the input. It
    starts from the canonical patch (the parity rule: synthetic patches exist at 128 only), not
    from the original crop as the paper did.
    """

    def __init__(self, size: int = 224):
        self.size = size

    def __call__(self, patch):
        tensor = patch.as_tensor() if isinstance(patch, MetaTensor) else torch.as_tensor(patch)
        if tensor.ndim != 3 or tensor.shape[0] != 1:
            raise ValueError(f"a canonical patch (1, S, S) is expected, got shape {tuple(tensor.shape)}")
        resized = area_resize(tensor[0].detach().cpu().float().numpy(), self.size)
        out = torch.from_numpy(np.ascontiguousarray(resized))[None].repeat(3, 1, 1)
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

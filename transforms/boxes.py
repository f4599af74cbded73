"""Patch boxes: square lesion boxes around contours, healthy boxes inside the breast.

A box is ``[x_min, y_min, x_max, y_max]`` in pixels, x = column, y = row, max exclusive, so
``image[..., y_min:y_max, x_min:x_max]`` is the patch and ``x_max - x_min`` its side.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from monai.transforms import Randomizable, Transform

__all__ = [
    "BoxError",
    "lesion_box",
    "background_mask",
    "sample_healthy_boxes",
    "LesionBox",
    "RandHealthyBoxes",
]

#: the original code's background test: a pixel of the min-max scaled uint8 image at most 10
BACKGROUND_LEVEL = 10.0 / 255.0


class BoxError(ValueError):
    """A contour or image for which no valid patch box exists."""


def lesion_box(
    points: Sequence[Sequence[float]] | np.ndarray,
    image_shape: Sequence[int],
    margin: int = 60,
    min_size: int = 128,
    tolerance: float = 2.0,
) -> list[int]:
    """Square patch box around a lesion contour or point list.

    Args:
        points: ``(N, 2)`` points as (x, y) = (column, row), N >= 1.
        image_shape: ``(H, W)`` of the mammogram (a leading channel dim is ignored).
        margin: pixels added on every side of the contour's bounding box.
        min_size: smallest side of the square.
        tolerance: points at most this far outside the image are clipped to it; farther is an error.

    Returns:
        ``[x_min, y_min, x_max, y_max]``: a square of side ``max(w, h) + 2 * margin`` (at least
        ``min_size``) centred on the contour, then shifted (never padded) to lie inside the image.
    """
    height, width = int(image_shape[-2]), int(image_shape[-1])
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2) if len(points) else np.zeros((0, 2))
    if pts.shape[0] == 0:
        raise BoxError("empty contour: no points")
    if not np.isfinite(pts).all():
        raise BoxError("contour has non-finite coordinates")
    outside = (
        (pts[:, 0] < -tolerance) | (pts[:, 0] > width - 1 + tolerance)
        | (pts[:, 1] < -tolerance) | (pts[:, 1] > height - 1 + tolerance)
    )
    if outside.any():
        x, y = pts[outside][0]
        raise BoxError(
            f"contour point ({x:g}, {y:g}) lies outside the {width}x{height} image "
            f"({int(outside.sum())} of {len(pts)} points outside)"
        )
    pts[:, 0] = np.clip(pts[:, 0], 0, width - 1)
    pts[:, 1] = np.clip(pts[:, 1], 0, height - 1)
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0) + 1  # the max pixel is inside the box
    side = int(np.ceil(max(x1 - x0, y1 - y0))) + 2 * margin
    side = max(side, min_size)
    if side > min(height, width):
        if min(height, width) < min_size:
            raise BoxError(f"image {width}x{height} is smaller than the minimum patch size {min_size}")
        side = min(height, width)  # the largest square that fits; the lesion is kept as centred as possible
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    bx = int(np.clip(round(cx - side / 2.0), 0, width - side))
    by = int(np.clip(round(cy - side / 2.0), 0, height - side))
    return [bx, by, bx + side, by + side]


def background_mask(image: np.ndarray, level: float = BACKGROUND_LEVEL) -> np.ndarray:
    """Boolean ``(H, W)`` mask of background pixels of a [0, 1] image (``(1, H, W)`` accepted)."""
    image = np.asarray(image)
    if image.ndim == 3:
        image = image[0]
    low, high = float(image.min()), float(image.max())
    scaled = (image - low) / (high - low) if high > low else np.zeros_like(image)
    return scaled <= level


def _integral(mask: np.ndarray) -> np.ndarray:
    out = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int64)
    out[1:, 1:] = mask.astype(np.int64).cumsum(0).cumsum(1)
    return out


def _box_sum(integral: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> int:
    return int(integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0])


def _overlaps(box: Sequence[int], others: Sequence[Sequence[int]], distance: int) -> bool:
    for o in others:
        if (
            box[0] < o[2] + distance and o[0] - distance < box[2]
            and box[1] < o[3] + distance and o[1] - distance < box[3]
        ):
            return True
    return False


def sample_healthy_boxes(
    image: np.ndarray,
    count: int,
    rng: np.random.RandomState,
    size: int | tuple[int, int] = 128,
    max_background: float = 0.4,
    avoid: Sequence[Sequence[int]] = (),
    avoid_distance: int = 0,
    max_tries: int = 2000,
) -> list[list[int]]:
    """Random square boxes inside the breast.

    Args:
        image: ``(H, W)`` or ``(1, H, W)`` mammogram in [0, 1].
        count: number of boxes wanted.
        rng: the random state (a seeded ``np.random.RandomState``).
        size: the side, or a ``(low, high)`` range to draw each side from uniformly.
        max_background: the largest allowed fraction of background pixels in a box.
        avoid: boxes (lesions) that a healthy box must stay ``avoid_distance`` pixels away from.
        max_tries: random draws per box before giving up.

    Returns:
        ``count`` boxes ``[x_min, y_min, x_max, y_max]``. Raises :class:`BoxError` when the image
        has too little breast tissue for them.
    """
    mask = background_mask(image)
    height, width = mask.shape
    integral = _integral(mask)
    low, high = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if high > min(height, width):
        raise BoxError(f"healthy box side {high} does not fit the {width}x{height} image")
    boxes: list[list[int]] = []
    for _ in range(count):
        for _try in range(max_tries):
            side = int(rng.randint(low, high + 1))
            x0 = int(rng.randint(0, width - side + 1))
            y0 = int(rng.randint(0, height - side + 1))
            box = [x0, y0, x0 + side, y0 + side]
            if _box_sum(integral, *box) > max_background * side * side:
                continue
            if _overlaps(box, avoid, avoid_distance):
                continue
            if box in boxes:
                continue
            boxes.append(box)
            break
        else:
            raise BoxError(
                f"found only {len(boxes)} of {count} healthy boxes with at most {max_background:.0%} background "
                f"in {max_tries} draws: too little breast tissue away from lesions"
            )
    return boxes


class LesionBox(Transform):
    """Contour ``(N, 2)`` (x, y) points + image shape ``(H, W)`` -> square box ``[x0, y0, x1, y1]``.

    See :func:`lesion_box`.
    """

    def __init__(self, margin: int = 60, min_size: int = 128, tolerance: float = 2.0):
        self.margin, self.min_size, self.tolerance = margin, min_size, tolerance

    def __call__(self, points, image_shape: Sequence[int]) -> list[int]:
        return lesion_box(points, image_shape, self.margin, self.min_size, self.tolerance)


class RandHealthyBoxes(Randomizable, Transform):
    """Image ``(1, H, W)`` in [0, 1] -> ``count`` random healthy boxes (see :func:`sample_healthy_boxes`)."""

    def __init__(self, count: int = 5, size: int | tuple[int, int] = 128, max_background: float = 0.4):
        self.count, self.size, self.max_background = count, size, max_background

    def randomize(self, data: Any = None) -> None:  # boxes are drawn in __call__ from self.R
        pass

    def __call__(self, image, avoid: Sequence[Sequence[int]] = (), avoid_distance: int = 0) -> list[list[int]]:
        image = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image)
        return sample_healthy_boxes(
            image, self.count, self.R, self.size, self.max_background, avoid=avoid, avoid_distance=avoid_distance
        )

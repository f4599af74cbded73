"""The healthy reserve of a datalist: spare healthy boxes, drawn when the datalist is built, that
class balancing takes when a training set needs more healthy patches than the subset holds.

The reserve (``datalist["healthy_reserve"]``, see :data:`~mammoshare.datalist.HEALTHY_RESERVE`)
lists, for every training image that has healthy records, up to ``per_image`` more healthy boxes of
the same side, inside the breast, :data:`RESERVE_DISTANCE_PX` away from every lesion of the image
and different from the boxes already listed. Its records are those of the image with the new box
and ``"extra_healthy": true``; training only reads them (it never decodes a mammogram again).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence

from transforms import BoxError, read_mammogram, sample_healthy_boxes

from ..datalist import image_rng
from ..extraction import record_apply_voi

__all__ = ["RESERVE_DISTANCE_PX", "sample_healthy_reserve"]

logger = logging.getLogger(__name__)

#: reserve boxes keep at least this distance (px) from the lesions of their image
RESERVE_DISTANCE_PX = 64


def sample_healthy_reserve(records: Sequence[dict], per_image: int, seed: int) -> list[dict]:
    """Up to ``per_image`` new healthy boxes from each image of the healthy ``records`` (a subset's
    records, lesions included: their boxes are avoided), drawn with the seed per image; grouped
    image by image in sorted order. An image with too little tissue for them gives none (logged)."""
    if per_image <= 0:
        return []
    by_image: dict[str, list[dict]] = defaultdict(list)
    lesions: dict[str, list[list[int]]] = defaultdict(list)
    taken: dict[str, set[tuple[int, ...]]] = defaultdict(set)
    for r in records:
        if r.get("box") is None:
            continue
        taken[r["image"]].add(tuple(r["box"]))
        if r["label"] == 1:
            lesions[r["image"]].append(r["box"])
        else:
            by_image[r["image"]].append(r)
    reserve: list[dict] = []
    for image in sorted(by_image):
        template = by_image[image][0]
        pixels, _ = read_mammogram(image, apply_voi=record_apply_voi(template))  # as the patches are decoded
        size = template["box"][2] - template["box"][0]
        try:
            boxes = sample_healthy_boxes(
                pixels, per_image + len(taken[image]), image_rng(seed, image, "healthy-reserve"), size=size,
                avoid=lesions[image], avoid_distance=RESERVE_DISTANCE_PX,
            )
        except BoxError as e:
            logger.warning("%s: no reserve healthy boxes (%s)", image, e)
            continue
        fresh = [b for b in boxes if tuple(b) not in taken[image]][:per_image]
        reserve += [{**template, "box": [int(v) for v in b], "extra_healthy": True} for b in fresh]
    return reserve

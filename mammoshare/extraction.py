"""How patches are cut from mammograms: box sizes (pixels or mm), DICOM windowing, calcification ROIs.

:class:`PatchGeometry` holds the options of ``mammoshare datalist`` that the readers share:

- the lesion margin and the healthy box side, in pixels (the paper: 60 px and 128 px, the
  defaults) or in mm (``--margin-mm`` / ``--healthy-box-mm``), converted per image with its pixel
  spacing (DICOM ``PixelSpacing``, else ``ImagerPixelSpacing``; TIFF resolution tags), or with
  ``--default-pixel-spacing`` for files that carry none. The smallest lesion box is the healthy
  box side, as in the paper (128 px both), so a lesion patch never shows less tissue than a
  healthy one;
- ``apply_voi``: whether the DICOM VOI LUT / window is applied before the per-image min-max
  scaling, per dataset by default (:data:`APPLY_VOI_DEFAULTS`);

and every record it helps to build says its pixel spacing (``pixel_spacing``, mm, row then column,
None when unknown) and its ``apply_voi``, so that the bundles decode the mammogram as the datalist
did.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .datalist import CaseCollector

__all__ = [
    "APPLY_VOI_DEFAULTS",
    "APPLY_VOI_REASONS",
    "CALCIFICATION_POLICIES",
    "DEFAULT_CALCIFICATIONS",
    "PAPER_MARGIN_PX",
    "PAPER_HEALTHY_BOX_PX",
    "PatchGeometry",
    "ReadRequest",
    "default_apply_voi",
    "record_apply_voi",
    "resolve_apply_voi",
    "lesion_type_counts",
]

PAPER_MARGIN_PX = 60
PAPER_HEALTHY_BOX_PX = 128

#: whether each dataset's DICOM VOI LUT / window is applied by default before min-max scaling
APPLY_VOI_DEFAULTS = {"inbreast": False, "cbis-ddsm": False, "bcdr": False, "mias": False}
APPLY_VOI_REASONS = {
    "inbreast": "the study's code min-max scaled the raw (modality LUT) values; a display window can clip the "
                "dense breast and lose tissue contrast",
    "cbis-ddsm": "digitised film without a display window in most files; raw values keep centre A's two formats "
                 "alike (INbreast is not windowed either)",
    "bcdr": "TIFF files carry no VOI LUT; the option has no effect",
    "mias": "PGM/PNG files carry no VOI LUT; the option has no effect",
}

#: INbreast calcification ROIs: one patch per ROI (the paper's 3028 lesion patches) or per 5 mm cluster
CALCIFICATION_POLICIES = ("roi", "cluster")
DEFAULT_CALCIFICATIONS = "roi"


def default_apply_voi(dataset: str | None) -> bool:
    """The dataset's default ``apply_voi`` (False for a dataset not listed)."""
    return APPLY_VOI_DEFAULTS.get(str(dataset), False)


def resolve_apply_voi(value: Any, dataset: str | None) -> bool:
    """``None`` / ``"auto"`` -> the dataset's default; booleans and yes/no/true/false strings as given."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return default_apply_voi(dataset)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("yes", "true", "1", "on"):
            return True
        if text in ("no", "false", "0", "off"):
            return False
        raise ValueError(f"apply_voi {value!r}: use auto, yes or no")
    return bool(value)


def record_apply_voi(record: Mapping[str, Any]) -> bool:
    """A record's ``apply_voi``; for records of older datalists without one, its source's default."""
    value = record.get("apply_voi")
    return default_apply_voi(record.get("source")) if value is None else bool(value)


def lesion_type_counts(records: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Lesion records per lesion type (a record of several types counts for each), sorted by type."""
    counts: dict[str, int] = {}
    for r in records:
        if r.get("label") == 1:
            for kind in r.get("lesion_types") or ["unknown"]:
                counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items()))


def _spacing_pair(value: Any) -> tuple[float, float] | None:
    try:
        if value is None or len(value) != 2:
            return None
        row, col = float(value[0]), float(value[1])
    except (TypeError, ValueError):
        return None
    return (row, col) if row > 0 and col > 0 and np.isfinite([row, col]).all() else None


@dataclass(frozen=True)
class PatchGeometry:
    """Box sizes, windowing and spacing of one datalist build (see the module docstring).

    ``margin_mm`` / ``healthy_box_mm``, when set, replace ``margin_px`` / ``healthy_box_px``.
    """

    margin_px: int = PAPER_MARGIN_PX
    healthy_box_px: int = PAPER_HEALTHY_BOX_PX
    margin_mm: float | None = None
    healthy_box_mm: float | None = None
    default_spacing_mm: float | None = None
    apply_voi: bool = False

    def __post_init__(self):
        for name in ("margin_mm", "healthy_box_mm", "default_spacing_mm"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if self.margin_px < 0 or self.healthy_box_px < 1:
            raise ValueError(f"margin {self.margin_px} px must be >= 0 and the healthy box side >= 1 px")

    @property
    def uses_mm(self) -> bool:
        return self.margin_mm is not None or self.healthy_box_mm is not None

    def spacing(self, file_spacing: Any, file: str = "image") -> tuple[float, float] | None:
        """The pixel spacing to use for an image (mm, row then column): the file's, else the default;
        raises ValueError when the mm options need one and there is none."""
        spacing = _spacing_pair(file_spacing)
        if spacing is None and self.default_spacing_mm is not None:
            spacing = (float(self.default_spacing_mm), float(self.default_spacing_mm))
        if spacing is None and self.uses_mm:
            raise ValueError(
                f"{file}: no pixel spacing in the file, so --margin-mm / --healthy-box-mm cannot be converted to "
                "pixels; pass --default-pixel-spacing MM, or give the sizes in pixels"
            )
        return spacing

    @staticmethod
    def _px(mm: float, spacing: tuple[float, float]) -> int:
        return int(round(mm / ((spacing[0] + spacing[1]) / 2.0)))  # square boxes: the mean of row and column

    def margin(self, spacing: tuple[float, float] | None) -> int:
        return self.margin_px if self.margin_mm is None else self._px(self.margin_mm, spacing)

    def healthy_side(self, spacing: tuple[float, float] | None) -> int:
        return self.healthy_box_px if self.healthy_box_mm is None else max(1, self._px(self.healthy_box_mm, spacing))

    def lesion_box(self, points, image_shape: Sequence[int], spacing: tuple[float, float] | None) -> list[int]:
        """:func:`transforms.lesion_box` with this margin; the smallest side is the healthy box side."""
        from transforms import lesion_box

        return lesion_box(points, image_shape, margin=self.margin(spacing), min_size=self.healthy_side(spacing))

    def healthy_boxes(self, image, count: int, rng, spacing: tuple[float, float] | None, **kwargs) -> list[list[int]]:
        """:func:`transforms.sample_healthy_boxes` with this side."""
        from transforms import sample_healthy_boxes

        return sample_healthy_boxes(image, count, rng, size=self.healthy_side(spacing), **kwargs)

    def record_fields(self, file_spacing: Any) -> dict[str, Any]:
        """What every record of an image says: its file's pixel spacing (None if it has none) and ``apply_voi``."""
        spacing = _spacing_pair(file_spacing)
        return {"pixel_spacing": list(spacing) if spacing else None, "apply_voi": bool(self.apply_voi)}

    def datalist_fields(self) -> dict[str, Any]:
        """The settings a datalist states at its top."""
        return {
            "margin": {"mm": self.margin_mm} if self.margin_mm is not None else {"px": self.margin_px},
            "healthy_box": {"mm": self.healthy_box_mm} if self.healthy_box_mm is not None else {"px": self.healthy_box_px},
            "default_pixel_spacing_mm": self.default_spacing_mm,
            "apply_voi": bool(self.apply_voi),
        }


@dataclass(frozen=True)
class ReadRequest:
    """What a dataset reader is asked, ``read_X(root, request)``: the ``task`` (``"all"`` or
    ``"mass"``), the ``collector`` that a bad case goes to, the ``seed`` and number
    (``healthy_per_image``) of the healthy boxes per healthy image, and the patch ``geometry``."""

    task: str
    collector: CaseCollector
    seed: int = 2021
    healthy_per_image: int = 5
    geometry: PatchGeometry = field(default_factory=PatchGeometry)

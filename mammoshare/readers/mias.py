"""mini-MIAS (Mammographic Image Analysis Society mini-database) -> datalist records.

Input: ``Info.txt`` in ``root`` (or one folder below it) and the images ``mdbNNN.pgm`` (binary PGM
P5, 8-bit, 1024x1024) beside it, or the same images converted to PNG (``mdbNNN.png``) as many
copies ship them; images elsewhere under ``root`` are found too.

``Info.txt`` is a free-text header, then one row per abnormality: ``REFNUM BG CLASS SEVERITY X Y
RADIUS`` (an image with two masses has two rows; NORM rows have only ``REFNUM BG NORM``).

* ``BG``, the background tissue, is recorded as ``background_tissue`` and mapped to ``density``
  (:data:`DENSITY_OF_BG`): F fatty -> 1, G fatty-glandular -> 2, D dense-glandular -> 3. MIAS
  predates the ACR categories; this ordinal mapping (D covers ACR 3 and 4, its lower bound is used)
  only serves the split's density stratification and reports.
* ``CLASS`` -> lesion type (:data:`LESION_TYPE_OF_CLASS`): CALC calcification; CIRC, SPIC, MISC
  mass; ARCH distortion; ASYM asymmetry. The ``mass`` task keeps CIRC, SPIC and MISC.
* ``SEVERITY`` B or M, recorded as ``severity``.
* ``X, Y`` the centre with the origin at the BOTTOM-left corner: column = X, row = 1024 - Y.
  ``RADIUS`` encloses the abnormality. The lesion box is :func:`transforms.lesion_box` of the
  circle's bounding box (the ``geometry``'s margin, in px or in mm at 0.2 mm per pixel) (clipped to the image when the circle reaches past an edge; a centre
  outside the image is an error).
* Rows without a location (diffuse calcifications written ``*NOTE 3*``, the CIRC row without
  coordinates) give no record; they are reported (logged, and listed in the datalist's ``notes``),
  not errors.
* Patients: the films come in pairs, one woman each (mdb001/mdb002, mdb003/mdb004, ...), odd
  numbers the right breast and even numbers the left. ``patient_id`` is the pair (``mdb001_002``),
  so the split never separates a woman's two breasts.
* Healthy records come from NORM images only: ``healthy_per_image`` random boxes with at most 40%
  background, where the padding that centres each film in the 1024 matrix (constant rows and
  columns at the border) counts as background.
* Every record carries ``pixel_spacing`` [0.2, 0.2] mm (the mini-MIAS resolution, 200 micrometre),
  ``refnum``, ``mias_class``, ``severity``, ``background_tissue`` and ``film`` True; view MLO.

Bad input, reported through the collector with the file and the row (``--skip-bad`` skips it): a
row with an unknown REFNUM, BG, CLASS or SEVERITY, non-numeric or incomplete coordinates, a
circle whose centre lies outside the image, a missing image, a PGM that is not binary 8-bit
1024x1024, a NORM image that also has abnormality rows, an image without room for healthy boxes.
"""

from __future__ import annotations

import logging
import os
import re
from collections import defaultdict
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from transforms import MammogramError, read_mammogram

from ..datalist import CaseCollector, CaseError, DatalistError, image_rng
from ..extraction import PatchGeometry, ReadRequest
from ..layouts import MIAS_INFO
from .records import LesionRow, attempt, case_of_rows, healthy_records, lesion_records

__all__ = [
    "read_mias",
    "parse_info",
    "find_info",
    "padding_mask",
    "check_image_file",
    "MiasRow",
    "MIAS_SIZE",
    "PIXEL_SPACING_MM",
    "DENSITY_OF_BG",
    "LESION_TYPE_OF_CLASS",
    "MASS_CLASSES",
]

logger = logging.getLogger(__name__)

SOURCE = "mias"
#: every mini-MIAS image is this many pixels square
MIAS_SIZE = 1024
#: mini-MIAS pixel size in mm (the 50 micrometre MIAS scans reduced to 200 micrometre)
PIXEL_SPACING_MM = 0.2
MIAS_SPACING = (PIXEL_SPACING_MM, PIXEL_SPACING_MM)
#: background tissue letter -> the ordinal density the datalist records
DENSITY_OF_BG = {"F": 1, "G": 2, "D": 3}
BG_NAMES = {"F": "fatty", "G": "fatty-glandular", "D": "dense-glandular"}
#: abnormality class -> lesion type (NORM has none)
LESION_TYPE_OF_CLASS = {
    "CALC": "calcification", "CIRC": "mass", "SPIC": "mass", "MISC": "mass", "ARCH": "distortion",
    "ASYM": "asymmetry",
}
CLASSES = (*LESION_TYPE_OF_CLASS, "NORM")
MASS_CLASSES = ("CIRC", "SPIC", "MISC")
SEVERITIES = ("B", "M")
INFO_NAMES = (MIAS_INFO.lower(),)
_REFNUM = re.compile(r"^mdb(\d{3})$", re.IGNORECASE)
_IMAGE_NAME = re.compile(r"^(mdb\d{3})\.(pgm|png)$", re.IGNORECASE)
_TABLE_HEADER = ("REFNUM", "BG", "CLASS", "SEVERITY")


@dataclass
class MiasRow:
    """One row of the ``Info.txt`` table."""

    line: int
    refnum: str  # "mdb001"
    bg: str
    mias_class: str
    severity: str | None
    centre: tuple[float, float] | None  # (X, Y) as written, origin bottom-left
    radius: float | None
    no_location: str = ""  # why a lesion row has no location, "" when it has one (or is NORM)

    @property
    def number(self) -> int:
        return int(self.refnum[3:])

    @property
    def case(self) -> str:
        return f"line {self.line}: {self.refnum} {self.mias_class}"


def find_info(root: str | os.PathLike) -> Path:
    """``Info.txt`` (any case) in ``root`` or in one of its subfolders; raises DatalistError."""
    root = Path(root)
    for folder in (root, *sorted(p for p in root.iterdir() if p.is_dir())):
        for child in sorted(folder.iterdir()):
            if child.is_file() and child.name.lower() in INFO_NAMES:
                return child
    raise DatalistError(
        f"{root}: no Info.txt found; mini-MIAS ships Info.txt (a header, then rows REFNUM BG CLASS SEVERITY X Y "
        "RADIUS) beside the mdbNNN.pgm images: pass that folder as --root"
    )


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a number") from None
    if not np.isfinite(value):
        raise ValueError(f"{what} {text!r} is not a finite number")
    return value


def _parse_row(line: int, tokens: list[str]) -> MiasRow:
    refnum = tokens[0]
    if not _REFNUM.match(refnum):
        raise ValueError(f"REFNUM {refnum!r} is not of the form mdbNNN")
    refnum = refnum.lower()
    if len(tokens) < 3:
        raise ValueError(f"{refnum}: a row needs at least REFNUM BG CLASS, got {' '.join(tokens)!r}")
    bg, mias_class = tokens[1].upper(), tokens[2].upper()
    if bg not in DENSITY_OF_BG:
        raise ValueError(f"{refnum}: unknown background tissue {tokens[1]!r}; expected F, G or D")
    if mias_class not in CLASSES:
        raise ValueError(f"{refnum}: unknown class {tokens[2]!r}; expected one of {', '.join(CLASSES)}")
    rest = tokens[3:]
    if mias_class == "NORM":
        if rest:
            raise ValueError(f"{refnum}: a NORM row has no severity or location, got {' '.join(rest)!r}")
        return MiasRow(line, refnum, bg, mias_class, None, None, None)
    if not rest:
        raise ValueError(f"{refnum}: a {mias_class} row needs a SEVERITY (B or M)")
    severity = rest[0].upper()
    if severity not in SEVERITIES:
        raise ValueError(f"{refnum}: unknown severity {rest[0]!r}; expected B or M")
    location = rest[1:]
    if not location:
        return MiasRow(line, refnum, bg, mias_class, severity, None, None, "no coordinates given")
    if location[0].upper().startswith("*NOTE"):
        return MiasRow(line, refnum, bg, mias_class, severity, None, None, f"location given as {' '.join(location)}")
    if len(location) != 3:
        raise ValueError(f"{refnum}: expected X Y RADIUS after the severity, got {' '.join(location)!r}")
    x, y, radius = (_number(v, name) for v, name in zip(location, ("X", "Y", "RADIUS")))
    if radius <= 0:
        raise ValueError(f"{refnum}: RADIUS {location[2]} is not positive")
    return MiasRow(line, refnum, bg, mias_class, severity, (x, y), radius)


def parse_info(path: str | os.PathLike, collector: CaseCollector) -> list[MiasRow]:
    """The table rows of an ``Info.txt``: everything before the first ``mdbNNN`` line is the free-text
    header; after it, blank lines are skipped and every other line must be a valid row (a bad one
    goes through ``collector``). Raises DatalistError when the file has no table."""
    path = Path(path)
    try:
        text = path.read_text(encoding="latin-1")
    except OSError as e:
        raise DatalistError(f"{path}: cannot read ({e})") from e
    rows: list[MiasRow] = []
    in_table = False
    for line, content in enumerate(text.splitlines(), start=1):
        tokens = content.split()
        if not tokens:
            continue
        if not in_table:
            if not _REFNUM.match(tokens[0]):
                continue  # free-text header
            in_table = True
        if tuple(t.upper() for t in tokens[:4]) == _TABLE_HEADER:
            continue  # a column header line
        with collector.case(path, f"line {line}: {content.strip()[:60]}"):
            rows.append(_parse_row(line, tokens))
    if not in_table:
        raise DatalistError(
            f"{path}: no table row found; after the free-text header, rows like 'mdb001 G CIRC B 535 425 197' "
            "(REFNUM BG CLASS SEVERITY X Y RADIUS) are expected"
        )
    return rows


def _image_index(root: Path, info: Path) -> dict[str, Path]:
    """``{refnum: image file}``: the PGM beside Info.txt first, then a PNG there, then anywhere under root."""
    found: dict[str, list[Path]] = defaultdict(list)
    for p in sorted([*info.parent.iterdir(), *root.rglob("*")]):
        m = _IMAGE_NAME.match(p.name)
        if m and p.is_file():
            found[m.group(1).lower()].append(p)
    index = {}
    for refnum, paths in found.items():
        paths = sorted(set(paths), key=lambda p: (p.parent != info.parent, p.suffix.lower() != ".pgm", str(p)))
        index[refnum] = paths[0]
    return index


def _pgm_header(path: Path) -> tuple[str, int, int, int]:
    """``(magic, width, height, maxval)`` of a PGM/PNM file (comments skipped)."""
    with open(path, "rb") as f:
        head = f.read(512)
    tokens: list[bytes] = []
    for raw in head.split(b"\n"):
        raw = raw.split(b"#", 1)[0]
        tokens.extend(raw.split())
        if len(tokens) >= 4:
            break
    if not tokens or not tokens[0].startswith(b"P"):
        raise MammogramError(path, "not a PGM file (no P5 magic number)")
    magic = tokens[0].decode("ascii", "replace")
    if magic != "P5":
        kind = "ASCII PGM (P2)" if magic == "P2" else f"{magic} file"
        raise MammogramError(path, f"{kind}; mini-MIAS images are binary PGM (P5), 8-bit, 1024x1024")
    try:
        width, height, maxval = (int(t) for t in tokens[1:4])
    except ValueError:
        raise MammogramError(path, "truncated or malformed PGM header") from None
    return magic, width, height, maxval


def check_image_file(path: str | os.PathLike) -> None:
    """Raise :class:`~transforms.MammogramError` unless ``path`` is an 8-bit 1024x1024 greyscale PGM (P5)
    or PNG."""
    path = Path(path)
    if path.suffix.lower() == ".pgm":
        _, width, height, maxval = _pgm_header(path)
        bits = "8-bit" if maxval <= 255 else f"16-bit (maxval {maxval})"
    else:
        from PIL import Image

        try:
            with Image.open(path) as img:
                width, height = img.size
                mode = img.mode
        except Exception as e:
            raise MammogramError(path, f"cannot read image ({type(e).__name__}: {e})") from e
        bits = "8-bit" if mode in ("L", "P", "LA", "RGB", "RGBA") else f"mode {mode}"
    if bits != "8-bit" or (width, height) != (MIAS_SIZE, MIAS_SIZE):
        raise MammogramError(
            path, f"{bits} {width}x{height} image; mini-MIAS images are 8-bit {MIAS_SIZE}x{MIAS_SIZE}"
        )


def padding_mask(image: np.ndarray) -> np.ndarray:
    """Boolean ``(H, W)`` mask of the padding around a film: the rows and columns at the image border
    that hold one constant value (mini-MIAS centres each film in a padded 1024 matrix)."""
    image = np.asarray(image)
    height, width = image.shape
    constant_rows = image.max(axis=1) == image.min(axis=1)
    constant_cols = image.max(axis=0) == image.min(axis=0)
    mask = np.zeros(image.shape, bool)

    def run(flags: np.ndarray) -> int:
        return int(np.argmin(flags)) if not flags.all() else len(flags)

    top, bottom = run(constant_rows), run(constant_rows[::-1])
    left, right = run(constant_cols), run(constant_cols[::-1])
    mask[:top] = True
    mask[height - bottom :] = True
    mask[:, :left] = True
    mask[:, width - right :] = True
    return mask


def _patient(number: int) -> str:
    first = number if number % 2 else number - 1
    return f"mdb{first:03d}_{first + 1:03d}"


def _common(row: MiasRow, geometry: PatchGeometry) -> dict[str, Any]:
    return dict(
        density=DENSITY_OF_BG[row.bg], laterality="L" if row.number % 2 == 0 else "R", view="MLO",
        refnum=row.refnum, background_tissue=row.bg, film=True, image_type="mammogram",
        **geometry.record_fields(MIAS_SPACING),
    )


def _circle_box(info: Path, row: MiasRow, geometry: PatchGeometry) -> list[int]:
    x, y = row.centre
    column, line = x, MIAS_SIZE - y  # origin at the bottom-left corner
    if not (0 <= column <= MIAS_SIZE - 1 and 0 <= line <= MIAS_SIZE - 1):
        raise CaseError(
            info, row.case,
            f"the circle's centre X={x:g} Y={y:g} (column {column:g}, row {line:g}) lies outside the "
            f"{MIAS_SIZE}x{MIAS_SIZE} image",
        )
    r = row.radius
    corners = np.clip([[column - r, line - r], [column + r, line + r]], 0, MIAS_SIZE - 1)
    return geometry.lesion_box(corners, (MIAS_SIZE, MIAS_SIZE), MIAS_SPACING)


def _circle_lesion(info: Path, row: MiasRow, first: MiasRow, geometry: PatchGeometry):
    """``(box, lesion types, record fields)`` of a located row; the centre as (column, row) of the image."""
    box = _circle_box(info, row, geometry)
    fields = {
        **_common(first, geometry), "mias_class": row.mias_class, "severity": row.severity,
        "centre": [row.centre[0], MIAS_SIZE - row.centre[1]], "radius": row.radius,
    }
    return box, [LESION_TYPE_OF_CLASS[row.mias_class]], fields


def _read_film(path: Path) -> np.ndarray:
    """The pixels of an 8-bit 1024x1024 film; raises MammogramError on any other file."""
    check_image_file(path)
    image, _ = read_mammogram(path)
    if image.shape != (MIAS_SIZE, MIAS_SIZE):
        raise MammogramError(path, f"decoded size {image.shape[1]}x{image.shape[0]}, not {MIAS_SIZE}x{MIAS_SIZE}")
    return image


def _healthy_boxes(image: np.ndarray, refnum: str, request: ReadRequest) -> list[list[int]]:
    """The healthy boxes of a NORM film, drawn with the seed and its REFNUM."""
    tissue = np.where(padding_mask(image), 0.0, image)  # the padding counts as background
    rng = image_rng(request.seed, refnum)
    return request.geometry.healthy_boxes(tissue, request.healthy_per_image, rng, MIAS_SPACING)


def read_mias(root: str | os.PathLike, request: ReadRequest) -> list[dict[str, Any]]:
    """Records of the mini-MIAS abnormalities (located ones of the task's classes) and of the NORM
    images, image by image in REFNUM order (see the module docstring)."""
    task, collector, geometry = request.task, request.collector, request.geometry
    root = Path(root)
    info = find_info(root)
    rows = parse_info(info, collector)
    index = _image_index(root, info)
    by_image: dict[str, list[MiasRow]] = defaultdict(list)
    for row in rows:
        by_image[row.refnum].append(row)
    unlisted = sorted(set(index) - set(by_image))
    if unlisted:
        logger.warning("%s: %d image(s) have no Info.txt row and are not used: %s", info, len(unlisted),
                       ", ".join(unlisted[:10]) + (" ..." if len(unlisted) > 10 else ""))
    wanted = MASS_CLASSES if task == "mass" else tuple(LESION_TYPE_OF_CLASS)
    records: list[dict[str, Any]] = []
    for refnum in sorted(by_image):
        image_rows = by_image[refnum]
        image_case = case_of_rows("Info.txt", (r.line for r in image_rows), refnum)
        classes = {r.mias_class for r in image_rows}
        if "NORM" in classes and len(image_rows) > 1:
            collector.add(info, image_case, "a NORM image that also has other rows; a normal image has one NORM row")
            continue
        if len({r.bg for r in image_rows}) > 1:
            logger.warning("%s [%s]: the rows disagree on BG; the first one (%s) is used", info, image_case, image_rows[0].bg)
        normal = classes == {"NORM"}
        used = [r for r in image_rows if r.mias_class in wanted]
        if not normal and not used:
            continue
        for r in used:
            if r.no_location:
                collector.note(info, r.case, f"{r.no_location}: no lesion record (and no healthy boxes) for {refnum}")
        located = [r for r in used if not r.no_location]
        if not normal and not located:
            continue
        path = index.get(refnum)
        if path is None:
            collector.add(
                info.parent / f"{refnum}.pgm", image_case,
                f"image not found (neither {refnum}.pgm nor {refnum}.png beside {info.name} or under {root})",
            )
            continue
        image = attempt(collector, path, image_case, lambda: _read_film(path))
        if image is None:
            continue
        first, patient = image_rows[0], _patient(image_rows[0].number)  # first: whose BG every record takes
        records += lesion_records(collector, path, SOURCE, [
            LesionRow(info, r.case, patient, partial(_circle_lesion, info, r, first, geometry)) for r in located
        ])
        if normal:
            records += healthy_records(
                collector, path, image_case, patient, SOURCE,
                lambda: _healthy_boxes(image, refnum, request),
                lambda: {
                    **_common(first, geometry), "mias_class": "NORM", "severity": None, "centre": None, "radius": None,
                },
            )
    return records

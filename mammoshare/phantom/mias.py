"""A small deterministic phantom of mini-MIAS in the real layout.

Written under ``root``::

    PHANTOM_README.txt    says that the data is synthetic
    Info.txt              a free-text header, then one row per abnormality: REFNUM BG CLASS SEVERITY X Y RADIUS
    mdb001.pgm ...        binary PGM (P5), 8-bit, 1024x1024: the film centred in a zero-padded matrix

As in the real release: films come in pairs, one woman each (mdb001/mdb002, ...), even numbers the
left breast and odd numbers the right; all views are MLO; X, Y are the abnormality's centre with
the origin at the BOTTOM-left corner (row = 1024 - Y); RADIUS encloses the abnormality; an image
can have two rows (two masses); NORM rows have neither severity nor location; one calcification
row is diffuse (``*NOTE 3*`` instead of a location) and one CIRC row has no coordinates.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import cv2
import numpy as np

from ..layouts import MIAS_INFO
from .synth import mark_phantom_root, synth_mammogram

__all__ = ["write_mias_phantom", "MIAS_SIZE", "FILM_SHAPE", "INFO_HEADER", "PHANTOM_PLAN"]

#: side of the square matrix every mini-MIAS image is padded to
MIAS_SIZE = 1024
#: rows, columns of the phantom's film inside the matrix (centred, zero padding around it)
FILM_SHAPE = (960, 720)

INFO_HEADER = """\
Mammographic Image Analysis Society (MIAS) mini-database: PHANTOM copy written by mammoshare.

The table below lists the films of this folder. Columns:

1st column: MIAS database reference number.
2nd column: Character of background tissue:
                F - Fatty
                G - Fatty-glandular
                D - Dense-glandular
3rd column: Class of abnormality present:
                CALC - Calcification
                CIRC - Well-defined/circumscribed masses
                SPIC - Spiculated masses
                MISC - Other, ill-defined masses
                ARCH - Architectural distortion
                ASYM - Asymmetry
                NORM - Normal
4th column: Severity of abnormality:
                B - Benign
                M - Malignant
5th, 6th columns: x, y image-coordinates of the centre of the abnormality.
7th column: Approximate radius (in pixels) of a circle enclosing the abnormality.

NOTES
=====
1) The list is arranged in pairs of films, each pair the left (even filename numbers) and right
   (odd filename numbers) mammograms of one woman.
2) All images are 1024 pixels x 1024 pixels, centred in the matrix.
3) When calcifications are present, centre locations and radii apply to clusters rather than
   individual calcifications. Where calcifications are distributed throughout the image, no
   location is given. The coordinate system origin is the bottom-left corner.

"""

#: CLASS -> the lesion kind drawn by :func:`~mammoshare.phantom.synth.synth_mammogram`
_DRAWN = {"CIRC": "mass", "MISC": "mass", "ASYM": "mass", "SPIC": "spiculated", "CALC": "calcification",
          "ARCH": "distortion"}

#: one entry per woman: (BG, rows of the right (odd) film, rows of the left (even) film); a row is
#: (CLASS, SEVERITY, location) with location "xy" (X Y RADIUS written), "note3" or "none"
PHANTOM_PLAN: tuple[tuple[str, list, list], ...] = (
    ("G", [("CIRC", "B", "xy")], [("NORM", None, None)]),
    ("D", [("NORM", None, None)], [("SPIC", "M", "xy")]),
    ("F", [("MISC", "B", "xy"), ("MISC", "B", "xy")], [("NORM", None, None)]),
    ("G", [("CALC", "M", "xy")], [("NORM", None, None)]),
    ("F", [("NORM", None, None)], [("NORM", None, None)]),
    ("D", [("CALC", "B", "note3")], [("NORM", None, None)]),
    ("F", [("CIRC", "B", "none")], [("CIRC", "M", "xy")]),
    ("G", [("ARCH", "M", "xy")], [("NORM", None, None)]),
    ("D", [("ASYM", "B", "xy")], [("CIRC", "B", "xy")]),
    ("G", [("NORM", None, None)], [("SPIC", "M", "xy")]),
    ("F", [("CIRC", "M", "xy")], [("NORM", None, None)]),
    ("D", [("NORM", None, None)], [("MISC", "M", "xy")]),
    ("G", [("SPIC", "B", "xy")], [("NORM", None, None)]),
    ("F", [("CIRC", "B", "xy")], [("NORM", None, None)]),
)
_DENSITY = {"F": 1, "G": 2, "D": 3}


def _rng(seed: int, name: str) -> np.random.RandomState:
    return np.random.RandomState((zlib.crc32(name.encode()) ^ (int(seed) & 0xFFFFFFFF)) & 0xFFFFFFFF)


def write_pgm(path: Path, pixels: np.ndarray) -> None:
    """Write an 8-bit ``(H, W)`` array as a binary PGM (P5)."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    height, width = pixels.shape
    path.write_bytes(f"P5\n{width} {height}\n255\n".encode("ascii") + pixels.tobytes())


def _film(seed: int, refnum: str, laterality: str, bg: str, rows: list) -> tuple[np.ndarray, list[str]]:
    """The padded 8-bit image of one film and its Info.txt rows."""
    kinds = [_DRAWN[cls] for cls, _, _ in rows if cls != "NORM"]
    diffuse = any(where == "note3" for _, _, where in rows)
    if diffuse:
        kinds = kinds + ["calcification", "calcification"]  # calcifications all over the breast
    rng = _rng(seed, refnum)
    # drawn at half the resolution and enlarged: a quarter of the cost, the same layout
    small = (FILM_SHAPE[0] // 2, FILM_SHAPE[1] // 2)
    phantom = synth_mammogram(rng, laterality, "MLO", _DENSITY[bg], kinds, small)
    film = cv2.resize((phantom.pixels >> 6).astype(np.uint8), FILM_SHAPE[::-1], interpolation=cv2.INTER_LINEAR)
    # digitised film: the film base outside the breast is dark, not zero; the padding is exactly zero
    film = np.maximum(film, rng.randint(1, 5, size=FILM_SHAPE).astype(np.uint8))
    top, left = (MIAS_SIZE - FILM_SHAPE[0]) // 2, (MIAS_SIZE - FILM_SHAPE[1]) // 2
    image = np.zeros((MIAS_SIZE, MIAS_SIZE), np.uint8)
    image[top : top + FILM_SHAPE[0], left : left + FILM_SHAPE[1]] = film
    lines, lesions = [], iter(phantom.lesions)
    for cls, severity, where in rows:
        if cls == "NORM":
            lines.append(f"{refnum} {bg} NORM")
            continue
        lesion = next(lesions)
        if where == "note3":
            lines.append(f"{refnum} {bg} {cls} {severity} *NOTE 3*")
            continue
        if where == "none":
            lines.append(f"{refnum} {bg} {cls} {severity}")
            continue
        points = (lesion.points if len(lesion.points) else lesion.contour) * 2 + 0.5  # half -> full resolution
        cx, cy = points.mean(axis=0)
        radius = math.ceil(float(np.hypot(*(points - (cx, cy)).T).max())) + 3
        x, row = int(round(cx)) + left, int(round(cy)) + top
        lines.append(f"{refnum} {bg} {cls} {severity} {x} {MIAS_SIZE - row} {radius}")  # origin bottom-left
    return image, lines


def write_mias_phantom(root: str | Path, seed: int = 2021) -> Path:
    """Write the mini-MIAS phantom (see the module docstring) under ``root``; returns ``root``.

    The same seed gives byte-identical files.
    """
    root = mark_phantom_root(root, "mini-MIAS (Info.txt and mdbNNN.pgm)", __name__, seed)
    table: list[str] = []
    for woman, (bg, right_rows, left_rows) in enumerate(PHANTOM_PLAN):
        for offset, laterality, rows in ((1, "R", right_rows), (2, "L", left_rows)):
            refnum = f"mdb{2 * woman + offset:03d}"
            image, lines = _film(seed, refnum, laterality, bg, rows)
            write_pgm(root / f"{refnum}.pgm", image)
            table.extend(lines)
    (root / MIAS_INFO).write_text(INFO_HEADER + "\n".join(table) + "\n")
    return root

"""A small deterministic phantom of BCDR (Breast Cancer Digital Repository) in the real layout.

Written under ``root``::

    PHANTOM_README.txt                  says that the data is synthetic
    BCDR-D01_dataset/                   digital mammograms with outlined lesions (16 patients)
        bcdr_d01_outlines.csv           one row per lesion outline (a lesion is outlined on 2 views)
        bcdr_d01_img.csv                one row per image
        patient_<pid>/study_<sid>/img_<pid>_<sid>_<series>_<view>.tif   16-bit greyscale
    BCDR-F01_dataset/                   digitised film mammograms with outlined lesions (4 patients)
        bcdr_f01_outlines.csv, bcdr_f01_img.csv, patient_*/...          8-bit greyscale
    BCDR-DN01_dataset/                  digital mammograms of healthy patients (12 patients)
        bcdr_dn01_img.csv, patient_*/...                                16-bit greyscale, one 8-bit RGB
                                                                        image with equal channels

As in the real files, ``image_filename`` and the ``lw_x_points`` / ``lw_y_points`` lists (integer
pixel coordinates, x = column, y = row) start with a space, view names in file names are RCC, LCC,
RO, LO, ``image_view`` is 1 RCC, 2 LCC, 3 RMLO, 4 LMLO and ``image_type_id`` of the img CSVs is the
0-based form of the same code. Patient ids restart in every dataset folder (the phantom reuses some
on purpose). A few densities are ``NaN`` or blank. ``mammography_type`` is written as 1 and not used.

Lesions: plain and spiculated masses (``mammography_nodule``), calcification clusters
(``mammography_calcification`` / ``mammography_microcalcification``; the outline is the cluster's
convex hull), architectural and stroma distortions, one axillary adenopathy and one lesion without
any flag.
"""

from __future__ import annotations

import csv
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from ..layouts import BCDR_FLAG_COLUMNS as FLAG_COLUMNS
from ..layouts import BCDR_IMG_COLUMNS as IMG_COLUMNS
from ..layouts import BCDR_OUTLINE_COLUMNS as OUTLINE_COLUMNS
from ..layouts import BCDR_VIEWS, bcdr_csv_name, bcdr_folder
from .synth import PHANTOM_SHAPE, mark_phantom_root, synth_mammogram

__all__ = ["write_bcdr_phantom", "OUTLINE_COLUMNS", "IMG_COLUMNS", "BCDR_VIEWS"]

#: phantom lesion kind -> (kind drawn by synth_mammogram, flag columns set to 1)
_LESION_KINDS = {
    "mass": ("mass", ("mammography_nodule",)),
    "spiculated": ("spiculated", ("mammography_nodule",)),
    "calcified_mass": ("mass", ("mammography_nodule", "mammography_calcification")),
    "calcification": ("calcification", ("mammography_calcification",)),
    "microcalcification": ("calcification", ("mammography_microcalcification",)),
    "architectural": ("distortion", ("mammography_architectural_distortion",)),
    "stroma": ("distortion", ("mammography_stroma_distortion",)),
    "adenopathy": ("mass", ("mammography_axillary_adenopathy",)),
    "unflagged": ("mass", ()),
}

# (patient id, side, lesion kinds on that side, density as written, both sides imaged)
_D01 = [
    (3, "L", ["mass"], "2", True),
    (5, "R", ["spiculated"], "3", False),
    (8, "L", ["mass", "calcification"], "2", False),
    (11, "R", ["spiculated"], "1", True),
    (12, "L", ["mass"], "4", False),
    (17, "R", ["calcified_mass"], "3", False),
    (20, "L", ["mass"], "NaN", False),
    (24, "R", ["spiculated", "architectural"], "2", True),
    (26, "L", ["mass"], "1", False),
    (31, "R", ["mass"], "3", False),
    (33, "L", ["microcalcification"], "2", False),
    (36, "R", ["calcification", "microcalcification"], "3", True),
    (40, "L", ["architectural"], "2", False),
    (42, "R", ["stroma"], "4", False),
    (47, "L", ["adenopathy"], "2", False),
    (51, "R", ["unflagged"], "1", False),
]
_F01 = [
    (3, "R", ["mass"], "3", False),
    (8, "L", ["spiculated", "calcification"], " ", False),
    (14, "R", ["microcalcification"], "2", False),
    (19, "L", ["mass"], "4", True),
]
# (patient id, views imaged, density as written); DN01 ids overlap lesion ids on purpose
_DN01 = [
    (2, (1, 2, 3, 4), "2"),
    (3, (1, 2), "1"),
    (6, (3, 4), "3"),
    (9, (1, 2, 3), "2"),
    (10, (1, 2, 3, 4), "4"),
    (13, (1, 3), "NaN"),
    (15, (2, 4), "2"),
    (18, (1, 2, 3, 4), "3"),
    (21, (1, 2), "1"),
    (23, (3, 4, 1), "2"),
    (27, (2, 4), "3"),
    (30, (1, 2, 3, 4), "2"),
]
#: the DN01 image stored as 8-bit RGB with equal channels: (patient id, view code)
RGB_IMAGE = (9, 3)
FILM_SHAPE = (608, 480)  # film scans have another size than the digital images


def _rng(seed: int, name: str) -> np.random.RandomState:
    return np.random.RandomState((zlib.crc32(name.encode()) ^ (int(seed) & 0xFFFFFFFF)) & 0xFFFFFFFF)


def _points(values: np.ndarray) -> str:
    return "".join(f" {int(v)}" for v in values)  # leading space, as in the real files


@dataclass
class _Dataset:
    code: str  # D01, F01, DN01
    film: bool

    @property
    def folder(self) -> str:
        return bcdr_folder(self.code)

    def csv_name(self, kind: str) -> str:
        return bcdr_csv_name(self.code, kind)


def _write_image(path: Path, pixels14: np.ndarray, film: bool, rgb: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if film or rgb:
        data = (pixels14 >> 6).astype(np.uint8)  # 14 -> 8 bits
    else:
        data = (pixels14.astype(np.uint32) << 2).astype(np.uint16)  # 14 -> 16 bits
    if rgb:
        tifffile.imwrite(path, np.stack([data] * 3, axis=-1), photometric="rgb", metadata=None)
    else:
        tifffile.imwrite(path, data, photometric="minisblack", metadata=None)


def _write_csv(path: Path, columns, rows) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)


def _image_name(pid: int, sid: int, series: int, code: int) -> str:
    return f"patient_{pid}/study_{sid}/img_{pid}_{sid}_{series}_{BCDR_VIEWS[code][2]}.tif"


def _write_lesion_dataset(root: Path, ds: _Dataset, plan, seed: int, first_lesion_id: int) -> None:
    folder = root / ds.folder
    shape = FILM_SHAPE if ds.film else PHANTOM_SHAPE
    outlines, images = [], []
    lesion_id, segmentation_id = first_lesion_id, 10 * first_lesion_id
    for pid, side, kinds, density, both_sides in plan:
        sid, series = pid + 100, 1
        age = int(_rng(seed, f"{ds.code}/age/{pid}").randint(35, 86))
        classification = ["Benign", "Malign"]
        lesion_ids = list(range(lesion_id, lesion_id + len(kinds)))
        lesion_id += len(kinds)
        classes = [classification[int(_rng(seed, f"{ds.code}/class/{lid}").rand() < 0.5)] for lid in lesion_ids]
        codes = [c for c in sorted(BCDR_VIEWS) if both_sides or BCDR_VIEWS[c][0] == side]
        for code in codes:
            laterality, view, view_name = BCDR_VIEWS[code]
            name = _image_name(pid, sid, series, code)
            drawn = [_LESION_KINDS[k][0] for k in kinds] if laterality == side else []
            numeric_density = int(density) if density.strip().isdigit() else 2
            phantom = synth_mammogram(_rng(seed, f"{ds.code}/{name}"), laterality, view, numeric_density, drawn, shape)
            _write_image(folder / name, phantom.pixels, ds.film)
            images.append([pid, sid, series, " " + name, view_name, code - 1, age, density])
            for kind, lid, cls, lesion in zip(kinds if drawn else [], lesion_ids, classes, phantom.lesions):
                contour = np.round(lesion.contour).astype(np.int64)
                contour[:, 0] = np.clip(contour[:, 0], 0, shape[1] - 1)
                contour[:, 1] = np.clip(contour[:, 1], 0, shape[0] - 1)
                flags = [int(col in _LESION_KINDS[kind][1]) for col in FLAG_COLUMNS]
                outlines.append(
                    [pid, sid, series, lid, segmentation_id, code, " " + name, 1,
                     _points(contour[:, 0]), _points(contour[:, 1]), *flags, age, density, cls]
                )
                segmentation_id += 1
    _write_csv(folder / ds.csv_name("outlines"), OUTLINE_COLUMNS, outlines)
    _write_csv(folder / ds.csv_name("img"), IMG_COLUMNS, images)


def _write_normal_dataset(root: Path, ds: _Dataset, plan, seed: int) -> None:
    folder = root / ds.folder
    images = []
    for pid, codes, density in plan:
        sid, series = pid + 200, 1
        age = int(_rng(seed, f"{ds.code}/age/{pid}").randint(35, 86))
        numeric_density = int(density) if density.strip().isdigit() else 2
        for code in sorted(codes):
            laterality, view, view_name = BCDR_VIEWS[code]
            name = _image_name(pid, sid, series, code)
            phantom = synth_mammogram(_rng(seed, f"{ds.code}/{name}"), laterality, view, numeric_density, ())
            _write_image(folder / name, phantom.pixels, ds.film, rgb=(pid, code) == RGB_IMAGE)
            images.append([pid, sid, series, " " + name, view_name, code - 1, age, density])
    _write_csv(folder / ds.csv_name("img"), IMG_COLUMNS, images)


def write_bcdr_phantom(root: str | Path, seed: int = 2021) -> Path:
    """Write the BCDR phantom (D01, F01, DN01; see the module docstring) under ``root``; returns ``root``.

    The same seed gives byte-identical files.
    """
    root = mark_phantom_root(root, "BCDR (BCDR-D01_dataset, BCDR-F01_dataset, BCDR-DN01_dataset)", __name__, seed)
    _write_lesion_dataset(root, _Dataset("D01", film=False), _D01, seed, first_lesion_id=1)
    _write_lesion_dataset(root, _Dataset("F01", film=True), _F01, seed, first_lesion_id=101)
    _write_normal_dataset(root, _Dataset("DN01", film=False), _DN01, seed)
    return root

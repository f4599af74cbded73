"""BCDR (Breast Cancer Digital Repository) -> datalist records.

Lesions come from every ``BCDR-<code>_dataset/bcdr_<code>_outlines.csv`` found under the root
(digital D01, D02; digitised film F01, F02, F03): each outline row is one lesion record (a lesion
is usually outlined on both views of its breast, so it gives two records). Healthy patches come
from the digital normals, ``BCDR-DN01_dataset/bcdr_dn01_img.csv``: ``healthy_per_image`` random
boxes per image with at most 40% background.

* Contour: ``lw_x_points`` (columns) and ``lw_y_points`` (rows), space-separated pixel coordinates.
  Box: :func:`transforms.lesion_box` (60 px margin, at least 128 px, shifted inside the image).
* Lesion types from the flags: ``mammography_nodule`` -> mass; ``mammography_calcification`` or
  ``mammography_microcalcification`` -> calcification; ``mammography_architectural_distortion`` or
  ``mammography_stroma_distortion`` -> distortion; ``mammography_axillary_adenopathy`` -> adenopathy;
  no flag -> other. The ``mass`` task keeps only the rows with ``mammography_nodule`` = 1.
* ``patient_id`` is prefixed with the dataset code (``"D01_3"``, ``"F01_3"``, ``"DN01_3"``): BCDR
  numbers patients per dataset folder, so equal numbers in two folders are not known to be one
  person. (If they are the same person, a split by these ids may put them in two subsets; pass a
  split file to avoid that.)
* ``density``: ACR 1-4, or None when the CSV holds anything else (``NaN``, blank).
* Laterality and view: ``image_view`` 1 RCC, 2 LCC, 3 RMLO, 4 LMLO (outlines); ``image_type_name``
  RCC/LCC/RO/LO, else the 0-based ``image_type_id`` (img CSV).
* Extra record fields: ``film`` (True for the F datasets) and ``classification`` (``Benign`` /
  ``Malign`` for lesions, None for healthy records).

A CSV with a header and no rows is a bad case (an error, or skipped with ``--skip-bad``), never a
silent dataset folder without lesions. Every image is decoded once with :func:`transforms.read_mammogram` (so that a corrupt or colour
file is reported now, not during training). Headers and values are stripped of spaces.
"""

from __future__ import annotations

import csv
import logging
import os
from collections import defaultdict
from functools import partial
from pathlib import Path
from typing import Any

from transforms import read_mammogram

from ..datalist import CaseCollector, CaseError, DatalistError, image_rng
from ..extraction import PatchGeometry, ReadRequest
from ..layouts import BCDR_FLAG_COLUMNS, BCDR_FOLDER, BCDR_VIEWS, bcdr_csv_name
from .records import LesionRow, attempt, case_of_rows, healthy_records, lesion_records

__all__ = ["read_bcdr", "find_bcdr_csvs", "OUTLINE_REQUIRED", "HEALTHY_REQUIRED", "HEALTHY_DATASETS"]

logger = logging.getLogger(__name__)

SOURCE = "bcdr"
#: the outline CSV's flag columns -> lesion type
FLAG_TYPES = dict(zip(BCDR_FLAG_COLUMNS, ("mass", "calcification", "calcification", "adenopathy", "distortion", "distortion")))
OUTLINE_REQUIRED = (
    "patient_id", "study_id", "series", "lesion_id", "segmentation_id", "image_view", "image_filename",
    "lw_x_points", "lw_y_points", *FLAG_TYPES, "density", "classification",
)
HEALTHY_REQUIRED = ("patient_id", "study_id", "image_filename", "image_type_name", "image_type_id", "density")
#: dataset codes whose img CSV lists healthy images
HEALTHY_DATASETS = ("DN01",)
#: image_view code -> (laterality, view)
VIEW_CODES = {code: (side, view) for code, (side, view, _) in BCDR_VIEWS.items()}
VIEW_NAMES = {"RCC": 1, "LCC": 2, "RO": 3, "RMLO": 3, "LO": 4, "LMLO": 4}

_EMPTY_CSV = (
    "the CSV has its header but no {what} rows, so this dataset folder gives no {gives}; "
    "restore the CSV from the BCDR download, or remove the folder"
)


def _dataset_folders(root: Path) -> list[Path]:
    """``BCDR-*_dataset`` folders: the root itself, its children and grandchildren."""
    candidates = [root, *root.glob("*"), *root.glob("*/*")]
    return sorted({p for p in candidates if p.is_dir() and BCDR_FOLDER.match(p.name)})


def find_bcdr_csvs(root: str | os.PathLike) -> tuple[list[tuple[str, Path]], list[tuple[str, Path]]]:
    """``(outline CSVs, healthy img CSVs)`` under ``root`` as ``(dataset code, path)`` pairs."""
    outlines, healthy = [], []
    for folder in _dataset_folders(Path(root)):
        code = BCDR_FOLDER.match(folder.name).group(1).upper()
        outline_csv = folder / bcdr_csv_name(code, "outlines")
        img_csv = folder / bcdr_csv_name(code, "img")
        if outline_csv.is_file():
            outlines.append((code, outline_csv))
        if code in HEALTHY_DATASETS and img_csv.is_file():
            healthy.append((code, img_csv))
    return outlines, healthy


def _read_csv(path: Path, required) -> list[tuple[int, dict[str, str]]]:
    """Rows as ``(line number, {column: stripped value})``; raises DatalistError on missing columns."""
    try:
        with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise DatalistError(f"{path}: empty CSV; a header with the columns {list(required)} is expected")
            header = [h.strip() for h in header]
            missing = [c for c in required if c not in header]
            if missing:
                raise DatalistError(f"{path}: CSV without the column(s) {missing}; found {header}")
            rows = []
            for values in reader:
                if not any(v.strip() for v in values):
                    continue  # blank line
                values = [v.strip() for v in values] + [""] * (len(header) - len(values))
                rows.append((reader.line_num, dict(zip(header, values))))
            return rows
    except OSError as e:
        raise DatalistError(f"{path}: cannot read CSV ({e})") from e
    except csv.Error as e:
        raise DatalistError(f"{path}: malformed CSV ({e})") from e


def _read_rows(path: Path, required, collector: CaseCollector, what: str, gives: str) -> list[tuple[int, dict]]:
    """:func:`_read_csv`; a CSV with a header and no rows is a bad case (never a silently empty folder)."""
    rows = _read_csv(path, required)
    if not rows:
        collector.add(path, "whole file", _EMPTY_CSV.format(what=what, gives=gives))
    return rows


def _int(value: str, what: str) -> int:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{what} {value!r} is not a number") from None
    if not number.is_integer():
        raise ValueError(f"{what} {value!r} is not an integer")
    return int(number)


def _flag(row: dict[str, str], column: str) -> bool:
    value = row[column]
    if value in ("", "nan", "NaN"):
        return False
    return _int(value, column) != 0


def _density(value: str) -> int | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return int(number) if number in (1, 2, 3, 4) else None


def _points(row: dict[str, str]) -> list[tuple[float, float]]:
    xs, ys = row["lw_x_points"].split(), row["lw_y_points"].split()
    if not xs and not ys:
        raise ValueError("empty contour: lw_x_points and lw_y_points hold no points")
    if len(xs) != len(ys):
        raise ValueError(f"lw_x_points has {len(xs)} values but lw_y_points has {len(ys)}")
    try:
        return [(float(x), float(y)) for x, y in zip(xs, ys)]
    except ValueError:
        bad = next(v for v in xs + ys if not _is_number(v))
        raise ValueError(f"contour coordinate {bad!r} is not a number") from None


def _is_number(value: str) -> bool:
    try:
        float(value)
        return True
    except ValueError:
        return False


def _id_key(value: str) -> tuple:
    """Sort numeric ids as numbers and others as text."""
    return (0, float(value), "") if _is_number(value) else (1, 0.0, value)


def _lesion_types(row: dict[str, str]) -> list[str]:
    types = {kind for column, kind in FLAG_TYPES.items() if _flag(row, column)}
    return sorted(types) or ["other"]


def _healthy_view(row: dict[str, str]) -> tuple[str | None, str | None]:
    code = VIEW_NAMES.get(row["image_type_name"].upper())
    if code is None and _is_number(row["image_type_id"]):
        code = int(float(row["image_type_id"])) + 1  # image_type_id is 0-based
    return VIEW_CODES.get(code, (None, None))


def _image_path(folder: Path, filename: str) -> Path:
    if not filename:
        raise ValueError("image_filename is empty")
    return folder / filename.replace("\\", "/")


def _row_case(line: int, row: dict[str, str]) -> str:
    return (
        f"line {line}: patient {row['patient_id']}, study {row['study_id']}, "
        f"lesion {row['lesion_id']}, segmentation {row['segmentation_id']}"
    )


def _lesion_groups(code: str, csv_path: Path, task: str, collector: CaseCollector):
    """Outline rows of one CSV grouped by image: ``{image path: [(line, row, types)]}``."""
    groups: dict[Path, list] = defaultdict(list)
    for line, row in _read_rows(csv_path, OUTLINE_REQUIRED, collector, what="outline", gives="lesions"):
        case = _row_case(line, row)
        with collector.case(csv_path, case):
            types = _lesion_types(row)
            if task == "mass" and "mass" not in types:
                continue
            if not row["patient_id"]:
                raise ValueError("patient_id is empty")
            _int(row["image_view"], "image_view")
            groups[_image_path(csv_path.parent, row["image_filename"])].append((line, row, types))
    return groups


def _lesion_records(code, csv_path, image_path, rows, collector, geometry: PatchGeometry) -> list[dict[str, Any]]:
    first = rows[0][1]
    lesions = ", ".join(sorted({row["lesion_id"] for _, row, _ in rows}, key=_id_key))
    image_case = case_of_rows(
        csv_path.name, (line for line, _, _ in rows),
        f"patient {first['patient_id']}, study {first['study_id']}, lesion(s) {lesions}",
    )
    decoded = attempt(collector, image_path, image_case, lambda: _decode(image_path, geometry))
    if decoded is None:
        return []
    image, meta, spacing = decoded

    def outline(line: int, row: dict[str, str], types: list[str]):
        case = _row_case(line, row)
        try:
            box = geometry.lesion_box(_points(row), image.shape, spacing)
        except ValueError as e:  # a bad contour is the row's case; the image says what it was measured on
            raise CaseError(csv_path, case, f"{e} (image {image_path})") from e
        laterality, view = VIEW_CODES.get(_int(row["image_view"], "image_view"), (None, None))
        return box, types, _fields(code, row, laterality, view, meta, geometry, row["classification"] or None)

    rows = sorted(rows, key=lambda r: (_id_key(r[1]["lesion_id"]), _id_key(r[1]["segmentation_id"]), r[0]))
    return lesion_records(collector, image_path, SOURCE, [
        LesionRow(csv_path, _row_case(line, row), f"{code}_{row['patient_id']}", partial(outline, line, row, types))
        for line, row, types in rows
    ])


def _healthy_records(code, csv_path, line, row, seed, count, collector, geometry: PatchGeometry) -> list[dict[str, Any]]:
    filename = row["image_filename"]
    case = f"{csv_path.name} line {line}: patient {row['patient_id']}, study {row['study_id']}"
    image_path = attempt(collector, csv_path, case, lambda: _healthy_image(csv_path, row))
    if image_path is None:
        return []
    decoded = attempt(collector, image_path, case, lambda: _decode(image_path, geometry))
    if decoded is None:
        return []
    image, meta, spacing = decoded

    def fields() -> dict[str, Any]:
        laterality, view = _healthy_view(row)
        return _fields(code, row, laterality, view, meta, geometry, classification=None)

    return healthy_records(
        collector, image_path, case, f"{code}_{row['patient_id']}", SOURCE,
        lambda: geometry.healthy_boxes(image, count, image_rng(seed, filename), spacing), fields,
    )


def _healthy_image(csv_path: Path, row: dict[str, str]) -> Path:
    if not row["patient_id"]:
        raise ValueError("patient_id is empty")
    return _image_path(csv_path.parent, row["image_filename"])


def _decode(image_path: Path, geometry: PatchGeometry) -> tuple[Any, dict[str, Any], Any]:
    """``(pixels, metadata, pixel spacing)`` of an image; raises on an unreadable one."""
    image, meta = read_mammogram(image_path, apply_voi=geometry.apply_voi)
    return image, meta, geometry.spacing(meta.get("pixel_spacing"), str(image_path))


def _fields(code, row, laterality, view, meta, geometry: PatchGeometry, classification) -> dict[str, Any]:
    """The record fields of a lesion or healthy row beyond its box, patient and lesion types."""
    return dict(
        density=_density(row["density"]), laterality=laterality, view=view, film=code.startswith("F"),
        classification=classification, image_type="mammogram", **geometry.record_fields(meta.get("pixel_spacing")),
    )


def read_bcdr(root: str | os.PathLike, request: ReadRequest) -> list[dict[str, Any]]:
    """Records of every BCDR outline (lesions) and of the DN01 healthy images, image by image.

    Images are ordered by dataset code, patient, study and file name; the lesion records of one
    image by lesion and segmentation id. Bad cases go through ``collector``; no outline or
    healthy CSV under ``root``, or CSVs without the needed columns, raise DatalistError.
    """
    root = Path(root)
    task, collector, geometry = request.task, request.collector, request.geometry
    outline_csvs, healthy_csvs = find_bcdr_csvs(root)
    if not outline_csvs and not healthy_csvs:
        raise DatalistError(
            f"{root}: no BCDR CSV found; expected BCDR-<code>_dataset/bcdr_<code>_outlines.csv folders "
            "(digital D01/D02, film F01-F03) and/or BCDR-DN01_dataset/bcdr_dn01_img.csv (healthy), "
            "in this folder or up to two levels below it"
        )
    if not outline_csvs:
        logger.warning("%s: no BCDR outlines CSV: the datalist has healthy images only", root)
    if not healthy_csvs:
        logger.warning("%s: no BCDR-DN01_dataset/bcdr_dn01_img.csv: the datalist has no healthy patches", root)
    for code, path in outline_csvs + healthy_csvs:
        logger.info("BCDR %s: %s", code, path)

    # (sort key, producer) per image; producers run in sort order so that records come image by image
    jobs: list[tuple[tuple, Any]] = []
    for code, csv_path in outline_csvs:
        for image_path, rows in _lesion_groups(code, csv_path, task, collector).items():
            first = rows[0][1]
            key = (code, _id_key(first["patient_id"]), _id_key(first["study_id"]), str(image_path))
            jobs.append((key, lambda c=code, p=csv_path, i=image_path, r=rows: _lesion_records(c, p, i, r, collector, geometry)))
    for code, csv_path in healthy_csvs:
        for line, row in _read_rows(csv_path, HEALTHY_REQUIRED, collector, what="image", gives="healthy patches"):
            image_path = csv_path.parent / row["image_filename"]
            key = (code, _id_key(row["patient_id"]), _id_key(row["study_id"]), str(image_path), line)
            jobs.append((
                key,
                lambda c=code, p=csv_path, n=line, r=row: _healthy_records(
                    c, p, n, r, request.seed, request.healthy_per_image, collector, geometry
                ),
            ))
    records: list[dict[str, Any]] = []
    for _, produce in sorted(jobs, key=lambda job: job[0]):
        records.extend(produce())
    return records

"""CBIS-DDSM (TCIA) -> datalist records.

Input: the four case description CSVs (``mass_case_description_{train,test}_set.csv``,
``calc_case_description_{train,test}_set.csv``) in ``root`` and the DICOM files under
``root/CBIS-DDSM`` (or directly under ``root``), as the NBIA Data Retriever writes them.

Paths. A CSV path (stripped of whitespace: the real files end some of them with a newline) is used
as is when that file exists. Otherwise the download is in the NBIA layout
(``<folder>/<date>-DDSM-<n>/1.000000-<series>-<n>/1-1.dcm``), whose folder names differ from the
CSV's uid folders: the ``.dcm`` files under the path's first folder (e.g.
``Mass-Training_P_00001_LEFT_CC``) are the candidates. A full mammogram is the only file of its
folder. An ROI mask is the first candidate, among the CSV's mask path, the CSV's cropped-image path
(the real CSVs swap the two now and then) and the files of their folders, whose Rows/Columns equal
the full mammogram's and whose pixels are binary (two values, one of them 0).

Records. Each abnormality row gives one lesion record (label 1): the patch box is
:func:`transforms.lesion_box` around the bounding box of the mask's nonzero pixels.
CBIS-DDSM has no normal images, so healthy records (label 0) are ``healthy_per_image`` boxes drawn
in each full mammogram that the task uses, at least :data:`HEALTHY_DISTANCE_PX` from the patch box
of every abnormality of that image in any of the CSVs present (for the mass task the calc CSVs
still tell where the calcifications are).

An image is identified by (patient, side, view): the real dataset stores an image with both a mass
and a calcification twice, once under ``Mass-...`` and once under ``Calc-...``. Healthy boxes are
drawn once per such image, from its first file (the ``Mass-...`` one when there is one), with a
random state seeded by the seed and that file's path relative to ``root`` (so they do not depend on
where the dataset lies, nor on the task). An image with an abnormality that could not be located
gets no healthy boxes (lesion-free areas are unknown); this is reported as a bad case too.

Bad input goes through the collector, naming the file and the case: a missing, corrupt, colour or
multi-frame full mammogram (the image's records are dropped), a missing, wrong-size, non-binary or
empty mask (the abnormality is dropped), a CSV row without a usable side, view, id or path, an
image without room for the healthy boxes. The rows of every CSV present are checked, the calc
ones in the mass task too (they say where healthy boxes must not go); a missing or invalid breast
density is not an error: it is recorded as unknown (``None``) with a warning.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transforms import MammogramError, read_mammogram

from ..datalist import CaseCollector, CaseError, DatalistError, image_rng, make_record
from ..extraction import ReadRequest
from ..layouts import CBIS_DDSM_CASE_CSVS, CBIS_DDSM_DICOM_FOLDER

__all__ = [
    "read_cbis_ddsm",
    "HEALTHY_DISTANCE_PX",
    "CASE_CSVS",
    "DICOM_FOLDER",
    "REQUIRED_COLUMNS",
    "DENSITY_COLUMNS",
    "CbisAbnormality",
    "read_case_csvs",
    "resolve_image",
    "find_roi_mask",
    "mask_bbox",
]

logger = logging.getLogger(__name__)

SOURCE = "cbis-ddsm"
#: the least distance in pixels between a healthy box and the patch box of any lesion of its image.
#: Lesion patch boxes already have a 60 px margin around the lesion; 64 px more keeps healthy
#: patches away from the lesion's surroundings (spicules, satellite calcifications that the ROI
#: outline may miss), so that a healthy patch never shows part of an annotated lesion.
HEALTHY_DISTANCE_PX = 64
#: the folder of the DICOM files, as the NBIA Data Retriever names it
DICOM_FOLDER = CBIS_DDSM_DICOM_FOLDER
#: kind -> case description CSVs of that kind, with their official subset
CASE_CSVS = {
    kind: tuple((name, subset) for (k, subset), name in CBIS_DDSM_CASE_CSVS.items() if k == kind) for kind in ("mass", "calc")
}
#: the density column is ``breast_density`` in the mass CSVs and ``breast density`` in the calc CSVs
DENSITY_COLUMNS = ("breast_density", "breast density")
REQUIRED_COLUMNS = (
    "patient_id", "left or right breast", "image view", "abnormality id", "abnormality type", "pathology",
    "image file path", "ROI mask file path",
)
OPTIONAL_COLUMNS = ("cropped image file path",)
_SIDES = {"LEFT": "L", "RIGHT": "R", "L": "L", "R": "R"}
_TYPES = {"mass": "mass", "calcification": "calcification", "calc": "calcification"}


@dataclass
class CbisAbnormality:
    """One row of a case description CSV."""

    csv: Path
    row: int  # 1-based data row
    kind: str  # "mass" or "calcification"
    patient_id: str
    side: str  # "L" or "R"
    view: str
    abnormality_id: str
    density: int | None
    pathology: str
    official_subset: str  # "train" or "test"
    image_path: str
    crop_path: str | None
    mask_path: str

    @property
    def image_key(self) -> tuple[str, str, str]:
        """The physical image: (patient, side, view)."""
        return (self.patient_id, self.side, self.view)

    @property
    def case_id(self) -> str:
        side = "LEFT" if self.side == "L" else "RIGHT"
        where = f"{self.csv.name} row {self.row}"
        return f"{self.patient_id} {side} {self.view} {self.kind} {self.abnormality_id} ({where})"


def _clean_path(value: str | None) -> str:
    """A CSV path without surrounding whitespace (the real CSVs end some paths with a newline)."""
    return (value or "").strip().replace("\\", "/").lstrip("/")


def _bases(root: Path) -> list[Path]:
    return [root / DICOM_FOLDER, root]


def _expected(root: Path, csv_path: str) -> Path:
    """Where a CSV path is expected, for messages."""
    base = root / DICOM_FOLDER if (root / DICOM_FOLDER).is_dir() else root
    return base / csv_path


def _exact(root: Path, csv_path: str) -> Path | None:
    for base in _bases(root):
        path = base / csv_path
        if path.is_file():
            return path
    return None


def _first_folder(csv_path: str) -> str:
    parts = [p for p in csv_path.split("/") if p]
    if parts and parts[0] == DICOM_FOLDER:
        parts = parts[1:]
    return parts[0] if parts else ""


def _nbia_candidates(root: Path, csv_path: str) -> list[Path]:
    """The ``.dcm`` files under the CSV path's first folder (NBIA layout), sorted."""
    folder = _first_folder(csv_path)
    if not folder:
        return []
    for base in _bases(root):
        top = base / folder
        if top.is_dir():
            found = (p for p in top.rglob("*") if p.suffix.lower() == ".dcm" and p.is_file())
            return sorted(found, key=lambda p: p.as_posix())
    return []


def resolve_image(root: str | os.PathLike, csv_path: str) -> Path:
    """The full mammogram file of a CSV ``image file path``: the exact path, or the only ``.dcm`` of
    its folder in the NBIA layout. Raises :class:`~transforms.MammogramError` naming the expected file."""
    root = Path(root)
    csv_path = _clean_path(csv_path)
    exact = _exact(root, csv_path)
    if exact is not None:
        return exact
    found = _nbia_candidates(root, csv_path)
    if len(found) == 1:
        return found[0]
    expected = _expected(root, csv_path)
    if not found:
        folder = _first_folder(csv_path)
        raise MammogramError(expected, f"DICOM file not found (nor any .dcm file under the folder {folder})")
    names = ", ".join(p.relative_to(root).as_posix() for p in found[:5])
    raise MammogramError(
        expected,
        f"DICOM file not found, and its folder holds {len(found)} .dcm files, so which is meant is unclear: {names}",
    )


def _read_mask_candidate(path: Path, shape: tuple[int, int]) -> tuple[np.ndarray | None, str]:
    """``(lesion mask, "")`` when ``path`` is a binary mask of ``shape``, else ``(None, why not)``."""
    import pydicom

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True)
        rows, cols = int(header.Rows), int(header.Columns)
    except Exception as e:  # corrupt or truncated files raise a variety of errors in pydicom
        return None, f"not a readable DICOM image ({type(e).__name__}: {e})"
    if (rows, cols) != tuple(shape):
        return None, f"size {cols}x{rows}, not the full image's {shape[1]}x{shape[0]}"
    if int(header.get("SamplesPerPixel", 1)) != 1 or int(header.get("NumberOfFrames", 1) or 1) != 1:
        return None, "not a single-frame greyscale image"
    try:
        values = pydicom.dcmread(path).pixel_array
    except Exception as e:
        return None, f"cannot decode pixel data ({type(e).__name__}: {e})"
    if values.shape != tuple(shape):
        return None, f"pixel data of shape {values.shape}, not {tuple(shape)}"
    high = values.max()
    if np.count_nonzero((values != 0) & (values != high)):
        return None, "pixels are not binary (a cropped image, not a mask)"
    lesion = values != 0
    if str(header.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
        lesion = ~lesion  # 0 is displayed white
    if not lesion.any() or lesion.all():
        return None, "empty mask (no lesion pixel)"
    return lesion, ""


def find_roi_mask(
    root: str | os.PathLike, mask_path: str, crop_path: str | None, shape: Sequence[int]
) -> tuple[Path, np.ndarray]:
    """The ROI mask of one abnormality and its boolean lesion pixels.

    Candidates, in order: the CSV's mask path, the CSV's cropped-image path (the two are swapped in
    some rows of the real CSVs), then every ``.dcm`` under their first folders (NBIA layout). The
    first candidate whose Rows/Columns equal ``shape`` (the full image's ``(rows, cols)``) and
    whose pixels are binary and not empty wins. Raises :class:`~transforms.MammogramError` naming
    the CSV's mask file and why each candidate was rejected.
    """
    root = Path(root)
    shape = (int(shape[0]), int(shape[1]))
    mask_path = _clean_path(mask_path)
    paths = [mask_path] + ([_clean_path(crop_path)] if crop_path and _clean_path(crop_path) else [])
    candidates: list[Path] = []
    for p in paths:
        exact = _exact(root, p)
        if exact is not None:
            candidates.append(exact)
    for p in paths:
        candidates.extend(_nbia_candidates(root, p))
    seen: set[Path] = set()
    reasons: list[str] = []
    for candidate in candidates:
        if candidate in seen:
            continue
        seen.add(candidate)
        lesion, why = _read_mask_candidate(candidate, shape)
        if lesion is not None:
            return candidate, lesion
        reasons.append(f"{candidate.relative_to(root).as_posix()}: {why}")
    exact = _exact(root, mask_path)
    where = exact if exact is not None else _expected(root, mask_path)
    if not seen:
        folder = _first_folder(mask_path)
        raise MammogramError(where, f"ROI mask file not found (nor any .dcm file under the folder {folder})")
    if exact is not None and len(reasons) == 1:
        raise MammogramError(where, f"not a usable ROI mask: {reasons[0].split(': ', 1)[1]}")
    raise MammogramError(
        where,
        f"no ROI mask of the full image's size {shape[1]}x{shape[0]} with binary pixels"
        + ("" if exact is not None else " (the file itself is missing)")
        + "; candidates: " + "; ".join(reasons),
    )


def mask_bbox(lesion: np.ndarray) -> np.ndarray:
    """The two corners ``[[x_min, y_min], [x_max, y_max]]`` (inclusive) of a mask's nonzero pixels."""
    rows = np.flatnonzero(lesion.any(axis=1))
    cols = np.flatnonzero(lesion.any(axis=0))
    return np.array([[cols[0], rows[0]], [cols[-1], rows[-1]]], dtype=np.float64)


def _parse_density(value: str, where: str) -> int | None:
    text = (value or "").strip()
    try:
        density = int(float(text))
    except ValueError:
        density = None
    if density not in (1, 2, 3, 4):
        if text:
            logger.warning("%s: breast density %r is not 1-4; recorded as unknown", where, text)
        return None
    return density


def read_case_csvs(
    root: str | os.PathLike, kinds: Sequence[str], collector: CaseCollector
) -> tuple[list[CbisAbnormality], dict[tuple[str, str, str], list[str]]]:
    """The abnormality rows of the case CSVs of ``kinds`` (``"mass"``, ``"calc"``) found in ``root``.

    Missing CSV files are skipped (the caller checks that some were found); a CSV without a
    required column raises :class:`DatalistError`; a bad row goes through ``collector``.

    Returns:
        the rows, and ``{(patient, side, view): ["<csv> row <n>", ...]}`` for the bad rows whose
        image is known: that image has a lesion of unknown place, so it must get no healthy box.
    """
    root = Path(root)
    out: list[CbisAbnormality] = []
    unusable: dict[tuple[str, str, str], list[str]] = {}
    for kind in kinds:
        for name, subset in CASE_CSVS[kind]:
            path = root / name
            if not path.is_file():
                continue
            with open(path, newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                columns = [c.strip() for c in (reader.fieldnames or [])]
                reader.fieldnames = columns
                missing = [c for c in REQUIRED_COLUMNS if c not in columns]
                if not any(c in columns for c in DENSITY_COLUMNS):
                    missing.append(" or ".join(DENSITY_COLUMNS))
                if missing:
                    raise DatalistError(
                        f"{path}: missing column(s) {missing}; a CBIS-DDSM case description CSV has "
                        f"{list(REQUIRED_COLUMNS[:1]) + [DENSITY_COLUMNS[0]] + list(REQUIRED_COLUMNS[1:])}"
                    )
                density_column = next(c for c in DENSITY_COLUMNS if c in columns)
                for number, row in enumerate(reader, start=1):
                    case = f"row {number}"
                    patient = str(row.get("patient_id") or "").strip()
                    if patient:
                        case = f"{patient} ({name} row {number})"
                    count = len(out)
                    with collector.case(path, case):
                        out.append(_parse_row(path, number, kind, subset, row, density_column, case))
                    if len(out) == count:
                        side = _SIDES.get(str(row.get("left or right breast") or "").strip().upper())
                        view = str(row.get("image view") or "").strip().upper()
                        if patient and side and view:
                            unusable.setdefault((patient, side, view), []).append(f"{name} row {number}")
    return out, unusable


def _parse_row(
    path: Path, number: int, kind: str, subset: str, row: dict, density_column: str, case: str
) -> CbisAbnormality:
    def value(column: str) -> str:
        text = row.get(column)
        return text.strip() if isinstance(text, str) else ""

    patient = value("patient_id")
    if not patient:
        raise CaseError(path, case, "empty patient_id")
    side = _SIDES.get(value("left or right breast").upper())
    if side is None:
        raise CaseError(path, case, f"'left or right breast' is {value('left or right breast')!r}, not LEFT or RIGHT")
    view = value("image view").upper()
    if not view:
        raise CaseError(path, case, "empty 'image view'")
    abnormality_id = value("abnormality id")
    if not abnormality_id:
        raise CaseError(path, case, "empty 'abnormality id'")
    image_path, mask_path = _clean_path(row.get("image file path")), _clean_path(row.get("ROI mask file path"))
    if not image_path:
        raise CaseError(path, case, "empty 'image file path'")
    if not mask_path:
        raise CaseError(path, case, "empty 'ROI mask file path'")
    lesion_type = _TYPES.get(value("abnormality type").lower(), "mass" if kind == "mass" else "calcification")
    return CbisAbnormality(
        csv=path,
        row=number,
        kind=lesion_type,
        patient_id=patient,
        side=side,
        view=view,
        abnormality_id=abnormality_id,
        density=_parse_density(row.get(density_column, ""), f"{path} [{case}]"),
        pathology=value("pathology").upper(),
        official_subset=subset,
        image_path=image_path,
        crop_path=_clean_path(row.get("cropped image file path")) or None,
        mask_path=mask_path,
    )


def _abnormality_id(value: str) -> int | str:
    try:
        return int(value)
    except ValueError:
        return value


def read_cbis_ddsm(root: str | os.PathLike, request: ReadRequest) -> list[dict]:
    """Read CBIS-DDSM into datalist records (see the module docstring).

    ``task`` ``"mass"`` reads the mass CSVs (the calc CSVs, when present, only to keep healthy
    boxes away from calcifications); ``"all"`` reads both. Records come image by image in the order
    of (patient, side, view); within an image, its files in CSV order, each file's lesion records
    followed (for the file the healthy boxes are drawn from) by its healthy records.
    """
    root = Path(root).absolute()
    task, collector = request.task, request.collector
    wanted = ("mass",) if task == "mass" else ("mass", "calc")
    expected = [name for kind in wanted for name, _ in CASE_CSVS[kind]]
    if not any((root / name).is_file() for name in expected):
        raise DatalistError(
            f"{root}: no CBIS-DDSM case description CSV for the {task!r} task; expected one or more of "
            f"{expected} in this folder"
        )
    abnormalities, unusable = read_case_csvs(root, ("mass", "calc"), collector)
    if abnormalities and not (root / DICOM_FOLDER).is_dir():
        if not any((root / _first_folder(a.image_path)).is_dir() for a in abnormalities):
            raise DatalistError(f"{root}: no DICOM files: neither {root / DICOM_FOLDER} nor the CSVs' folders exist")

    def used(a: CbisAbnormality) -> bool:
        return task == "all" or a.kind == "mass"

    by_image: dict[tuple[str, str, str], list[CbisAbnormality]] = {}
    for a in abnormalities:  # CSV order: mass train, mass test, calc train, calc test
        by_image.setdefault(a.image_key, []).append(a)
    records: list[dict] = []
    for key in sorted(by_image):
        group = by_image[key]
        if any(used(a) for a in group):
            records.extend(
                _image_records(root, group, used, request, unusable.get(key, []))
            )
    return records


def _image_records(
    root: Path,
    group: list[CbisAbnormality],
    used,
    request: ReadRequest,
    bad_rows: list[str],
) -> list[dict]:
    """The records of one physical image (one patient, side and view) from all its CSV rows;
    ``bad_rows`` names the unusable CSV rows of this image."""
    collector, geometry = request.collector, request.geometry
    patient, side, view = group[0].image_key
    image_case = f"{patient} {'LEFT' if side == 'L' else 'RIGHT'} {view}"
    # the full mammogram files that the task uses, in CSV order
    files: list[str] = []
    for a in group:
        if used(a) and a.image_path not in files:
            files.append(a.image_path)
    resolved: dict[str, Path] = {}
    shapes: dict[str, tuple[int, int]] = {}
    spacings: dict[str, object] = {}  # the file's own pixel spacing (None if it has none)
    primary: tuple[str, np.ndarray] | None = None
    for csv_path in files:
        with collector.case(_expected(root, csv_path), image_case):
            try:
                path = resolve_image(root, csv_path)
                image, meta = read_mammogram(path, apply_voi=geometry.apply_voi)
            except MammogramError as e:
                raise CaseError(e.path, image_case, e.problem) from e
            geometry.spacing(meta.get("pixel_spacing"), str(path))  # the mm options need one
            resolved[csv_path], shapes[csv_path] = path, image.shape
            spacings[csv_path] = meta.get("pixel_spacing")
            if primary is None:
                primary = (csv_path, image)
    if primary is None:
        return []
    boxes: dict[int, list[int]] = {}
    for i, a in enumerate(group):
        # a row whose own file is not read here (a calc row in the mass task, a bad file) is located
        # on the image's first good file: the copies of one image are the same picture
        shape = shapes.get(a.image_path, primary[1].shape)
        with collector.case(_expected(root, a.mask_path), a.case_id):
            try:
                _, lesion = find_roi_mask(root, a.mask_path, a.crop_path, shape)
            except MammogramError as e:
                raise CaseError(e.path, a.case_id, e.problem) from e
            file_spacing = spacings.get(a.image_path, spacings[primary[0]])
            boxes[i] = geometry.lesion_box(mask_bbox(lesion), shape, geometry.spacing(file_spacing))

    records: list[dict] = []
    for csv_path in files:
        if csv_path not in shapes:
            continue
        image_file = resolved[csv_path]
        for i, a in enumerate(group):
            if used(a) and a.image_path == csv_path and i in boxes:
                records.append(
                    make_record(
                        image_file, a.patient_id, 1, boxes[i], SOURCE, lesion_types=[a.kind], density=a.density,
                        laterality=a.side, view=a.view, pathology=a.pathology,
                        abnormality_id=_abnormality_id(a.abnormality_id), official_subset=a.official_subset,
                        image_type="mammogram", **geometry.record_fields(spacings[csv_path]),
                    )
                )
        if csv_path != primary[0]:
            continue
        owner = next(a for a in group if used(a) and a.image_path == csv_path)
        unlocated = [
            f"{a.kind} {a.abnormality_id} ({a.csv.name} row {a.row})" for i, a in enumerate(group) if i not in boxes
        ]
        unlocated += [f"of {row}" for row in bad_rows]
        if unlocated:
            collector.add(
                image_file, image_case,
                "no healthy boxes drawn: the lesion(s) " + ", ".join(unlocated)
                + " could not be located, so the lesion-free area is unknown",
            )
            continue
        with collector.case(image_file, image_case):
            rng_key = image_file.relative_to(root).as_posix()
            healthy = geometry.healthy_boxes(
                primary[1], request.healthy_per_image, image_rng(request.seed, rng_key), geometry.spacing(spacings[csv_path]),
                avoid=list(boxes.values()), avoid_distance=HEALTHY_DISTANCE_PX,
            )
            records.extend(
                make_record(
                    image_file, patient, 0, box, SOURCE, density=owner.density, laterality=side, view=view,
                    pathology=None, abnormality_id=None, official_subset=owner.official_subset,
                    image_type="mammogram", **geometry.record_fields(spacings[csv_path]),
                )
                for box in healthy
            )
    return records

"""INbreast -> datalist records.

Input (the INbreast release layout)::

    root/INbreast.csv      ';'-separated; columns used: Laterality, View, File Name, ACR, Bi-Rads
    root/AllDICOMs/<fileid>_<patientid>_MG_<L|R>_<view>_ANON.dcm
    root/AllXML/<fileid>.xml   OsiriX plist: Images[0].ROIs[] with Name and Point_px "(x, y)"

Lesions. ROI names map to lesion types case-insensitively: ``Mass``, ``Spiculated Region``,
``Espiculated Region`` -> mass; ``Calcification``, ``Calcifications``, ``Cluster`` ->
calcification; ``Distortion`` -> distortion; ``Asymmetry``, ``Assymetry`` -> asymmetry; any other
name is a bad case. A mass, distortion or asymmetry ROI is one lesion: its ``Point_px`` contour.

Calcifications (``calcifications``, ``mammoshare datalist --calcifications``). ``"roi"`` (the
default, the paper's count: 3028 lesion patches in the paper): every calcification ROI (a single
point, a small contour or a ``Cluster`` outline) is one lesion, as every other ROI is.
``"cluster"``: the calcification ROIs of one image are merged into clusters, one lesion each.

Calcification clusters (single linkage, ``"cluster"`` only). The calcification ROIs of one image
(single points, small contours and ``Cluster`` outlines alike) are grouped into clusters: two ROIs belong to the
same cluster when some point of one lies within :data:`cluster_distance_mm` (5 mm) of some point
of the other, and the relation is closed transitively (a chain of ROIs each within 5 mm of the
next is one cluster). Distances are measured in mm with the DICOM ``PixelSpacing`` (row spacing
for y, column spacing for x; ``ImagerPixelSpacing`` when it is absent, 0.07 mm, the INbreast
detector's, when both are). Each cluster is one calcification lesion whose box covers all its
points. A lone calcification farther than 5 mm from any other is a cluster of its own.

Patches. A lesion's box is :func:`transforms.lesion_box` of its points (60 px margin, at least
128 px, shifted inside the image; in mm with the ``geometry``'s mm options). Healthy boxes come
from BI-RADS 1 images only: ``healthy_per_image`` random boxes with at most 40% background, drawn with
:func:`mammoshare.datalist.image_rng` of the seed and the file id, away from the image's lesion
boxes if it has any. The ``mass`` task keeps the mass lesions and the same healthy boxes.

Images without XML: BI-RADS 1 gives healthy boxes only; BI-RADS 2 gives nothing (counted and
logged); BI-RADS 3 or more (4a/4b/4c count as 4) is a bad case, since its lesion is not outlined.

Bad cases (reported through the collector, naming the file and the case; an image with any bad
case gives no record): a CSV row with unusable values or without its DICOM, an unreadable or
truncated DICOM, a missing XML where one is needed, an XML that is not a plist or lacks
``Images``/``ROIs``, an unknown ROI name, an empty, malformed or out-of-image contour.
"""

from __future__ import annotations

import csv
import logging
import os
import plistlib
import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from transforms import read_mammogram

from ..datalist import CaseError, DatalistError, image_rng, make_record
from ..extraction import CALCIFICATION_POLICIES, DEFAULT_CALCIFICATIONS, ReadRequest
from ..layouts import INBREAST_CSV, INBREAST_DICOM_DIR, INBREAST_REQUIRED_COLUMNS, INBREAST_XML_DIR

__all__ = [
    "read_inbreast",
    "roi_lesion_type",
    "parse_point",
    "read_inbreast_rois",
    "cluster_point_sets",
    "cluster_distance_mm",
    "ROI_LESION_TYPES",
    "DEFAULT_PIXEL_SPACING_MM",
    "REQUIRED_COLUMNS",
]

logger = logging.getLogger(__name__)

#: calcification ROIs closer than this (in mm, any point to any point) are one cluster
cluster_distance_mm = 5.0
#: the INbreast detector's pixel spacing, used when a DICOM header has none
DEFAULT_PIXEL_SPACING_MM = 0.07
REQUIRED_COLUMNS = INBREAST_REQUIRED_COLUMNS
ROI_LESION_TYPES = {
    "mass": "mass",
    "spiculated region": "mass",
    "espiculated region": "mass",
    "calcification": "calcification",
    "calcifications": "calcification",
    "cluster": "calcification",
    "distortion": "distortion",
    "asymmetry": "asymmetry",
    "assymetry": "asymmetry",
}
_BIRADS = re.compile(r"^([1-6])([abc]?)$", re.IGNORECASE)
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_POINT = re.compile(rf"^\(\s*({_NUMBER})\s*,\s*({_NUMBER})\s*(?:,\s*{_NUMBER}\s*)?\)$")


def roi_lesion_type(name: str) -> str | None:
    """The lesion type of an INbreast ROI name (case and surrounding spaces ignored); None if unknown."""
    return ROI_LESION_TYPES.get(" ".join(str(name).split()).lower())


def parse_point(text: str) -> tuple[float, float]:
    """``"(x, y)"`` (or ``"(x, y, z)"``) -> ``(x, y)``; raises ValueError otherwise."""
    match = _POINT.match(str(text).strip())
    if not match:
        raise ValueError(f"malformed point {text!r}; '(x, y)' is expected")
    return float(match.group(1)), float(match.group(2))


def cluster_point_sets(
    point_sets: Sequence[np.ndarray],
    spacing_mm: Sequence[float] = (DEFAULT_PIXEL_SPACING_MM, DEFAULT_PIXEL_SPACING_MM),
    distance_mm: float | None = None,
) -> list[list[int]]:
    """Single-linkage grouping of point sets (ROIs).

    Args:
        point_sets: ``(N_i, 2)`` arrays of (x, y) pixel coordinates, N_i >= 1.
        spacing_mm: the DICOM PixelSpacing, (row spacing, column spacing).
        distance_mm: link distance; :data:`cluster_distance_mm` when None.

    Returns:
        the clusters as lists of indices into ``point_sets``, each sorted, ordered by first index.
        Two sets share a cluster when a chain of sets links them, each within ``distance_mm`` (any
        point to any point) of the next.
    """
    from scipy.spatial import cKDTree

    distance = cluster_distance_mm if distance_mm is None else float(distance_mm)
    count = len(point_sets)
    if count == 0:
        return []
    parent = list(range(count))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    points = np.concatenate([np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in point_sets])
    owner = np.concatenate([np.full(len(np.asarray(p).reshape(-1, 2)), i) for i, p in enumerate(point_sets)])
    scale = np.array([float(spacing_mm[1]), float(spacing_mm[0])])  # x uses the column spacing
    if len(points) > 1:
        pairs = cKDTree(points * scale).query_pairs(distance, output_type="ndarray")
        for a, b in owner[pairs] if len(pairs) else ():
            ra, rb = find(int(a)), find(int(b))
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(count):
        groups[find(i)].append(i)
    return sorted(groups.values(), key=lambda g: g[0])


def read_inbreast_rois(path: str | os.PathLike) -> list[dict]:
    """The ROIs of an INbreast XML (all ``Images`` entries, in order):
    ``[{"index", "image", "roi", "name", "points": (N, 2) float x, y}]``.

    Raises ValueError (not a plist, no ``Images`` or ``ROIs`` array, a malformed point).
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            plist = plistlib.load(f)
    except Exception as e:  # plistlib raises InvalidFileException, ExpatError and others
        raise ValueError(f"not a valid plist ({type(e).__name__}: {e})") from e
    images = plist.get("Images") if isinstance(plist, dict) else None
    if not isinstance(images, list) or not images:
        raise ValueError("the plist has no 'Images' array")
    rois = []
    for i, image in enumerate(images):
        if not isinstance(image, dict) or not isinstance(image.get("ROIs"), list):
            raise ValueError(f"Images[{i}] has no 'ROIs' array")
        for j, roi in enumerate(image["ROIs"]):
            if not isinstance(roi, dict):
                raise ValueError(f"Images[{i}].ROIs[{j}] is not a dict")
            raw = roi.get("Point_px", [])
            if not isinstance(raw, list):
                raise ValueError(f"Images[{i}].ROIs[{j}] ({roi.get('Name', '')!r}): Point_px is not an array")
            try:
                points = np.array([parse_point(p) for p in raw], dtype=np.float64).reshape(-1, 2)
            except ValueError as e:
                raise ValueError(f"Images[{i}].ROIs[{j}] ({roi.get('Name', '')!r}): {e}") from e
            rois.append({"index": len(rois), "image": i, "roi": j, "name": str(roi.get("Name", "")), "points": points})
    return rois


def _read_csv(path: Path) -> list[tuple[int, dict[str, str]]]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    rows = list(csv.reader(text.splitlines(), delimiter=";"))
    if not rows:
        raise DatalistError(f"{path}: empty CSV; a ';'-separated header with {list(REQUIRED_COLUMNS)} is expected")
    header = [h.strip() for h in rows[0]]
    lookup = {h.lower(): i for i, h in enumerate(header)}
    missing = [c for c in REQUIRED_COLUMNS if c.lower() not in lookup]
    if missing:
        raise DatalistError(
            f"{path}: missing column(s) {missing}; found {header} (the file must be ';'-separated with "
            f"the columns {list(REQUIRED_COLUMNS)})"
        )
    out = []
    for line, row in enumerate(rows[1:], start=2):
        if not any(v.strip() for v in row):
            continue
        values = {c: (row[lookup[c.lower()]].strip() if lookup[c.lower()] < len(row) else "") for c in REQUIRED_COLUMNS}
        out.append((line, values))
    return out


def _index_dicoms(folder: Path) -> dict[str, list[tuple[Path, str]]]:
    """file id -> [(path, patient id)] from names ``<fileid>_<patientid>_...``."""
    index: dict[str, list[tuple[Path, str]]] = defaultdict(list)
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in (".dcm", ".dicom") or not path.is_file():
            continue
        fields = path.stem.split("_")
        if len(fields) < 2 or not fields[0] or not fields[1]:
            logger.warning("%s: not named <fileid>_<patientid>_...; ignored", path)
            continue
        index[fields[0]].append((path, fields[1]))
    return index


def _parse_birads(value: str) -> tuple[str, int]:
    match = _BIRADS.match(value.replace(" ", ""))
    if not match:
        raise ValueError(f"Bi-Rads {value!r} is not one of 1, 2, 3, 4, 4a, 4b, 4c, 5, 6")
    level = int(match.group(1))
    suffix = match.group(2).lower()
    if suffix and level != 4:
        raise ValueError(f"Bi-Rads {value!r}: only 4 has the subcategories a, b, c")
    return f"{level}{suffix}", level


def _parse_acr(value: str) -> int | None:
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        number = -1
    if number not in (1, 2, 3, 4):
        raise ValueError(f"ACR {value!r} is not a density 1-4 (or blank)")
    return int(number)


def _dicom_header(path: Path, case: str) -> tuple[tuple[int, int], tuple[float, float] | None]:
    """(rows, columns) and (row, column) pixel spacing in mm from the header (None when it has
    none); checks that the file is not truncated before its pixel data."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as e:
        raise CaseError(path, case, f"cannot read DICOM header ({type(e).__name__}: {e})") from e
    if "Rows" not in ds or "Columns" not in ds:
        raise CaseError(path, case, "DICOM header has no Rows/Columns: not an image")
    shape = (int(ds.Rows), int(ds.Columns))
    spacing = None
    for tag in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(tag)
        try:
            if value is not None and len(value) == 2 and all(float(v) > 0 for v in value):
                spacing = (float(value[0]), float(value[1]))
                break
        except (TypeError, ValueError):
            continue
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if syntax is not None and not getattr(syntax, "is_compressed", True):
        expected = shape[0] * shape[1] * int(ds.get("BitsAllocated", 16)) // 8 * int(ds.get("SamplesPerPixel", 1))
        size = path.stat().st_size
        if size < expected:
            raise CaseError(path, case, f"file of {size} bytes is shorter than its {expected} bytes of pixel data: truncated")
    return shape, spacing


def read_inbreast(root: str | os.PathLike, request: ReadRequest, calcifications: str = DEFAULT_CALCIFICATIONS) -> list[dict]:
    """Records of the INbreast dataset at ``root`` (see the module docstring), image by image in
    the order of ``INbreast.csv``: for each image its lesion records, then its healthy records.
    ``calcifications``: ``"roi"`` (one lesion per ROI) or ``"cluster"`` (one per 5 mm cluster)."""
    if calcifications not in CALCIFICATION_POLICIES:
        raise DatalistError(f"unknown calcification policy {calcifications!r}; use one of {list(CALCIFICATION_POLICIES)}")
    task, collector, geometry = request.task, request.collector, request.geometry
    healthy_per_image = request.healthy_per_image
    root = Path(root)
    csv_path = root / INBREAST_CSV
    dicom_dir = root / INBREAST_DICOM_DIR
    xml_dir = root / INBREAST_XML_DIR
    for path, what in ((csv_path, "file"), (dicom_dir, "folder"), (xml_dir, "folder")):
        if not (path.is_file() if what == "file" else path.is_dir()):
            raise DatalistError(f"{path}: INbreast {what} not found (expected INbreast.csv, AllDICOMs/ and AllXML/ in {root})")
    rows = _read_csv(csv_path)
    dicoms = _index_dicoms(dicom_dir)
    xmls = {p.stem: p for p in sorted(xml_dir.iterdir()) if p.suffix.lower() == ".xml" and not p.name.startswith(".")}

    records: list[dict] = []
    seen: set[str] = set()
    unannotated_birads2 = 0
    for line, row in rows:
        file_id = row["File Name"]
        case = f"row {line}, File Name {file_id or '(blank)'}"
        errors = len(collector.bad_cases)
        # the CSV row and its DICOM
        with collector.case(csv_path, case):
            if not file_id:
                raise CaseError(csv_path, case, "blank File Name")
            if file_id in seen:
                raise CaseError(csv_path, case, f"File Name {file_id} appears in more than one row")
            seen.add(file_id)
            birads, level = _parse_birads(row["Bi-Rads"])
            density = _parse_acr(row["ACR"])
            found = dicoms.get(file_id, [])
            if not found:
                raise CaseError(csv_path, case, f"no DICOM {dicom_dir.name}/{file_id}_*.dcm for this row")
            if len(found) > 1:
                names = ", ".join(p.name for p, _ in found)
                raise CaseError(csv_path, case, f"several DICOMs for file id {file_id}: {names}")
            dicom_path, patient_id = found[0]
            name_fields = dicom_path.stem.split("_")
            laterality = (row["Laterality"] or (name_fields[3] if len(name_fields) > 3 else "")).upper()
            view = (row["View"] or (name_fields[4] if len(name_fields) > 4 else "")).upper()
            if laterality not in ("L", "R"):
                raise CaseError(csv_path, case, f"Laterality {row['Laterality']!r} is not L or R")
            if not view:
                raise CaseError(csv_path, case, "blank View")
        if len(collector.bad_cases) > errors:
            continue
        with collector.case(dicom_path, file_id):
            shape, file_spacing = _dicom_header(dicom_path, file_id)
            spacing = geometry.spacing(file_spacing, str(dicom_path))
        if len(collector.bad_cases) > errors:
            continue
        link_spacing = spacing or (DEFAULT_PIXEL_SPACING_MM, DEFAULT_PIXEL_SPACING_MM)

        # the lesions of the image's XML
        lesions: list[tuple[str, list[int]]] = []  # (type, box), in ROI order
        xml_path = xmls.get(file_id)
        if xml_path is None:
            if level >= 3:
                collector.add(
                    xml_dir / f"{file_id}.xml", file_id,
                    f"missing XML for image {dicom_path.name} with BI-RADS {birads}: its lesions are not outlined",
                )
                continue
            if level == 2:
                unannotated_birads2 += 1
                continue
        else:
            rois: list[dict] = []
            with collector.case(xml_path, file_id):
                rois = read_inbreast_rois(xml_path)
                if not rois and level >= 3:
                    raise CaseError(xml_path, file_id, f"XML without ROIs for an image with BI-RADS {birads}")
            singles: list[tuple[int, str, np.ndarray]] = []  # (ROI index, type, points)
            calcifications_rois: list[tuple[int, np.ndarray]] = []
            for roi in rois:
                roi_case = f"{file_id} ROI {roi['index']} ({roi['name']!r})"
                with collector.case(xml_path, roi_case):
                    kind = roi_lesion_type(roi["name"])
                    if kind is None:
                        raise CaseError(
                            xml_path, roi_case,
                            f"unknown ROI name {roi['name']!r}; known names: {sorted(set(ROI_LESION_TYPES))}",
                        )
                    if len(roi["points"]) == 0:
                        raise CaseError(xml_path, roi_case, "ROI without points (empty Point_px)")
                    if kind == "calcification":
                        calcifications_rois.append((roi["index"], roi["points"]))
                    else:
                        singles.append((roi["index"], kind, roi["points"]))
            # one lesion per mass/distortion/asymmetry ROI, one per calcification ROI or cluster; in
            # the order of their first ROI
            pending: list[tuple[int, str, np.ndarray, str]] = [
                (index, kind, points, f"{file_id} ROI {index} ({kind})") for index, kind, points in singles
            ]
            if calcifications == "roi":
                pending += [(index, "calcification", points, f"{file_id} ROI {index} (calcification)")
                            for index, points in calcifications_rois]
            clusters = cluster_point_sets([p for _, p in calcifications_rois], link_spacing) if calcifications == "cluster" else []
            for group in clusters:
                indices = [calcifications_rois[i][0] for i in group]
                points = np.concatenate([calcifications_rois[i][1] for i in group])
                label = f"{file_id} calcification cluster of ROI(s) {', '.join(map(str, indices))}"
                pending.append((indices[0], "calcification", points, label))
            for _, kind, points, label in sorted(pending, key=lambda item: item[0]):
                with collector.case(xml_path, label):
                    lesions.append((kind, geometry.lesion_box(points, shape, spacing)))
        if len(collector.bad_cases) > errors:
            continue

        common = dict(source="inbreast", density=density, birads=birads, laterality=laterality, view=view,
                      image_type="mammogram", **geometry.record_fields(file_spacing))
        image_records = [
            make_record(dicom_path, patient_id, 1, box, lesion_types=[kind], **common)
            for kind, box in lesions
            if task != "mass" or kind == "mass"
        ]
        if level == 1 and healthy_per_image > 0:
            with collector.case(dicom_path, file_id):
                image, _ = read_mammogram(dicom_path, apply_voi=geometry.apply_voi)
                if image.shape != shape:
                    raise CaseError(dicom_path, file_id, f"decoded image {image.shape} differs from the header's {shape}")
                boxes = geometry.healthy_boxes(
                    image, healthy_per_image, image_rng(request.seed, file_id), spacing, avoid=[box for _, box in lesions],
                )
                image_records += [make_record(dicom_path, patient_id, 0, box, **common) for box in boxes]
            if len(collector.bad_cases) > errors:
                continue
        records.extend(image_records)

    unused = sorted(set(xmls) - seen)
    if unused:
        logger.info("INbreast: %d XML file(s) without a CSV row ignored (%s ...)", len(unused), ", ".join(unused[:5]))
    if unannotated_birads2:
        logger.info("INbreast: %d BI-RADS 2 image(s) without XML give no patch", unannotated_birads2)
    lesion_count = sum(r["label"] for r in records)
    logger.info(
        "INbreast (%s, calcifications per %s): %d lesion and %d healthy records from %d CSV rows",
        task, calcifications, lesion_count, len(records) - lesion_count, len(rows),
    )
    return records

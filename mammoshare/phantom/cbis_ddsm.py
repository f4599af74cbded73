"""A small synthetic phantom of CBIS-DDSM (TCIA) in the real file layout.

What is written under ``root``::

    PHANTOM_README.txt
    mass_case_description_train_set.csv   calc_case_description_train_set.csv
    mass_case_description_test_set.csv    calc_case_description_test_set.csv
    CBIS-DDSM/
      Mass-Training_P_00001_LEFT_CC/<study uid>/<series uid>/000000.dcm      full mammogram
      Mass-Training_P_00001_LEFT_CC_1/<study uid>/<series uid>/000000.dcm    cropped lesion
      Mass-Training_P_00001_LEFT_CC_1/<study uid>/<series uid>/000001.dcm    ROI mask (0/255, 8 bit)
      ...

The CSV columns and path values follow the real case description files, including their quirks:

- some "ROI mask file path" values end with a newline inside the quotes;
- one abnormality has its crop and its mask swapped (the CSV's mask path names the crop);
- a few cases are stored as the NBIA Data Retriever writes them (``<date>-DDSM-<n>/1.000000-full
  mammogram images-<n>/1-1.dcm``; crop and mask as ``1-1.dcm`` / ``1-2.dcm`` in either order, or in
  two series folders), so the CSV's uid paths do not exist for them;
- an image with both a mass and a calcification cluster is stored twice, once under ``Mass-...``
  and once under ``Calc-...``, as in the real data.

Full mammograms come from :func:`~mammoshare.phantom.synth.synth_mammogram` (masses in the mass
CSVs, calcification clusters in the calc CSVs) and are written with
:func:`~mammoshare.phantom.dicom.write_mg_dicom`: mostly MONOCHROME2, two MONOCHROME1, two JPEG 2000
lossless. The ROI mask is the filled lesion outline (the cluster's convex hull for calcifications)
at the full image's size. Everything is deterministic for a seed (byte-identical files).
"""

from __future__ import annotations

import csv
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from ..layouts import CBIS_DDSM_CALC_COLUMNS as CALC_COLUMNS
from ..layouts import CBIS_DDSM_CASE_CSVS as CASE_CSV_NAMES
from ..layouts import CBIS_DDSM_DICOM_FOLDER as DICOM_FOLDER
from ..layouts import CBIS_DDSM_MASS_COLUMNS as MASS_COLUMNS
from .dicom import write_mg_dicom
from .synth import PHANTOM_NOTICE, PhantomImage, mark_phantom_root, synth_mammogram

__all__ = ["write_cbis_ddsm_phantom", "MASS_COLUMNS", "CALC_COLUMNS", "CASE_CSV_NAMES", "DICOM_FOLDER", "IMAGE_SHAPE"]

#: rows, columns of the phantom's mammograms. Digitised DDSM films have more pixels than INbreast
#: images, and every CBIS-DDSM image holds lesions that healthy boxes must keep away from: the
#: phantom is larger than the INbreast one so that healthy boxes are not all pushed to the skin line.
IMAGE_SHAPE = (800, 640)
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
PATHOLOGIES = ("MALIGNANT", "BENIGN", "BENIGN_WITHOUT_CALLBACK")
_MASS_SHAPES = ("OVAL", "IRREGULAR", "ROUND", "LOBULATED")
_MASS_MARGINS = ("CIRCUMSCRIBED", "ILL_DEFINED", "OBSCURED", "MICROLOBULATED")
_CALC_TYPES = ("PLEOMORPHIC", "AMORPHOUS", "PUNCTATE", "FINE_LINEAR_BRANCHING")
_CALC_DISTRIBUTIONS = ("CLUSTERED", "SEGMENTAL", "LINEAR", "REGIONAL")
_SIDES = {"L": "LEFT", "R": "RIGHT"}
_FOLDER_SUBSETS = {"train": "Training", "test": "Test"}


@dataclass(frozen=True)
class _ImageSpec:
    """One full mammogram of the phantom and how its files are stored."""

    patient: int
    side: str  # L or R
    view: str  # CC or MLO
    lesions: tuple[str, ...]  # synth_mammogram kinds: mass, spiculated, calcification
    subset: str  # train or test
    photometric: str = "MONOCHROME2"
    compress: bool = False
    # None: the CSV's uid layout; "mask-first" / "crop-first": NBIA layout, crop and mask as 1-1.dcm /
    # 1-2.dcm in one series folder; "two-series": NBIA layout, crop and mask in two series folders
    nbia: str | None = None
    swap: bool = False  # crop written as 000001.dcm and mask as 000000.dcm, the CSV says the opposite


# The phantom's images: 20 patients, 1-2 images each, 1-2 abnormalities per image.
_IMAGES: tuple[_ImageSpec, ...] = (
    _ImageSpec(1, "L", "CC", ("mass",), "train"),
    _ImageSpec(1, "L", "MLO", ("mass",), "train", photometric="MONOCHROME1"),
    _ImageSpec(2, "R", "CC", ("mass", "mass"), "train"),
    _ImageSpec(3, "L", "CC", ("spiculated",), "test", compress=True),
    _ImageSpec(3, "L", "MLO", ("mass",), "test"),
    _ImageSpec(4, "R", "CC", ("calcification",), "train"),
    _ImageSpec(4, "R", "MLO", ("calcification",), "train"),
    _ImageSpec(5, "L", "CC", ("calcification", "calcification"), "test"),
    _ImageSpec(6, "R", "CC", ("mass", "calcification"), "train"),
    _ImageSpec(6, "R", "MLO", ("mass",), "train"),
    _ImageSpec(7, "L", "CC", ("mass",), "train", nbia="mask-first"),
    _ImageSpec(8, "R", "MLO", ("calcification",), "train", nbia="crop-first"),
    _ImageSpec(9, "L", "MLO", ("mass",), "test", swap=True),
    _ImageSpec(10, "R", "CC", ("mass",), "train", photometric="MONOCHROME1"),
    _ImageSpec(10, "R", "MLO", ("mass",), "train"),
    _ImageSpec(11, "L", "CC", ("calcification",), "train", compress=True),
    _ImageSpec(12, "R", "CC", ("mass",), "test", nbia="two-series"),
    _ImageSpec(12, "R", "MLO", ("mass",), "test"),
    _ImageSpec(13, "L", "MLO", ("spiculated",), "train"),
    _ImageSpec(14, "R", "CC", ("calcification",), "test"),
    _ImageSpec(14, "R", "MLO", ("calcification",), "test"),
    _ImageSpec(15, "L", "CC", ("mass",), "train"),
    _ImageSpec(16, "L", "MLO", ("mass", "calcification"), "test"),
    _ImageSpec(17, "R", "CC", ("calcification",), "train"),
    _ImageSpec(18, "L", "CC", ("mass",), "train"),
    _ImageSpec(18, "L", "MLO", ("mass",), "train"),
    _ImageSpec(19, "R", "MLO", ("calcification",), "test"),
    _ImageSpec(20, "L", "CC", ("mass",), "test"),
)


def _uid(*parts: object) -> str:
    return generate_uid(entropy_srcs=["mammoshare-cbis-ddsm-phantom", *map(str, parts)])


def _number(text: str, digits: int = 5) -> int:
    return zlib.crc32(text.encode()) % (10**digits)


def _density(patient: int) -> int:
    return (patient * 3) % 4 + 1  # 4, 3, 2, 1, 4, ...: every ACR density present


#: what the phantom leaves room for: healthy boxes of this side, at this distance from the lesion patch
#: boxes (the reader's defaults), with at most this fraction of background
_HEALTHY_SIDE, _HEALTHY_DISTANCE, _MAX_BACKGROUND, _LESION_MARGIN = 128, 64, 0.4, 60


def _healthy_room(image: PhantomImage) -> float:
    """The fraction of all 128 px box positions that a healthy box may take: at most 40% background
    and 64 px away from every lesion's square patch box (contour bounding box + 60 px, at least 128)."""
    height, width = image.pixels.shape
    side = _HEALTHY_SIDE
    background = (image.pixels.astype(np.float32) / max(int(image.pixels.max()), 1)) <= 10 / 255
    integral = np.zeros((height + 1, width + 1), np.int64)
    integral[1:, 1:] = background.cumsum(0).cumsum(1)
    sums = integral[side:, side:] - integral[:-side, side:] - integral[side:, :-side] + integral[:-side, :-side]
    allowed = sums <= _MAX_BACKGROUND * side * side  # indexed by the box's top-left corner (y0, x0)
    for lesion in image.lesions:
        (x0, y0), (x1, y1) = lesion.contour.min(0), lesion.contour.max(0) + 1
        box_side = min(max(int(np.ceil(max(x1 - x0, y1 - y0))) + 2 * _LESION_MARGIN, side), height, width)
        bx = int(np.clip(round((x0 + x1 - box_side) / 2), 0, width - box_side))
        by = int(np.clip(round((y0 + y1 - box_side) / 2), 0, height - box_side))
        before, after = _HEALTHY_DISTANCE + side - 1, box_side + _HEALTHY_DISTANCE  # corners too close to it
        allowed[max(by - before, 0) : by + after, max(bx - before, 0) : bx + after] = False
    return float(allowed.mean())


def _draw_image(spec: _ImageSpec, seed: int) -> PhantomImage:
    """The phantom mammogram of ``spec``; redrawn (next sub-seed) while a lesion outline leaves the
    image or less than 2% of the positions are open to healthy boxes, so that the reader's default
    healthy sampling (random draws) surely succeeds."""
    key = f"{seed}/P_{spec.patient:05d}/{spec.side}/{spec.view}"
    height, width = IMAGE_SHAPE
    for attempt in range(20):
        rng = np.random.RandomState(zlib.crc32(f"{key}/{attempt}".encode()))
        image = synth_mammogram(rng, spec.side, spec.view, _density(spec.patient), spec.lesions, shape=IMAGE_SHAPE)
        inside = all(
            les.contour.min() >= 0 and les.contour[:, 0].max() <= width - 1 and les.contour[:, 1].max() <= height - 1
            for les in image.lesions
        )
        if inside and _healthy_room(image) >= 0.02:
            return image
    raise RuntimeError(f"phantom image {key}: no lesion layout leaves room for healthy boxes")  # pragma: no cover


def _lesion_mask(shape: tuple[int, int], contour: np.ndarray) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(contour).astype(np.int32)], 255)
    return mask


def _crop(pixels: np.ndarray, mask: np.ndarray, pad: int = 16) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    y0, y1 = max(int(ys.min()) - pad, 0), min(int(ys.max()) + 1 + pad, pixels.shape[0])
    x0, x1 = max(int(xs.min()) - pad, 0), min(int(xs.max()) + 1 + pad, pixels.shape[1])
    return np.ascontiguousarray(pixels[y0:y1, x0:x1])


def _write_mask_dicom(
    path: Path, mask: np.ndarray, patient_id: str, laterality: str, view: str, study_uid: str, series_uid: str
) -> None:
    """An 8-bit MONOCHROME2 ROI mask (0 / 255), as the CBIS-DDSM ROI mask files are stored."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE
    meta.MediaStorageSOPInstanceUID = _uid(patient_id, series_uid, path.name, "mask")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.PatientName = "PHANTOM^SYNTHETIC"
    ds.PatientID = patient_id
    ds.StudyDate = "20260101"
    ds.Modality = "MG"
    ds.SeriesDescription = "ROI mask images"
    ds.ImageComments = PHANTOM_NOTICE
    ds.ImageLaterality = laterality
    ds.ViewPosition = view
    ds.Rows, ds.Columns = mask.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(mask, dtype=np.uint8).tobytes()
    pydicom.dcmwrite(path, ds, enforce_file_format=True)


def _nbia_study(folder: str, uid: str) -> str:
    return f"07-20-2016-DDSM-{_number(folder + uid)}"


def write_cbis_ddsm_phantom(root: str | Path, seed: int = 2021) -> Path:
    """Write the CBIS-DDSM phantom under ``root`` (see the module docstring); returns ``root``.

    28 images (30 full-mammogram files: two images are stored as Mass-... and Calc-...) of 20
    patients (P_00001 to P_00020), 800x640 pixels, 32 abnormalities (20 masses, 12 calcification
    clusters) in the four case description CSVs, densities 1-4, pathologies MALIGNANT / BENIGN /
    BENIGN_WITHOUT_CALLBACK. Deterministic for ``seed``.
    """
    root = mark_phantom_root(root, f"CBIS-DDSM (TCIA) case description CSVs and DICOM files under {DICOM_FOLDER}/",
                             __name__, seed)
    dicom_root = root / DICOM_FOLDER
    dicom_root.mkdir(parents=True, exist_ok=True)
    rows: dict[tuple[str, str], list[dict]] = {key: [] for key in CASE_CSV_NAMES}
    counter = 0  # abnormality counter over the whole phantom: cycles pathologies and quirks
    for spec in _IMAGES:
        image = _draw_image(spec, seed)
        patient_id = f"P_{spec.patient:05d}"
        side = _SIDES[spec.side]
        by_kind: dict[str, list] = {"mass": [], "calc": []}
        for lesion in image.lesions:
            by_kind["calc" if lesion.kind == "calcification" else "mass"].append(lesion)
        spiculated = "spiculated" in spec.lesions
        for kind, lesions in by_kind.items():
            if not lesions:
                continue  # an image with a mass and a cluster is stored under Mass-... and Calc-...
            kind_name = "Mass" if kind == "mass" else "Calc"
            prefix = f"{kind_name}-{_FOLDER_SUBSETS[spec.subset]}_{patient_id}_{side}_{spec.view}"
            study, series = _uid(prefix, "study"), _uid(prefix, "series")
            image_path = f"{prefix}/{study}/{series}/000000.dcm"
            if spec.nbia:
                series_dir = f"1.000000-full mammogram images-{_number(series)}"
                target = dicom_root / prefix / _nbia_study(prefix, study) / series_dir / "1-1.dcm"
            else:
                target = dicom_root / image_path
            write_mg_dicom(
                target, image.pixels, prefix, spec.side, spec.view, photometric=spec.photometric,
                compress=spec.compress,
                extra={
                    "StudyInstanceUID": study, "SeriesInstanceUID": series,
                    "SeriesDescription": "full mammogram images",
                },
            )
            for abnormality_id, lesion in enumerate(lesions, start=1):
                counter += 1
                folder = f"{prefix}_{abnormality_id}"
                a_study, a_series = _uid(folder, "study"), _uid(folder, "series")
                mask = _lesion_mask(image.pixels.shape, lesion.contour)
                crop = _crop(image.pixels, mask)
                crop_path = f"{folder}/{a_study}/{a_series}/000000.dcm"
                mask_path = f"{folder}/{a_study}/{a_series}/000001.dcm"
                uid_args = dict(study_uid=a_study, series_uid=a_series)
                if spec.nbia:
                    study_dir = dicom_root / folder / _nbia_study(folder, a_study)
                    if spec.nbia == "two-series":
                        crop_file = study_dir / f"1.000000-cropped images-{_number(a_series + 'crop')}" / "1-1.dcm"
                        mask_file = study_dir / f"1.000000-ROI mask images-{_number(a_series + 'mask')}" / "1-1.dcm"
                        uid_args = dict(study_uid=a_study, series_uid=_uid(folder, "series", "mask"))
                    else:
                        series_dir = study_dir / f"1.000000-ROI mask images-{_number(a_series)}"
                        first, second = series_dir / "1-1.dcm", series_dir / "1-2.dcm"
                        mask_file, crop_file = (first, second) if spec.nbia == "mask-first" else (second, first)
                elif spec.swap:
                    crop_file, mask_file = dicom_root / mask_path, dicom_root / crop_path
                else:
                    crop_file, mask_file = dicom_root / crop_path, dicom_root / mask_path
                write_mg_dicom(
                    crop_file, crop, folder, spec.side, spec.view,
                    extra={
                        "StudyInstanceUID": a_study, "SeriesInstanceUID": a_series,
                        "SeriesDescription": "cropped images",
                    },
                )
                _write_mask_dicom(mask_file, mask, folder, spec.side, spec.view, **uid_args)
                row = {
                    "patient_id": patient_id,
                    "left or right breast": side,
                    "image view": spec.view,
                    "abnormality id": abnormality_id,
                    "assessment": (3, 4, 5, 4, 2)[counter % 5],
                    "pathology": PATHOLOGIES[counter % 3],
                    "subtlety": counter % 5 + 1,
                    "image file path": image_path,
                    "cropped image file path": crop_path,
                    # the real CSVs end some mask paths with a newline inside the quotes
                    "ROI mask file path": mask_path + ("\n" if counter % 4 == 1 else ""),
                }
                if kind == "mass":
                    row["breast_density"] = _density(spec.patient)
                    row["abnormality type"] = "mass"
                    row["mass shape"] = "IRREGULAR" if spiculated else _MASS_SHAPES[counter % 4]
                    row["mass margins"] = "SPICULATED" if spiculated else _MASS_MARGINS[counter % 4]
                else:
                    row["breast density"] = _density(spec.patient)
                    row["abnormality type"] = "calcification"
                    row["calc type"] = _CALC_TYPES[counter % 4]
                    row["calc distribution"] = _CALC_DISTRIBUTIONS[counter % 4]
                rows[(kind, spec.subset)].append(row)
    for (kind, subset), name in CASE_CSV_NAMES.items():
        columns = MASS_COLUMNS if kind == "mass" else CALC_COLUMNS
        ordered = sorted(
            rows[(kind, subset)],
            key=lambda r: (r["patient_id"], r["left or right breast"], r["image view"], r["abnormality id"]),
        )
        with open(root / name, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(ordered)
    return root

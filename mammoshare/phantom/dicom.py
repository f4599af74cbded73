"""Writing phantom images as valid DICOM digital mammography (MG) files."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid

from .synth import PHANTOM_NOTICE

__all__ = ["write_mg_dicom", "DIGITAL_MAMMOGRAPHY_PRESENTATION"]

#: Digital Mammography X-Ray Image Storage - For Presentation
DIGITAL_MAMMOGRAPHY_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"


def write_mg_dicom(
    path: str | Path,
    pixels: np.ndarray,
    patient_id: str,
    laterality: str,
    view: str,
    photometric: str = "MONOCHROME2",
    compress: bool = False,
    pixel_spacing_mm: float = 0.28,
    bits_stored: int = 14,
    window: tuple[float, float] | None = None,
    modality: str = "MG",
    extra: dict | None = None,
) -> Path:
    """Write a 2D uint16 MONOCHROME2 array as an MG DICOM file.

    ``photometric="MONOCHROME1"`` stores the inverted pixels (so that readers must invert them
    back); ``compress`` stores JPEG 2000 lossless; ``window`` adds (centre, width) VOI tags.
    The patient name and image comments say that the file is a phantom.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    max_value = 2**bits_stored - 1
    stored = (max_value - pixels.astype(np.int64)) if photometric == "MONOCHROME1" else pixels.astype(np.int64)
    stored = np.clip(stored, 0, max_value).astype(np.uint16)

    def uid(kind: str) -> str:  # deterministic UIDs keep phantoms reproducible
        return generate_uid(entropy_srcs=["mammoshare-phantom", patient_id, laterality, view, path.name, kind])

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DIGITAL_MAMMOGRAPHY_PRESENTATION
    meta.MediaStorageSOPInstanceUID = uid("sop")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    today = datetime.date(2026, 1, 1).strftime("%Y%m%d")  # fixed: phantoms are byte-for-byte reproducible
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = uid("study")
    ds.SeriesInstanceUID = uid("series")
    ds.PatientName = "PHANTOM^SYNTHETIC"
    ds.PatientID = patient_id
    ds.StudyDate = today
    ds.Modality = modality
    ds.Manufacturer = "mammoshare phantom"
    ds.ImageComments = PHANTOM_NOTICE
    ds.ImageLaterality = laterality
    ds.ViewPosition = view
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelSpacing = [pixel_spacing_mm, pixel_spacing_mm]
    ds.ImagerPixelSpacing = [pixel_spacing_mm, pixel_spacing_mm]
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = float(window[0]), float(window[1])
        ds.VOILUTFunction = "LINEAR"
    for key, value in (extra or {}).items():
        setattr(ds, key, value)
    ds.PixelData = stored.tobytes()
    if compress:
        ds.compress(JPEG2000Lossless, generate_instance_uid=False)  # keep the deterministic UID
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path

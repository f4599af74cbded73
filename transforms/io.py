"""Loading full mammograms (DICOM, TIFF, PNG) and patch files as float ``(1, H, W)`` images in [0, 1].

A mammogram is scaled per image (min-max after the DICOM LUTs); a patch file (a synthetic patch as
generator inference writes it) is decoded by its encoding (8-bit: value / 255, 16-bit: value /
65535) and never stretched, so that a patch reads back as the values that were written.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

__all__ = [
    "MammogramError",
    "read_mammogram",
    "read_patch",
    "LoadMammogram",
    "LoadMammogramd",
    "DecodedImageCache",
    "DICOM_SUFFIXES",
    "RASTER_SUFFIXES",
]

DICOM_SUFFIXES = (".dcm", ".dicom", "")
RASTER_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")


class MammogramError(ValueError):
    """An image file that cannot be used as a mammogram; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    if path.suffix.lower() in RASTER_SUFFIXES:
        return False
    with open(path, "rb") as f:  # DICOM Part 10 files carry "DICM" after a 128-byte preamble
        head = f.read(132)
    return len(head) == 132 and head[128:] == b"DICM"


class NonFinitePixelsError(ValueError):
    """Pixel values that are NaN or infinite (float images); :func:`read_mammogram` names the file."""


def _check_finite(array: np.ndarray) -> None:
    """Raise :class:`NonFinitePixelsError` when a float array holds NaN or infinite values: one such
    pixel would make the whole min-max scaled image NaN."""
    if array.dtype.kind != "f":
        return
    finite = np.isfinite(array)
    if finite.all():
        return
    nan, inf = int(np.isnan(array).sum()), int(np.isinf(array).sum())
    row, col = (int(v) for v in np.argwhere(~finite)[0][-2:]) if array.ndim >= 2 else (0, 0)
    raise NonFinitePixelsError(
        f"{nan} NaN and {inf} infinite pixel value(s) (the first at row {row}, column {col}); "
        "a mammogram needs finite pixel values"
    )


def _minmax(array: np.ndarray) -> np.ndarray:
    _check_finite(array)
    array = array.astype(np.float32, copy=False)
    low, high = float(array.min()), float(array.max())
    if high <= low:
        return np.zeros_like(array, dtype=np.float32)
    return (array - low) / (high - low)


#: header fields whose values must be numbers; a text value would end in a numpy error far from the file
_NUMERIC_DICOM_FIELDS = (
    "Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "BitsStored", "PixelRepresentation", "NumberOfFrames",
    "RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth", "PixelSpacing", "ImagerPixelSpacing",
)
_PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def _check_numeric_fields(ds, path: Path) -> None:
    """Raise :class:`MammogramError` naming the file and the field when a numeric header field holds
    text (``RescaleSlope = 'abc'``), or a NaN or infinite number."""
    for keyword in _NUMERIC_DICOM_FIELDS:
        if keyword not in ds:
            continue
        with warnings.catch_warnings():  # pydicom warns about the invalid value; the error below says it
            warnings.simplefilter("ignore")
            element = ds[keyword]
            value = element.value
        if value is None or value == "":
            continue
        values = list(value) if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
        try:
            numbers = [float(v) for v in values]
        except (TypeError, ValueError):
            numbers = None
        if numbers is None or not all(np.isfinite(numbers)):
            shown = "\\".join(str(v) for v in values)
            raise MammogramError(
                path, f"DICOM field {keyword} {element.tag} is {shown!r}, not a number; fix or remove this field"
            )


def _no_pixel_data(ds, path: Path) -> MammogramError:
    """The error for a DICOM without a pixel data element: a truncated file, or not an image."""
    size = path.stat().st_size
    if "Rows" in ds and "Columns" in ds:
        return MammogramError(
            path,
            f"the header describes a {ds.Columns}x{ds.Rows} image, but the file ends after {size} bytes without "
            "its pixel data: a truncated or incomplete file (download it again)",
        )
    sop = ds.get("SOPClassUID", None) or ds.file_meta.get("MediaStorageSOPClassUID", None)
    if sop is not None and str(sop) and "Image" not in getattr(sop, "name", "Image"):
        return MammogramError(path, f"a DICOM {getattr(sop, 'name', sop)}, not an image: it has no pixel data")
    return MammogramError(
        path,
        f"the file ends after {size} bytes, inside or right after its header: no image attributes (Rows, "
        "Columns) and no pixel data; a truncated or incomplete file (download it again)",
    )


def _read_dicom(path: Path, apply_voi: bool) -> tuple[np.ndarray, dict[str, Any]]:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError as e:
        raise MammogramError(path, f"not a valid DICOM file ({e})") from e
    except Exception as e:  # truncated headers raise a zoo of errors inside pydicom
        raise MammogramError(path, f"cannot read DICOM header ({type(e).__name__}: {e})") from e
    if not any(keyword in ds for keyword in _PIXEL_DATA_KEYWORDS):
        raise _no_pixel_data(ds, path)
    _check_numeric_fields(ds, path)
    samples = int(ds.get("SamplesPerPixel", 1))
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    if samples != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise MammogramError(
            path, f"colour image ({photometric}, {samples} samples per pixel); a greyscale mammogram is expected"
        )
    frames = int(float(ds.get("NumberOfFrames", 1) or 1))
    if frames > 1:
        raise MammogramError(path, f"multi-frame image ({frames} frames); a single-frame mammogram is expected")
    modality = str(ds.get("Modality", "")).strip()
    if modality != "MG":
        warnings.warn(f"{path}: modality is {modality or 'missing'}, not MG; loading it as a greyscale image")
    try:
        pixels = ds.pixel_array
    except Exception as e:  # truncated pixel data, missing decoder plugin, corrupt codestream
        syntax = ds.file_meta.get("TransferSyntaxUID", "unknown transfer syntax")
        name = getattr(syntax, "name", str(syntax))
        element = next(k for k in _PIXEL_DATA_KEYWORDS if k in ds)
        raise MammogramError(path, f"cannot decode pixel data ({element}, {name}): {e}") from e
    if pixels.ndim != 2:
        raise MammogramError(path, f"pixel data has shape {pixels.shape}; one 2D frame is expected")
    values = apply_modality_lut(pixels, ds)
    voi_applied = False
    if apply_voi and ("WindowCenter" in ds or "VOILUTSequence" in ds):
        values = apply_voi_lut(values, ds, index=0)
        voi_applied = True
    image = _minmax(np.asarray(values))
    if photometric == "MONOCHROME1":  # minimum value is white: invert so that tissue is bright
        image = 1.0 - image
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    meta = {
        "format": "dicom",
        "modality": modality,
        "photometric_interpretation": photometric,
        "laterality": str(ds.get("ImageLaterality", ds.get("Laterality", "")) or "").strip(),
        "view": str(ds.get("ViewPosition", "") or "").strip(),
        "pixel_spacing": [float(s) for s in spacing] if spacing else None,
        "voi_applied": voi_applied,
        "bits_stored": int(ds.get("BitsStored", pixels.dtype.itemsize * 8)),
        "transfer_syntax": str(ds.file_meta.get("TransferSyntaxUID", "")),
    }
    return image, meta


def _decode_raster(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """The stored grey values of a TIFF/PNG/JPEG, as they are (no scaling), and the metadata."""
    spacing = None
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                if len(tif.pages) > 1:
                    raise MammogramError(path, f"multi-page TIFF ({len(tif.pages)} pages); one image is expected")
                page = tif.pages[0]
                pixels = page.asarray()
                res = page.tags.get("XResolution")
                unit = page.tags.get("ResolutionUnit")
                if res is not None and unit is not None and int(unit.value) in (2, 3):
                    num, den = res.value
                    if num:
                        per_mm = (num / den) / (25.4 if int(unit.value) == 2 else 10.0)
                        spacing = [1.0 / per_mm, 1.0 / per_mm]
        else:
            from PIL import Image

            with Image.open(path) as img:
                if getattr(img, "n_frames", 1) > 1:
                    raise MammogramError(path, f"multi-frame image ({img.n_frames} frames); one image is expected")
                pixels = np.asarray(img)
    except MammogramError:
        raise
    except Exception as e:
        raise MammogramError(path, f"cannot read image ({type(e).__name__}: {e})") from e
    if pixels.ndim == 3:
        channels = pixels.shape[-1]
        if channels in (3, 4) and all(np.array_equal(pixels[..., 0], pixels[..., c]) for c in (1, 2)):
            pixels = pixels[..., 0]  # grey stored as RGB(A)
        elif channels == 1:
            pixels = pixels[..., 0]
        else:
            raise MammogramError(path, f"colour image with {channels} channels; a greyscale mammogram is expected")
    if pixels.ndim != 2:
        raise MammogramError(path, f"image has shape {pixels.shape}; one 2D greyscale image is expected")
    meta = {
        "format": path.suffix.lower().lstrip("."),
        "modality": "",
        "photometric_interpretation": "MONOCHROME2",
        "laterality": "",
        "view": "",
        "pixel_spacing": spacing,
        "voi_applied": False,
        "bits_stored": int(pixels.dtype.itemsize * 8),
        "transfer_syntax": "",
    }
    return pixels, meta


def _read_raster(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    pixels, meta = _decode_raster(path)
    return _minmax(pixels), meta


#: integer patch encodings: the full scale of each stored dtype
_PATCH_SCALES = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0, np.dtype(np.bool_): 1.0}


def read_patch(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, Any]]:
    """Read one patch file (PNG, TIFF or JPEG), decoded by its encoding, never stretched.

    8-bit files -> value / 255, 16-bit -> value / 65535 (PNG files that Pillow opens as 32-bit
    integers hold 16-bit values), float TIFF kept as stored (it must lie in [0, 1]). Returns a
    float32 ``(H, W)`` array in [0, 1] and the metadata (``"encoding"``: ``"uint8"``, ``"uint16"``
    or ``"float"``). Raises :class:`MammogramError` naming the file otherwise.
    """
    path = Path(path)
    if not path.is_file():
        raise MammogramError(path, "file not found")
    if path.stat().st_size == 0:
        raise MammogramError(path, "file is empty")
    if path.suffix.lower() not in RASTER_SUFFIXES:
        raise MammogramError(
            path, f"a patch file is a PNG, TIFF or JPEG; {path.suffix or 'no suffix'} is not a patch encoding"
        )
    pixels, meta = _decode_raster(path)
    dtype = pixels.dtype
    if dtype == np.int32 and pixels.size and pixels.min() >= 0 and pixels.max() <= 65535:
        pixels, dtype = pixels.astype(np.uint16), np.dtype(np.uint16)  # Pillow's mode "I" for 16-bit PNG
    if dtype in _PATCH_SCALES:
        image = pixels.astype(np.float32) / np.float32(_PATCH_SCALES[dtype])
        encoding = "uint8" if dtype == np.uint8 else ("uint16" if dtype == np.uint16 else "bool")
    elif dtype.kind == "f":
        image = pixels.astype(np.float32)
        if not np.isfinite(image).all() or image.min() < 0 or image.max() > 1:
            raise MammogramError(path, "float patch with values outside [0, 1]; a float patch must hold [0, 1] values")
        encoding = "float"
    else:
        raise MammogramError(path, f"patch stored as {dtype}; 8-bit, 16-bit or float [0, 1] grey values are expected")
    meta.update(encoding=encoding, filename_or_obj=str(path), spatial_shape=list(image.shape))
    return np.ascontiguousarray(image), meta


def read_mammogram(path: str | os.PathLike, apply_voi: bool = True) -> tuple[np.ndarray, dict[str, Any]]:
    """Read one mammogram file.

    Returns a float32 ``(H, W)`` array in [0, 1] (rows and columns as stored in the file; DICOM
    MONOCHROME1 inverted; modality LUT and, when ``apply_voi``, the VOI LUT or window applied; then
    min-max scaled) and a metadata dict. Raises :class:`MammogramError` naming the file otherwise:
    also for header fields that are not numbers, float pixels that are NaN or infinite, and a file
    that ends before its pixel data.
    """
    path = Path(path)
    if not path.is_file():
        raise MammogramError(path, "file not found")
    if path.stat().st_size == 0:
        raise MammogramError(path, "file is empty")
    try:
        if _is_dicom(path):
            image, meta = _read_dicom(path, apply_voi)
        else:
            image, meta = _read_raster(path)
    except NonFinitePixelsError as e:
        raise MammogramError(path, str(e)) from e
    meta["filename_or_obj"] = str(path)
    meta["spatial_shape"] = list(image.shape)
    return np.ascontiguousarray(image, dtype=np.float32), meta


class DecodedImageCache:
    """A small thread-safe LRU of decoded mammograms, keyed by path, size and modification time.

    Several patches come from one mammogram (healthy boxes, calcification clusters): with this
    cache each file is decoded once even when the patches are computed by several threads.
    ``decode_count`` counts real decodes, for tests and logs.
    """

    def __init__(self, max_images: int = 8):
        self.max_images = max_images
        self.decode_count = 0
        self._items: OrderedDict[tuple, tuple[np.ndarray, dict]] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[tuple, threading.Lock] = {}

    @staticmethod
    def _key(path: Path, apply_voi: bool) -> tuple:
        stat = path.stat()
        return (str(path.resolve()), stat.st_size, stat.st_mtime_ns, apply_voi)

    def get(self, path: str | os.PathLike, apply_voi: bool = True) -> tuple[np.ndarray, dict[str, Any]]:
        path = Path(path)
        if not path.is_file():
            raise MammogramError(path, "file not found")
        key = self._key(path, apply_voi)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:  # one decode per file even when several threads ask at once
            with self._lock:
                if key in self._items:
                    self._items.move_to_end(key)
                    return self._items[key]
            item = read_mammogram(path, apply_voi=apply_voi)
            with self._lock:
                self.decode_count += 1
                self._items[key] = item
                while len(self._items) > self.max_images:
                    self._items.popitem(last=False)
                self._key_locks.pop(key, None)
        return item

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.decode_count = 0


class LoadMammogram(Transform):
    """Load a mammogram file -> ``MetaTensor`` float32 ``(1, H, W)`` in [0, 1].

    DICOM (any transfer syntax pydicom's plugins decode; MONOCHROME1 inverted; modality and VOI LUT
    applied), TIFF and PNG. Unlike MONAI's ``PydicomReader`` the rows and columns stay as in the
    file. Pixel spacing (mm, row then column), laterality, view and modality go to the metadata.
    Colour and multi-frame files raise :class:`MammogramError`.

    Args:
        apply_voi: apply the DICOM VOI LUT or window when the file has one.
        cache: a :class:`DecodedImageCache` shared by several transforms, or None to decode each time.
    """

    def __init__(self, apply_voi: bool = True, cache: DecodedImageCache | None = None):
        self.apply_voi = apply_voi
        self.cache = cache

    def __call__(self, path: str | os.PathLike) -> MetaTensor:
        if self.cache is not None:
            image, meta = self.cache.get(path, apply_voi=self.apply_voi)
        else:
            image, meta = read_mammogram(path, apply_voi=self.apply_voi)
        affine = torch.eye(3, dtype=torch.float64)
        if meta.get("pixel_spacing"):
            affine[0, 0], affine[1, 1] = meta["pixel_spacing"]
        return MetaTensor(torch.from_numpy(image[None]), affine=affine, meta=dict(meta))


class LoadMammogramd(MapTransform):
    """Dictionary twin of :class:`LoadMammogram`: ``data[key]`` (a path) -> ``(1, H, W)`` MetaTensor."""

    def __init__(
        self,
        keys: KeysCollection,
        apply_voi: bool = True,
        cache: DecodedImageCache | None = None,
        base_dir: str | os.PathLike | None = None,
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadMammogram(apply_voi=apply_voi, cache=cache)
        self.base_dir = Path(base_dir) if base_dir is not None else None

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            path = Path(d[key])
            if self.base_dir is not None and not path.is_absolute():
                path = self.base_dir / path
            d[key] = self.loader(path)
        return d

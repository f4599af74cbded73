"""LoadMammogram: DICOM pitfalls (MONOCHROME1, LUTs, compression, orientation), TIFF/PNG, bad files."""

import numpy as np
import pydicom
import pytest
import tifffile
from PIL import Image
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless

from mammoshare.phantom.dicom import write_mg_dicom
from transforms import DecodedImageCache, LoadMammogram, LoadMammogramd, MammogramError, read_mammogram


@pytest.fixture
def pixels():
    rng = np.random.RandomState(0)
    # non-square on purpose: rows != columns catches a transposed read
    image = (rng.rand(60, 40) * 12000 + 1000).astype(np.uint16)
    image[5, 30] = 16000  # a marker off the diagonal
    return image


def _minmax(a):
    a = a.astype(np.float64)
    return (a - a.min()) / (a.max() - a.min())


def test_rows_and_columns_as_in_file(tmp_path, pixels):
    path = write_mg_dicom(tmp_path / "a.dcm", pixels, "p1", "L", "CC", pixel_spacing_mm=0.07)
    image = LoadMammogram()(path)
    assert image.shape == (1, 60, 40)
    assert image.dtype.is_floating_point
    np.testing.assert_allclose(image[0].numpy(), _minmax(pixels), atol=1e-6)
    assert float(image[0, 5, 30]) == pytest.approx(1.0)
    assert image.meta["pixel_spacing"] == [0.07, 0.07]
    assert image.meta["laterality"] == "L" and image.meta["view"] == "CC" and image.meta["modality"] == "MG"


def test_monochrome1_is_inverted(tmp_path, pixels):
    mono2 = read_mammogram(write_mg_dicom(tmp_path / "m2.dcm", pixels, "p", "R", "MLO"))[0]
    path1 = write_mg_dicom(tmp_path / "m1.dcm", pixels, "p", "R", "MLO", photometric="MONOCHROME1")
    stored = pydicom.dcmread(path1).pixel_array
    assert stored[5, 30] < stored.mean()  # the bright marker is stored dark
    mono1, meta = read_mammogram(path1)
    assert meta["photometric_interpretation"] == "MONOCHROME1"
    np.testing.assert_allclose(mono1, mono2, atol=1e-6)


def test_modality_lut_is_applied(tmp_path, pixels):
    path = write_mg_dicom(
        tmp_path / "r.dcm", pixels, "p", "L", "CC", extra={"RescaleSlope": -2.0, "RescaleIntercept": 100.0}
    )
    image, _ = read_mammogram(path, apply_voi=False)
    # a negative slope flips the order of values: the marker becomes the darkest pixel
    np.testing.assert_allclose(image, _minmax(-2.0 * pixels.astype(np.float64) + 100.0), atol=1e-6)
    assert image[5, 30] == pytest.approx(0.0)


def test_voi_window_is_applied(tmp_path, pixels):
    centre, width = 7000.0, 4000.0
    path = write_mg_dicom(tmp_path / "w.dcm", pixels, "p", "L", "CC", window=(centre, width))
    windowed, meta = read_mammogram(path)
    assert meta["voi_applied"]
    low, high = centre - 0.5 - (width - 1) / 2, centre - 0.5 + (width - 1) / 2
    expected = _minmax(np.clip(pixels.astype(np.float64), low, high))
    np.testing.assert_allclose(windowed, expected, atol=2e-3)
    assert (windowed == 0).sum() > 10 and (windowed == 1).sum() > 10  # saturated on both sides
    unwindowed, meta = read_mammogram(path, apply_voi=False)
    assert not meta["voi_applied"]
    np.testing.assert_allclose(unwindowed, _minmax(pixels), atol=1e-6)


@pytest.mark.parametrize("syntax", [JPEG2000Lossless, JPEGLSLossless])
def test_compressed_transfer_syntaxes_decode(tmp_path, pixels, syntax):
    path = write_mg_dicom(tmp_path / "c.dcm", pixels, "p", "L", "CC")
    ds = pydicom.dcmread(path)
    ds.compress(syntax)
    ds.save_as(tmp_path / "compressed.dcm")
    image, meta = read_mammogram(tmp_path / "compressed.dcm")
    assert meta["transfer_syntax"] == syntax
    np.testing.assert_allclose(image, _minmax(pixels), atol=1e-6)


def test_pylibjpeg_decodes_the_jpeg_family():
    from pydicom.pixels.decoders.base import get_decoder
    from pydicom.uid import JPEGLossless, JPEGLosslessSV1

    for syntax in (JPEGLossless, JPEGLosslessSV1, JPEGLSLossless, JPEG2000Lossless):
        assert "pylibjpeg" in get_decoder(syntax).available_plugins, syntax.name


def test_non_mg_modality_warns_but_loads(tmp_path, pixels):
    path = write_mg_dicom(tmp_path / "cr.dcm", pixels, "p", "L", "CC", modality="CR")
    with pytest.warns(UserWarning, match="modality is CR"):
        image = LoadMammogram()(path)
    assert image.shape == (1, 60, 40)


def test_colour_dicom_is_refused(tmp_path, pixels):
    path = write_mg_dicom(tmp_path / "rgb.dcm", pixels, "p", "L", "CC")
    ds = pydicom.dcmread(path)
    rgb = np.repeat((pixels >> 8).astype(np.uint8)[..., None], 3, axis=-1)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = rgb.tobytes()
    ds.save_as(path)
    with pytest.raises(MammogramError, match=r"rgb\.dcm: colour image"):
        read_mammogram(path)


def test_multiframe_dicom_is_refused(tmp_path, pixels):
    path = write_mg_dicom(tmp_path / "mf.dcm", pixels, "p", "L", "CC")
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames = 2
    ds.PixelData = np.stack([pixels, pixels]).tobytes()
    ds.save_as(path)
    with pytest.raises(MammogramError, match=r"mf\.dcm: multi-frame"):
        read_mammogram(path)


def test_corrupt_and_truncated_dicom(tmp_path, pixels):
    bad = tmp_path / "garbage.dcm"
    bad.write_bytes(b"this is not a dicom file" * 10)
    with pytest.raises(MammogramError, match="garbage.dcm"):
        read_mammogram(bad)
    path = write_mg_dicom(tmp_path / "cut.dcm", pixels, "p", "L", "CC")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 2000])
    with pytest.raises(MammogramError, match=r"cut\.dcm: cannot"):
        read_mammogram(path)
    with pytest.raises(MammogramError, match="file not found"):
        read_mammogram(tmp_path / "missing.dcm")


def test_tiff_and_png(tmp_path, pixels):
    tifffile.imwrite(tmp_path / "a.tif", pixels)
    image, meta = read_mammogram(tmp_path / "a.tif")
    np.testing.assert_allclose(image, _minmax(pixels), atol=1e-6)
    grey8 = (pixels >> 6).astype(np.uint8)
    Image.fromarray(grey8).save(tmp_path / "a.png")
    np.testing.assert_allclose(read_mammogram(tmp_path / "a.png")[0], _minmax(grey8), atol=1e-6)
    # grey stored as RGB (equal channels) is grey; real colour is refused
    Image.fromarray(np.repeat(grey8[..., None], 3, -1)).save(tmp_path / "grey_rgb.png")
    np.testing.assert_allclose(read_mammogram(tmp_path / "grey_rgb.png")[0], _minmax(grey8), atol=1e-6)
    colour = np.repeat(grey8[..., None], 3, -1)
    colour[..., 0] = 255 - colour[..., 0]
    Image.fromarray(colour).save(tmp_path / "colour.png")
    with pytest.raises(MammogramError, match=r"colour\.png: colour image"):
        read_mammogram(tmp_path / "colour.png")
    tifffile.imwrite(tmp_path / "pages.tif", np.stack([pixels, pixels]), photometric="minisblack", metadata=None)
    with pytest.raises(MammogramError, match=r"pages\.tif: multi-page"):
        read_mammogram(tmp_path / "pages.tif")


def test_dictionary_twin_and_cache(tmp_path, pixels):
    write_mg_dicom(tmp_path / "a.dcm", pixels, "p", "L", "CC")
    cache = DecodedImageCache()
    load = LoadMammogramd(keys="image", base_dir=tmp_path, cache=cache)
    for _ in range(3):
        out = load({"image": "a.dcm", "label": 1})
    assert out["image"].shape == (1, 60, 40) and out["label"] == 1
    assert cache.decode_count == 1


def _patched_dicom(path, pixels, keyword, marker, bad):
    """A DICOM whose ``keyword`` holds the text ``bad``: written with ``marker`` (as long as ``bad``),
    then patched in the bytes, since pydicom refuses to write an invalid number."""
    path = write_mg_dicom(path, pixels, "p", "L", "CC", window=(8000, 4000))
    ds = pydicom.dcmread(path)
    setattr(ds, keyword, marker)
    ds.save_as(path)
    data = path.read_bytes()
    assert data.count(marker.encode()) == 1 and len(marker) == len(bad)
    path.write_bytes(data.replace(marker.encode(), bad.encode()))
    return path


@pytest.mark.parametrize(
    "keyword, marker, bad",
    [
        ("RescaleSlope", "7.25", "abcd"),
        ("RescaleIntercept", "-3.5", "none"),
        ("WindowCenter", "8123.5", "centre"),
        ("WindowWidth", "4321.5", "widest"),
        ("NumberOfFrames", "000000000001", "onlyoneframe"),
    ],
)
def test_non_numeric_header_field_names_file_and_field(tmp_path, pixels, keyword, marker, bad):
    path = _patched_dicom(tmp_path / "field.dcm", pixels, keyword, marker, bad)
    with pytest.raises(MammogramError, match=rf"field\.dcm: DICOM field {keyword} \(0028,[0-9A-F]{{4}}\) is '{bad}', not a number"):
        read_mammogram(path)
    with pytest.raises(MammogramError, match=keyword):
        LoadMammogram()(path)


def _float_dicom(path, values):
    path = write_mg_dicom(path, (np.nan_to_num(values, posinf=0, neginf=0) * 100).astype(np.uint16), "p", "L", "CC")
    ds = pydicom.dcmread(path)
    del ds.PixelData
    for keyword in ("BitsStored", "HighBit", "PixelRepresentation", "RescaleSlope", "RescaleIntercept"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.BitsAllocated = 32
    ds.FloatPixelData = values.astype(np.float32).tobytes()
    ds.save_as(path)
    return path


def test_float_pixel_data_is_read_not_reported_missing(tmp_path, pixels):
    values = pixels.astype(np.float32) / 7.0
    image, _ = read_mammogram(_float_dicom(tmp_path / "float.dcm", values))
    np.testing.assert_allclose(image, _minmax(values), atol=1e-6)
    values[3, 4] = np.nan
    with pytest.raises(MammogramError, match=r"nanfloat\.dcm: 1 NaN and 0 infinite pixel value\(s\) \(the first at row 3, column 4\)"):
        read_mammogram(_float_dicom(tmp_path / "nanfloat.dcm", values))


def test_header_only_dicom_is_called_truncated(tmp_path, pixels):
    path = write_mg_dicom(tmp_path / "short.dcm", pixels, "p", "L", "CC")
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(MammogramError, match=r"short\.dcm: the file ends after 300 bytes.*truncated") as info:
        read_mammogram(path)
    assert "holds no pixel data" not in str(info.value)
    ds = pydicom.dcmread(write_mg_dicom(tmp_path / "nopix.dcm", pixels, "p", "L", "CC"))
    del ds.PixelData
    ds.save_as(tmp_path / "nopix.dcm")
    with pytest.raises(MammogramError, match=r"nopix\.dcm: the header describes a 40x60 image, but the file ends"):
        read_mammogram(tmp_path / "nopix.dcm")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_in_a_float_tiff_is_an_error(tmp_path, bad):
    values = np.random.RandomState(1).rand(30, 20).astype(np.float32)
    values[7, 2] = bad
    tifffile.imwrite(tmp_path / "float.tif", values)
    with pytest.raises(MammogramError, match=r"float\.tif: .* pixel value\(s\) \(the first at row 7, column 2\)"):
        read_mammogram(tmp_path / "float.tif")
    values[7, 2] = 0.5
    tifffile.imwrite(tmp_path / "float.tif", values)
    assert np.isfinite(read_mammogram(tmp_path / "float.tif")[0]).all()

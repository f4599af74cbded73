"""Fidelity to the study: patch files decoded by their encoding (the parity test), the VOI option,
box sizes in mm with the pixel spacing, centre B's GANs on all its patients."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from monai.bundle import ConfigParser
from PIL import Image

from mammoshare.classifier.data import synthetic_source_records
from mammoshare.classifier.model import KEEP_KEYS, training_transforms
from mammoshare.data import patch_dataset
from mammoshare.datalist import DatalistError, datalist_records, write_datalist
from mammoshare.gan.inference import SyntheticPatchWriter
from mammoshare.phantom.dicom import write_mg_dicom
from mammoshare.readers import build_datalist
from transforms import LoadCanonicalPatchd, read_mammogram, read_patch

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"


@pytest.fixture(scope="module")
def inbreast_mass(phantom_root):
    return build_datalist("inbreast", phantom_root / "inbreast", "mass")[0]


# ------------------------------------------------------------------------------ patch decoding

def test_patch_files_are_decoded_by_their_encoding_never_stretched(tmp_path):
    values = np.tile(np.arange(60, 188, dtype=np.uint8), (128, 1))  # 60..187: a low-contrast patch
    Image.fromarray(values).save(tmp_path / "p8.png")
    np.testing.assert_array_equal(read_patch(tmp_path / "p8.png")[0], values.astype(np.float32) / 255)
    assert read_patch(tmp_path / "p8.png")[1]["encoding"] == "uint8"
    # the mammogram path stretches the same file to 0..1: the two must never be confused
    assert read_mammogram(tmp_path / "p8.png")[0].min() == 0.0
    wide = (values.astype(np.uint16) * 257 + 3)
    Image.fromarray(wide).save(tmp_path / "p16.png")
    tifffile.imwrite(tmp_path / "p16.tif", wide)
    for name in ("p16.png", "p16.tif"):
        image, meta = read_patch(tmp_path / name)
        np.testing.assert_allclose(image, wide / 65535.0, atol=1e-7)
        assert meta["encoding"] == "uint16"
    tifffile.imwrite(tmp_path / "f.tif", values.astype(np.float32) / 300)
    np.testing.assert_allclose(read_patch(tmp_path / "f.tif")[0], values / 300.0, atol=1e-7)
    tifffile.imwrite(tmp_path / "bad.tif", values.astype(np.float32))
    with pytest.raises(ValueError, match=r"bad\.tif: float patch with values outside"):
        read_patch(tmp_path / "bad.tif")
    # the loader follows the record: a patch file, a mammogram box, a patch with a box is an error
    loader = LoadCanonicalPatchd()
    patch = loader({"image": str(tmp_path / "p8.png"), "box": None, "image_type": "patch"})["image"]
    np.testing.assert_allclose(patch[0].numpy(), values / 255.0, atol=1e-6)
    crop = loader({"image": str(tmp_path / "p8.png"), "box": [0, 0, 128, 128], "image_type": "mammogram"})["image"]
    assert float(crop.min()) == 0.0 and float(crop.max()) == 1.0
    old = loader({"image": str(tmp_path / "p8.png"), "box": None})["image"]  # no image_type: no box = a patch
    assert torch.equal(old, patch)
    with pytest.raises(ValueError, match="has no box"):
        loader({"image": str(tmp_path / "p8.png"), "box": [0, 0, 128, 128], "image_type": "patch"})


# ------------------------------------------------------------------------------ the parity test

def _write_as_synthetic(real: list[torch.Tensor], out: Path) -> Path:
    """Real canonical patches -> 8-bit PNG files with provenance chunks and a synthetic datalist,
    through the functions that generator inference writes its patches with."""
    with SyntheticPatchWriter(out, len(real), generator_name="parity", generator_version="0.0.0", task="mass", seed=0,
                              phantom=True) as writer:
        writer.add(torch.stack(real), weights_file="parity.pt", weights_sha256="0" * 64, lesion_types=["mass"])
        return writer.finish(generator={"name": "parity"})


def test_parity_real_canonical_patches_survive_the_synthetic_png_path(inbreast_mass, tmp_path):
    records = datalist_records(inbreast_mass)
    real_records = [r for r in records if r["label"] == 1][:12] + [r for r in records if r["label"] == 0][:12]
    real_set = patch_dataset(real_records, [], cache="none", keep_keys=KEEP_KEYS)
    real = [real_set[i]["image"] for i in range(len(real_set))]
    assert any(float(p.max() - p.min()) < 0.9 for p in real)  # patches that a min-max stretch would change
    datalist = _write_as_synthetic(real, tmp_path / "synthetic")
    with Image.open(tmp_path / "synthetic" / "synthetic_00000.png") as png:
        assert png.mode == "L" and png.text["mammoshare:synthetic"] == "true"
    # back through the classifier's training pipeline: the synthetic sources, then the patch dataset
    synthetic = synthetic_source_records([datalist], len(real), 0)["parity"]
    assert [r["index"] for r in synthetic] == list(range(len(real)))
    read_back = patch_dataset(synthetic, [], cache="none", keep_keys=KEEP_KEYS)
    for i, expected in enumerate(real):
        diff = float((read_back[i]["image"] - expected).abs().max())
        assert diff <= 1 / 255 / 2 + 1e-6, (i, diff)  # rounding to 8 bits: at most half a grey level
    # the same after the training transforms (jitter, and Swin's resize) with the same random state
    for classifier in ("cnn", "swin"):
        a = patch_dataset(real_records, training_transforms(classifier), cache="none", keep_keys=KEEP_KEYS)
        b = patch_dataset(synthetic, training_transforms(classifier), cache="none", keep_keys=KEEP_KEYS)
        a.transform.set_random_state(123)
        b.transform.set_random_state(123)
        for i in range(len(real)):
            x, y = a[i]["image"], b[i]["image"]
            assert x.shape == y.shape and float((x - y).abs().max()) <= 1 / 255, (classifier, i)
    # a control: the old per-file min-max decoding breaks the parity
    stretched = torch.from_numpy(read_mammogram(tmp_path / "synthetic" / "synthetic_00000.png")[0])
    widest = max(float((torch.from_numpy(read_mammogram(tmp_path / "synthetic" / f"synthetic_{i:05d}.png")[0])
                        - real[i][0]).abs().max()) for i in range(len(real)))
    assert stretched.min() == 0 and widest > 1 / 255


def test_synthetic_datalists_must_list_patch_files(inbreast_mass, tmp_path):
    record = dict(next(r for r in datalist_records(inbreast_mass) if r["label"] == 1))
    data = {"dataset": "synthetic", "task": "mass", "training": [record], "validation": [], "test": []}
    path = write_datalist(data, tmp_path / "mixed.json")
    with pytest.raises(DatalistError, match="not a patch file"):
        synthetic_source_records([path], 1, 0)


# ------------------------------------------------------------------------------ windowing

def test_apply_voi_with_a_window_that_clips(tmp_path):
    rng = np.random.RandomState(0)
    pixels = np.zeros((300, 200), np.uint16)
    pixels[:, 20:] = 1500 + (np.arange(300)[:, None] * 8).astype(np.uint16)  # breast: 1500..3900
    pixels += rng.randint(0, 20, pixels.shape).astype(np.uint16)
    path = write_mg_dicom(tmp_path / "w.dcm", pixels, "p", "L", "CC", window=(2000, 600))  # clips 1700..2300
    windowed, meta = read_mammogram(path, apply_voi=True)
    raw, raw_meta = read_mammogram(path, apply_voi=False)
    assert meta["voi_applied"] and not raw_meta["voi_applied"]
    breast = pixels[:, 20:] > 0
    saturated = np.isclose(windowed[:, 20:], 1.0)
    assert saturated.mean() > 0.5  # the window clips most of the dense breast to white ...
    assert len(np.unique(raw[:, 20:][breast].round(4))) > 10 * len(np.unique(windowed[:, 20:][saturated].round(4)))
    expected = (pixels.astype(np.float64) - pixels.min()) / (pixels.max() - pixels.min())
    np.testing.assert_allclose(raw, expected, atol=1e-6)  # ... the raw scaling keeps its contrast
    # the loader follows each record's apply_voi, and a bundle's apply_voi overrides it
    record = {"image": str(path), "box": [20, 100, 148, 228], "image_type": "mammogram"}
    by_record = patch_dataset([{**record, "apply_voi": True, "label": 1, "patient_id": "p"}], cache="none")[0]["image"]
    by_default = patch_dataset([{**record, "label": 1, "patient_id": "p", "source": "inbreast"}], cache="none")[0]["image"]
    forced = patch_dataset([{**record, "label": 1, "patient_id": "p", "source": "inbreast"}], cache="none",
                           apply_voi=True)[0]["image"]
    assert torch.equal(by_record, forced) and not torch.equal(by_default, forced)
    assert float(by_default.std()) > float(forced.std()) / 10


def test_apply_voi_is_an_option_of_the_datalist_and_of_every_bundle(tmp_path, phantom_root):
    from mammoshare.extraction import APPLY_VOI_DEFAULTS, APPLY_VOI_REASONS

    assert set(APPLY_VOI_DEFAULTS) == set(APPLY_VOI_REASONS) >= {"inbreast", "bcdr", "cbis-ddsm"}
    evaluate = ("classifier_inbreast/configs/train.json", "classifier_inbreast/configs/evaluate.json")
    for config in ("classifier_inbreast/configs/train.json", evaluate,  # evaluate.json overrides train.json
                   "classifier_inbreast/configs/inference.json", "dcgan_bcdr/configs/train.json",
                   "wgangp_bcdr/configs/train.json"):
        files = [BUNDLES / name for name in ([config] if isinstance(config, str) else config)]
        text = ConfigParser.load_config_files(files)
        assert "apply_voi" in text and text["apply_voi"] is None, config  # None: each dataset's default
        assert "apply_voi=@apply_voi" in json.dumps(text), config
    data, _ = build_datalist("bcdr", phantom_root / "bcdr", "mass", apply_voi="yes")
    assert data["apply_voi"] is True and all(r["apply_voi"] is True for r in datalist_records(data))


# ------------------------------------------------------------------------------ physical scale

def test_margin_and_healthy_box_in_mm(inbreast_mass, phantom_root):
    spacing = 0.28  # the INbreast phantom's PixelSpacing
    records = datalist_records(inbreast_mass)
    assert all(r["pixel_spacing"] == [spacing, spacing] for r in records)
    assert inbreast_mass["margin"] == {"px": 60} and inbreast_mass["healthy_box"] == {"px": 128}
    same, _ = build_datalist("inbreast", phantom_root / "inbreast", "mass", margin_mm=60 * spacing,
                             healthy_box_mm=128 * spacing)
    assert [r["box"] for r in datalist_records(same)] == [r["box"] for r in records]
    assert same["margin"] == {"mm": pytest.approx(16.8)}
    # 10 mm margin = 36 px, 20 mm healthy box = 71 px (also the smallest lesion box)
    small, _ = build_datalist("inbreast", phantom_root / "inbreast", "mass", margin_mm=10.0, healthy_box_mm=20.0)
    sides = [r["box"][2] - r["box"][0] for r in datalist_records(small)]
    assert min(sides) == 71 and all(r["box"][2] - r["box"][0] == 71 for r in datalist_records(small) if r["label"] == 0)
    default_sides = [r["box"][2] - r["box"][0] for r in records if r["label"] == 1]
    small_sides = [r["box"][2] - r["box"][0] for r in datalist_records(small) if r["label"] == 1]
    assert len(small_sides) == len(default_sides)
    # a lesion box is its bounding box + 2 margins: 2 * (60 - 36) = 48 px smaller, at least 71
    expected = [max(71, side - 48) for side in default_sides if side > 128]
    assert expected and [s for s, d in zip(small_sides, default_sides) if d > 128] == expected


def test_mm_options_need_a_pixel_spacing(phantom_root):
    # the BCDR phantom's TIFF files carry no resolution: a clear error, or the given default
    with pytest.raises(DatalistError, match="no pixel spacing in the file.*--default-pixel-spacing"):
        build_datalist("bcdr", phantom_root / "bcdr", "mass", margin_mm=5.0)
    data, _ = build_datalist("bcdr", phantom_root / "bcdr", "mass", margin_mm=5.0, default_pixel_spacing=0.1)
    records = datalist_records(data)
    assert all(r["pixel_spacing"] is None for r in records)  # the record says what the file says
    assert data["default_pixel_spacing_mm"] == 0.1
    with pytest.raises(DatalistError, match="--calcifications is an INbreast option"):
        build_datalist("bcdr", phantom_root / "bcdr", "mass", calcifications="cluster")


# ------------------------------------------------------------------------------ centre B's GAN data

def test_gan_bundles_train_on_all_subsets_by_default(phantom_root, tmp_path):
    from mammoshare.gan.data import gan_training_records

    for bundle in ("dcgan_bcdr", "wgangp_bcdr"):
        assert json.loads((BUNDLES / bundle / "configs" / "train.json").read_text())["subsets"] == [
            "training", "validation", "test"]
    data, _ = build_datalist("bcdr", phantom_root / "bcdr", "mass")
    path = write_datalist(data, tmp_path / "bcdr.json")
    every = gan_training_records(datalist=path, output_dir=tmp_path / "every")  # its counts file stays in tmp
    patients = {r["patient_id"] for r in datalist_records(data) if r["label"] == 1}
    assert {r["patient_id"] for r in every} == patients and len(every) == sum(r["label"] for r in datalist_records(data))
    narrow = gan_training_records(datalist=path, subsets=["training"], output_dir=tmp_path / "narrow")
    assert {r["patient_id"] for r in narrow} < patients

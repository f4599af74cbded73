"""The canonical patch, its jitter and the Swin input."""

import logging

import cv2
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from transforms import (
    CanonicalPatch,
    CanonicalPatchd,
    RandPatchJitter,
    RandPatchJitterd,
    SwinInput,
    SwinInputd,
)


def test_canonical_patch_crops_box_and_area_resizes():
    image = np.zeros((1, 600, 500), np.float32)
    image[0, 100:356, 200:456] = np.kron(np.eye(2), np.ones((128, 128)))  # a 2x2 checker of 128-px blocks
    patch = CanonicalPatch()(image, [200, 100, 456, 356])
    assert patch.shape == (1, 128, 128) and patch.dtype == torch.float32
    expected = np.kron(np.eye(2), np.ones((64, 64)))  # area resize halves each block exactly
    np.testing.assert_allclose(patch[0].numpy(), expected, atol=1e-6)
    rng = np.random.RandomState(0)
    image = rng.rand(1, 600, 500).astype(np.float32)
    patch = CanonicalPatch()(image, [10, 20, 310, 320])
    reference = cv2.resize(image[0, 20:320, 10:310], (128, 128), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(patch[0].numpy(), reference, atol=1e-6)


def test_canonical_patch_keeps_metadata_and_refuses_bad_boxes():
    image = MetaTensor(torch.rand(1, 300, 200), meta={"filename_or_obj": "x.dcm"})
    patch = CanonicalPatch()(image, [0, 0, 150, 150])
    assert isinstance(patch, MetaTensor) and patch.meta["patch_box"] == [0, 0, 150, 150]
    with pytest.raises(ValueError, match=r"x\.dcm: box .* does not lie inside"):
        CanonicalPatch()(image, [100, 0, 250, 150])
    with pytest.raises(ValueError, match="not square"):
        CanonicalPatch()(image, [0, 0, 150, 100])


def test_synthetic_patch_passes_and_other_sizes_are_resized_once(caplog):
    generated = torch.rand(1, 128, 128)
    assert torch.equal(CanonicalPatch()(generated), generated)
    patcher = CanonicalPatch()
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            out = patcher(torch.rand(1, 64, 64))
    assert out.shape == (1, 128, 128)
    assert sum("resized" in r.message for r in caplog.records) == 1
    with pytest.raises(ValueError, match="not square"):
        patcher(torch.rand(1, 64, 32))


def test_dictionary_twin():
    data = {"image": torch.rand(1, 300, 300), "box": [10, 10, 266, 266], "label": 1}
    out = CanonicalPatchd("image")(data)
    assert out["image"].shape == (1, 128, 128) and out["label"] == 1


def test_jitter_statistics_symmetric_zoom_in_only():
    jitter = RandPatchJitter(zoom_std=0.15, shift_std=0.08)
    jitter.set_random_state(2021)
    windows = []
    for _ in range(3000):
        jitter.randomize()
        windows.append(jitter.crop_window(128))
    x0, y0, side = (np.array(v, dtype=float) for v in zip(*windows))
    assert side.max() <= 128 and side.min() >= round(128 / 1.5)
    zoom = 128 / side
    assert zoom.min() >= 1.0 and 1.08 < zoom.mean() < 1.16  # E|N(0, .15)| = .12
    # offsets of the crop centre from the patch centre: symmetric around 0 in x and y
    dx = x0 + side / 2 - 64
    dy = y0 + side / 2 - 64
    assert abs(dx.mean()) < 0.3 and abs(dy.mean()) < 0.3
    assert dx.std() > 2.0 and dy.std() > 2.0
    assert abs((dx > 0).mean() - (dx < 0).mean()) < 0.05
    # the crop never leaves the patch: nothing is ever padded
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x0 + side <= 128).all() and (y0 + side <= 128).all()


def test_jitter_output_only_crops_and_is_reproducible():
    patch = torch.rand(1, 128, 128) * 0.5 + 0.25
    a = RandPatchJitter(zoom_std=0.3, shift_std=0.2).set_random_state(5)
    b = RandPatchJitter(zoom_std=0.3, shift_std=0.2).set_random_state(5)
    for _ in range(20):
        out = a(patch)
        assert out.shape == (1, 128, 128)
        assert out.min() >= 0.25 - 1e-6 and out.max() <= 0.75 + 1e-6  # no padding value ever appears
        assert torch.equal(out, b(patch))
    assert torch.equal(RandPatchJitter(prob=0.0)(patch), patch)


def test_jitter_dictionary_twin_same_crop_for_all_keys():
    patch = torch.rand(1, 128, 128)
    out = RandPatchJitterd(["image", "copy"], zoom_std=0.3).set_random_state(1)({"image": patch, "copy": patch.clone()})
    assert torch.equal(out["image"], out["copy"])
    assert not torch.equal(out["image"], patch)


def test_swin_input():
    patch = torch.rand(1, 128, 128)
    out = SwinInput()(patch)
    assert out.shape == (3, 224, 224)
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])
    assert SwinInputd("image")({"image": patch})["image"].shape == (3, 224, 224)
    with pytest.raises(ValueError, match="canonical patch"):
        SwinInput()(torch.rand(3, 128, 128))

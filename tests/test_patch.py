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


def _blob_patch(size: int = 128, background: float = 0.3) -> torch.Tensor:
    """A canonical lesion patch: a small bright blob at the centre of a flat background."""
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    blob = np.exp(-((xx - size / 2) ** 2 + (yy - size / 2) ** 2) / (2 * 2.5**2))
    return torch.from_numpy((background + 0.6 * blob).astype(np.float32))[None]


def test_jitter_moves_the_lesion_centre_by_at_least_8_percent_of_the_side():
    """The offset distribution, measured on jittered images: the blob's centroid in the output."""
    patch = _blob_patch()
    jitter = RandPatchJitter().set_random_state(2021)  # the study's defaults
    yy, xx = np.mgrid[0:128, 0:128] + 0.5
    measured, predicted, smallest = [], [], []
    for _ in range(2000):
        out = jitter(patch)[0].numpy()
        weight = np.clip(out - 0.3, 0, None)
        measured.append(((weight * xx).sum() / weight.sum() - 64, (weight * yy).sum() / weight.sum() - 64))
        predicted.append(jitter.centre_offset(128))
        smallest.append(out.min())
    offsets = np.array(measured)
    np.testing.assert_allclose(offsets, np.array(predicted), atol=1.0)  # centre_offset says where the lesion goes
    std = offsets.std(axis=0) / 128
    assert (std >= 0.08).all() and (std < 0.12).all(), std  # about 10% of the side in x and in y
    assert (np.abs(offsets.mean(axis=0)) < 1.0).all()  # symmetric around the centre
    assert abs((offsets[:, 0] > 0).mean() - (offsets[:, 0] < 0).mean()) < 0.05
    radius = np.hypot(offsets[:, 0], offsets[:, 1])
    assert np.median(radius) > 10 and np.percentile(radius, 95) > 25  # the old jitter: 2.5 px and 7.5 px
    assert min(smallest) >= 0.3 - 1e-6  # only the patch's own values: nothing is ever padded


def test_jitter_crop_stays_inside_and_zoom_follows_the_shift():
    jitter = RandPatchJitter().set_random_state(0)
    for _ in range(3000):
        jitter.randomize()
        x0, y0, side = jitter.crop_window(128)
        assert 0 <= x0 and 0 <= y0 and x0 + side <= 128 and y0 + side <= 128
        assert 1.0 <= jitter._zoom <= 2.0
    with pytest.raises(ValueError, match="padding"):
        RandPatchJitter(max_shift=0.3, max_zoom=1.5)


def test_jitter_is_the_same_for_every_source():
    patch = _blob_patch()
    records = [
        {"image": patch.clone(), "label": 1, "source": "inbreast"},
        {"image": patch.clone(), "label": 0, "source": "inbreast"},
        {"image": patch.clone(), "label": 1, "source": "dcgan_bcdr"},
    ]
    outputs = [RandPatchJitterd("image").set_random_state(7)(r)["image"] for r in records]
    assert all(torch.equal(outputs[0], o) for o in outputs[1:])


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


def test_swin_input_is_area_consistent():
    """Each 224 pixel is the area-weighted mean of the 128 pixels it overlaps (cv2.INTER_AREA)."""
    patch = torch.rand(1, 128, 128)
    out = SwinInput()(patch)[0].numpy().astype(np.float64)

    def weights(n, m):
        w = np.zeros((m, n))
        for i in range(m):
            low, high = i * n / m, (i + 1) * n / m
            for j in range(int(np.floor(low)), min(n, int(np.ceil(high)))):
                w[i, j] = max(0.0, min(high, j + 1) - max(low, j))
        return w / w.sum(axis=1, keepdims=True)

    w = weights(128, 224)
    np.testing.assert_allclose(out, w @ patch[0].numpy().astype(np.float64) @ w.T, atol=1e-5)
    assert abs(out.mean() - float(patch.mean())) < 1e-5 and out.min() >= float(patch.min()) - 1e-6

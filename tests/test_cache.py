"""Canonical patches are computed once: each mammogram is decoded once across epochs and runs."""

import numpy as np
import pytest
import torch
from monai.data import DataLoader

from mammoshare.data import patch_dataset, record_content_hash
from mammoshare.phantom.dicom import write_mg_dicom
from transforms import CanonicalPatch, DecodedImageCache, RandPatchJitterd, read_mammogram


@pytest.fixture
def records(tmp_path):
    rng = np.random.RandomState(0)
    paths = [
        write_mg_dicom(tmp_path / f"img{i}.dcm", (rng.rand(400, 300) * 16000).astype(np.uint16), f"p{i}", "L", "CC")
        for i in range(3)
    ]
    boxes = [[x, y, x + 128, y + 128] for x, y in [(0, 0), (100, 50), (150, 200), (20, 260), (170, 270)]]
    # records of different images interleaved: the worst order for a decode cache
    return [{"image": str(p), "box": b, "label": i % 2} for b in boxes for i, p in enumerate(paths)]


def _epochs(dataset, n):
    out = []
    for _ in range(n):
        out.append(torch.cat([batch["image"] for batch in DataLoader(dataset, batch_size=4, num_workers=0)]))
    return out


def test_memory_cache_decodes_each_image_once_across_epochs(records):
    image_cache = DecodedImageCache(max_images=4)
    jitter = RandPatchJitterd("image", zoom_std=0.2, shift_std=0.1).set_random_state(0)
    dataset = patch_dataset(records, [jitter], cache="memory", image_cache=image_cache, progress=False)
    epochs = _epochs(dataset, 3)
    assert image_cache.decode_count == 3  # 15 records from 3 images, 3 epochs
    assert epochs[0].shape == (15, 1, 128, 128)
    assert not torch.equal(epochs[0], epochs[1])  # later epochs jitter the cached patches differently
    plain = patch_dataset(records, cache="memory", image_cache=DecodedImageCache(), progress=False)
    first = records[4]
    expected = CanonicalPatch()(read_mammogram(first["image"])[0][None], first["box"])
    assert torch.allclose(plain[4]["image"], expected)


def test_without_cache_every_epoch_recomputes(records):
    image_cache = DecodedImageCache(max_images=1)
    dataset = patch_dataset(records, cache="none", image_cache=image_cache)
    _epochs(dataset, 2)
    assert image_cache.decode_count == 2 * len(records)  # the comparison that makes the cache matter


def test_disk_cache_is_reused_across_runs_and_keyed_by_content(records, tmp_path):
    cache_dir = tmp_path / "patch_cache"
    first_run = DecodedImageCache()
    reference = _epochs(patch_dataset(records, cache="disk", cache_dir=cache_dir, image_cache=first_run), 1)[0]
    assert first_run.decode_count == 3
    second_run = DecodedImageCache()
    again = _epochs(patch_dataset(records, cache="disk", cache_dir=cache_dir, image_cache=second_run), 2)
    assert second_run.decode_count == 0
    assert torch.equal(again[0], reference)
    # a changed file is a different key: its patches are recomputed, the others still come from disk
    before = record_content_hash(records[0])
    write_mg_dicom(records[0]["image"], np.full((400, 300), 500, np.uint16), "p0", "L", "CC")
    assert record_content_hash(records[0]) != before
    third_run = DecodedImageCache()
    _epochs(patch_dataset(records, cache="disk", cache_dir=cache_dir, image_cache=third_run), 1)
    assert third_run.decode_count == 1


def test_empty_records_and_unknown_mode():
    with pytest.raises(ValueError, match="empty"):
        patch_dataset([])
    with pytest.raises(ValueError, match="unknown cache mode"):
        patch_dataset([{"image": "x", "box": None}], cache="ram")

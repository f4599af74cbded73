"""Round trips through the command line: phantom -> datalist -> canonical patches -> grid."""

import json
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from mammoshare.cli import main
from mammoshare.data import patch_dataset
from mammoshare.datalist import PHANTOM_MARKER, SUBSETS, datalist_records, load_datalist
from transforms import DecodedImageCache

FORMATS = ["inbreast", "bcdr", "cbis-ddsm", "mias"]


@pytest.fixture(scope="module")
def datalists(phantom_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("datalists")
    paths = {}
    for fmt in FORMATS:
        for task in ("all", "mass"):
            path = out / f"{fmt}_{task}.json"
            code = main(["datalist", "--dataset", fmt, "--root", str(phantom_root / fmt), "--task", task, "--out", str(path)])
            assert code == 0
            paths[fmt, task] = path
    return paths


def test_phantom_command_writes_three_labelled_layouts(tmp_path, capsys):
    assert main(["phantom", "--out", str(tmp_path), "--datasets", "bcdr"]) == 0
    assert (tmp_path / "bcdr" / PHANTOM_MARKER).is_file()
    assert "PHANTOM" in capsys.readouterr().out


@pytest.mark.parametrize("fmt", FORMATS)
def test_datalist_has_all_subsets_both_classes_and_phantom_flag(datalists, fmt):
    for task in ("all", "mass"):
        raw = json.loads(datalists[fmt, task].read_text())
        assert raw["dataset"] == fmt and raw["task"] == task and raw["phantom"] is True
        for subset in SUBSETS:
            labels = {r["label"] for r in raw[subset]}
            assert labels == {0, 1}, f"{fmt} {task} {subset} lacks a class"
            assert not any(r["image"].startswith("/") for r in raw[subset])  # paths relative to the datalist
        if task == "mass":
            lesions = [r for s in SUBSETS for r in raw[s] if r["label"] == 1]
            assert lesions and all("mass" in r["lesion_types"] for r in lesions)  # a calcified mass is a mass


@pytest.mark.parametrize("fmt", FORMATS)
def test_canonical_patches_show_centred_lesions(datalists, fmt):
    datalist = load_datalist(datalists[fmt, "mass"])
    records = datalist_records(datalist)
    image_cache = DecodedImageCache()
    dataset = patch_dataset(records, cache="memory", image_cache=image_cache, progress=False)
    assert image_cache.decode_count == len({r["image"] for r in records})  # each mammogram decoded once
    contrast = {0: [], 1: []}
    for i in range(len(dataset)):
        item = dataset[i]
        patch = item["image"]
        assert patch.shape == (1, 128, 128) and patch.dtype == torch.float32
        assert 0.0 <= float(patch.min()) and float(patch.max()) <= 1.0
        centre = patch[0, 44:84, 44:84].mean()
        ring = torch.cat([patch[0, :16].flatten(), patch[0, -16:].flatten(), patch[0, :, :16].flatten(), patch[0, :, -16:].flatten()]).mean()
        contrast[item["label"]].append(float(centre - ring))
    # phantom masses are bright blobs in the middle of lesion patches; healthy tissue has no such centre
    assert np.mean(contrast[1]) > 0.05
    assert np.mean(contrast[1]) > np.mean(contrast[0]) + 0.04


@pytest.mark.parametrize("fmt", FORMATS)
def test_grid_picture(datalists, fmt, tmp_path):
    out = tmp_path / f"{fmt}.png"
    assert main(["grid", str(datalists[fmt, "all"]), "--out", str(out), "--n", "16"]) == 0
    with Image.open(out) as img:
        assert img.width > 300 and img.height > 300
        pixels = np.asarray(img.convert("L"), dtype=float)
    assert pixels.std() > 10  # not a blank picture


def test_cli_reports_bad_input_with_exit_status(tmp_path, capsys):
    code = main(["datalist", "--dataset", "inbreast", "--root", str(tmp_path / "missing"), "--out", str(tmp_path / "x.json")])
    assert code == 2
    assert "dataset folder not found" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_datalist_healthy_reserve_per_image_option(phantom_root, tmp_path):
    from mammoshare.datalist import DEFAULT_RESERVE_PER_IMAGE, HEALTHY_RESERVE

    reserves = {}
    for per_image in (None, 2, 0):
        path = tmp_path / f"reserve_{per_image}.json"
        option = [] if per_image is None else ["--healthy-reserve-per-image", str(per_image)]
        assert main(["datalist", "--dataset", "inbreast", "--root", str(phantom_root / "inbreast"), "--task", "mass",
                     "--out", str(path), *option]) == 0
        reserves[per_image] = json.loads(path.read_text())[HEALTHY_RESERVE]
    per_image = lambda reserve: max(Counter(r["image"] for r in reserve).values())  # noqa: E731
    assert reserves[0] == [] and 0 < per_image(reserves[2]) <= 2
    assert per_image(reserves[2]) < per_image(reserves[None]) <= DEFAULT_RESERVE_PER_IMAGE
    assert all(r["label"] == 0 and r["extra_healthy"] for r in reserves[2])

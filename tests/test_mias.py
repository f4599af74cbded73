"""mini-MIAS: the phantom's layout, the reader's records (bottom-left origin, pairs, NOTE 3 rows,
density, healthy boxes), PNG copies, and every kind of bad input."""

import re
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mammoshare.datalist import DatalistError, datalist_records
from mammoshare.phantom.mias import PHANTOM_PLAN, write_pgm
from mammoshare.readers import build_datalist
from mammoshare.readers.mias import DENSITY_OF_BG, MIAS_SIZE, padding_mask
from transforms import background_mask, read_mammogram


@pytest.fixture(scope="module")
def mias_root(tmp_path_factory):
    from mammoshare.phantom.mias import write_mias_phantom

    return write_mias_phantom(tmp_path_factory.mktemp("phantom") / "mias")


@pytest.fixture(scope="module")
def datalists(mias_root):
    return {task: build_datalist("mias", mias_root, task) for task in ("all", "mass")}


def _table(root: Path) -> list[list[str]]:
    return [line.split() for line in (root / "Info.txt").read_text().splitlines() if line.startswith("mdb")]


def _copy(mias_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "mias"
    shutil.copytree(mias_root, root)
    return root


def _edit_info(root: Path, old: str, new: str) -> None:
    text = (root / "Info.txt").read_text()
    assert old in text
    (root / "Info.txt").write_text(text.replace(old, new, 1))


def test_phantom_layout(mias_root):
    text = (mias_root / "Info.txt").read_text()
    header = text[: text.index("\nmdb001")]
    assert "origin is the bottom-left corner" in header and "CIRC" in header and "NORM" in header
    rows = _table(mias_root)
    assert len({r[0] for r in rows}) == 2 * len(PHANTOM_PLAN) == len(list(mias_root.glob("mdb*.pgm")))
    assert any(r[4:] == ["*NOTE", "3*"] for r in rows)  # diffuse calcifications
    assert any(r[2] == "CIRC" and len(r) == 4 for r in rows)  # the CIRC row without coordinates
    assert max(Counter(r[0] for r in rows).values()) == 2  # an image with two masses
    head = (mias_root / "mdb001.pgm").read_bytes()[:17]
    assert head == b"P5\n1024 1024\n255\n"
    with Image.open(mias_root / "mdb001.pgm") as img:
        assert (img.mode, img.size) == ("L", (MIAS_SIZE, MIAS_SIZE))


def test_counts(mias_root, datalists):
    rows = _table(mias_root)
    located = [r for r in rows if len(r) == 7]
    normal = [r for r in rows if r[2] == "NORM"]
    for task, classes in (("all", {"CALC", "CIRC", "SPIC", "MISC", "ARCH", "ASYM"}), ("mass", {"CIRC", "SPIC", "MISC"})):
        datalist, bad = datalists[task]
        assert not bad and datalist["dataset"] == "mias" and datalist["phantom"] and datalist["split_method"] == "random"
        records = datalist_records(datalist)
        lesions = [r for r in records if r["label"] == 1]
        assert Counter(r["mias_class"] for r in lesions) == Counter(r[2] for r in located if r[2] in classes)
        healthy = [r for r in records if r["label"] == 0]
        assert len(healthy) == 5 * len(normal)
        assert {r["refnum"] for r in healthy} == {r[0] for r in normal}
    types = Counter(t for r in datalist_records(datalists["all"][0]) for t in r["lesion_types"])
    assert set(types) == {"mass", "calcification", "distortion", "asymmetry"}
    assert all(r["lesion_types"] == ["mass"] for r in datalist_records(datalists["mass"][0]) if r["label"])


def test_boxes_hold_the_circle_with_the_bottom_left_origin(mias_root, datalists):
    rows = {(r[0], int(r[4]), int(r[5]), int(r[6])) for r in _table(mias_root) if len(r) == 7}
    for r in datalist_records(datalists["all"][0]):
        if not r["label"]:
            continue
        x, row = r["centre"]
        match = [t for t in rows if t[0] == r["refnum"] and t[1] == x and MIAS_SIZE - t[2] == row]
        assert len(match) == 1, r
        x0, y0, x1, y1 = r["box"]
        radius = match[0][3]
        assert x0 <= x - radius and x + radius < x1 and y0 <= row - radius and row + radius < y1
        assert x1 - x0 == y1 - y0 >= 128


def test_a_lesion_drawn_at_a_known_row_lands_in_its_box(mias_root, tmp_path):
    """A bright disc at row 200 (near the top) is written as Y = 1024 - 200: its box is at the top."""
    root = _copy(mias_root, tmp_path)
    image = np.asarray(Image.open(root / "mdb001.pgm")).copy()
    yy, xx = np.mgrid[:MIAS_SIZE, :MIAS_SIZE]
    image[(yy - 200) ** 2 + (xx - 300) ** 2 <= 20**2] = 255
    write_pgm(root / "mdb001.pgm", image)
    text = (root / "Info.txt").read_text()
    text = re.sub(r"^mdb001 .*$", "mdb001 G CIRC B 300 824 20", text, count=1, flags=re.M)
    (root / "Info.txt").write_text(text)
    datalist, _ = build_datalist("mias", root, "mass")
    (record,) = [r for r in datalist_records(datalist) if r["refnum"] == "mdb001"]
    x0, y0, x1, y1 = record["box"]
    assert x0 < 300 < x1 and y0 < 200 < y1 and y1 < 512  # top half: row = 1024 - Y
    pixels = read_mammogram(root / "mdb001.pgm")[0]
    assert pixels[200, 300] == 1.0 and pixels[y0:y1, x0:x1].max() == 1.0


def test_pairs_are_patients(datalists):
    for datalist, _ in datalists.values():
        subsets = defaultdict(set)
        for subset in ("training", "validation", "test"):
            assert datalist[subset], subset
            for r in datalist[subset]:
                subsets[r["patient_id"]].add(subset)
                number = int(r["refnum"][3:])
                first = number if number % 2 else number - 1
                assert r["patient_id"] == f"mdb{first:03d}_{first + 1:03d}"
                assert r["laterality"] == ("R" if number % 2 else "L") and r["view"] == "MLO"
        assert all(len(s) == 1 for s in subsets.values())  # a woman's two films stay together
    refnums = {r["patient_id"]: set() for r in datalist_records(datalists["all"][0])}
    for r in datalist_records(datalists["all"][0]):
        refnums[r["patient_id"]].add(r["refnum"])
    assert any(len(v) == 2 for v in refnums.values())


def test_rows_without_location_are_noted_not_fatal(mias_root, datalists):
    unlocated = {r[0]: r[2] for r in _table(mias_root) if 4 <= len(r) < 7 or "*NOTE" in r}
    assert set(unlocated.values()) == {"CALC", "CIRC"}
    for task, datalist in (("all", datalists["all"][0]), ("mass", datalists["mass"][0])):
        expected = {k for k, v in unlocated.items() if task == "all" or v == "CIRC"}
        noted = {re.search(r"mdb\d{3}", n["case"]).group(0) for n in datalist["notes"]}
        assert noted == expected
        assert all(n["file"].endswith("Info.txt") and "no lesion record" in n["problem"] for n in datalist["notes"])
        assert not {r["refnum"] for r in datalist_records(datalist)} & set(unlocated)  # no record, no healthy box


def test_density_mapping_and_record_fields(mias_root, datalists):
    bg = {r[0]: r[1] for r in _table(mias_root)}
    assert DENSITY_OF_BG == {"F": 1, "G": 2, "D": 3}
    records = datalist_records(datalists["all"][0])
    for r in records:
        assert r["background_tissue"] == bg[r["refnum"]] and r["density"] == DENSITY_OF_BG[bg[r["refnum"]]]
        assert r["pixel_spacing"] == [0.2, 0.2] and r["film"] is True and r["source"] == "mias"
    assert {r["density"] for r in records} == {1, 2, 3}
    assert {r["severity"] for r in records if r["label"]} == {"B", "M"}


def test_healthy_boxes_keep_background_and_padding_below_40_percent(mias_root, datalists):
    for r in datalist_records(datalists["all"][0]):
        if r["label"]:
            continue
        image = read_mammogram(r["image"])[0]
        pad = padding_mask(image)
        assert pad[0, 0] and pad.mean() > 0.1 and not pad[MIAS_SIZE // 2, MIAS_SIZE // 2]
        x0, y0, x1, y1 = r["box"]
        outside = background_mask(np.where(pad, 0.0, image)) | pad
        assert outside[y0:y1, x0:x1].mean() <= 0.4


def test_grey_padding_counts_as_background(mias_root, tmp_path):
    """A padding that is not dark would pass the background test; it is padding, so it counts as background."""
    root = _copy(mias_root, tmp_path)
    image = np.asarray(Image.open(root / "mdb002.pgm")).copy()
    pad = padding_mask(image)
    image[pad] = 180
    write_pgm(root / "mdb002.pgm", image)
    datalist, _ = build_datalist("mias", root, "all", healthy_per_image=40)
    boxes = [r["box"] for r in datalist_records(datalist) if r["refnum"] == "mdb002"]
    assert len(boxes) == 40
    for x0, y0, x1, y1 in boxes:
        assert pad[y0:y1, x0:x1].mean() <= 0.4


def test_png_copies_give_the_same_records(mias_root, datalists, tmp_path):
    root = tmp_path / "png"
    (root / "images").mkdir(parents=True)  # a mirror's layout: PNGs in a subfolder
    shutil.copy(mias_root / "Info.txt", root / "Info.txt")
    for pgm in mias_root.glob("*.pgm"):
        Image.open(pgm).save(root / "images" / f"{pgm.stem}.png")
    datalist, _ = build_datalist("mias", root, "all")
    expected = datalists["all"][0]
    for subset in ("training", "validation", "test"):
        assert [{**r, "image": Path(r["image"]).stem} for r in datalist[subset]] == [
            {**r, "image": Path(r["image"]).stem} for r in expected[subset]
        ]
    assert all(r["image"].endswith(".png") for r in datalist_records(datalist))


BAD_CASES = {
    "unknown class": (lambda root: _edit_info(root, "mdb004 D SPIC", "mdb004 D BLOB"), "Info.txt", r"unknown class 'BLOB'"),
    "missing image": (lambda root: (root / "mdb014.pgm").unlink(), "mdb014.pgm", "image not found"),
    "16-bit": (
        lambda root: (root / "mdb018.pgm").write_bytes(b"P5\n1024 1024\n65535\n" + bytes(2 * MIAS_SIZE * MIAS_SIZE)),
        "mdb018.pgm", r"16-bit \(maxval 65535\) 1024x1024 image; mini-MIAS images are 8-bit 1024x1024",
    ),
    "wrong size": (
        lambda root: write_pgm(root / "mdb020.pgm", np.zeros((512, 1024), np.uint8)), "mdb020.pgm",
        r"8-bit 1024x512 image",
    ),
    "ascii pgm": (lambda root: (root / "mdb021.pgm").write_bytes(b"P2\n2 2\n255\n0 1 2 3\n"), "mdb021.pgm", r"ASCII PGM"),
    "circle outside": (
        lambda root: _replace_row(root, "mdb024", "mdb024 D MISC M 1500 300 20"), "Info.txt", r"centre X=1500 Y=300 .* lies outside the 1024x1024 image",
    ),
    "not a number": (
        lambda root: _replace_row(root, "mdb025", "mdb025 G SPIC B 583 ten 61"), "Info.txt", r"Y 'ten' is not a number",
    ),
}


def _replace_row(root: Path, refnum: str, row: str) -> None:
    text = (root / "Info.txt").read_text()
    (root / "Info.txt").write_text(re.sub(rf"^{refnum} .*$", row, text, count=1, flags=re.M))


@pytest.mark.parametrize("name", sorted(BAD_CASES))
def test_bad_input_names_the_file_and_row(mias_root, datalists, tmp_path, name):
    damage, file, message = BAD_CASES[name]
    root = _copy(mias_root, tmp_path)
    damage(root)
    with pytest.raises(DatalistError, match=message) as info:
        build_datalist("mias", root, "all")
    (case,) = info.value.bad_cases
    assert case.file.endswith(file) and re.search(r"line\(?s?\)? ?\d+", case.case), case
    datalist, skipped = build_datalist("mias", root, "all", skip_bad=True)
    assert [str(c) for c in skipped] == [str(case)]
    good = datalists["all"][0]
    assert 0 < len(datalist_records(good)) - len(datalist_records(datalist)) <= 2


def test_whole_dataset_problems(mias_root, tmp_path):
    with pytest.raises(DatalistError, match="no Info.txt found"):
        build_datalist("mias", tmp_path, "all")
    root = _copy(mias_root, tmp_path)
    text = (root / "Info.txt").read_text()
    (root / "Info.txt").write_text(text[: text.index("\nmdb001")])  # header only
    with pytest.raises(DatalistError, match="Info.txt: no table row found"):
        build_datalist("mias", root, "all")
    with pytest.raises(DatalistError, match="mias has no official training/test split"):
        build_datalist("mias", mias_root, "all", split="official")

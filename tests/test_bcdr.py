"""BCDR: the phantom's layout, the reader's records (boxes, types, healthy boxes, split), bad input."""

import csv
import hashlib
import itertools
import re
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import tifffile

from mammoshare.datalist import PHANTOM_MARKER, SUBSETS, CaseCollector, DatalistError, datalist_records
from mammoshare.extraction import PatchGeometry, ReadRequest
from mammoshare.phantom.bcdr import write_bcdr_phantom
from mammoshare.phantom.synth import PHANTOM_NOTICE
from mammoshare.readers import build_datalist
from mammoshare.readers.bcdr import read_bcdr
from transforms import background_mask, read_mammogram

OUTLINE_COLUMNS = [
    "patient_id", "study_id", "series", "lesion_id", "segmentation_id", "image_view", "image_filename",
    "mammography_type", "lw_x_points", "lw_y_points", "mammography_nodule", "mammography_calcification",
    "mammography_microcalcification", "mammography_axillary_adenopathy", "mammography_architectural_distortion",
    "mammography_stroma_distortion", "age", "density", "classification",
]
IMG_COLUMNS = [
    "patient_id", "study_id", "series", "image_filename", "image_type_name", "image_type_id", "age", "density",
]
FLAGS = {
    "mammography_nodule": "mass",
    "mammography_calcification": "calcification",
    "mammography_microcalcification": "calcification",
    "mammography_axillary_adenopathy": "adenopathy",
    "mammography_architectural_distortion": "distortion",
    "mammography_stroma_distortion": "distortion",
}
VIEWS = {"1": ("R", "CC"), "2": ("L", "CC"), "3": ("R", "MLO"), "4": ("L", "MLO")}
LESION_CODES = ("D01", "F01")
MARGIN, MIN_SIDE = 60, 128


@pytest.fixture(scope="module")
def bcdr_root(phantom_root):
    return phantom_root / "bcdr"


@pytest.fixture(scope="module")
def datalists(bcdr_root):
    return {task: build_datalist("bcdr", bcdr_root, task) for task in ("all", "mass")}


def _csv_path(root: Path, code: str, kind: str) -> Path:
    return root / f"BCDR-{code}_dataset" / f"bcdr_{code.lower()}_{kind}.csv"


def _raw_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames), list(reader)


def _write_rows(path: Path, header: list[str], rows: list[dict[str, str]], sep: str = ",") -> None:
    with open(path, "w", newline="") as f:
        f.write(sep.join(header) + "\n")
        writer = csv.DictWriter(f, fieldnames=header, lineterminator="\n")
        writer.writerows(rows)


def _outlines(root: Path) -> list[tuple[str, dict[str, str]]]:
    return [
        (code, {k: v.strip() for k, v in row.items()})
        for code in LESION_CODES
        for row in _raw_rows(_csv_path(root, code, "outlines"))[1]
    ]


def _types(row: dict[str, str]) -> list[str]:
    return sorted({kind for col, kind in FLAGS.items() if row[col] == "1"}) or ["other"]


def _image_shape(path) -> tuple[int, int]:
    with tifffile.TiffFile(path) as tif:
        return tuple(tif.pages[0].shape[:2])


def _wanted_region(row: dict[str, str], shape) -> tuple[int, int, int, int]:
    """The contour's bounding box plus the margin, clipped to the image: what the patch box must hold."""
    xs = [int(v) for v in row["lw_x_points"].split()]
    ys = [int(v) for v in row["lw_y_points"].split()]
    height, width = shape
    return (
        max(0, min(xs) - MARGIN), max(0, min(ys) - MARGIN),
        min(width, max(xs) + 1 + MARGIN), min(height, max(ys) + 1 + MARGIN),
    )


def _contains(box, region) -> bool:
    return box[0] <= region[0] and box[1] <= region[1] and box[2] >= region[2] and box[3] >= region[3]


def _check_box(box, shape):
    height, width = shape
    x0, y0, x1, y1 = box
    assert x1 - x0 == y1 - y0 >= MIN_SIDE, box
    assert 0 <= x0 and 0 <= y0 and x1 <= width and y1 <= height, (box, shape)


# --- the phantom ---------------------------------------------------------------------------------


def test_phantom_layout(bcdr_root):
    assert (bcdr_root / PHANTOM_MARKER).read_text().startswith(PHANTOM_NOTICE)
    name_pattern = re.compile(r"patient_(\d+)/study_(\d+)/img_\1_\2_\d+_(RCC|LCC|RO|LO)\.tif")
    lesion_patients = {}
    for code in LESION_CODES:
        header, rows = _raw_rows(_csv_path(bcdr_root, code, "outlines"))
        assert header == OUTLINE_COLUMNS
        img_header, img_rows = _raw_rows(_csv_path(bcdr_root, code, "img"))
        assert img_header == IMG_COLUMNS
        listed = {r["image_filename"] for r in img_rows}
        by_lesion = defaultdict(list)
        for row in rows:
            for col in ("image_filename", "lw_x_points", "lw_y_points"):
                assert row[col].startswith(" ") and not row[col].startswith("  "), (col, row[col][:20])
            assert name_pattern.fullmatch(row["image_filename"][1:]), row["image_filename"]
            assert row["image_filename"] in listed
            assert len(row["lw_x_points"].split()) == len(row["lw_y_points"].split()) >= 3
            assert all(row[col] in ("0", "1") for col in FLAGS)
            assert row["classification"] in ("Benign", "Malign")
            by_lesion[row["lesion_id"]].append(row)
        # each lesion is outlined on the two views of one breast
        for lesion_rows in by_lesion.values():
            assert sorted(r["image_view"] for r in lesion_rows) in (["1", "3"], ["2", "4"])
            assert len({r["segmentation_id"] for r in lesion_rows}) == 2
        assert len({r["segmentation_id"] for r in rows}) == len(rows)
        lesion_patients[code] = {r["patient_id"] for r in rows}
        expected_dtype = np.uint8 if code.startswith("F") else np.uint16
        for row in img_rows:
            pixels = tifffile.imread(bcdr_root / f"BCDR-{code}_dataset" / row["image_filename"].strip())
            assert pixels.dtype == expected_dtype and pixels.ndim == 2
    assert len(lesion_patients["D01"]) == 16 and len(lesion_patients["F01"]) == 4
    assert lesion_patients["D01"] & lesion_patients["F01"]  # ids restart per dataset

    header, rows = _raw_rows(_csv_path(bcdr_root, "DN01", "img"))
    assert header == IMG_COLUMNS
    per_patient = defaultdict(int)
    rgb = []
    for row in rows:
        assert row["image_filename"].startswith(" ") and name_pattern.fullmatch(row["image_filename"][1:])
        per_patient[row["patient_id"]] += 1
        pixels = tifffile.imread(bcdr_root / "BCDR-DN01_dataset" / row["image_filename"].strip())
        if pixels.ndim == 3:
            rgb.append(pixels)
        else:
            assert pixels.dtype == np.uint16
    assert len(per_patient) == 12 and all(2 <= n <= 4 for n in per_patient.values())
    assert len(rgb) == 1 and rgb[0].shape[-1] == 3
    assert np.array_equal(rgb[0][..., 0], rgb[0][..., 1]) and np.array_equal(rgb[0][..., 0], rgb[0][..., 2])
    densities = [r["density"].strip() for _, r in _outlines(bcdr_root)] + [r["density"].strip() for r in rows]
    assert any(d in ("NaN", "") for d in densities) and all(d in ("1", "2", "3", "4", "NaN", "") for d in densities)


def test_phantom_is_deterministic(bcdr_root, tmp_path):
    again = write_bcdr_phantom(tmp_path / "bcdr", seed=2021)

    def digest(root):
        return {
            p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()
        }

    assert digest(again) == digest(bcdr_root)


# --- the reader ----------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["all", "mass"])
def test_every_outline_gives_a_lesion_record(bcdr_root, datalists, task):
    datalist, bad = datalists[task]
    assert bad == [] and datalist["phantom"] is True and datalist["dataset"] == "bcdr"
    records = datalist_records(datalist)
    lesions = [r for r in records if r["label"] == 1]
    outlines = [(c, r) for c, r in _outlines(bcdr_root) if task == "all" or r["mammography_nodule"] == "1"]
    assert len(lesions) == len(outlines) > 0
    if task == "mass":
        assert all("mass" in r["lesion_types"] for r in lesions)
    else:
        seen = {t for r in lesions for t in r["lesion_types"]}
        assert seen == {"mass", "calcification", "distortion", "adenopathy", "other"}

    by_image = defaultdict(list)
    for r in lesions:
        by_image[Path(r["image"])].append(r)
    rows_by_image = defaultdict(list)
    for code, row in outlines:
        rows_by_image[bcdr_root / f"BCDR-{code}_dataset" / row["image_filename"]].append((code, row))
    assert set(by_image) == set(rows_by_image)
    for image, rows in rows_by_image.items():
        shape = _image_shape(image)
        recs = by_image[image]
        assert len(recs) == len(rows), image
        for r in recs:
            _check_box(r["box"], shape)

        def fits(pair):
            (code, row), rec = pair
            return (
                _contains(rec["box"], _wanted_region(row, shape))
                and rec["lesion_types"] == _types(row)
                and rec["patient_id"] == f"{code}_{row['patient_id']}"
                and (rec["laterality"], rec["view"]) == VIEWS[row["image_view"]]
                and rec["film"] is code.startswith("F")
                and rec["classification"] == row["classification"]
                and rec["density"] == (int(row["density"]) if row["density"] in ("1", "2", "3", "4") else None)
                and rec["source"] == "bcdr"
            )

        assert any(all(map(fits, zip(rows, perm))) for perm in itertools.permutations(recs)), (image, rows, recs)


def test_healthy_records_only_from_dn01(bcdr_root, datalists):
    records = datalist_records(datalists["all"][0])
    healthy = [r for r in records if r["label"] == 0]
    _, rows = _raw_rows(_csv_path(bcdr_root, "DN01", "img"))
    dn01 = bcdr_root / "BCDR-DN01_dataset"
    assert len(healthy) == 5 * len(rows)
    by_image = defaultdict(list)
    for r in healthy:
        assert Path(r["image"]).parent.parent.parent == dn01
        assert r["patient_id"].startswith("DN01_") and r["lesion_types"] == [] and r["film"] is False
        by_image[r["image"]].append(r)
    assert {Path(i) for i in by_image} == {dn01 / r["image_filename"].strip() for r in rows}
    for image, recs in by_image.items():
        pixels, _ = read_mammogram(image)
        background = background_mask(pixels)
        boxes = [r["box"] for r in recs]
        assert len(boxes) == 5 and len({tuple(b) for b in boxes}) == 5
        for x0, y0, x1, y1 in boxes:
            assert x1 - x0 == y1 - y0 == 128
            assert 0 <= x0 and 0 <= y0 and x1 <= pixels.shape[1] and y1 <= pixels.shape[0]
            assert background[y0:y1, x0:x1].mean() <= 0.4
    view_names = {"RCC": ("R", "CC"), "LCC": ("L", "CC"), "RO": ("R", "MLO"), "LO": ("L", "MLO")}
    for row in rows:
        for r in by_image[str(dn01 / row["image_filename"].strip())]:
            assert (r["laterality"], r["view"]) == view_names[row["image_type_name"]]
    # the mass task keeps the same healthy patches
    assert [r for r in datalist_records(datalists["mass"][0]) if r["label"] == 0] == healthy


@pytest.mark.parametrize("task", ["all", "mass"])
def test_split_by_patient(datalists, task):
    datalist, _ = datalists[task]
    owner = {}
    for subset in SUBSETS:
        assert datalist[subset], subset
        labels = {r["label"] for r in datalist[subset]}
        assert labels == {0, 1}, (subset, labels)  # lesions (masses in the mass task) in every subset
        for r in datalist[subset]:
            assert owner.setdefault(r["patient_id"], subset) == subset, r["patient_id"]
    # equal patient numbers in different BCDR folders stay different patients
    assert {"D01_3", "F01_3", "DN01_3"} <= set(owner)


def test_rgb_with_equal_channels_loads_as_grey(bcdr_root, datalists):
    rgb_images = [
        p for p in sorted((bcdr_root / "BCDR-DN01_dataset").rglob("*.tif")) if tifffile.imread(p).ndim == 3
    ]
    assert len(rgb_images) == 1
    image, meta = read_mammogram(rgb_images[0])
    assert image.ndim == 2 and image.shape == _image_shape(rgb_images[0])
    assert float(image.min()) == 0.0 and float(image.max()) == 1.0
    records = [r for r in datalist_records(datalists["all"][0]) if Path(r["image"]) == rgb_images[0]]
    assert len(records) == 5 and all(r["label"] == 0 for r in records)


def test_records_image_by_image_and_deterministic(bcdr_root, datalists):
    first = read_bcdr(bcdr_root, ReadRequest("all", CaseCollector(), 2021, 5, PatchGeometry(healthy_box_px=128)))
    again = read_bcdr(bcdr_root, ReadRequest("all", CaseCollector(), 2021, 5, PatchGeometry(healthy_box_px=128)))
    assert first == again
    order = [r["image"] for r in first]
    runs = [image for image, _ in itertools.groupby(order)]
    assert len(runs) == len(set(runs)), "records of one image are not adjacent"
    # the datalist keeps this order inside each subset and does not depend on the run
    assert build_datalist("bcdr", bcdr_root, "all") == datalists["all"]
    other = build_datalist("bcdr", bcdr_root, "all", seed=7)[0]
    boxes = lambda dl: sorted((r["image"], r["box"]) for r in datalist_records(dl) if r["label"] == 0)  # noqa: E731
    assert boxes(other) != boxes(datalists["all"][0])


def test_header_spaces_are_stripped(bcdr_root, datalists, tmp_path):
    root = shutil.copytree(bcdr_root, tmp_path / "bcdr")
    for code, kind in (("D01", "outlines"), ("F01", "outlines"), ("DN01", "img")):
        path = _csv_path(root, code, kind)
        header, rows = _raw_rows(path)
        _write_rows(path, header, rows, sep=", ")  # "patient_id, study_id, ..."
    assert _raw_rows(_csv_path(root, "D01", "outlines"))[0][1] == " study_id"
    datalist, _ = build_datalist("bcdr", root, "all")

    def relative(dl, base):
        return [(Path(r["image"]).relative_to(base), r["box"], r["patient_id"]) for r in datalist_records(dl)]

    assert relative(datalist, root) == relative(datalists["all"][0], bcdr_root)


# --- bad input -----------------------------------------------------------------------------------


def _first_image_row(root, code, kind, patient):
    _, rows = _raw_rows(_csv_path(root, code, kind))
    row = next(r for r in rows if r["patient_id"].strip() == patient)
    return root / f"BCDR-{code}_dataset" / row["image_filename"].strip()


def _edit_outline(root, code, patient, change):
    """Change the first outline row of ``patient``; returns (CSV path, its segmentation id)."""
    path = _csv_path(root, code, "outlines")
    header, rows = _raw_rows(path)
    row = next(r for r in rows if r["patient_id"].strip() == patient)
    change(row)
    _write_rows(path, header, rows)
    return path, f"segmentation {row['segmentation_id'].strip()}"


def _missing_image(root):
    image = _first_image_row(root, "D01", "img", "12")
    image.unlink()
    return image, "patient 12"


def _corrupt_tiff(root):
    image = _first_image_row(root, "D01", "img", "26")
    image.write_bytes(b"II*\x00" + b"\x17\x00\x00\x00garbage" * 10)
    return image, "patient 26"


def _xy_lengths(root):
    shorter = lambda r: r.update(lw_x_points=" " + " ".join(r["lw_x_points"].split()[:-2]))  # noqa: E731
    return _edit_outline(root, "D01", "3", shorter)


def _non_numeric(root):
    return _edit_outline(root, "F01", "19", lambda r: r.update(lw_y_points=r["lw_y_points"] + "a"))


def _empty_contour(root):
    return _edit_outline(root, "D01", "31", lambda r: r.update(lw_x_points=" ", lw_y_points=" "))


def _outside(root):
    far = lambda r: r.update(lw_x_points="".join(f" {int(v) + 5000}" for v in r["lw_x_points"].split()))  # noqa: E731
    return _edit_outline(root, "D01", "5", far)


def _truncated_healthy(root):
    image = _first_image_row(root, "DN01", "img", "10")
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 2])
    return image, "patient 10"


def _missing_healthy(root):
    image = _first_image_row(root, "DN01", "img", "18")
    image.unlink()
    return image, "patient 18"


BREAKAGES = {
    "missing image": (_missing_image, "not found"),
    "corrupt tiff": (_corrupt_tiff, "cannot read image"),
    "x/y lengths differ": (_xy_lengths, "lw_x_points has"),
    "non-numeric point": (_non_numeric, "not a number"),
    "empty contour": (_empty_contour, "empty contour"),
    "contour outside image": (_outside, "outside"),
    "truncated healthy image": (_truncated_healthy, "cannot read image"),
    "missing healthy image": (_missing_healthy, "not found"),
}


@pytest.fixture
def broken_root(bcdr_root, tmp_path):
    return shutil.copytree(bcdr_root, tmp_path / "bcdr")


@pytest.mark.parametrize("name", sorted(BREAKAGES))
def test_bad_case_names_file_and_case(broken_root, name):
    breaker, problem = BREAKAGES[name]
    file, case = breaker(broken_root)
    with pytest.raises(DatalistError) as info:
        build_datalist("bcdr", broken_root, "all")
    assert len(info.value.bad_cases) == 1, str(info.value)
    bad = info.value.bad_cases[0]
    assert bad.file == str(file) and case in bad.case and problem in bad.problem, bad
    assert str(file) in str(info.value) and case in str(info.value)


def test_all_bad_cases_at_once_and_skip_bad(broken_root, datalists):
    broken = [breaker(broken_root) for breaker, _ in BREAKAGES.values()]
    with pytest.raises(DatalistError) as info:
        build_datalist("bcdr", broken_root, "all")
    assert len(info.value.bad_cases) == len(BREAKAGES)
    for file, case in broken:
        assert any(b.file == str(file) and case in b.case for b in info.value.bad_cases), (file, case)

    datalist, bad = build_datalist("bcdr", broken_root, "all", skip_bad=True)
    assert [(b.file, b.case) for b in bad] == [(b.file, b.case) for b in info.value.bad_cases]
    records = datalist_records(datalist)
    full = datalist_records(datalists["all"][0])
    # lost: 2 images with their outlines, 4 single outlines, 2 healthy images x 5 boxes
    assert sum(r["label"] for r in full) - sum(r["label"] for r in records) == 2 + 4
    assert sum(1 - r["label"] for r in full) - sum(1 - r["label"] for r in records) == 2 * 5
    gone = {str(f) for f, _ in broken if str(f).endswith(".tif")}
    assert not gone & {r["image"] for r in records}


def test_missing_columns(broken_root):
    for code, kind, column in (("D01", "outlines", "lw_y_points"), ("DN01", "img", "image_filename")):
        path = _csv_path(broken_root, code, kind)
        header, rows = _raw_rows(path)
        header.remove(column)
        _write_rows(path, header, [{k: v for k, v in r.items() if k != column} for r in rows])
        with pytest.raises(DatalistError, match=column) as info:
            build_datalist("bcdr", broken_root, "all")
        assert str(path) in str(info.value)
        if kind == "outlines":
            path.unlink()  # the outlines CSV out of the way: the healthy CSV is read next


def test_no_bcdr_csv(tmp_path):
    (tmp_path / "BCDR-D01_dataset").mkdir()
    with pytest.raises(DatalistError, match=r"bcdr_<code>_outlines\.csv"):
        build_datalist("bcdr", tmp_path, "all")


@pytest.mark.parametrize("code, kind", [("D01", "outlines"), ("DN01", "img")])
def test_csv_with_header_only_is_a_bad_case(broken_root, datalists, code, kind):
    path = _csv_path(broken_root, code, kind)
    header, _ = _raw_rows(path)
    _write_rows(path, header, [])
    with pytest.raises(DatalistError, match=r"the CSV has its header but no .* rows") as info:
        build_datalist("bcdr", broken_root, "all")
    (bad,) = info.value.bad_cases
    assert bad.file == str(path)
    datalist, skipped = build_datalist("bcdr", broken_root, "all", skip_bad=True)
    assert [b.file for b in skipped] == [str(path)]
    prefixes = {r["patient_id"].split("_")[0] for r in datalist_records(datalist)}
    assert code not in prefixes and prefixes  # that folder's records are gone, the others stay

"""CBIS-DDSM: the phantom's layout, the reader's records (boxes, healthy boxes, split), bad input."""

import csv
import hashlib
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pydicom
import pytest

from mammoshare.datalist import PHANTOM_MARKER, CaseCollector, DatalistError, datalist_records
from mammoshare.extraction import PatchGeometry, ReadRequest
from mammoshare.phantom.cbis_ddsm import write_cbis_ddsm_phantom
from mammoshare.phantom.synth import PHANTOM_NOTICE
from mammoshare.readers import build_datalist
from mammoshare.readers.cbis_ddsm import HEALTHY_DISTANCE_PX, find_roi_mask, read_cbis_ddsm, resolve_image
from transforms import read_mammogram

MASS_COLUMNS = [
    "patient_id", "breast_density", "left or right breast", "image view", "abnormality id", "abnormality type",
    "mass shape", "mass margins", "assessment", "pathology", "subtlety", "image file path",
    "cropped image file path", "ROI mask file path",
]
CALC_COLUMNS = [
    "patient_id", "breast density", "left or right breast", "image view", "abnormality id", "abnormality type",
    "calc type", "calc distribution", "assessment", "pathology", "subtlety", "image file path",
    "cropped image file path", "ROI mask file path",
]
CSVS = {
    "mass_case_description_train_set.csv": ("mass", "train"),
    "mass_case_description_test_set.csv": ("mass", "test"),
    "calc_case_description_train_set.csv": ("calc", "train"),
    "calc_case_description_test_set.csv": ("calc", "test"),
}
MARGIN, MIN_SIDE = 60, 128
TASKS = ("all", "mass")


@pytest.fixture(scope="module")
def cbis_root(phantom_root):
    return phantom_root / "cbis-ddsm"


@pytest.fixture(scope="module")
def datalists(cbis_root):
    return {task: build_datalist("cbis-ddsm", cbis_root, task) for task in TASKS}


def _raw_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames), list(reader)


def _rows(root: Path, kinds=("mass", "calc")) -> list[tuple[str, str, dict]]:
    """(kind, official subset, raw row) of every CSV row."""
    out = []
    for name, (kind, subset) in CSVS.items():
        if kind in kinds:
            out.extend((kind, subset, row) for row in _raw_csv(root / name)[1])
    return out


def _folder(root: Path, csv_path: str) -> Path:
    return root / "CBIS-DDSM" / csv_path.strip().split("/")[0]


def _dicoms(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.dcm"))


def _bits(path: Path) -> int:
    return int(pydicom.dcmread(path, stop_before_pixels=True).BitsAllocated)


def _mask_files(root: Path, row: dict) -> list[Path]:
    """The 8-bit DICOM files of a row's abnormality folder: the phantom's masks."""
    return [p for p in _dicoms(_folder(root, row["ROI mask file path"])) if _bits(p) == 8]


def _true_mask(root: Path, row: dict) -> np.ndarray:
    """The phantom's mask of a row, found without the reader: the only 8-bit DICOM of the
    abnormality's folder (crops and full mammograms are 16-bit)."""
    masks = _mask_files(root, row)
    assert len(masks) == 1, row
    return pydicom.dcmread(masks[0]).pixel_array > 0


def _key(row: dict) -> tuple[str, str, str]:
    return (row["patient_id"], row["left or right breast"].strip()[0], row["image view"].strip())


def _rkey(record: dict) -> tuple[str, str, str]:
    return (record["patient_id"], record["laterality"], record["view"])


def _gap(a, b) -> int:
    """Chebyshev gap between two boxes (negative when they overlap)."""
    return max(a[0] - b[2], b[0] - a[2], a[1] - b[3], b[1] - a[3])


# ---------------------------------------------------------------- the phantom's layout


def test_csv_headers_and_marker(cbis_root):
    for name, (kind, _) in CSVS.items():
        columns, rows = _raw_csv(cbis_root / name)
        assert columns == (MASS_COLUMNS if kind == "mass" else CALC_COLUMNS), name
        assert rows, name
        assert {r["abnormality type"] for r in rows} == {"mass" if kind == "mass" else "calcification"}
    assert PHANTOM_NOTICE in (cbis_root / PHANTOM_MARKER).read_text()


def test_phantom_content(cbis_root):
    rows = _rows(cbis_root)
    patients = Counter(r["patient_id"] for _, _, r in rows)
    assert 18 <= len(patients) <= 22 and min(patients) == "P_00001"
    assert max(patients.values()) >= 2  # patients appear in several rows
    assert any(len({_key(r)[2] for _, _, r in rows if r["patient_id"] == p}) == 2 for p in patients)  # both views
    assert {r.get("breast_density") or r.get("breast density") for _, _, r in rows} == {"1", "2", "3", "4"}
    assert {r["pathology"] for _, _, r in rows} == {"MALIGNANT", "BENIGN", "BENIGN_WITHOUT_CALLBACK"}
    assert sum(r["ROI mask file path"].endswith("\n") for _, _, r in rows) >= 2  # the real CSVs' trailing newline
    # an image with a mass and a calcification is listed in both kinds of CSV
    mass_keys = {_key(r) for k, _, r in rows if k == "mass"}
    assert mass_keys & {_key(r) for k, _, r in rows if k == "calc"}


def test_paths_resolve_and_special_files(cbis_root):
    rows = _rows(cbis_root)
    photometric, compressed, nbia = Counter(), 0, set()
    for _, _, row in rows:
        csv_path = row["image file path"].strip()
        exact = cbis_root / "CBIS-DDSM" / csv_path
        path = resolve_image(cbis_root, row["image file path"])
        assert path.is_file()
        if not exact.is_file():
            nbia.add(csv_path)
            assert path.name == "1-1.dcm" and "full mammogram images" in path.parent.name
            assert path.parent.parent.parent == _folder(cbis_root, csv_path)
        ds = pydicom.dcmread(path)
        assert ds.Modality == "MG" and ds.Rows > 0
        photometric[str(ds.PhotometricInterpretation)] += 1
        compressed += ds.file_meta.TransferSyntaxUID.is_compressed
    assert photometric["MONOCHROME1"] >= 1 and photometric["MONOCHROME2"] >= 1
    assert compressed >= 1
    assert len(nbia) >= 2


def test_nbia_and_swapped_mask_files(cbis_root):
    orders, swapped = set(), 0
    for _, _, row in _rows(cbis_root):
        mask_csv = row["ROI mask file path"].strip()
        exact = cbis_root / "CBIS-DDSM" / mask_csv
        if exact.is_file():
            if _bits(exact) != 8:
                swapped += 1  # the CSV's mask path names the cropped image
            continue
        files = _dicoms(_folder(cbis_root, mask_csv))
        assert {p.name for p in files} <= {"1-1.dcm", "1-2.dcm"}
        bits = {p.name: _bits(p) for p in files}
        if len({p.parent for p in files}) == 1:
            orders.add("mask-first" if bits["1-1.dcm"] == 8 else "crop-first")
        else:
            orders.add("two-series")
    assert orders == {"mask-first", "crop-first", "two-series"}
    assert swapped >= 1


def test_masks_are_full_size_binary(cbis_root):
    for _, _, row in _rows(cbis_root):
        image = pydicom.dcmread(resolve_image(cbis_root, row["image file path"]), stop_before_pixels=True)
        (mask,) = _mask_files(cbis_root, row)
        ds = pydicom.dcmread(mask)
        assert (ds.Rows, ds.Columns) == (image.Rows, image.Columns)
        assert ds.PhotometricInterpretation == "MONOCHROME2"
        assert set(np.unique(ds.pixel_array)) == {0, 255}


def test_phantom_is_deterministic(cbis_root, tmp_path):
    again = write_cbis_ddsm_phantom(tmp_path / "again", seed=2021)

    def digests(root):
        files = (p for p in root.rglob("*") if p.is_file())
        return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}

    assert digests(again) == digests(cbis_root)


# ---------------------------------------------------------------- the reader's records


@pytest.mark.parametrize("task", TASKS)
def test_lesion_records(cbis_root, datalists, task):
    datalist, bad = datalists[task]
    assert bad == [] and datalist["phantom"] is True and datalist["dataset"] == "cbis-ddsm"
    records = datalist_records(datalist)
    lesions = [r for r in records if r["label"] == 1]
    rows = _rows(cbis_root, ("mass",) if task == "mass" else ("mass", "calc"))
    assert len(lesions) == len(rows)
    index = {(_rkey(r), r["lesion_types"][0], r["abnormality_id"], r["official_subset"]): r for r in lesions}
    assert len(index) == len(lesions)
    for kind, subset, row in rows:
        lesion_type = "mass" if kind == "mass" else "calcification"
        record = index[(_key(row), lesion_type, int(row["abnormality id"]), subset)]
        assert record["source"] == "cbis-ddsm" and record["pathology"] == row["pathology"]
        assert record["density"] == int(row.get("breast_density") or row.get("breast density"))
        assert Path(record["image"]) == resolve_image(cbis_root, row["image file path"])
        mask = _true_mask(cbis_root, row)
        height, width = mask.shape
        ys, xs = np.nonzero(mask)
        x0, y0, x1, y1 = record["box"]
        assert x1 - x0 == y1 - y0 >= MIN_SIDE
        assert 0 <= x0 and 0 <= y0 and x1 <= width and y1 <= height
        assert x0 <= xs.min() - MARGIN or x0 == 0
        assert y0 <= ys.min() - MARGIN or y0 == 0
        assert x1 >= xs.max() + 1 + MARGIN or x1 == width
        assert y1 >= ys.max() + 1 + MARGIN or y1 == height
    types = Counter(t for r in lesions for t in r["lesion_types"])
    if task == "mass":
        assert set(types) == {"mass"}
    else:
        assert set(types) == {"mass", "calcification"}


@pytest.mark.parametrize("task", TASKS)
def test_healthy_records(cbis_root, datalists, task):
    records = datalist_records(datalists[task][0])
    # lesion boxes of every abnormality, from every CSV: the mass task's healthy boxes avoid calcifications too
    lesion_boxes = defaultdict(list)
    for r in datalist_records(datalists["all"][0]):
        if r["label"] == 1:
            lesion_boxes[_rkey(r)].append(r["box"])
    healthy = [r for r in records if r["label"] == 0]
    images_used = {_rkey(r) for r in records if r["label"] == 1}
    per_image = Counter(_rkey(r) for r in healthy)
    assert set(per_image) == images_used and set(per_image.values()) == {5}
    decoded = {}
    for r in healthy:
        assert r["lesion_types"] == [] and r["source"] == "cbis-ddsm" and r["density"] in (1, 2, 3, 4)
        if r["image"] not in decoded:
            decoded[r["image"]] = read_mammogram(r["image"])[0]
        image = decoded[r["image"]]
        x0, y0, x1, y1 = r["box"]
        assert x1 - x0 == y1 - y0 == 128 and x0 >= 0 and y0 >= 0 and x1 <= image.shape[1] and y1 <= image.shape[0]
        assert min(_gap(r["box"], b) for b in lesion_boxes[_rkey(r)]) >= HEALTHY_DISTANCE_PX
        assert (image[y0:y1, x0:x1] <= 10 / 255).mean() <= 0.4
    if task == "mass":  # the same image, file and seed give the same healthy boxes in both tasks
        all_healthy = {(r["image"], tuple(r["box"])) for r in datalist_records(datalists["all"][0]) if r["label"] == 0}
        assert {(r["image"], tuple(r["box"])) for r in healthy} <= all_healthy


@pytest.mark.parametrize("task", TASKS)
def test_split_by_patient(datalists, task):
    datalist = datalists[task][0]
    subsets = defaultdict(set)
    for subset in ("training", "validation", "test"):
        assert datalist[subset], subset
        for r in datalist[subset]:
            subsets[r["patient_id"]].add(subset)
    assert all(len(s) == 1 for s in subsets.values())


def test_records_image_by_image(cbis_root):
    collector = CaseCollector()
    records = read_cbis_ddsm(cbis_root, ReadRequest("all", collector, 2021, 5, PatchGeometry(healthy_box_px=128)))
    assert collector.bad_cases == []
    order = [r["image"] for r in records]
    runs = [image for i, image in enumerate(order) if i == 0 or order[i - 1] != image]
    assert len(runs) == len(set(runs))  # every image's records are adjacent
    keys = [_rkey(r) for r in records]
    key_runs = [k for i, k in enumerate(keys) if i == 0 or keys[i - 1] != k]
    assert len(key_runs) == len(set(key_runs)) and key_runs == sorted(key_runs)


def test_swapped_crop_and_mask_resolve_to_the_mask(cbis_root, datalists):
    swapped = [
        row for _, _, row in _rows(cbis_root)
        if (cbis_root / "CBIS-DDSM" / row["ROI mask file path"].strip()).is_file()
        and _bits(cbis_root / "CBIS-DDSM" / row["ROI mask file path"].strip()) != 8
    ]
    assert swapped
    for row in swapped:
        shape = read_mammogram(resolve_image(cbis_root, row["image file path"]))[0].shape
        path, lesion = find_roi_mask(cbis_root, row["ROI mask file path"], row["cropped image file path"], shape)
        assert path == cbis_root / "CBIS-DDSM" / row["cropped image file path"].strip()
        assert np.array_equal(lesion, _true_mask(cbis_root, row))


def test_deterministic_and_independent_of_location(cbis_root, datalists, tmp_path):
    again, _ = build_datalist("cbis-ddsm", cbis_root, "all")
    assert again == datalists["all"][0]
    moved = tmp_path / "moved"
    shutil.copytree(cbis_root, moved)
    there, _ = build_datalist("cbis-ddsm", moved, "all")
    for subset in ("training", "validation", "test"):
        assert [
            {**r, "image": Path(r["image"]).relative_to(moved).as_posix()} for r in there[subset]
        ] == [{**r, "image": Path(r["image"]).relative_to(cbis_root).as_posix()} for r in again[subset]]
    other_seed, _ = build_datalist("cbis-ddsm", cbis_root, "all", seed=7)
    assert {tuple(r["box"]) for r in datalist_records(other_seed) if r["label"] == 0} != {
        tuple(r["box"]) for r in datalist_records(again) if r["label"] == 0
    }


# ---------------------------------------------------------------- bad input


def _csvs_only(cbis_root: Path, dest: Path) -> Path:
    dest.mkdir()
    for name in CSVS:
        shutil.copy(cbis_root / name, dest / name)
    return dest


def _rewrite_csv(path: Path, rename: dict | None = None, drop=(), change=None) -> None:
    columns, rows = _raw_csv(path)
    rename = rename or {}
    out_columns = [rename.get(c, c) for c in columns if c not in drop]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(out_columns)
        for row in rows:
            if change:
                row = change(row)
            writer.writerow([row[c] for c in columns if c not in drop])


def test_no_csv(tmp_path):
    with pytest.raises(DatalistError, match="mass_case_description_train_set.csv"):
        build_datalist("cbis-ddsm", tmp_path, "all")
    (tmp_path / "calc_case_description_train_set.csv").write_text(",".join(CALC_COLUMNS) + "\n")
    with pytest.raises(DatalistError, match="mass_case_description_test_set.csv"):
        build_datalist("cbis-ddsm", tmp_path, "mass")  # the calc CSVs do not make a mass datalist


def test_missing_columns(cbis_root, tmp_path):
    root = _csvs_only(cbis_root, tmp_path / "cols")
    _rewrite_csv(root / "mass_case_description_test_set.csv", drop=("ROI mask file path", "breast_density"))
    with pytest.raises(DatalistError) as info:
        build_datalist("cbis-ddsm", root, "mass")
    message = str(info.value)
    assert "mass_case_description_test_set.csv" in message
    assert "ROI mask file path" in message and "breast_density" in message


def test_both_density_spellings(cbis_root, datalists, tmp_path):
    root = _csvs_only(cbis_root, tmp_path / "spelling")
    (root / "CBIS-DDSM").symlink_to(cbis_root / "CBIS-DDSM", target_is_directory=True)
    (root / PHANTOM_MARKER).write_text(PHANTOM_NOTICE)
    for name, (kind, _) in CSVS.items():
        swap = {"breast_density": "breast density"} if kind == "mass" else {"breast density": "breast_density"}
        _rewrite_csv(root / name, rename=swap)
    datalist, _ = build_datalist("cbis-ddsm", root, "all")
    expected = datalists["all"][0]
    for subset in ("training", "validation", "test"):
        assert [{**r, "image": Path(r["image"]).relative_to(root).as_posix()} for r in datalist[subset]] == [
            {**r, "image": Path(r["image"]).relative_to(cbis_root).as_posix()} for r in expected[subset]
        ]


def _exact_file(root: Path, csv_path: str) -> Path:
    path = root / "CBIS-DDSM" / csv_path.strip()
    assert path.is_file(), path
    return path


def _row(root: Path, name: str, patient: str, view: str) -> dict:
    return next(r for r in _raw_csv(root / name)[1] if r["patient_id"] == patient and r["image view"] == view)


@pytest.fixture(scope="module")
def broken(cbis_root, tmp_path_factory):
    """A copy of the phantom with one problem per image; returns (root, {problem: the file to be named})."""
    root = tmp_path_factory.mktemp("broken") / "cbis-ddsm"
    shutil.copytree(cbis_root, root)
    mass_train, mass_test = "mass_case_description_train_set.csv", "mass_case_description_test_set.csv"
    calc_train = "calc_case_description_train_set.csv"
    problems = {}

    # a full mammogram missing
    path = _exact_file(root, _row(root, mass_train, "P_00001", "CC")["image file path"])
    path.unlink()
    problems["missing image"] = path
    # a truncated (corrupt) full mammogram
    path = _exact_file(root, _row(root, mass_train, "P_00002", "CC")["image file path"])
    path.write_bytes(path.read_bytes()[:3000])
    problems["corrupt image"] = path
    # a colour image
    path = _exact_file(root, _row(root, mass_test, "P_00003", "MLO")["image file path"])
    ds = pydicom.dcmread(path)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = np.zeros((ds.Rows, ds.Columns, 3), np.uint8).tobytes()
    ds.save_as(path)
    problems["colour image"] = path
    # a multi-frame image (a calcification image: the mass task does not use it)
    path = _exact_file(root, _row(root, calc_train, "P_00004", "CC")["image file path"])
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames = 2
    ds.PixelData = ds.PixelData * 2
    ds.save_as(path)
    problems["multi-frame image"] = path
    # an ROI mask missing
    path = _exact_file(root, _row(root, mass_train, "P_00010", "MLO")["ROI mask file path"])
    path.unlink()
    problems["missing mask"] = path
    # an ROI mask of the wrong size
    path = _exact_file(root, _row(root, mass_train, "P_00013", "MLO")["ROI mask file path"])
    ds = pydicom.dcmread(path)
    small = np.ascontiguousarray(ds.pixel_array[:-40, :-24])
    ds.Rows, ds.Columns = small.shape
    ds.PixelData = small.tobytes()
    ds.save_as(path)
    problems["wrong-size mask"] = path
    # an empty ROI mask
    path = _exact_file(root, _row(root, mass_train, "P_00015", "CC")["ROI mask file path"])
    ds = pydicom.dcmread(path)
    ds.PixelData = np.zeros((ds.Rows, ds.Columns), np.uint8).tobytes()
    ds.save_as(path)
    problems["empty mask"] = path
    # an image with too little breast for healthy boxes: all background but a small square
    path = _exact_file(root, _row(root, mass_train, "P_00018", "CC")["image file path"])
    ds = pydicom.dcmread(path)
    pixels = np.zeros((ds.Rows, ds.Columns), np.uint16)
    pixels[100:160, 100:160] = 9000
    ds.PixelData = pixels.tobytes()
    ds.save_as(path)
    problems["no room for healthy boxes"] = path
    # a CSV row with an impossible side
    _rewrite_csv(
        root / mass_test,
        change=lambda r: {**r, "left or right breast": "UP"} if r["patient_id"] == "P_00020" else r,
    )
    problems["bad row"] = root / mass_test
    # a row without its mask path, on an image (P_00006 RIGHT CC) that also has a good mass row
    _rewrite_csv(
        root / calc_train,
        change=lambda r: {**r, "ROI mask file path": " "} if (r["patient_id"], r["image view"]) == ("P_00006", "CC") else r,
    )
    problems["row without mask path"] = root / calc_train
    problems["image with an unusable row"] = _exact_file(root, _row(root, mass_train, "P_00006", "CC")["image file path"])
    return root, problems


def test_bad_input_is_reported(broken):
    root, problems = broken
    with pytest.raises(DatalistError) as info:
        build_datalist("cbis-ddsm", root, "all")
    message = str(info.value)
    files = {case.file for case in info.value.bad_cases}
    for problem, path in problems.items():
        assert str(path) in message, problem
        assert str(path) in files, problem
    by_file = {case.file: case for case in info.value.bad_cases}
    assert "not found" in by_file[str(problems["missing image"])].problem
    assert "colour" in by_file[str(problems["colour image"])].problem
    assert "multi-frame" in by_file[str(problems["multi-frame image"])].problem
    assert "size" in by_file[str(problems["wrong-size mask"])].problem
    assert "empty" in by_file[str(problems["empty mask"])].problem
    assert "UP" in by_file[str(problems["bad row"])].problem
    assert "ROI mask file path" in by_file[str(problems["row without mask path"])].problem
    assert "calc_case_description_train_set.csv row" in by_file[str(problems["image with an unusable row"])].problem
    assert all(case.case for case in info.value.bad_cases)


def test_skip_bad_goes_on(broken, datalists, cbis_root):
    root, problems = broken
    datalist, bad = build_datalist("cbis-ddsm", root, "all", skip_bad=True)
    assert {str(p) for p in problems.values()} <= {case.file for case in bad}
    records = datalist_records(datalist)
    images = {r["image"] for r in records}
    for problem in ("missing image", "corrupt image", "colour image", "multi-frame image"):
        assert str(problems[problem]) not in images
    keys = Counter((_rkey(r), r["label"]) for r in records)
    for patient, side, view in (("P_00010", "R", "MLO"), ("P_00013", "L", "MLO"), ("P_00015", "L", "CC")):
        assert keys[((patient, side, view), 1)] == 0 and keys[((patient, side, view), 0)] == 0  # mask lost: nothing
    assert keys[(("P_00018", "L", "CC"), 1)] == 1 and keys[(("P_00018", "L", "CC"), 0)] == 0
    assert not any(r["patient_id"] == "P_00020" for r in records)
    # the bad calc row's image keeps its good mass but gets no healthy box
    assert keys[(("P_00006", "R", "CC"), 1)] == 1 and keys[(("P_00006", "R", "CC"), 0)] == 0
    # the unbroken images keep their records
    broken_keys = {("P_00001", "L", "CC"), ("P_00002", "R", "CC"), ("P_00003", "L", "MLO"), ("P_00004", "R", "CC"),
                   ("P_00010", "R", "MLO"), ("P_00013", "L", "MLO"), ("P_00015", "L", "CC"), ("P_00018", "L", "CC"),
                   ("P_00020", "L", "CC"), ("P_00006", "R", "CC")}

    def strip(recs, base):
        return sorted(
            (Path(r["image"]).relative_to(base).as_posix(), r["label"], tuple(r["box"]))
            for r in recs if _rkey(r) not in broken_keys
        )

    assert strip(records, root) == strip(datalist_records(datalists["all"][0]), cbis_root)


def test_mass_task_ignores_broken_calc_images(broken):
    root, problems = broken
    _, bad = build_datalist("cbis-ddsm", root, "mass", skip_bad=True)
    files = {case.file for case in bad}
    assert str(problems["multi-frame image"]) not in files
    assert str(problems["missing image"]) in files
    assert str(problems["image with an unusable row"]) in files  # the calc CSVs still say where not to look


def test_mask_is_the_binary_full_size_candidate(cbis_root, tmp_path):
    """A full-size grey image at the CSV's mask path (or a lone one) is not taken for the mask."""
    _, _, row = _rows(cbis_root, ("mass",))[0]
    image_file = resolve_image(cbis_root, row["image file path"])
    shape = read_mammogram(image_file)[0].shape
    root = tmp_path / "masks"
    series = root / "CBIS-DDSM" / "Mass-Training_P_09999_LEFT_CC_1" / "1.2.3" / "1.2.3.4"
    series.mkdir(parents=True)
    shutil.copy(image_file, series / "000001.dcm")  # same size, but grey levels
    csv_mask = "Mass-Training_P_09999_LEFT_CC_1/1.2.3/1.2.3.4/000001.dcm\n"
    with pytest.raises(ValueError, match="not binary"):
        find_roi_mask(root, csv_mask, None, shape)
    (true_mask,) = _mask_files(cbis_root, row)
    shutil.copy(true_mask, series / "000002.dcm")
    path, lesion = find_roi_mask(root, csv_mask, None, shape)
    assert path == series / "000002.dcm"
    assert np.array_equal(lesion, _true_mask(cbis_root, row))


@pytest.mark.parametrize("task", TASKS)
def test_official_split_is_the_default(cbis_root, datalists, task):
    """test = the official Test patients; validation drawn from the official training patients."""
    datalist, _ = datalists[task]
    assert datalist["split_method"] == "official"
    official = defaultdict(set)
    for r in datalist_records(datalist):
        official[r["patient_id"]].add(r["official_subset"])
    assert all(len(s) == 1 for s in official.values())  # the phantom's official subsets are by patient
    test = {p for p, s in official.items() if s == {"test"}}
    assert {r["patient_id"] for r in datalist["test"]} == test
    validation = {r["patient_id"] for r in datalist["validation"]}
    training = {r["patient_id"] for r in datalist["training"]}
    assert validation and training and not (validation | training) & test
    assert all(r["official_subset"] == "train" for s in ("training", "validation") for r in datalist[s])
    explicit, _ = build_datalist("cbis-ddsm", cbis_root, task, split="official")
    assert explicit == datalist


def test_random_split_stays_available(cbis_root, datalists):
    random_split, _ = build_datalist("cbis-ddsm", cbis_root, "mass", split="random")
    assert random_split["split_method"] == "random"
    official = datalists["mass"][0]
    assert datalist_records(random_split, ["training", "validation", "test"]) != datalist_records(official)
    assert sorted(map(str, datalist_records(random_split))) == sorted(map(str, datalist_records(official)))
    assert {r["patient_id"] for r in random_split["test"]} != {r["patient_id"] for r in official["test"]}


def test_official_split_sends_a_patient_in_both_subsets_to_test():
    from mammoshare.readers import official_split

    records = [
        {"patient_id": p, "label": 1, "density": 2, "official_subset": s}
        for p, s in [("a", "train"), ("a", "test"), ("b", "test")] + [(f"t{i}", "train") for i in range(20)]
    ]
    split = official_split(records, seed=0)
    assert split["a"] == split["b"] == "test"
    assert Counter(split[f"t{i}"] for i in range(20)) == Counter({"training": 17, "validation": 3})
    with pytest.raises(DatalistError, match="has no official subset"):
        official_split([{"patient_id": "x", "label": 0, "density": None}], seed=0)

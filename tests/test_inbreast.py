"""The INbreast phantom (layout, ground truth) and the INbreast reader (records, clusters, bad input)."""

from __future__ import annotations

import csv
import plistlib
import re
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pydicom
import pytest

from mammoshare.datalist import PHANTOM_MARKER, SUBSETS, CaseCollector, DatalistError, datalist_records
from mammoshare.extraction import PatchGeometry, ReadRequest
from mammoshare.phantom import inbreast as phantom
from mammoshare.phantom.synth import PHANTOM_NOTICE
from mammoshare.readers import build_datalist
from mammoshare.readers import inbreast as reader
from transforms import background_mask, lesion_box, read_mammogram

DICOM_NAME = re.compile(r"^(\d{8})_([0-9a-f]{16})_MG_([LR])_(CC|MLO)_ANON\.dcm$")
POINT_PX = re.compile(r"^\(-?\d+\.\d+, -?\d+\.\d+\)$")
ROI_KEYS = {
    "Area", "Center", "Dev", "IndexInImage", "Max", "Mean", "Min", "Name",
    "NumberOfPoints", "Point_mm", "Point_px", "Total", "Type",
}
MARGIN, MIN_SIDE = 60, 128


@pytest.fixture(scope="module")
def root(phantom_root):
    return phantom_root / "inbreast"


@pytest.fixture(scope="module")
def truth():
    """The phantom's ground truth, regenerated from the seed (independent of the files)."""
    return {t["dicom"]: t for t in phantom.inbreast_phantom_truth(2021)}


@pytest.fixture(scope="module")
def datalists(root):
    """Per task: the default datalist (calcifications per ROI, the paper's count)."""
    return {task: build_datalist("inbreast", root, task) for task in ("all", "mass")}


@pytest.fixture(scope="module")
def cluster_datalists(root):
    return {task: build_datalist("inbreast", root, task, calcifications="cluster") for task in ("all", "mass")}


def _truth_units(lesion: dict, policy: str) -> list[np.ndarray]:
    """The point sets that give one record each: a calcification cluster's ROIs under "roi"."""
    if lesion["type"] == "calcification" and policy == "roi":
        return [points for _, points in lesion["rois"]]
    return [lesion["points"]]


def _csv_rows(root: Path) -> list[dict]:
    with open(root / "INbreast.csv", newline="") as f:
        return list(csv.DictReader(f, delimiter=";"))


def _break_copy(root: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "inbreast"
    shutil.copytree(root, copy)
    return copy


# ---------------------------------------------------------------------------------------- phantom


def test_phantom_layout(root, truth):
    assert (root / PHANTOM_MARKER).read_text().startswith(PHANTOM_NOTICE)
    assert (root / "INbreast.csv").read_text().splitlines()[0] == (
        "Patient ID;Patient age;Laterality;View;Acquisition date;File Name;ACR;Bi-Rads"
    )
    dicoms = sorted((root / "AllDICOMs").iterdir())
    matches = [DICOM_NAME.match(p.name) for p in dicoms]
    assert all(matches), [p.name for p, m in zip(dicoms, matches) if not m]
    by_id = {m.group(1): m for m in matches}
    assert len(by_id) == len(dicoms)

    rows = _csv_rows(root)
    assert len(rows) == len(dicoms)
    assert {r["File Name"] for r in rows} == set(by_id)
    assert {r["Patient ID"] for r in rows} == {"removed"} and {r["Patient age"] for r in rows} == {"removed"}
    assert {r["ACR"] for r in rows} <= {"", "1", "2", "3", "4"} and "" in {r["ACR"] for r in rows}
    assert {r["Bi-Rads"] for r in rows} <= {"1", "2", "3", "4a", "4b", "4c", "5", "6"}
    for r in rows:  # the CSV agrees with the file name
        m = by_id[r["File Name"]]
        assert (r["Laterality"], r["View"]) == (m.group(3), m.group(4))

    patients = defaultdict(list)
    for r in rows:
        patients[by_id[r["File Name"]].group(2)].append(r)
    assert 20 <= len(patients) <= 28
    assert all(len(images) in (2, 4) for images in patients.values())
    healthy = [p for p, images in patients.items() if {r["Bi-Rads"] for r in images} == {"1"}]
    assert len(patients) / 4 <= len(healthy) <= len(patients) / 2
    for images in patients.values():  # lesions on one side only
        assert len({r["Laterality"] for r in images if r["Bi-Rads"] != "1"}) <= 1

    xmls = sorted((root / "AllXML").iterdir())
    assert xmls and all(re.fullmatch(r"\d{8}\.xml", p.name) for p in xmls)
    xml_ids = {p.stem for p in xmls}
    assert xml_ids <= set(by_id)
    birads = {r["File Name"]: r["Bi-Rads"] for r in rows}
    assert all(birads[i] != "1" for i in xml_ids)  # BI-RADS 1 images carry no XML
    assert any(birads[i] == "2" for i in set(by_id) - xml_ids)  # a BI-RADS 2 image without XML
    names = Counter()
    for path in xmls:
        plist = plistlib.loads(path.read_bytes())
        assert list(plist) == ["Images"] and len(plist["Images"]) == 1
        image = plist["Images"][0]
        assert image["ImageIndex"] == 0 and image["NumberOfROIs"] == len(image["ROIs"]) > 0
        for i, roi in enumerate(image["ROIs"]):
            assert set(roi) == ROI_KEYS
            assert roi["IndexInImage"] == i
            assert roi["NumberOfPoints"] == len(roi["Point_px"]) == len(roi["Point_mm"])
            assert all(POINT_PX.match(p) for p in roi["Point_px"]), roi["Point_px"][:2]
            names[roi["Name"]] += 1
            if roi["Name"].startswith("Calcification"):
                assert roi["NumberOfPoints"] == 1
    assert {"Mass", "Spiculated Region", "Calcification", "Cluster", "Distortion"} <= set(names)

    headers = {p.name: pydicom.dcmread(p, stop_before_pixels=True) for p in dicoms}
    photometric = Counter(str(h.PhotometricInterpretation) for h in headers.values())
    assert photometric["MONOCHROME1"] >= 3 and photometric["MONOCHROME2"] > photometric["MONOCHROME1"]
    compressed = [n for n, h in headers.items() if h.file_meta.TransferSyntaxUID.is_compressed]
    assert len(compressed) >= 2
    assert {str(headers[n].file_meta.TransferSyntaxUID) for n in compressed} == {pydicom.uid.JPEG2000Lossless}
    assert any("WindowCenter" in h for h in headers.values())
    for name, h in headers.items():  # the header agrees with the ground truth
        t = truth[name]
        assert (h.Rows, h.Columns) == t["shape"] and str(h.PhotometricInterpretation) == t["photometric"]
        assert [float(v) for v in h.PixelSpacing] == [phantom.INBREAST_PHANTOM_SPACING_MM] * 2
    assert set(truth) == set(headers)


def test_phantom_xml_matches_truth(root, truth):
    """The XML holds exactly the drawn lesions' points (the truth is regenerated, not read)."""
    for name, t in truth.items():
        xml = root / "AllXML" / f"{t['file_id']}.xml"
        assert xml.is_file() == t["has_xml"] == bool(t["lesions"])
        if not t["has_xml"]:
            continue
        rois = plistlib.loads(xml.read_bytes())["Images"][0]["ROIs"]
        written = sorted((r["Name"], tuple(reader.parse_point(p) for p in r["Point_px"])) for r in rois)
        expected = sorted(
            (roi_name, tuple(map(tuple, points))) for lesion in t["lesions"] for roi_name, points in lesion["rois"]
        )
        assert written == expected, name


def test_phantom_is_deterministic(root, tmp_path):
    """The same seed writes the same files byte for byte; another seed writes other ones."""
    again = phantom.write_inbreast_phantom(tmp_path / "again", seed=2021)
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        assert (root / rel).read_bytes() == (again / rel).read_bytes(), rel
    other = {s.file_id for s in phantom._plan(7)}
    assert other != {s.file_id for s in phantom._plan(2021)}


def test_phantom_link_distance_matches_reader():
    assert phantom.CLUSTER_LINK_MM == reader.cluster_distance_mm == 5.0


# ----------------------------------------------------------------------------------------- reader


def _margin_box(points: np.ndarray, shape) -> tuple[float, float, float, float]:
    height, width = shape
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0) + 1
    return max(0.0, x0 - MARGIN), max(0.0, y0 - MARGIN), min(width, x1 + MARGIN), min(height, y1 + MARGIN)


@pytest.mark.parametrize("policy", ["roi", "cluster"])
@pytest.mark.parametrize("task", ["all", "mass"])
def test_lesion_records(datalists, cluster_datalists, truth, task, policy):
    datalist, bad = (datalists if policy == "roi" else cluster_datalists)[task]
    assert bad == [] and datalist["phantom"] is True and datalist["task"] == task
    assert datalist["calcifications"] == policy
    records = datalist_records(datalist)
    by_image = defaultdict(list)
    for r in records:
        assert r["source"] == "inbreast"
        by_image[Path(r["image"]).name].append(r)
    wanted = ("mass",) if task == "mass" else ("mass", "calcification", "distortion")
    lesion_counts = Counter()
    for name, t in truth.items():
        lesions = by_image[name]
        for r in lesions:
            box = r["box"]
            side = box[2] - box[0]
            assert side == box[3] - box[1] and side >= MIN_SIDE
            assert 0 <= box[0] and 0 <= box[1] and box[2] <= t["shape"][1] and box[3] <= t["shape"][0]
            assert r["patient_id"] == t["patient_id"] and r["laterality"] == t["laterality"] and r["view"] == t["view"]
            assert r["density"] == t["acr"] and r["birads"] == t["birads"]
        for kind in ("mass", "calcification", "distortion"):
            recs = [r for r in lesions if r["label"] == 1 and r["lesion_types"] == [kind]]
            truth_units = [u for lesion in t["lesions"] if lesion["type"] == kind for u in _truth_units(lesion, policy)]
            if kind not in wanted:
                assert recs == []
                continue
            # one record per drawn lesion (roi: per calcification ROI; cluster: calcification points
            # grouped into their clusters) ...
            assert len(recs) == len(truth_units), (name, kind)
            assert sorted(r["box"] for r in recs) == sorted(lesion_box(points, t["shape"]) for points in truth_units)
            # ... whose box holds the whole lesion with the 60 px margin (clipped at the border)
            for points in truth_units:
                mx0, my0, mx1, my1 = _margin_box(points, t["shape"])
                assert any(
                    r["box"][0] <= mx0 + 1 and r["box"][1] <= my0 + 1 and r["box"][2] >= mx1 - 1 and r["box"][3] >= my1 - 1
                    for r in recs
                ), (name, kind)
            lesion_counts[kind] += len(recs)
        assert all(r["lesion_types"] in ([k] for k in wanted) for r in lesions if r["label"] == 1)
    clusters = sum(lesion["type"] == "calcification" for t in truth.values() for lesion in t["lesions"])
    rois = sum(len(lesion["rois"]) for t in truth.values() for lesion in t["lesions"] if lesion["type"] == "calcification")
    if task == "all":
        assert lesion_counts["calcification"] == (rois if policy == "roi" else clusters)
        assert rois > clusters >= 10 and lesion_counts["distortion"] >= 2
        # images with two drawn clusters give two calcification records
        assert any(sum(lesion["type"] == "calcification" for lesion in t["lesions"]) == 2 for t in truth.values())
    assert lesion_counts["mass"] >= 20
    drawn = [u for t in truth.values() for lesion in t["lesions"] if lesion["type"] in wanted
             for u in _truth_units(lesion, policy)]
    assert sum(r["label"] for r in records) == len(drawn)
    # the datalist states its counts per lesion type, per subset
    for subset in SUBSETS:
        expected = Counter(k for r in datalist[subset] if r["label"] == 1 for k in r["lesion_types"])
        assert datalist["lesion_type_counts"][subset] == dict(sorted(expected.items()))


@pytest.mark.parametrize("task", ["all", "mass"])
def test_split_and_grouping(datalists, task):
    datalist, _ = datalists[task]
    subsets_of = defaultdict(set)
    for subset in SUBSETS:
        assert any(r["label"] == 1 for r in datalist[subset]), subset  # lesions (masses) in every subset
        assert any(r["label"] == 0 for r in datalist[subset]), subset
        for r in datalist[subset]:
            subsets_of[r["patient_id"]].add(subset)
    assert all(len(s) == 1 for s in subsets_of.values())
    assert len(subsets_of) == 24
    # the records of one image are adjacent
    images = [r["image"] for subset in SUBSETS for r in datalist[subset]]
    runs = [image for i, image in enumerate(images) if i == 0 or images[i - 1] != image]
    assert len(runs) == len(set(runs))


def test_healthy_records(datalists, truth):
    datalist, _ = datalists["all"]
    healthy = defaultdict(list)
    for r in datalist_records(datalist):
        if r["label"] == 0:
            assert r["lesion_types"] == [] and r["birads"] == "1"
            healthy[Path(r["image"]).name].append(r["box"])
    birads1 = {name for name, t in truth.items() if t["birads"] == "1"}
    assert set(healthy) == birads1  # every BI-RADS 1 image, and only those
    for name, boxes in healthy.items():
        assert len(boxes) == 5 and len({tuple(b) for b in boxes}) == 5
        image, _ = read_mammogram(Path(datalist["training"][0]["image"]).parent / name)
        background = background_mask(image)
        for x0, y0, x1, y1 in boxes:
            assert x1 - x0 == y1 - y0 == 128
            assert 0 <= x0 and 0 <= y0 and x1 <= image.shape[1] and y1 <= image.shape[0]
            assert background[y0:y1, x0:x1].mean() <= 0.4
    # the mass task has the very same healthy boxes
    mass_healthy = [r for r in datalist_records(datalists["mass"][0]) if r["label"] == 0]
    all_healthy = [r for r in datalist_records(datalist) if r["label"] == 0]
    key = lambda r: (r["image"], tuple(r["box"]))  # noqa: E731
    assert sorted(map(key, mass_healthy)) == sorted(map(key, all_healthy))
    # the BI-RADS 2 image without XML gives no record and no bad case
    unannotated = [n for n, t in truth.items() if t["birads"] == "2" and not t["has_xml"]]
    assert unannotated and all(n not in healthy for n in unannotated)
    assert not any(Path(r["image"]).name in unannotated for r in datalist_records(datalist))


def test_deterministic(root, datalists):
    again, _ = build_datalist("inbreast", root, "all")
    assert again == datalists["all"][0]
    other, _ = build_datalist("inbreast", root, "all", seed=7)
    lesions = lambda d: sorted((r["image"], tuple(r["box"])) for r in datalist_records(d) if r["label"] == 1)  # noqa: E731
    healthy = lambda d: [(r["image"], tuple(r["box"])) for r in datalist_records(d) if r["label"] == 0]  # noqa: E731
    assert lesions(other) == lesions(again) and sorted(healthy(other)) != sorted(healthy(again))


# ------------------------------------------------------------------------------- reader: details


def test_roi_names_points_and_clusters():
    for name in ("Mass", "mass", " Spiculated  Region ", "Espiculated Region"):
        assert reader.roi_lesion_type(name) == "mass"
    for name in ("Calcification", "CALCIFICATIONS", "Cluster"):
        assert reader.roi_lesion_type(name) == "calcification"
    assert reader.roi_lesion_type("Distortion") == "distortion"
    assert reader.roi_lesion_type("Assymetry") == reader.roi_lesion_type("asymmetry") == "asymmetry"
    assert reader.roi_lesion_type("Lymph node") is None
    assert reader.parse_point("(123.45, 67.89)") == (123.45, 67.89)
    assert reader.parse_point("(1, 2, 0.0)") == (1.0, 2.0)
    with pytest.raises(ValueError):
        reader.parse_point("123.45, 67.89")

    spacing = (0.1, 0.1)  # 5 mm = 50 px
    p = lambda x, y: np.array([[x, y]], float)  # noqa: E731
    # a chain of points each 40 px (4 mm) from the next is one cluster, though its ends are 12 mm apart
    chain = [p(0, 0), p(40, 0), p(80, 0), p(120, 0)]
    assert reader.cluster_point_sets(chain, spacing) == [[0, 1, 2, 3]]
    # 6 mm apart: two clusters; exactly 5 mm: linked
    assert reader.cluster_point_sets([p(0, 0), p(60, 0)], spacing) == [[0], [1]]
    assert reader.cluster_point_sets([p(0, 0), p(50, 0)], spacing) == [[0, 1]]
    # a 'Cluster' outline links the points it passes near; order of the result: by first index
    outline = np.array([[200, 0], [260, 0], [260, 40]], float)
    sets = [p(300, 0), p(0, 0), p(250, 30), outline, p(3, 4)]
    assert reader.cluster_point_sets(sets, spacing) == [[0, 2, 3], [1, 4]]
    # anisotropic spacing: rows 0.2 mm, columns 0.05 mm
    assert reader.cluster_point_sets([p(0, 0), p(90, 0)], (0.2, 0.05)) == [[0, 1]]
    assert reader.cluster_point_sets([p(0, 0), p(0, 30)], (0.2, 0.05)) == [[0], [1]]
    assert reader.cluster_point_sets([], spacing) == []


def test_birads1_image_with_xml_and_header_spaces(root, tmp_path, datalists):
    """A BI-RADS 1 image with an outlined calcification gives its lesion and healthy boxes away
    from it; spaces around CSV headers and values are tolerated."""
    copy = _break_copy(root, tmp_path)
    rows = _csv_rows(copy)
    target = next(r for r in rows if r["Bi-Rads"] == "1")
    dicom = next((copy / "AllDICOMs").glob(f"{target['File Name']}_*.dcm"))
    image, _ = read_mammogram(dicom)
    ys, xs = np.nonzero(~background_mask(image))
    centre = (float(np.median(xs)), float(np.median(ys)))
    roi = {"Name": "Calcification", "NumberOfPoints": 1, "Point_px": [f"({centre[0]:.2f}, {centre[1]:.2f})"]}
    (copy / "AllXML" / f"{target['File Name']}.xml").write_bytes(
        plistlib.dumps({"Images": [{"ImageIndex": 0, "NumberOfROIs": 1, "ROIs": [roi]}]})
    )
    text = (copy / "INbreast.csv").read_text().splitlines()
    spaced = [" ; ".join(f" {v} " for v in line.split(";")) for line in text]
    (copy / "INbreast.csv").write_text("\n".join(spaced) + "\n")

    datalist, bad = build_datalist("inbreast", copy, "all")
    assert bad == []
    records = [r for r in datalist_records(datalist) if Path(r["image"]).name == dicom.name]
    lesion = [r for r in records if r["label"] == 1]
    assert len(lesion) == 1 and lesion[0]["lesion_types"] == ["calcification"]
    assert lesion[0]["box"] == lesion_box([centre], image.shape)
    healthy = [r["box"] for r in records if r["label"] == 0]
    lx0, ly0, lx1, ly1 = lesion[0]["box"]
    assert len(healthy) == 5
    assert all(x1 <= lx0 or lx1 <= x0 or y1 <= ly0 or ly1 <= y0 for x0, y0, x1, y1 in healthy)
    # every other image: the same records as from the pristine phantom
    strip = lambda d, skip: sorted(  # noqa: E731
        (Path(r["image"]).name, r["label"], tuple(r["box"]), r["birads"], r["density"])
        for r in datalist_records(d) if Path(r["image"]).name != skip
    )
    assert strip(datalist, dicom.name) == strip(datalists["all"][0], dicom.name)


def test_missing_columns(root, tmp_path):
    copy = tmp_path / "inbreast"
    copy.mkdir()
    for name in ("AllDICOMs", "AllXML"):
        (copy / name).mkdir()
    lines = (root / "INbreast.csv").read_text().splitlines()
    header = lines[0].replace(";ACR;Bi-Rads", ";Density;BIRADS")
    (copy / "INbreast.csv").write_text("\n".join([header] + lines[1:]) + "\n")
    with pytest.raises(DatalistError) as info:
        build_datalist("inbreast", copy, "all")
    message = str(info.value)
    assert str(copy / "INbreast.csv") in message and "'ACR'" in message and "'Bi-Rads'" in message
    assert "'Laterality'" not in message.split("found")[0]
    (copy / "INbreast.csv").unlink()
    with pytest.raises(DatalistError, match="INbreast.csv"):
        build_datalist("inbreast", copy, "all")


def test_bad_cases(root, tmp_path, truth):
    """Every kind of bad input gives a case error naming its file; all are listed at once, and with
    skip_bad the build goes on without those images."""
    copy = _break_copy(root, tmp_path)
    dicoms, xmls = copy / "AllDICOMs", copy / "AllXML"
    images = list(truth.values())
    healthy = [t for t in images if t["birads"] == "1" and not t["compressed"]]
    masses = [t for t in images if t["has_xml"] and t["birads"][0] in "3456" and any(
        lesion["type"] == "mass" for lesion in t["lesions"])]
    assert len(healthy) >= 2 and len(masses) >= 7
    broken: dict[str, str] = {}  # dicom name -> the file the error must name

    t = healthy[0]  # a CSV row whose DICOM is missing
    (dicoms / t["dicom"]).unlink()
    broken[t["dicom"]] = str(copy / "INbreast.csv")
    t = healthy[1]  # a DICOM truncated inside its pixel data
    data = (dicoms / t["dicom"]).read_bytes()
    (dicoms / t["dicom"]).write_bytes(data[: len(data) // 2])
    broken[t["dicom"]] = str(dicoms / t["dicom"])
    t = masses[0]  # not a DICOM at all
    (dicoms / t["dicom"]).write_bytes(b"this is not a DICOM file" * 10)
    broken[t["dicom"]] = str(dicoms / t["dicom"])
    t = masses[1]  # XML missing for a BI-RADS >= 3 image
    (xmls / f"{t['file_id']}.xml").unlink()
    broken[t["dicom"]] = str(xmls / f"{t['file_id']}.xml")
    t = masses[2]  # XML that is not a plist
    (xmls / f"{t['file_id']}.xml").write_text("<plist><dict><key>Images</key>")
    broken[t["dicom"]] = str(xmls / f"{t['file_id']}.xml")

    def edit(t, change):
        path = xmls / f"{t['file_id']}.xml"
        plist = plistlib.loads(path.read_bytes())
        change(plist)
        path.write_bytes(plistlib.dumps(plist))
        broken[t["dicom"]] = str(path)

    def first_mass(plist):
        return next(r for r in plist["Images"][0]["ROIs"] if reader.roi_lesion_type(r["Name"]) == "mass")

    edit(masses[3], lambda p: p["Images"][0].pop("ROIs"))  # no ROIs array
    edit(masses[4], lambda p: first_mass(p).update(Point_px=[], NumberOfPoints=0))  # empty contour
    edit(masses[5], lambda p: first_mass(p).update(  # contour outside the image
        Point_px=[f"({x + 5000:.2f}, {y:.2f})" for x, y in map(reader.parse_point, first_mass(p)["Point_px"])]
    ))
    edit(masses[6], lambda p: p["Images"][0]["ROIs"][0].update(Name="Lymph node"))

    with pytest.raises(DatalistError) as info:
        build_datalist("inbreast", copy, "all")
    bad = info.value.bad_cases
    message = str(info.value)
    assert len(bad) == len(broken), "\n".join(map(str, bad))
    assert sorted(b.file for b in bad) == sorted(broken.values())
    for b in bad:
        assert str(b) in message and b.case
    problems = " | ".join(b.problem for b in bad)
    for words in ("no DICOM", "truncated", "cannot read DICOM header", "missing XML", "not a valid plist",
                  "no 'ROIs'", "without points", "outside", "unknown ROI name 'Lymph node'"):
        assert words in problems, words
    assert any("File Name" in b.case for b in bad)  # the CSV row names its file id

    datalist, skipped = build_datalist("inbreast", copy, "all", skip_bad=True)
    assert [str(b) for b in skipped] == [str(b) for b in bad]
    names = {Path(r["image"]).name for r in datalist_records(datalist)}
    assert not names & set(broken)
    good = {n for n, t in truth.items() if n not in broken and (t["birads"] == "1" or t["has_xml"])}
    assert names == good


def test_read_inbreast_directly(root):
    """The reader contract: records image by image, absolute paths, no bad case on the phantom."""
    collector = CaseCollector()
    records = reader.read_inbreast(root, ReadRequest("all", collector, 2021, 2, PatchGeometry(healthy_box_px=96)))
    assert collector.bad_cases == []
    healthy = [r for r in records if r["label"] == 0]
    assert healthy and all(r["box"][2] - r["box"][0] == 96 for r in healthy)
    assert all(Path(r["image"]).is_absolute() and Path(r["image"]).is_file() for r in records)
    assert records == reader.read_inbreast(root, ReadRequest("all", CaseCollector(), 2021, 2, PatchGeometry(healthy_box_px=96)))

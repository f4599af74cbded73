"""Datalist core: the patient-level split, split files, writing and reading, bad-case collection."""

import json
from collections import Counter

import numpy as np
import pytest

from mammoshare.datalist import (
    SUBSETS,
    CaseCollector,
    CaseError,
    DatalistError,
    assemble_datalist,
    load_datalist,
    make_record,
    read_split_file,
    split_patients,
    write_datalist,
)


def _records(n_patients=200, seed=0):
    rng = np.random.RandomState(seed)
    records = []
    for p in range(n_patients):
        density = int(rng.choice([1, 2, 3, 4], p=[0.1, 0.4, 0.4, 0.1]))
        lesion = rng.rand() < 0.5
        for k in range(rng.randint(1, 6)):
            records.append(
                make_record(f"/data/img_{p}_{k}.dcm", f"P{p:03d}", int(lesion and k == 0), [0, 0, 128, 128], "test",
                            ["mass"] if lesion and k == 0 else [], density=density)
            )
    return records


def test_split_is_by_patient_proportional_and_stratified():
    records = _records()
    split = split_patients(records, seed=2021)
    assert set(split.values()) == set(SUBSETS)
    sizes = Counter(split.values())
    n = len(split)
    assert abs(sizes["training"] / n - 0.70) < 0.02
    assert abs(sizes["validation"] / n - 0.15) < 0.02
    assert abs(sizes["test"] / n - 0.15) < 0.02
    # each stratum (label x density) is spread like the whole
    patient_stratum = {}
    for r in records:
        key = patient_stratum.get(r["patient_id"], (0, r["density"]))
        patient_stratum[r["patient_id"]] = (max(key[0], r["label"]), r["density"])
    for stratum in set(patient_stratum.values()):
        members = [p for p, s in patient_stratum.items() if s == stratum]
        if len(members) < 20:
            continue
        share = Counter(split[p] for p in members)
        assert abs(share["training"] / len(members) - 0.7) < 0.1, (stratum, share)
    # density distributions of the subsets look alike
    for subset in SUBSETS:
        patients = [p for p in split if split[p] == subset]
        dens = Counter(patient_stratum[p][1] for p in patients)
        assert abs(dens[2] / len(patients) - 0.4) < 0.15


def test_split_is_deterministic_and_seed_dependent():
    records = _records()
    assert split_patients(records, 1) == split_patients(records, 1)
    assert split_patients(records, 1) != split_patients(records, 2)


def test_no_patient_in_two_subsets_and_small_datasets_fill_all_subsets():
    records = _records(n_patients=14)
    datalist = assemble_datalist(records, "test", "all", seed=3, phantom=True)
    seen = {}
    for subset in SUBSETS:
        assert datalist[subset], f"{subset} is empty"
        for r in datalist[subset]:
            assert seen.setdefault(r["patient_id"], subset) == subset
    assert sum(len(datalist[s]) for s in SUBSETS) == len(records)  # nothing dropped


def test_external_split_file(tmp_path):
    records = _records(n_patients=6)
    patients = sorted({r["patient_id"] for r in records})
    (tmp_path / "split.csv").write_text("patient_id,subset\n" + "\n".join(f"{p},{'train' if i < 4 else 'test'}" for i, p in enumerate(patients)))
    split = read_split_file(tmp_path / "split.csv")
    datalist = assemble_datalist(records, "test", "all", seed=0, phantom=False, split=split)
    assert {r["patient_id"] for r in datalist["test"]} == set(patients[4:])
    (tmp_path / "split.json").write_text(json.dumps({"training": patients[:5], "validation": patients[5:]}))
    assert read_split_file(tmp_path / "split.json")[patients[5]] == "validation"
    (tmp_path / "short.json").write_text(json.dumps({patients[0]: "training"}))
    with pytest.raises(DatalistError, match="no subset for 5 patient"):
        assemble_datalist(records, "test", "all", 0, False, read_split_file(tmp_path / "short.json"))
    (tmp_path / "bad.json").write_text(json.dumps({patients[0]: "holdout"}))
    with pytest.raises(DatalistError, match="unknown subset 'holdout'"):
        read_split_file(tmp_path / "bad.json")
    (tmp_path / "cols.csv").write_text("id,set\nP000,train\n")
    with pytest.raises(DatalistError, match=r"cols\.csv: CSV without the column"):
        read_split_file(tmp_path / "cols.csv")


def test_write_and_load_round_trip_with_relative_paths(tmp_path):
    image = tmp_path / "data" / "img.dcm"
    image.parent.mkdir()
    image.write_bytes(b"x")
    record = make_record(image, "P1", 1, [1, 2, 131, 132], "inbreast", ["mass"], density=2, birads="4a")
    datalist = {"dataset": "inbreast", "task": "mass", "phantom": True, "seed": 1,
                "training": [record], "validation": [], "test": []}
    out = write_datalist(datalist, tmp_path / "lists" / "dl.json")
    raw = json.loads(out.read_text())
    assert raw["training"][0]["image"] == "../data/img.dcm"
    loaded = load_datalist(out)
    assert loaded["training"][0]["image"] == str(image)
    assert loaded["training"][0]["box"] == [1, 2, 131, 132]
    with pytest.raises(DatalistError, match="datalist not found"):
        load_datalist(tmp_path / "nope.json")
    (tmp_path / "broken.json").write_text('{"training": [{"image": "a"}]}')
    with pytest.raises(DatalistError, match=r"training\[0\] lacks"):
        load_datalist(tmp_path / "broken.json")


def test_records_refuse_bad_labels_and_types():
    with pytest.raises(ValueError, match="label must be"):
        make_record("a", "p", 2, [0, 0, 1, 1], "x")
    with pytest.raises(ValueError, match="unknown lesion type"):
        make_record("a", "p", 1, [0, 0, 1, 1], "x", ["tumour"])


def test_collector_lists_every_bad_case_or_skips_them():
    collector = CaseCollector()
    with collector.case("a.xml", "roi 1"):
        raise CaseError("a.xml", "roi 1", "unknown ROI name 'Blob'")
    with collector.case("b.dcm", "image b"):
        raise ValueError("b.dcm: cannot decode pixel data")
    with collector.case("c.dcm", "image c"):
        pass
    with pytest.raises(DatalistError) as info:
        collector.finish("inbreast")
    message = str(info.value)
    assert "2 bad case(s)" in message and "a.xml [roi 1]: unknown ROI name" in message and "b.dcm [image b]" in message
    skipping = CaseCollector(skip_bad=True)
    with skipping.case("b.dcm", "image b"):
        raise OSError("truncated")
    assert [c.file for c in skipping.finish("x")] == ["b.dcm"]

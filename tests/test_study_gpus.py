"""The study runner's GPU scheduling: one stage per GPU at a time, --gpus, and where each cell ran."""

import argparse
import json
import threading
import time

import pytest

from mammoshare.study import runner
from mammoshare.study.cli import add_study_parser
from mammoshare.study.report import write_outputs
from mammoshare.study.stages import placement


class _Bar:
    def set_postfix_str(self, *a, **k):
        pass

    def update(self, n=1):
        pass


def test_cells_run_one_per_gpu_at_a_time(monkeypatch, tmp_path):
    busy: dict[int, str] = {}
    lock = threading.Lock()
    seen = []

    def fake_worker(spec, study_dir, gpu, console_level):
        with lock:
            assert gpu not in busy, f"GPU {gpu} already runs {busy.get(gpu)}"
            busy[gpu] = spec["id"]
            seen.append((spec["id"], gpu))
        time.sleep(0.05)
        with lock:
            del busy[gpu]
        return {"id": spec["id"], "status": "done", "ran_on": f"GPU {gpu}"}

    monkeypatch.setattr(runner, "run_in_worker", fake_worker)
    specs = [{"id": f"cell/{i}", "kind": "cell"} for i in range(6)]
    records = list(runner.execute_stages(specs, tmp_path, [0, 1], 40, _Bar()))
    assert sorted(r["id"] for r in records) == [s["id"] for s in specs]
    assert {gpu for _, gpu in seen} == {0, 1}  # both GPUs worked
    assert all(r["ran_on"] in ("GPU 0", "GPU 1") for r in records)


def test_without_gpus_cells_run_in_this_process_one_after_the_other(monkeypatch, tmp_path):
    order = []
    monkeypatch.setattr(runner, "execute_spec", lambda spec, d, level: order.append(spec["id"]) or {"id": spec["id"]})
    list(runner.execute_stages([{"id": "a"}, {"id": "b"}], tmp_path, [], 40, _Bar()))
    assert order == ["a", "b"]


def test_gpus_option(monkeypatch):
    parser = argparse.ArgumentParser()
    add_study_parser(parser.add_subparsers())
    args = parser.parse_args(["study", "--preset", "demo", "--out", "x", "--gpus", "0,1"])
    assert args.gpus == [0, 1]
    with pytest.raises(SystemExit):
        parser.parse_args(["study", "--preset", "demo", "--out", "x", "--gpus", "0,a"])
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"--gpus 0,3: GPU 3 is not there \(1 CUDA GPU\(s\) visible\)"):
        runner.detect_gpus(runner.StudyOptions(preset="demo", out="x", gpus=[0, 3]))
    assert runner.detect_gpus(runner.StudyOptions(preset="demo", out="x", gpus=[0])) == [0]
    # worker slots on CPU (the worker path without GPUs): no check against the GPUs
    assert runner.detect_gpus(runner.StudyOptions(preset="demo", out="x", gpus=[0, 3], device="cpu")) == [0, 3]
    assert runner.detect_gpus(runner.StudyOptions(preset="demo", out="x", gpus=[0], parallel=False)) == []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert runner.detect_gpus(runner.StudyOptions(preset="demo", out="x")) == []  # CPU: one at a time


def test_records_and_report_say_where_a_cell_ran(tmp_path):
    assert placement({"device": "cpu"}) == "cpu"
    assert placement({"device": "cpu", "gpu_slot": "GPU 1"}) == "cpu (worker of the GPU 1 slot)"
    options = runner.StudyOptions(preset="paper", out=tmp_path / "study", centre_a=tmp_path / "inbreast", only=["none"],
                                  tasks=["mass"], classifiers=["cnn"], fractions=[1.0], seeds=1)
    plan = runner.plan_study(options)
    cell = next(c for c in plan.cells if c["status"] == "planned")
    metrics = {name: 0.5 for name in ("accuracy", "f1", "auroc", "auprc")}
    outputs = {"metrics": metrics, "ci": {name: {"low": 0.4, "high": 0.6} for name in metrics}}
    records = {cell["spec_id"]: {"status": "done", "ran_on": "GPU 1 (NVIDIA H100)", "outputs": outputs}}
    write_outputs(plan, records, options, {}, 0.0, [], [], [])
    runs = json.loads((tmp_path / "study" / "runs.json").read_text())
    entry = next(c for c in runs["cells"] if c["id"] == cell["id"])
    assert entry["ran_on"] == "GPU 1 (NVIDIA H100)"

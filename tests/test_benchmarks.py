"""benchmarks/run.py: its temporary folder goes away even when the run is killed; its report
section; the audit hook; the alternating measurement."""

import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "run.py"


def _module():
    spec = importlib.util.spec_from_file_location("benchmarks_run", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_temporary_folder_is_removed_when_the_run_is_terminated(tmp_path):
    code = (
        "import importlib.util, sys, time\n"
        f"spec = importlib.util.spec_from_file_location('b', {str(SCRIPT)!r})\n"
        "b = importlib.util.module_from_spec(spec); spec.loader.exec_module(b)\n"
        "with b.work_folder() as folder:\n"
        "    (folder / 'data.bin').write_bytes(b'x' * 1000)\n"
        "    print(folder, flush=True)\n"
        "    time.sleep(60)\n"
    )
    env = dict(os.environ, TMPDIR=str(tmp_path), PYTHONPATH=str(REPO))
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    folder = Path(process.stdout.readline().strip())
    assert folder.is_dir() and folder.name.startswith("mammoshare-bench-")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) != 0
    assert not folder.exists()


def test_a_folder_left_by_a_killed_run_is_removed_by_the_next(tmp_path, monkeypatch):
    bench = _module()
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    stale = tmp_path / "mammoshare-bench-old"
    stale.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (stale / "pid").write_text(str(dead.pid))
    alive = tmp_path / "mammoshare-bench-alive"
    alive.mkdir()
    (alive / "pid").write_text(str(os.getpid()))
    with bench.work_folder() as folder:
        assert folder.is_dir()
    assert not stale.exists() and alive.exists() and not folder.exists()


def test_results_section_replaces_only_what_lies_between_the_markers(tmp_path):
    bench = _module()
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text(f"# B\n\nintro\n\n{bench.MARK_BEGIN}\nold\n{bench.MARK_END}\n\nafter\n")
    bench.write_markdown(doc, "new table")
    text = doc.read_text()
    assert "intro" in text and "after" in text and "new table" in text and "old" not in text


def test_audit_hook_says_why_it_did_not_run(tmp_path, monkeypatch):
    bench = _module()
    if importlib.util.find_spec("mammoshare.audit.benchmarking") is not None:  # tiny sizes: seconds, not a minute
        from mammoshare.audit import benchmarking as audit_bench

        monkeypatch.setitem(audit_bench.SIZES, "quick", {
            "references": 60, "naive": 4, "fast": 40, "rounds": 1,
            "whole": {"samples": 40, "train": 30, "holdout": 30, "features": "pixel", "msssim_pairs": 20}})
    result = bench.audit_benchmark(tmp_path, True, torch.device("cpu"))
    if importlib.util.find_spec("mammoshare.audit") is None:
        assert result["status"] == "not run: mammoshare.audit does not exist in this checkout"
    else:
        assert result["status"] == "done" or "has no benchmark(workdir, quick, device)" in result["status"]
    if result["status"] == "done":  # the two ways find the same neighbours; the vectorised one is faster
        assert result["same_neighbours"] is True and result["ratio"] > 1
        assert result["ratio_of"] == "chunked_vectorised / naive_per_sample"
        assert result["whole_audit"]["samples"] == 40 and set(result["whole_audit"]["verdicts"]) == {
            "memorisation", "membership", "diversity", "fidelity"}
        assert "audit nearest-neighbour search" in bench.markdown({
            "machine": {"device": "cpu", "processor": "x", "cpu_count": 1, "torch": "t", "torch_threads": 1},
            "date": "d", "command": "c", "mode": "quick", "seconds": 1.0, "audit": result})


def test_alternate_measures_each_way_from_its_own_blocks():
    bench = _module()
    calls = []

    def slow():
        calls.append("slow")
        time.sleep(0.02)
        return 1

    def fast():
        calls.append("fast")
        time.sleep(0.002)
        return 1

    rates = bench.alternate({"fast": fast, "slow": slow}, rounds=3, device=torch.device("cpu"))
    assert calls == ["fast", "slow"] * 4  # warm-up round, then alternating
    assert rates["fast"] > 3 * rates["slow"]

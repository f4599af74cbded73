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


def test_balanced_warmup_gives_every_way_as_many_generator_updates():
    bench = _module()
    # one critic update per block, 3 rounds, n_critic 5: timed updates 5..10, one generator update each (5 and 10)
    assert bench.balanced_warmup(5, 1, 3) == 2
    for steps, rounds in ((1, 3), (2, 3), (3, 4), (10, 6)):
        warmup = bench.balanced_warmup(5, steps, rounds)
        counts = [sum(any(u % 5 == 0 for u in range((r * 2 + way) * steps + 1, (r * 2 + way + 1) * steps + 1))
                      for r in range(warmup, warmup + rounds)) for way in range(2)]
        assert counts[0] == counts[1], (steps, rounds, warmup, counts)
    assert bench.balanced_warmup(1, 1, 3) == 1  # DCGAN: a generator update every iteration


def test_results_section_states_the_mode_and_the_diffusion_figures():
    bench = _module()
    assert set(bench.MODE_TEXT) == set(bench.MODES)
    text = bench.markdown({
        "machine": {"device": "cpu", "processor": "x", "cpu_count": 2, "torch": "t", "torch_threads": 2},
        "date": "d", "command": "python benchmarks/run.py --paper-widths", "mode": "paper-widths", "seconds": 1.0,
        "gan": {"wgangp_batch64": {"unit": "images/s", "rates": {"pipeline": 1.0, "memory": 1.0}, "ratio": 1.0,
                                   "ratio_of": "pipeline / memory", "ngf": 64, "target": ">= 0.9"}},
        "diffusion": {"channels": [64, 128, 128], "device": "cpu (2 threads)", "amp": False, "train_batch": 8,
                      "train_images_per_s": 0.5, "sample_batch": 8, "ddim_steps": 50, "sample_images_per_s": 0.04}})
    assert "paper-widths mode" in text and "ngf = ndf = 64" in text
    assert "GAN training wgangp_batch64 (ngf 64)" in text
    assert "UNet channels 64/128/128" in text and "DDIM-50 sampling 0.04 finished patches/s" in text
    assert "200 s per batch" in text


def test_paper_widths_mode_runs_the_gans_and_generation_at_the_paper_widths():
    bench = _module()
    assert bench.GAN_SIZES["paper-widths"]["width"] == 64 and bench.GENERATION_SIZES["paper-widths"]["width"] == 64
    assert bench.GAN_SIZES["quick"]["width"] == 8 and bench.GENERATION_SIZES["quick"]["width"] == 32

"""The study runner (``mammoshare study``): a reduced demo matrix end to end, resume, failures,
GPU-worker path, and the table formatting (pure functions on fixed numbers).

The reduced matrix: the demo preset, task ``mass``, the CNN, 100% of the training data, one seed,
rows None + BCDR WGAN-GP + OPTIMAM DCGAN + Real BCDR. Both table files are written anyway: Table 1
(all lesions) then holds only "not run" cells whose footnote says that they were not selected.
"""

import argparse
import json
import os
from pathlib import Path

import pytest
import torch

from mammoshare.study import add_study_parser, run_study
from mammoshare.study.cli import options_from_args
from mammoshare.study.inputs import build_demo_optimam_generator, parse_bcdr_generators
from mammoshare.study.presets import ROWS, row_by_key
from mammoshare.study.runner import NOT_SELECTED, StudyOptions, plan_study
from mammoshare.study.tables import (
    aggregate,
    best_per_column,
    format_difference,
    format_mean_std,
    markdown_table,
    paired_comparison,
    table_csv,
)

REDUCED = dict(preset="demo", tasks=["mass"], classifiers=["cnn"], fractions=[1.0], seeds=1, device="cpu",
               only=["none", "wgangp", "optimam", "real_bcdr", "ddpm"], progress=False)
OUTPUT_FILES = ["table1_all_lesions.md", "table1_all_lesions.csv", "table2_masses.md", "table2_masses.csv",
                "runs.json", "report.md", "deltas_vs_none.png", "paired_comparison.md", "paired_comparison.csv"]


def _stage_files(study_dir: Path) -> dict[str, int]:
    return {str(p.relative_to(study_dir)): p.stat().st_mtime_ns for p in study_dir.glob("**/stage.json")}


def _cells(study_dir: Path) -> dict[tuple, dict]:
    runs = json.loads((study_dir / "runs.json").read_text())
    return {(c["task"], c["classifier"], c["fraction"], c["row"], c["seed"]): c for c in runs["cells"]}


@pytest.fixture(scope="module")
def demo_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "demo"
    result = run_study(StudyOptions(out=out, **REDUCED))
    return out, result


def test_reduced_demo_writes_tables_runs_and_plot(demo_study):
    out, result = demo_study
    assert result.exit_status == 0, result.failed
    for name in OUTPUT_FILES:
        assert (out / name).stat().st_size > 0, name
    cells = _cells(out)
    assert len(cells) == len(ROWS) * 2 * 2 * 2 * 1  # the whole matrix is listed, run or not
    for row in ("none", "wgangp", "real_bcdr", "ddpm"):
        cell = cells[("mass", "cnn", 1.0, row, 0)]
        assert cell["status"] == "done", cell
        assert set(cell["metrics"]) == {"accuracy", "f1", "auroc", "auprc"}
        assert all(0.0 <= v <= 1.0 for v in cell["metrics"].values())
        assert cell["ci"]["auroc"]["low"] <= cell["ci"]["auroc"]["high"]
        assert len(cell["hash"]) == 64 and cell["config"]["row"] == row and cell["timings"]["total_s"] > 0
        assert cell["positive_class"] == "lesion"
        best = cell["best_validation"]  # read from the file the training run wrote
        assert set(best) == {"val_auprc", "epoch"} and 1 <= best["epoch"] <= cell["config"]["classifier_settings"]["max_epochs"]
    sources = lambda row: set(cells[("mass", "cnn", 1.0, row, 0)]["training_counts"]["lesion"])  # noqa: E731
    assert sources("none") == {"inbreast"}
    assert sources("wgangp") == {"inbreast", "wgangp_bcdr"}
    assert sources("ddpm") == {"inbreast", "ddpm_bcdr"}  # the diffusion row: trained and sampled as the GANs
    assert sources("real_bcdr") == {"inbreast", "bcdr"}
    optimam = cells[("mass", "cnn", 1.0, "optimam", 0)]
    if optimam["status"] == "done":  # the dcgan_optimam bundle loaded the demo's OPTIMAM-layout generator
        assert len(sources("optimam")) == 2 and "inbreast" in sources("optimam")
    else:  # no bundle (or it cannot load the file): not run, by design, with the reason
        assert optimam["status"] == "not_run" and "dcgan_optimam" in optimam["reason"]
    swin = cells[("mass", "swin", 1.0, "none", 0)]
    assert swin["status"] == "not_run" and swin["reason"] == NOT_SELECTED
    table2 = (out / "table2_masses.md").read_text()
    none_line = next(line for line in table2.splitlines() if "| CNN | None |" in line)
    mark = next(line.split("]")[0] + "]" for line in table2.splitlines() if line.endswith(f"not run: {NOT_SELECTED}  ")
                or line.endswith(f"not run: {NOT_SELECTED}"))
    assert "0." in none_line and f"not run {mark}" in none_line  # 100% ran, 50% was not selected
    # the tiny demo classifier may call every patch healthy: then footnoted as a constant predictor, never bold
    none_cell = cells[("mass", "cnn", 1.0, "none", 0)]
    assert ("constant predictor" in table2) == bool(none_cell["constant_prediction"])
    table1 = (out / "table1_all_lesions.md").read_text()
    assert "**" not in table1 and table1.count("not run [1]") == 2 * len(ROWS) * 8
    csv_lines = (out / "table2_masses.csv").read_text().splitlines()
    assert csv_lines[0].startswith("task,classifier,augmentation,row,training_data,status")
    assert any(",none,100%,done,1,1," in line for line in csv_lines)
    report = (out / "report.md").read_text()
    for text in ("mean nothing clinically", "torch", "monai", "--positive-class healthy", "n_critic", "y margin",
                 "weighted sampler", "swapped", "| cell |", "inbreast 18"):
        assert text in report, text
    assert not list(out.glob("cells/*/train/model_final.pt"))  # the demo keeps no classifier weights


def test_every_trained_generator_is_audited_and_the_report_shows_the_figures(demo_study):
    from mammoshare.audit import FAMILIES, load_audit

    out, result = demo_study
    gans = [k for k in result.records if k.startswith("gan/")]
    audits = {k: r for k, r in result.records.items() if r.get("kind") == "audit"}
    assert gans and sorted(audits) == sorted(k.replace("gan/", "audit/", 1) for k in gans)
    report = (out / "report.md").read_text()
    section = report.split("### Privacy and quality audit of the generators", 1)[1].split("\n## ", 1)[0]
    for spec_id, record in audits.items():
        assert record["status"] == "done", record.get("error")
        folder = out / "stages" / "audits" / spec_id.split("/", 1)[1].replace("/", "_")
        audit = load_audit(folder / "audit")  # audit.json exists and is a valid audit
        assert set(audit["verdicts"]) == set(FAMILIES) and audit["features"]["kind"] == "pixel"
        assert audit["data"]["synthetic"]["patches"] == record["config"]["num_samples"] == 64
        # train: the lesion patches the GAN trained on (all of centre B); holdout: centre A's lesions
        gan = result.records[spec_id.replace("audit/", "gan/", 1)]
        assert audit["data"]["train"]["patches"] == gan["outputs"]["trained_on"]["patches"]
        assert audit["data"]["holdout"]["subsets"] == ["training", "validation", "test"]
        assert (folder / "audit" / "audit.md").is_file() and record["outputs"]["verdicts"] == audit["verdicts"]
        line = next(l for l in section.splitlines() if f"stages/audits/{folder.name}/audit/audit.md" in l)
        copy_rate = audit["families"]["memorisation"]["figures"]["copy_rate_pixel"]["value"]
        auc = audit["families"]["membership"]["figures"]["distance_attack_pixel_auc"]["value"]
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        assert cells[3:7] == [audit["verdicts"][f] for f in FAMILIES]
        assert cells[7].startswith(f"{copy_rate:.3g} [") and cells[9].startswith(f"{auc:.3g} [")
    assert "| Audit holdout |" in report and "audit |" in report  # the deviation and the time table
    # the GANs' and the diffusion model's headline figures side by side, next to the report
    assert "![audit figures](audit_figures.png)" in section and (out / "audit_figures.png").stat().st_size > 0
    assert {r["config"]["generator"] for r in audits.values()} >= {"wgangp", "ddpm"}


def test_centre_b_gans_train_on_all_patients_and_the_report_lists_deviations(demo_study):
    from mammoshare.datalist import datalist_records, load_datalist
    from mammoshare.study.presets import DEMO, PAPER
    from mammoshare.study.report import deviations

    out, result = demo_study
    assert PAPER.calcifications == DEMO.calcifications == "roi"
    assert PAPER.gan_subsets == ("training", "validation", "test")
    gan = result.records["gan/wgangp/mass"]
    bcdr = load_datalist(out / "stages" / "datalists" / "bcdr_mass" / "datalist.json")
    lesions = [r for r in datalist_records(bcdr) if r["label"] == 1]
    assert gan["config"]["subsets"] == ["training", "validation", "test"]
    assert gan["outputs"]["trained_on"]["patients"] == len({r["patient_id"] for r in lesions})
    assert gan["outputs"]["trained_on"]["patches"] == len(lesions)
    assert len({r["patient_id"] for r in bcdr["training"] if r["label"] == 1}) < len({r["patient_id"] for r in lesions})
    report = (out / "report.md").read_text()
    section = report.split("## Where this implementation differs from the original code", 1)[1]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| topic")]
    topics = [topic for topic, _, _ in deviations(DEMO)]
    assert len(rows) == len(topics)
    for row, topic in zip(rows, topics):
        cells = [c.strip() for c in row.strip("|").split(" | ")]
        assert cells[0] == topic and len(cells) == 3 and all(cells), row
    for text in ("--calcifications", "--margin-mm", "--apply-voi", "--jitter", "cv2.INTER_AREA", "--subsets",
                 "one patch per roi", "lesions by type", "mass "):
        assert text in report, text


def test_rerun_of_a_finished_study_trains_nothing(demo_study):
    out, first = demo_study
    before = _stage_files(out)
    table_before = (out / "table2_masses.md").stat().st_mtime_ns
    again = run_study(StudyOptions(out=out, **REDUCED))
    assert again.exit_status == 0
    assert again.ran == []  # no stage ran
    assert sorted(again.reused) == sorted(first.ran)
    assert _stage_files(out) == before  # no stage record was even rewritten
    assert (out / "table2_masses.md").stat().st_mtime_ns > table_before  # the tables were


def test_interrupted_stages_run_again_and_a_gan_resumes(demo_study):
    out, _ = demo_study
    cell_dir = out / "cells" / "mass_cnn_100_none_seed0"
    gan_dir = out / "stages" / "gans" / "wgangp_mass"
    for folder in (cell_dir, gan_dir):  # as if the study had been killed while these ran
        record = json.loads((folder / "stage.json").read_text())
        (folder / "stage.json").write_text(json.dumps({**record, "status": "running"}))
    (cell_dir / "eval" / "metrics.json").unlink()
    model_before = torch.load(gan_dir / "run" / "model.pt", weights_only=True)
    result = run_study(StudyOptions(out=out, **REDUCED))
    assert result.exit_status == 0
    assert sorted(result.ran) == ["cell/mass/cnn/100%/none/seed0", "gan/wgangp/mass"]
    gan = json.loads((gan_dir / "stage.json").read_text())
    assert gan["status"] == "done" and gan["resumed"] is True  # continued from last.pt
    model_after = torch.load(gan_dir / "run" / "model.pt", weights_only=True)
    assert all(torch.equal(model_before[k], model_after[k]) for k in model_before)
    assert (cell_dir / "eval" / "metrics.json").is_file()


def test_failures_are_recorded_and_the_rest_goes_on(demo_study, tmp_path):
    out, _ = demo_study
    bad = tmp_path / "wrong_layout.pt"
    torch.save({"encoder.weight": torch.zeros(2, 2)}, bad)
    result = run_study(StudyOptions(
        out=tmp_path / "study", preset="demo", tasks=["mass"], classifiers=["cnn"], fractions=[1.0], seeds=1,
        device="cpu", progress=False, only=["none", "wgangp", "dcgan", "real_bcdr"],
        centre_a=out / "inputs" / "phantom" / "inbreast", bcdr=tmp_path / "no_such_bcdr",
        bcdr_generators=[f"mass={bad},{bad}"],
    ))
    assert result.exit_status != 0
    cells = _cells(tmp_path / "study")
    assert cells[("mass", "cnn", 1.0, "none", 0)]["status"] == "done"  # the rest went on
    for row in ("wgangp", "dcgan"):
        cell = cells[("mass", "cnn", 1.0, row, 0)]
        assert cell["status"] == "failed"
        assert "wrong_layout.pt" in cell["error"] and "not a generator checkpoint" in cell["error"]
    real = cells[("mass", "cnn", 1.0, "real_bcdr", 0)]
    assert real["status"] == "failed" and "no_such_bcdr: dataset folder not found" in real["error"]
    table2 = (tmp_path / "study" / "table2_masses.md").read_text()
    wgan_line = next(line for line in table2.splitlines() if "| BCDR WGAN-GP |" in line)
    assert "failed [" in wgan_line
    assert "failed (1 of 1 seeds)" in table2 and "not a generator checkpoint" in table2
    report = (tmp_path / "study" / "report.md").read_text()
    assert "**failures**" in report


def test_a_cell_that_raises_is_failed_and_runs_again_next_time(demo_study, tmp_path, monkeypatch):
    from mammoshare.study import kinds

    out, _ = demo_study
    options = dict(out=tmp_path / "study", preset="demo", tasks=["mass"], classifiers=["cnn"], fractions=[1.0],
                   seeds=1, device="cpu", progress=False, only=["none"], centre_a=out / "inputs" / "phantom" / "inbreast")

    def explode(spec, folder, study_dir, resume):
        raise FloatingPointError("non-finite loss at epoch 1")

    monkeypatch.setitem(kinds.KINDS, "cell", explode)
    failed = run_study(StudyOptions(**options))
    assert failed.exit_status != 0
    cell = _cells(tmp_path / "study")[("mass", "cnn", 1.0, "none", 0)]
    assert cell["status"] == "failed" and cell["error"] == "FloatingPointError: non-finite loss at epoch 1"
    assert "failed [" in (tmp_path / "study" / "table2_masses.md").read_text()
    monkeypatch.undo()
    fixed = run_study(StudyOptions(**options))
    assert fixed.exit_status == 0 and fixed.ran == ["cell/mass/cnn/100%/none/seed0"]  # the datalist was reused


def test_gpu_worker_path_runs_cells_in_pinned_processes(demo_study, tmp_path):
    """With several GPUs each cell runs in ``python -m mammoshare.study.worker`` with CUDA_VISIBLE_DEVICES
    set; here two fake 'GPUs' and the CPU device exercise the same path."""
    out, _ = demo_study
    result = run_study(StudyOptions(
        out=tmp_path / "study", preset="demo", tasks=["mass"], classifiers=["cnn"], fractions=[1.0], seeds=2,
        device="cpu", progress=False, only=["none"], centre_a=out / "inputs" / "phantom" / "inbreast", gpus=[0, 1],
    ))
    assert result.exit_status == 0, result.failed
    cells = _cells(tmp_path / "study")
    assert [cells[("mass", "cnn", 1.0, "none", s)]["status"] for s in (0, 1)] == ["done", "done"]
    runs = json.loads((tmp_path / "study" / "runs.json").read_text())
    assert runs["study"]["environment"]["parallel_workers"] == ["GPU 0", "GPU 1"]
    assert {c["ran_on"] for c in runs["cells"] if c["status"] == "done"} <= {
        "cpu (worker of the GPU 0 slot)", "cpu (worker of the GPU 1 slot)"}
    assert not list((tmp_path / "study" / ".work").glob("*.json"))


# ----------------------------------------------------------------------------------------------
# pure functions: formatting, aggregation, paired comparison, options
# ----------------------------------------------------------------------------------------------


def _cell(row, seed, status="done", classifier="cnn", fraction=1.0, values=None, **extra):
    cell = {"task": "mass", "classifier": classifier, "fraction": fraction, "row": row, "seed": seed, "status": status}
    if status == "done":
        values = values or {}
        cell["metrics"] = {m: values.get(m, 0.5) for m in ("accuracy", "f1", "auroc", "auprc")}
        cell["ci"] = {m: {"low": cell["metrics"][m] - 0.1, "high": cell["metrics"][m] + 0.1} for m in cell["metrics"]}
    return {**cell, **extra}


def test_a_constant_predictor_is_never_bold():
    """An all-healthy classifier's accuracy is the class balance (0.909 with F1 0): never 'best'."""
    cells = [
        _cell("none", 0, values={"accuracy": 0.80, "f1": 0.6}),
        _cell("wgangp", 0, values={"accuracy": 0.909, "f1": 0.0}, constant_prediction=True),
    ]
    groups = aggregate(cells)
    assert groups[("mass", "cnn", "wgangp", 1.0)].constant == 1
    assert best_per_column(groups, "mass", "cnn", 1.0, "accuracy") == {"none"}
    text = markdown_table("mass", groups, "Table 2", fractions=(1.0,))
    wgan = next(line for line in text.splitlines() if "| BCDR WGAN-GP |" in line)
    assert wgan.split(" | ")[2] == "0.909 [1]" and "**" not in wgan
    assert "[1] constant predictor in 1 of 1 seeds" in text
    assert "**0.800**" in next(line for line in text.splitlines() if "| CNN | None |" in line)


def test_mean_std_format():
    assert format_mean_std(0.9417, 0.0049) == "0.942(.005)"
    assert format_mean_std(0.5, 0.1234) == "0.500(.123)"
    assert format_mean_std(0.94, None) == "0.940"  # one seed: no std
    assert format_mean_std(1.0, 0.0) == "1.000(.000)"
    assert format_difference(0.0123, 0.005) == "+0.012(.005)" and format_difference(-0.02, None) == "-0.020"


def test_aggregate_best_per_column_and_footnotes():
    cells = [
        _cell("none", 0, values={"accuracy": 0.90, "auroc": 0.80}), _cell("none", 1, values={"accuracy": 0.94, "auroc": 0.80}),
        _cell("wgangp", 0, values={"accuracy": 0.95, "auroc": 0.8001}), _cell("wgangp", 1, values={"accuracy": 0.93, "auroc": 0.7999}),
        _cell("dcgan", 0, "failed", error="RuntimeError: boom"), _cell("dcgan", 1, values={"accuracy": 0.99}),
        _cell("optimam", 0, "not_run", reason="no OPTIMAM generator given"),
        _cell("optimam", 1, "not_run", reason="no OPTIMAM generator given"),
        _cell("none", 0, classifier="swin", values={"accuracy": 0.5}),
    ]
    groups = aggregate(cells)
    none = groups[("mass", "cnn", "none", 1.0)]
    assert none.status == "done" and none.mean["accuracy"] == pytest.approx(0.92)
    assert none.std["accuracy"] == pytest.approx(0.0282843, abs=1e-6)  # sample std (ddof 1)
    assert groups[("mass", "cnn", "dcgan", 1.0)].status == "failed"  # one failed seed fails the cell
    assert groups[("mass", "cnn", "optimam", 1.0)].status == "not_run"
    assert best_per_column(groups, "mass", "cnn", 1.0, "accuracy") == {"wgangp"}  # 0.940 > 0.920; dcgan failed
    assert best_per_column(groups, "mass", "cnn", 1.0, "auroc") == {"none", "wgangp"}  # tie at 3 decimals
    assert best_per_column(groups, "mass", "swin", 1.0, "accuracy") == {"none"}  # per classifier block
    text = markdown_table("mass", groups, "Table 2", fractions=(1.0,))
    lines = text.splitlines()
    wgan = next(line for line in lines if "| BCDR WGAN-GP |" in line and "CNN" not in line)
    assert wgan.split(" | ")[2] == "**0.940(.014)**"
    none_line = next(line for line in lines if "| CNN | None |" in line)
    assert none_line.split(" | ")[2] == "0.920(.028)"
    assert "failed [1]" in next(line for line in lines if "| BCDR DCGAN |" in line)
    assert "not run [2]" in next(line for line in lines if "| OPTIMAM DCGAN |" in line)
    real = next(line for line in lines if "| Real BCDR |" in line)
    assert "not run [3]" in real  # cells that are not in the matrix at all
    assert "[1] failed (1 of 2 seeds): RuntimeError: boom" in text
    assert "[2] not run: no OPTIMAM generator given" in text
    assert "| Swin-T | None | **0.500** |" in text
    csv_text = table_csv("mass", groups, fractions=(1.0,))
    header = csv_text.splitlines()[0].split(",")
    wgan_csv = next(line for line in csv_text.splitlines() if ",wgangp," in line and "CNN" in line).split(",")
    assert wgan_csv[header.index("accuracy_mean")] == "0.940000" and wgan_csv[header.index("accuracy_best")] == "1"
    assert wgan_csv[header.index("status")] == "done"


def test_paired_comparison_against_none():
    cells = []
    for seed, (base, row) in enumerate([(0.80, 0.85), (0.82, 0.81), (0.78, 0.84)]):
        cells += [_cell("none", seed, values={"auroc": base}), _cell("wgangp", seed, values={"auroc": row})]
    results = paired_comparison(cells)
    auroc = next(r for r in results if r["row"] == "wgangp" and r["metric"] == "auroc")
    assert auroc["n_seeds"] == 3 and auroc["wins"] == 2
    assert auroc["mean_difference"] == pytest.approx((0.05 - 0.01 + 0.06) / 3)
    assert auroc["p_value"] is not None and 0 < auroc["p_value"] < 1
    two = paired_comparison(cells[:4])  # two seeds: no test
    assert all(r["p_value"] is None and r["n_seeds"] == 2 for r in two)
    assert paired_comparison([_cell("wgangp", 0)]) == []  # no None to compare with


def test_command_line_options_and_input_errors(tmp_path):
    parser = argparse.ArgumentParser()
    add_study_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args([
        "study", "--preset", "paper", "--out", str(tmp_path / "s"), "--centre-a", "/data/INbreast", "--bcdr-generators",
        "mass=d.pt,w.pt", "--only", "none", "Both(a)", "--seeds", "2", "--positive-class", "healthy", "--device", "cuda:1",
    ])
    options = options_from_args(args)
    assert options.preset == "paper" and options.seeds == 2 and options.positive_class == "healthy"
    assert options.only == ["none", "Both(a)"] and args.func.__name__ == "cmd_study"
    assert [row_by_key(r).key for r in options.only] == ["none", "both_a"]
    generators = parse_bcdr_generators(options.bcdr_generators)
    assert generators["mass"]["dcgan"].name == "d.pt" and generators["mass"]["wgangp"].name == "w.pt"
    for bad in (["mass=a.pt"], ["lesions=a.pt,b.pt"], ["mass=a.pt,b.pt", "mass=c.pt,d.pt"]):
        with pytest.raises(ValueError, match="--bcdr-generators"):
            parse_bcdr_generators(bad)
    with pytest.raises(ValueError, match="unknown augmentation row"):
        row_by_key("gan")
    with pytest.raises(ValueError, match="needs centre A's data"):
        plan_study(StudyOptions(preset="paper", out=tmp_path / "p"))


def test_paper_plan_without_bcdr_or_optimam_reports_not_run(tmp_path):
    plan = plan_study(StudyOptions(preset="paper", out=tmp_path / "p", centre_a=tmp_path / "inbreast"))
    status = {(c["task"], c["row"]): c for c in plan.cells if c["classifier"] == "cnn" and c["fraction"] == 1.0
              and c["seed"] == 0}
    assert len(plan.cells) == len(ROWS) * 2 * 2 * 2 * 3
    assert status[("mass", "none")]["status"] == "planned"
    assert "no BCDR data" in status[("mass", "real_bcdr")]["reason"]
    assert "--bcdr-generators mass=" in status[("mass", "wgangp")]["reason"]
    assert "--optimam-generator" in status[("all", "both_b")]["reason"]
    kinds = {s["kind"] for s in plan.specs}
    assert kinds == {"datalist", "cell"}  # nothing to train or sample
    cell = next(s for s in plan.specs if s["kind"] == "cell" and s["classifier"] == "swin")
    assert cell["config"]["classifier_settings"]["max_epochs"] == 100 and cell["config"]["n_bootstrap"] == 1000


def test_demo_optimam_generator_has_the_medigan_00002_layout(tmp_path):
    from mammoshare.gan.weights import load_generator_weights

    path = build_demo_optimam_generator(tmp_path / "malign_mass_gen", ngf=4)
    state = torch.load(path, weights_only=True)
    assert all(k.startswith("model.") for k in state)
    assert tuple(state["model.0.weight"].shape) == (200, 40, 4, 4) and tuple(state["model.15.weight"].shape) == (4, 1, 4, 4)
    weights = load_generator_weights(path)
    assert weights.layout == "medigan-00002" and os.path.basename(weights.path) == "malign_mass_gen"


def test_bundles_folder_from_the_current_folder_or_a_clear_error(tmp_path, monkeypatch):
    from mammoshare.study import runner

    checkout = runner.default_bundles_dir()
    for bundle in runner.STUDY_BUNDLES:
        (tmp_path / "here" / "bundles" / bundle / "configs").mkdir(parents=True)
    assert runner.default_bundles_dir(tmp_path / "here") == tmp_path / "here" / "bundles"
    assert runner.default_bundles_dir(tmp_path) == checkout  # an editable checkout: its bundles/
    monkeypatch.setattr(runner, "__file__", str(tmp_path / "site-packages" / "mammoshare" / "study" / "runner.py"))
    with pytest.raises(ValueError, match="--bundles DIR"):
        runner.default_bundles_dir(tmp_path)  # an installed package and no bundles/ here


def _audit_record(generator: str, task: str, copy_rate: float, auc: float, status: str = "done") -> dict:
    """A made-up audit stage record with the headline figures of :func:`mammoshare.audit.audit_summary`."""

    def fig(value, low, high, baseline, verdict="pass"):
        return {"value": value, "verdict": verdict, "baseline": baseline, "interval": [low, high],
                "threshold": {"warn": None, "fail": None}}

    figures = {
        "memorisation": {"copy_rate_pixel": fig(copy_rate, copy_rate / 2, copy_rate * 1.5, 0.01,
                                                "fail" if copy_rate > 0.05 else "pass")},
        "membership": {"distance_attack_pixel_auc": fig(auc, auc - 0.05, auc + 0.05, 0.5)},
        "diversity": {"msssim_synthetic_pairs": fig(0.4, 0.38, 0.42, 0.3, "warn")},
        "fidelity": {"frechet_distance": fig(12.0, 10.0, 14.0, 5.0)},
    }
    summary = {"samples": 64, "train_patches": 40, "holdout_patches": 30, "features": "pixel", "figures": figures,
               "verdicts": {"memorisation": "pass", "membership": "pass", "diversity": "warn", "fidelity": "pass"}}
    record = {"id": f"audit/{generator}/{task}", "kind": "audit", "status": status, "label": f"audit {generator} {task}",
              "config": {"generator": generator, "task": task}, "dir": f"stages/audits/{generator}_{task}"}
    if status == "done":
        record["outputs"] = {"summary": summary, "verdicts": summary["verdicts"], "report": "audit/audit.md"}
    else:
        record["error"] = "RuntimeError: boom"
    return record


def test_the_audit_figure_puts_gans_and_the_diffusion_model_side_by_side(tmp_path):
    from matplotlib.colors import to_hex
    from PIL import Image

    from mammoshare.study.report import AUDIT_FIGURE, audit_figure, audit_markdown, generator_family, plot_audits

    records = {r["id"]: r for r in (
        _audit_record("wgangp", "mass", 0.0, 0.52), _audit_record("dcgan", "mass", 0.02, 0.55),
        _audit_record("ddpm", "mass", 0.2, 0.7), _audit_record("ddpm", "all", 0.1, 0.6),
        _audit_record("dcgan", "all", 0.0, 0.5, status="failed"))}
    records["cell/x"] = {"id": "cell/x", "kind": "cell", "status": "done"}
    assert [generator_family(g) for g in ("wgangp", "dcgan", "optimam", "ddpm")] == ["GAN", "GAN", "GAN", "diffusion"]
    note = "PHANTOM data: a demo, no clinical meaning"
    fig, labels = audit_figure(records, notes=[note])
    try:
        # one group per audited generator (the failed audit is in the table, not in the figure), the table's order
        assert labels == ["BCDR DCGAN\nMasses", "BCDR DDPM\nAll lesions", "BCDR DDPM\nMasses", "BCDR WGAN-GP\nMasses"]
        assert len(fig.axes) == 4
        titles = [ax.get_title() for ax in fig.axes]
        assert titles == ["Copy rate (pixel NCC)", "Distance-attack AUC (pixel)", "MS-SSIM of synthetic pairs",
                          "Fréchet distance to train"]
        for ax in fig.axes:
            assert [t.get_text() for t in ax.get_xticklabels()] == labels
            bars = list(ax.patches)
            assert len(bars) == 4
            colours = [to_hex(b.get_facecolor()) for b in bars]
            hatches = [b.get_hatch() for b in bars]
            assert colours[0] == colours[3] != colours[1] == colours[2]  # GAN, diffusion, diffusion, GAN
            assert hatches[0] == hatches[3] != hatches[1] == hatches[2]
        copy = fig.axes[0].patches
        assert [round(p.get_height(), 6) for p in copy[:4]] == [2.0, 10.0, 20.0, 0.0]  # percent
        auc_lines = [line.get_ydata()[0] for line in fig.axes[1].get_lines() if len(line.get_ydata()) == 2]
        assert 0.5 in auc_lines  # the chance line
        texts = [t.get_text() for t in fig.texts]
        assert note in texts and any(t.get_text() == "fail" for t in fig.axes[0].texts)
        legend = [t.get_text() for t in fig.legends[0].get_texts()]
        assert legend[:2] == ["GAN", "diffusion"]
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    path = plot_audits(records, tmp_path / AUDIT_FIGURE, notes=[note])
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > image.size[1] > 300
    assert not list(tmp_path.glob("*.partial.png"))
    section = "\n".join(audit_markdown(records, tmp_path))
    assert f"![audit figures]({AUDIT_FIGURE})" in section and "diffusion model (orange, hatched)" in section
    assert "failed: RuntimeError: boom" in section
    # no audit done: no figure, nothing embedded
    failed_only = {k: r for k, r in records.items() if r.get("status") != "done" or r["kind"] != "audit"}
    assert plot_audits(failed_only, tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()
    assert AUDIT_FIGURE not in "\n".join(audit_markdown(failed_only, tmp_path))

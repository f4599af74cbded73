"""classifier_inbreast: networks, training-set arithmetic, best-by-AUPRC checkpoint, bundle runs."""

import csv
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.bundle import ConfigParser
from monai.bundle import run as bundle_run
from PIL import Image

from mammoshare.classifier.data import (
    DEFAULT_REAL_LESION_COUNT,
    balance_healthy,
    build_training_set,
    count_table,
    draw_patient_fraction,
    equal_shares,
    synthetic_source_records,
)
from mammoshare.classifier.handlers import BestValidationWriter
from mammoshare.classifier.model import load_classifier_weights
from mammoshare.data import patch_dataset
from mammoshare.datalist import DatalistError, load_datalist, read_training_counts, write_datalist, write_training_counts
from mammoshare.networks import PatchCNN, SwinClassifier

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "bundles" / "classifier_inbreast" / "configs"


@pytest.fixture(scope="module")
def inbreast(phantom_root, tmp_path_factory):
    from mammoshare.readers import build_datalist

    datalist, _ = build_datalist("inbreast", phantom_root / "inbreast", task="mass")
    path = write_datalist(datalist, tmp_path_factory.mktemp("inbreast") / "inbreast_mass.json")
    return path, load_datalist(path)


def _synthetic_datalist(folder: Path, count: int, size: int = 128, mode: str = "L", name: str = "gen") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(0)
    records = []
    for i in range(count):
        pixels = (rng.rand(size, size, 3) * 255).astype(np.uint8) if mode == "RGB" else (rng.rand(size, size) * 255).astype(np.uint8)
        Image.fromarray(pixels, mode=mode).save(folder / f"s{i}.png")
        records.append({"image": f"s{i}.png", "patient_id": f"synthetic:{name}", "label": 1, "box": None,
                        "lesion_types": ["mass"], "source": name})
    path = folder / "synthetic_datalist.json"
    path.write_text(json.dumps({"dataset": "synthetic", "task": "mass", "generator": {"name": name},
                                "training": records, "validation": [], "test": []}))
    return path


def test_parameter_counts():
    assert sum(p.numel() for p in PatchCNN().parameters()) == 1_146_850
    assert sum(p.numel() for p in SwinClassifier().parameters()) == 27_520_892
    out = PatchCNN().eval()(torch.rand(3, 1, 128, 128))
    assert out.shape == (3, 2) and torch.allclose(out.exp().sum(1), torch.ones(3))


def test_equal_shares_arithmetic():
    assert equal_shares(1200, 1) == [1200]
    assert equal_shares(1200, 2) == [600, 600]  # the paper's "Both": half from each generator
    assert equal_shares(10, 3) == [4, 3, 3] and sum(equal_shares(1201, 4)) == 1201
    assert DEFAULT_REAL_LESION_COUNT == {"all": 1148, "mass": 500}


def test_balancing_adds_as_many_healthy_as_lesions(inbreast):
    _, datalist = inbreast
    training = datalist["training"]
    n_lesion = sum(r["label"] for r in training)
    lesions, healthy, sampled = balance_healthy(training, 10, seed=1)
    assert len(lesions) == n_lesion and len(healthy) == n_lesion + 10 and sampled == 0
    assert len({(r["image"], tuple(r["box"])) for r in healthy}) == len(healthy)  # no patch twice
    assert balance_healthy(training, 10, seed=1)[1] == healthy  # seeded


def test_too_few_healthy_patches_are_sampled_from_the_same_images(inbreast, caplog):
    _, datalist = inbreast
    training = datalist["training"]
    few = [r for r in training if r["label"] == 1] + [r for r in training if r["label"] == 0][:5]
    with caplog.at_level(logging.WARNING):
        lesions, healthy, sampled = balance_healthy(few, 4, seed=2, reserve=datalist["healthy_reserve"])
    assert len(healthy) == len(lesions) + 4 and sampled == len(healthy) - 5
    assert "sampling" in caplog.text
    new = [r for r in healthy if r.get("extra_healthy")]
    assert {r["image"] for r in new} <= {r["image"] for r in few if r["label"] == 0}
    old_boxes = {(r["image"], tuple(r["box"])) for r in training}
    assert all((r["image"], tuple(r["box"])) not in old_boxes for r in new)


def test_training_set_counts_per_class_and_source(inbreast, tmp_path, caplog):
    _, datalist = inbreast
    a = _synthetic_datalist(tmp_path / "a", 8, name="wgan")
    b = _synthetic_datalist(tmp_path / "b", 8, size=64, name="optimam")  # another size: resized, said once
    bcdr = _synthetic_datalist(tmp_path / "bcdr", 6, name="bcdr")
    with caplog.at_level(logging.INFO):
        records = build_training_set(datalist, "mass", 3, tmp_path, synthetic=[a, b], synthetic_count=11,
                                     real_lesions=bcdr, real_lesion_count=5)
    table = count_table(records)
    n_lesion = sum(r["label"] for r in datalist["training"])
    assert table["lesion"] == {"inbreast": n_lesion, "wgan": 6, "optimam": 5, "bcdr": 5}
    assert sum(table["healthy"].values()) == sum(table["lesion"].values())
    assert "training set:" in caplog.text and "wgan 6" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        dataset = patch_dataset(records, progress=False)
    assert all(dataset[i]["image"].shape == (1, 128, 128) for i in range(len(dataset)))
    assert sum("resized" in m for m in caplog.messages) == 1
    half = draw_patient_fraction(datalist["training"], 0.5, seed=3)
    patients = {r["patient_id"] for r in datalist["training"]}
    assert len({r["patient_id"] for r in half}) == round(len(patients) / 2)


def test_bad_classifier_input(inbreast, tmp_path):
    _, datalist = inbreast
    rgb = _synthetic_datalist(tmp_path / "rgb", 4, mode="RGB")
    with pytest.raises(DatalistError, match=r"s\d\.png: synthetic patch has mode RGB"):
        synthetic_source_records([rgb], 4, 0)
    with pytest.raises(DatalistError, match="fewer than its share"):
        synthetic_source_records([rgb], 40, 0)
    one_class = {**datalist, "training": [r for r in datalist["training"] if r["label"] == 0]}
    with pytest.raises(DatalistError, match="healthy patches only"):
        build_training_set(one_class, "mass", 0, tmp_path)
    with pytest.raises(DatalistError, match="the training subset is empty"):
        build_training_set({**datalist, "training": []}, "mass", 0, tmp_path)
    with pytest.raises(FileNotFoundError, match="classifier weights not found"):
        load_classifier_weights(PatchCNN(), tmp_path / "missing.pt")
    torch.save(PatchCNN().state_dict(), tmp_path / "cnn.pt")
    with pytest.raises(ValueError, match="another classifier"):
        load_classifier_weights(SwinClassifier(), tmp_path / "cnn.pt")


def test_best_checkpoint_by_validation_auprc(tmp_path):
    """The configured CheckpointSaver keeps the epoch with the best val_auprc of a scripted sequence."""
    parser = ConfigParser()
    parser.read_config(CONFIGS / "train.json")
    assert "@validate#best_saver" in parser.get("validate")["base_handlers"]
    saver_config = parser.get("validate")["best_saver"]
    assert saver_config["save_key_metric"] is True and saver_config["key_metric_filename"] == "model.pt"
    from monai.handlers import CheckpointSaver

    network = torch.nn.Linear(1, 1)
    saver = CheckpointSaver(save_dir=str(tmp_path), save_dict={"model": network}, save_key_metric=True,
                            key_metric_filename=saver_config["key_metric_filename"])
    scripted = [0.30, 0.80, 0.55, 0.79]
    evaluator = Engine(lambda engine, batch: None)
    evaluator.state.key_metric_name = "val_auprc"

    @evaluator.on(Events.EPOCH_COMPLETED)  # registered before the saver: it runs first
    def script(engine):
        epoch = engine.state.epoch
        network.weight.data.fill_(float(epoch))
        engine.state.metrics = {"val_auprc": scripted[epoch - 1]}

    saver.attach(evaluator)
    evaluator.run([0], max_epochs=len(scripted))
    saved = torch.load(tmp_path / "model.pt", weights_only=True)
    assert float(saved["weight"]) == 2.0  # the epoch of 0.80


def test_best_validation_is_written_next_to_the_checkpoint(tmp_path):
    """The configured BestValidationWriter adds the best val_auprc and its epoch to the run's
    training-counts file, keeping what the file already holds."""
    parser = ConfigParser()
    parser.read_config(CONFIGS / "train.json")
    handlers = parser.get("validate")["base_handlers"]
    assert handlers[-1]["_target_"] == "mammoshare.classifier.handlers.BestValidationWriter"
    write_training_counts(tmp_path, {"patches": 3, "counts": {"lesion": {"a": 1}}})
    scripted = [0.30, 0.80, 0.55, 0.79]
    evaluator = Engine(lambda engine, batch: None)
    evaluator.state.key_metric_name, evaluator.state.best_metric, evaluator.state.best_metric_epoch = "val_auprc", -1, -1

    @evaluator.on(Events.EPOCH_COMPLETED)  # what MONAI's Workflow does before the handlers
    def script(engine):
        value = scripted[engine.state.epoch - 1]
        if value > engine.state.best_metric:
            engine.state.best_metric, engine.state.best_metric_epoch = value, engine.state.epoch

    BestValidationWriter(tmp_path).attach(evaluator)
    evaluator.run([0], max_epochs=len(scripted))
    written = read_training_counts(tmp_path)
    assert written["best_validation"] == {"val_auprc": 0.80, "epoch": 2}
    assert written["patches"] == 3 and written["counts"] == {"lesion": {"a": 1}}


EVALUATE = ("train.json", "evaluate.json")  # evaluate.json overrides train.json, the model-zoo way


def _run_bundle(config, cwd, **overrides):
    """``python -m monai.bundle run`` in ``cwd`` of a config, or of a list of configs merged in order
    (given relative to ``cwd`` when inside it, as a user in the repository root types them)."""
    paths = [CONFIGS / name for name in ([config] if isinstance(config, str) else config)]
    paths = [p.relative_to(cwd).as_posix() if p.is_relative_to(cwd) else str(p) for p in paths]
    config_file = paths[0] if len(paths) == 1 else "[" + ",".join(f"'{p}'" for p in paths) + "]"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config_file]
    for key, value in overrides.items():
        cmd += [f"--{key}", str(value)]
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def test_cnn_train_evaluate_infer_through_monai_bundle(inbreast, tmp_path):
    datalist_path, datalist = inbreast
    out = tmp_path / "cnn"
    log = _run_bundle("train.json", tmp_path, datalist=datalist_path, output_dir=out, max_epochs=2, device="cpu")
    assert "training set:" in log and "val_auprc" in log
    state = torch.load(out / "model.pt", weights_only=True)
    assert set(state) == set(PatchCNN().state_dict())
    best = read_training_counts(out)["best_validation"]
    assert set(best) == {"val_auprc", "epoch"} and best["epoch"] in (1, 2) and 0 <= best["val_auprc"] <= 1
    report = tmp_path / "eval"
    log = _run_bundle(EVALUATE, tmp_path, datalist=datalist_path, checkpoint=out / "model.pt",
                      output_dir=report, device="cpu", n_bootstrap=200)
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["positive_class"] == "lesion"
    assert metrics["n_patches"] == len(datalist["test"])
    assert {"accuracy", "f1", "auroc", "auprc"} <= set(metrics["confidence_intervals"])
    for name in ("roc_curve.png", "pr_curve.png", "confusion_matrix.png", "predictions.csv"):
        assert (report / name).stat().st_size > 0
    paper = tmp_path / "eval_paper"
    _run_bundle(EVALUATE, REPO, datalist=datalist_path, checkpoint=out / "model.pt",  # from the repository root
                output_dir=paper, device="cpu", n_bootstrap=50, positive_class="healthy")
    paper_metrics = json.loads((paper / "metrics.json").read_text())
    assert paper_metrics["positive_class"] == "healthy"
    assert paper_metrics["auroc"] == pytest.approx(metrics["auroc"])  # AUROC is symmetric, AUPRC is not
    assert paper_metrics["auprc"] != pytest.approx(metrics["auprc"])
    folder = tmp_path / "patches"
    _synthetic_datalist(folder, 5)
    bundle_run(config_file=str(CONFIGS / "inference.json"), logging_file=False, input=str(folder),
               checkpoint=str(out / "model.pt"), output_dir=str(tmp_path / "pred"), device="cpu")
    rows = list(csv.DictReader(open(tmp_path / "pred" / "predictions.csv")))
    assert len(rows) == 5 and {"image_path", "p_healthy", "p_lesion", "prediction"} <= set(rows[0])
    assert all(abs(float(r["p_healthy"]) + float(r["p_lesion"]) - 1) < 1e-6 for r in rows)


def test_swin_trains_through_monai_bundle(inbreast, tmp_path):
    datalist_path, _ = inbreast
    out = tmp_path / "swin"
    _run_bundle("train.json", tmp_path, datalist=datalist_path, output_dir=out, max_epochs=1, epoch_length=2,
                device="cpu", classifier="swin")
    state = torch.load(out / "model.pt", weights_only=True)
    assert set(state) == set(SwinClassifier().state_dict())


def test_training_is_repeatable_with_a_seed(inbreast, tmp_path):
    datalist_path, _ = inbreast
    finals = []
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        bundle_run(config_file=str(CONFIGS / "train.json"), logging_file=False, datalist=str(datalist_path),
                   output_dir=str(tmp_path / name), max_epochs=1, device="cpu", seed=seed)
        finals.append(torch.load(tmp_path / name / "model_final.pt", weights_only=True))
    assert all(torch.equal(finals[0][k], finals[1][k]) for k in finals[0])
    assert not all(torch.equal(finals[0][k], finals[2][k]) for k in finals[0])


def test_resume_is_bitwise_equal_to_an_uninterrupted_run(inbreast, tmp_path, cause_chain):
    """2 epochs straight, or 1 then --resume True to 2: the same final and best weights, the same
    best validation (a resumed run keeps the best checkpoint's record)."""
    datalist_path, _ = inbreast

    def train(name, seed=5, **overrides):
        bundle_run(config_file=str(CONFIGS / "train.json"), logging_file=False, datalist=str(datalist_path),
                   output_dir=str(tmp_path / name), device="cpu", seed=seed, **overrides)
        return tmp_path / name

    straight = train("straight", max_epochs=2)
    train("resumed", max_epochs=1)
    resumed = train("resumed", max_epochs=2, resume=True)
    for name in ("model_final.pt", "model.pt"):
        a, b = (torch.load(run / name, weights_only=True) for run in (straight, resumed))
        assert all(torch.equal(a[k], b[k]) for k in a), name
    counts = [read_training_counts(run) for run in (straight, resumed)]
    assert counts[0]["best_validation"] == counts[1]["best_validation"]
    assert counts[0]["epochs"] == counts[1]["epochs"] == 2 and counts[0]["weights_sha256"] == counts[1]["weights_sha256"]
    last = torch.load(resumed / "last.pt", weights_only=True)
    assert last["epoch"] == 2 and {"network", "optimizer", "validation", "best_saver"} <= set(last)
    # a different seed trains differently: the comparison can fail
    other = train("other", max_epochs=2, seed=6)
    a, c = (torch.load(run / "model_final.pt", weights_only=True) for run in (straight, other))
    assert not all(torch.equal(a[k], c[k]) for k in a)
    # resuming needs a last.pt; a folder with a finished run is refused without --resume or --overwrite
    with pytest.raises(Exception) as info:
        train("fresh", max_epochs=1, resume=True)
    assert "no training state to resume from" in cause_chain(info.value)
    with pytest.raises(Exception) as info:
        train("straight", max_epochs=1)
    assert "holds another run" in cause_chain(info.value)


def test_metadata_and_config_conventions():
    import jsonschema

    from mammoshare.bundle import SCHEMA_FILE

    meta = json.loads((CONFIGS / "metadata.json").read_text())
    jsonschema.validate(meta, json.loads(SCHEMA_FILE.read_text()))
    train = json.loads((CONFIGS / "train.json").read_text())
    assert {"network_def", "network", "train", "validate"} <= set(train)
    assert {"trainer", "dataloader", "handlers"} <= set(train["train"]) and "evaluator" in train["validate"]
    assert (train["lr"], train["momentum"], train["batch_size"], train["max_epochs"]) == (0.001, 0.9, 12, 100)
    assert train["early_stop_patience"] is None  # early stopping is available but off


def test_generator_bundle_is_sampled_first_then_its_datalist_is_a_synthetic_source(tmp_path):
    import shutil

    from mammoshare.datalist import SYNTHETIC_DATALIST
    from mammoshare.networks import DCGANGenerator

    bundle = tmp_path / "dcgan_bcdr"
    shutil.copytree(REPO / "bundles" / "dcgan_bcdr", bundle, ignore=shutil.ignore_patterns("models"))
    (bundle / "models").mkdir()
    torch.save(DCGANGenerator().state_dict(), bundle / "models" / "model.pt")
    with pytest.raises(DatalistError, match="synthetic datalists only"):
        synthetic_source_records([bundle], 4, seed=1)  # training never runs a generator bundle
    bundle_run(config_file=str(bundle / "configs" / "inference.json"), logging_file=False, num_samples=4,
               output_dir=str(tmp_path / "sampled"), seed=1, bundle_root=str(bundle), device="cpu")
    datalist = tmp_path / "sampled" / SYNTHETIC_DATALIST
    first = synthetic_source_records([datalist], 4, seed=1)
    assert list(first) == ["dcgan_bcdr"] and len(first["dcgan_bcdr"]) == 4
    assert all(r["label"] == 1 and r["box"] is None for r in first["dcgan_bcdr"])
    again = synthetic_source_records([datalist], 4, seed=1)
    assert [r["image"] for r in again["dcgan_bcdr"]] == [r["image"] for r in first["dcgan_bcdr"]]

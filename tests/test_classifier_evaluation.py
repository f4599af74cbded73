"""Classifier evaluation: metrics against scikit-learn and by hand, both positive-class conventions,
the patient-level bootstrap, the report files, and the Ignite handler and metrics on a real MONAI
SupervisedEvaluator."""

import csv
import json
import math
import time
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from mammoshare.classifier.handlers import (
    ClassificationReport,
    PositiveClassAUPRC,
    PositiveClassAUROC,
    PredictionsWriter,
    positive_class_output_transform,
)
from mammoshare.classifier.metrics import (
    POSITIVE_CLASSES,
    bootstrap_intervals,
    class_probabilities,
    classification_metrics,
    positive_index,
    weighted_metrics,
)
from mammoshare.classifier.report import write_evaluation, write_predictions_csv

# 12 patches, 5 lesions (label 1); P(lesion) per patch
LABELS = np.array([0, 0, 1, 1, 0, 1, 1, 0, 1, 0, 0, 0])
P_LESION = np.array([0.1, 0.4, 0.35, 0.8, 0.6, 0.9, 0.55, 0.2, 0.7, 0.45, 0.3, 0.05])

# Expected values, from scikit-learn 1.9 on this case:
#   lesion positive:  y = LABELS,      s = P_LESION
#   healthy positive: y = 1 - LABELS,  s = 1 - P_LESION;  prediction = s >= 0.5
EXPECTED = {
    "lesion": {
        "accuracy": 0.8333333333333334,  # accuracy_score(y, s >= 0.5)
        "f1": 0.8,  # f1_score(y, s >= 0.5)
        "auroc": 0.8857142857142857,  # roc_auc_score(y, s)
        "auprc": 0.885,  # average_precision_score(y, s)
        "matrix": [[6, 1], [1, 4]],  # confusion_matrix(y, s >= 0.5)
        "classes": ["healthy", "lesion"],
    },
    "healthy": {
        "accuracy": 0.8333333333333334,
        "f1": 0.8571428571428571,
        "auroc": 0.8857142857142857,
        "auprc": 0.9240362811791383,
        "matrix": [[4, 1], [1, 6]],
        "classes": ["lesion", "healthy"],
    },
}


def p_positive(positive_class):
    return P_LESION if positive_class == "lesion" else 1.0 - P_LESION


# ---------------------------------------------------------------------------------------------
# conventions and point estimates
# ---------------------------------------------------------------------------------------------


def test_positive_index():
    assert POSITIVE_CLASSES == {"lesion": 1, "healthy": 0}
    assert positive_index("lesion") == 1
    assert positive_index("healthy") == 0
    for bad in ("Lesion", "malignant", 1, None):
        with pytest.raises(ValueError, match="positive_class must be one of"):
            positive_index(bad)


@pytest.mark.parametrize("positive_class", ["lesion", "healthy"])
def test_metrics_equal_sklearn(positive_class):
    result = classification_metrics(LABELS, p_positive(positive_class), positive_class=positive_class)
    expected = EXPECTED[positive_class]
    for name in ("accuracy", "f1", "auroc", "auprc"):
        assert result[name] == pytest.approx(expected[name], abs=1e-12), name
    assert result["confusion_matrix"] == {"classes": expected["classes"], "matrix": expected["matrix"]}
    assert result["positive_class"] == positive_class
    assert result["positive_label"] == POSITIVE_CLASSES[positive_class]
    assert result["threshold"] == 0.5
    assert result["counts"] == {"healthy": 7, "lesion": 5}
    assert result["n_patches"] == 12
    assert result["n_positive"] == (5 if positive_class == "lesion" else 7)
    # and live sklearn calls agree with the frozen numbers
    y = (LABELS == POSITIVE_CLASSES[positive_class]).astype(int)
    s = p_positive(positive_class)
    assert result["auroc"] == pytest.approx(roc_auc_score(y, s))
    assert result["auprc"] == pytest.approx(average_precision_score(y, s))
    assert result["f1"] == pytest.approx(f1_score(y, s >= 0.5))


def test_values_by_hand():
    # AUROC = share of (lesion, healthy) pairs ranked correctly: lesions 0.35 (beats 4 healthy),
    # 0.8 (7), 0.9 (7), 0.55 (6, not 0.6), 0.7 (7) -> 31 of 5 * 7 = 35 pairs
    assert classification_metrics(LABELS, P_LESION)["auroc"] == pytest.approx(31 / 35)
    # accuracy: one false positive (healthy 0.6) and one false negative (lesion 0.35) of 12
    assert classification_metrics(LABELS, P_LESION)["accuracy"] == pytest.approx(10 / 12)
    # perfectly separable: every metric is 1
    labels = np.array([0, 0, 0, 1, 1])
    result = classification_metrics(labels, [0.1, 0.2, 0.3, 0.7, 0.95])
    assert result["auroc"] == 1.0 and result["auprc"] == 1.0
    assert result["accuracy"] == 1.0 and result["f1"] == 1.0
    assert result["confusion_matrix"]["matrix"] == [[3, 0], [0, 2]]
    # perfectly wrong ranking: AUROC 0
    assert classification_metrics(labels, [0.9, 0.8, 0.7, 0.2, 0.1])["auroc"] == 0.0


def test_positive_class_conventions():
    lesion = classification_metrics(LABELS, P_LESION, "lesion")
    healthy = classification_metrics(LABELS, 1.0 - P_LESION, "healthy")
    assert healthy["auroc"] == pytest.approx(lesion["auroc"])  # AUROC does not depend on the convention
    assert healthy["auprc"] != pytest.approx(lesion["auprc"])  # AUPRC does
    assert healthy["f1"] != pytest.approx(lesion["f1"])
    # a lower threshold predicts more positives
    low = classification_metrics(LABELS, P_LESION, threshold=0.3)
    assert low["threshold"] == 0.3
    assert low["confusion_matrix"]["matrix"] == [[3, 4], [0, 5]]


def test_one_class_and_bad_inputs():
    with pytest.raises(ValueError, match="one class only"):
        classification_metrics([1, 1, 1], [0.2, 0.5, 0.9])
    with pytest.raises(ValueError, match="one class only"):
        bootstrap_intervals([0, 0], [0.2, 0.5], ["a", "b"])
    with pytest.raises(ValueError, match="labels must be 0"):
        classification_metrics([0, 2], [0.2, 0.5])
    with pytest.raises(ValueError, match="probabilities"):
        classification_metrics([0, 1], [0.2, 1.5])
    with pytest.raises(ValueError, match="NaN"):
        classification_metrics([0, 1], [0.2, float("nan")])
    with pytest.raises(ValueError, match="2 labels but 3"):
        classification_metrics([0, 1], [0.2, 0.5, 0.3])
    with pytest.raises(ValueError, match="positive_class"):
        classification_metrics(LABELS, P_LESION, positive_class="mass")


def test_class_probabilities():
    log_p = torch.log(torch.tensor([[0.9, 0.1], [0.25, 0.75]]))
    np.testing.assert_allclose(class_probabilities(log_p), [[0.9, 0.1], [0.25, 0.75]], atol=1e-6)
    np.testing.assert_allclose(class_probabilities([log_p[0], log_p[1]]), [[0.9, 0.1], [0.25, 0.75]], atol=1e-6)
    # logits work too
    np.testing.assert_allclose(class_probabilities(np.array([[0.0, 0.0]])), [[0.5, 0.5]])


# ---------------------------------------------------------------------------------------------
# bootstrap
# ---------------------------------------------------------------------------------------------


def test_weighted_metrics_equal_sklearn_with_sample_weights():
    rng = np.random.default_rng(3)
    n = 80
    y = rng.integers(0, 2, n).astype(bool)
    scores = np.round(rng.random(n), 1)  # many ties
    weights = rng.integers(0, 4, (15, n)).astype(float)
    values, valid = weighted_metrics(y, scores, weights, 0.5)
    assert valid.all()
    for b in range(weights.shape[0]):
        w = weights[b]
        assert values["auroc"][b] == pytest.approx(roc_auc_score(y, scores, sample_weight=w))
        assert values["auprc"][b] == pytest.approx(average_precision_score(y, scores, sample_weight=w))
        assert values["f1"][b] == pytest.approx(f1_score(y, scores >= 0.5, sample_weight=w))
        assert values["accuracy"][b] == pytest.approx(np.sum(w * ((scores >= 0.5) == y)) / w.sum())
    # a one-class resample is invalid
    one_class = np.where(y, 1.0, 0.0)[None, :]
    values, valid = weighted_metrics(y, scores, one_class, 0.5)
    assert not valid[0] and math.isnan(values["auroc"][0])


def _toy_dataset(n_patients=120, seed=0):
    rng = np.random.default_rng(seed)
    patients = np.repeat(np.arange(n_patients), rng.integers(1, 6, n_patients))
    patient_label = rng.integers(0, 2, n_patients)
    patient_label[:2] = [0, 1]  # both classes
    labels = patient_label[patients]
    probabilities = np.clip(0.35 * labels + 0.65 * rng.random(labels.size), 0.0, 1.0)
    return labels, probabilities, [f"pat{p:03d}" for p in patients]


def test_bootstrap_deterministic_and_contains_point_estimate():
    labels, probabilities, patients = _toy_dataset()
    first = bootstrap_intervals(labels, probabilities, patients, n_bootstrap=300, seed=7)
    second = bootstrap_intervals(labels, probabilities, patients, n_bootstrap=300, seed=7)
    other = bootstrap_intervals(labels, probabilities, patients, n_bootstrap=300, seed=8)
    assert first == second
    assert first != other
    point = classification_metrics(labels, probabilities)
    for name in ("accuracy", "f1", "auroc", "auprc"):
        interval = first[name]
        assert set(interval) == {"low", "high", "n_valid"}
        assert interval["n_valid"] == 300
        assert interval["low"] < point[name] < interval["high"], name
        assert interval["high"] - interval["low"] < 0.3
    # the patch order does not change the intervals (clusters are keyed by patient id)
    order = np.random.default_rng(1).permutation(labels.size)
    shuffled = bootstrap_intervals(labels[order], probabilities[order], [patients[i] for i in order],
                                   n_bootstrap=300, seed=7)
    for name in ("auroc", "accuracy"):
        assert shuffled[name]["low"] == pytest.approx(first[name]["low"])
        assert shuffled[name]["high"] == pytest.approx(first[name]["high"])


def test_bootstrap_resamples_patients():
    # one patch per patient, each patient's patches share one label and one probability
    rng = np.random.default_rng(5)
    n = 40
    labels = rng.integers(0, 2, n)
    labels[:2] = [0, 1]
    probabilities = np.clip(0.3 * labels + 0.7 * rng.random(n), 0, 1)
    patients = [f"p{i}" for i in range(n)]
    base = bootstrap_intervals(labels, probabilities, patients, n_bootstrap=500, seed=0)

    # every patch 10 times, same patient: the interval must not narrow (here: identical)
    dup_labels = np.repeat(labels, 10)
    dup_probabilities = np.repeat(probabilities, 10)
    dup_patients = list(np.repeat(patients, 10))
    clustered = bootstrap_intervals(dup_labels, dup_probabilities, dup_patients, n_bootstrap=500, seed=0)
    # ... whereas treating every patch as its own patient would narrow it
    with pytest.warns(UserWarning, match="no patient id"):
        naive = bootstrap_intervals(dup_labels, dup_probabilities, None, n_bootstrap=500, seed=0)
    for name in ("accuracy", "f1", "auroc", "auprc"):
        base_width = base[name]["high"] - base[name]["low"]
        clustered_width = clustered[name]["high"] - clustered[name]["low"]
        naive_width = naive[name]["high"] - naive[name]["low"]
        assert clustered_width == pytest.approx(base_width), name
        assert naive_width < 0.6 * base_width, name


def test_bootstrap_skips_one_class_resamples():
    # 2 lesion patients of 12: some resamples hold no lesion at all
    labels = np.array([1, 1] + [0] * 10)
    probabilities = np.linspace(0.9, 0.1, 12)
    result = bootstrap_intervals(labels, probabilities, [str(i) for i in range(12)], n_bootstrap=400, seed=0)
    # P(no lesion patient drawn) = (10/12)^12 ~ 11%
    assert 300 < result["auroc"]["n_valid"] < 390
    assert result["auroc"]["low"] <= 1.0


def test_bootstrap_speed():
    labels, probabilities, patients = _toy_dataset(n_patients=170, seed=2)
    assert 400 < labels.size < 700
    start = time.perf_counter()
    bootstrap_intervals(labels, probabilities, patients, n_bootstrap=1000, seed=0)
    assert time.perf_counter() - start < 2.0


# ---------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("positive_class", ["lesion", "healthy"])
def test_write_evaluation_files(tmp_path, positive_class):
    labels, p_lesion, patients = _toy_dataset(n_patients=30, seed=4)
    probabilities = p_lesion if positive_class == "lesion" else 1.0 - p_lesion
    images = [f"patches/{i:04d}.png" for i in range(labels.size)]
    result = write_evaluation(tmp_path / "eval", labels, probabilities, patients, positive_class=positive_class,
                              image_paths=images, n_bootstrap=200, seed=3, extra={"model": "cnn", "seed": 1})
    folder = tmp_path / "eval"
    for name in ("metrics.json", "predictions.csv", "roc_curve.png", "pr_curve.png", "confusion_matrix.png"):
        assert (folder / name).is_file(), name

    saved = json.loads((folder / "metrics.json").read_text())
    assert saved == result
    assert saved["positive_class"] == positive_class
    for key in ("accuracy", "f1", "auroc", "auprc", "confidence_intervals", "confusion_matrix", "counts",
                "n_patients", "n_patches", "n_bootstrap", "seed", "ci_level", "threshold", "extra"):
        assert key in saved, key
    assert saved["n_patients"] == 30 and saved["n_missing_patient_ids"] == 0
    assert saved["n_bootstrap"] == 200 and saved["seed"] == 3
    assert saved["extra"] == {"model": "cnn", "seed": 1}
    assert saved["counts"] == {"healthy": int((labels == 0).sum()), "lesion": int((labels == 1).sum())}
    assert set(saved["confidence_intervals"]) == {"accuracy", "f1", "auroc", "auprc"}
    assert saved["auroc"] == pytest.approx(classification_metrics(labels, probabilities, positive_class)["auroc"])

    with open(folder / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == labels.size
    assert list(rows[0]) == ["image_path", "patient_id", "label", f"p_{positive_class}", "prediction"]
    pos = POSITIVE_CLASSES[positive_class]
    for i, row in enumerate(rows):
        assert row["image_path"] == images[i] and row["patient_id"] == patients[i]
        assert int(row["label"]) == labels[i]
        assert float(row[f"p_{positive_class}"]) == probabilities[i]
        assert int(row["prediction"]) == (pos if probabilities[i] >= 0.5 else 1 - pos)

    for name in ("roc_curve.png", "pr_curve.png", "confusion_matrix.png"):
        with Image.open(folder / name) as image:
            image.load()
            assert image.format == "PNG" and min(image.size) > 100


def test_write_evaluation_without_patient_ids(tmp_path):
    with pytest.warns(UserWarning, match="no patient id"):
        result = write_evaluation(tmp_path, LABELS, P_LESION, None, n_bootstrap=50)
    assert result["n_patients"] == 0 and result["n_clusters"] == 12 and result["n_missing_patient_ids"] == 12
    with open(tmp_path / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert "image_path" not in rows[0] and rows[0]["patient_id"] == ""


def test_small_test_sets_constant_predictors_and_phantom_data_are_said(tmp_path, caplog):
    """3 patients and 2 lesions: warned in the log and metrics.json (and on the figures, with the
    phantom note); an all-healthy predictor is flagged."""
    labels = np.array([0, 0, 1, 0, 1, 0])
    patients = ["a", "a", "b", "b", "c", "c"]
    with caplog.at_level("WARNING"):
        result = write_evaluation(tmp_path / "small", labels, np.full(6, 0.2), patients, n_bootstrap=20,
                                  extra={"phantom": True})
    assert result["constant_prediction"] is True
    assert any("only 3 patients" in w for w in result["warnings"]) and any("only 2 lesion patches" in w for w in result["warnings"])
    assert "only 3 patients" in caplog.text
    write_evaluation(tmp_path / "plain", labels, np.full(6, 0.2), patients, n_bootstrap=20)
    with Image.open(tmp_path / "small" / "roc_curve.png") as marked, Image.open(tmp_path / "plain" / "roc_curve.png") as unmarked:
        red = lambda image: int(((np.asarray(image.convert("RGB"))[..., 0] > 180) & (np.asarray(image.convert("RGB"))[..., 1] < 80)).sum())  # noqa: E731
        assert red(marked) > red(unmarked) + 50  # the red notes under the axes
    labels, p_lesion, big = _toy_dataset(n_patients=30, seed=4)
    result = write_evaluation(tmp_path / "big", labels, p_lesion, big, n_bootstrap=20)
    assert result["warnings"] == [] and result["constant_prediction"] is False


def test_write_predictions_csv(tmp_path):
    log_p = torch.log(torch.tensor([[0.9, 0.1], [0.3, 0.7], [0.5, 0.5]]))
    path = write_predictions_csv(tmp_path / "out" / "predictions.csv", ["a.png", "b.png", "c.png"], log_p)
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["image_path", "p_healthy", "p_lesion", "prediction"]
    assert [r["image_path"] for r in rows] == ["a.png", "b.png", "c.png"]
    assert [r["prediction"] for r in rows] == ["healthy", "lesion", "lesion"]
    assert float(rows[1]["p_lesion"]) == pytest.approx(0.7)
    assert float(rows[1]["p_healthy"]) + float(rows[1]["p_lesion"]) == pytest.approx(1.0)
    path = write_predictions_csv(tmp_path / "p2.csv", ["a", "b", "c"], list(log_p), patient_ids=["x", "y", None],
                                 labels=[0, 1, 1])
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["image_path", "patient_id", "label", "p_healthy", "p_lesion", "prediction"]
    assert rows[2]["patient_id"] == "" and rows[2]["label"] == "1"


# ---------------------------------------------------------------------------------------------
# MONAI / Ignite
# ---------------------------------------------------------------------------------------------


class _FixedLogProbabilities(torch.nn.Module):
    """Toy network: the image's mean value is P(lesion); returns (B, 2) log-probabilities."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        p = x.flatten(1).mean(1).clamp(1e-6, 1 - 1e-6) + 0 * self.dummy
        return torch.log(torch.stack([1 - p, p], dim=1))


def _evaluator(data, batch_size=5, with_ids=True, **kwargs):
    from monai.data import DataLoader
    from monai.engines import SupervisedEvaluator

    records = []
    for i, item in enumerate(data):
        record = {"image": torch.full((1, 4, 4), float(item[1]))}
        if item[0] is not None:
            record["label"] = int(item[0])
        if with_ids:
            record["patient_id"] = item[2]
            record["image_path"] = f"img/{i:03d}.png"
        records.append(record)
    return SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(records, batch_size=batch_size, shuffle=False, num_workers=0),
        network=_FixedLogProbabilities(),
        **{"decollate": True, **kwargs},
    )


def _toy_records(n_patients=25, seed=0):
    labels, probabilities, patients = _toy_dataset(n_patients=n_patients, seed=seed)
    probabilities = np.round(probabilities, 4)  # exact in float32 up to rounding
    return list(zip(labels.tolist(), probabilities.tolist(), patients)), labels, probabilities, patients


@pytest.mark.parametrize("positive_class", ["lesion", "healthy"])
def test_classification_report_on_supervised_evaluator(tmp_path, positive_class, caplog):
    data, labels, probabilities, patients = _toy_records()
    report = ClassificationReport(tmp_path / "report", positive_class=positive_class, n_bootstrap=100, seed=1)
    evaluator = _evaluator(data, val_handlers=[report])
    with caplog.at_level("INFO", logger="mammoshare.classifier.handlers"):
        evaluator.run()
        evaluator.run()  # reset at STARTED: the second run does not accumulate
    saved = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert saved["n_patches"] == len(data)
    assert saved["n_patients"] == len(set(patients))
    assert saved["positive_class"] == positive_class
    p_pos = probabilities if positive_class == "lesion" else 1.0 - probabilities
    expected = classification_metrics(labels, p_pos, positive_class)
    for name in ("auroc", "auprc"):
        assert saved[name] == pytest.approx(expected[name], abs=1e-6)
    assert saved == report.result
    with open(tmp_path / "report" / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["patient_id"] for r in rows] == patients
    assert [r["image_path"] for r in rows] == [f"img/{i:03d}.png" for i in range(len(data))]
    assert [int(r["label"]) for r in rows] == labels.tolist()
    assert f"positive class: {positive_class}" in caplog.text and "auprc" in caplog.text


def test_classification_report_without_patient_ids(tmp_path):
    data, *_ = _toy_records(n_patients=10)
    report = ClassificationReport(tmp_path, n_bootstrap=50)
    evaluator = _evaluator(data, with_ids=False, val_handlers=[report])
    with pytest.warns(UserWarning, match="no patient id"):
        evaluator.run()
    assert report.result["n_clusters"] == len(data) and report.result["n_missing_patient_ids"] == len(data)


def test_predictions_writer_without_labels(tmp_path):
    data = [(None, p, f"p{i}") for i, p in enumerate([0.2, 0.8, 0.6])]
    writer = PredictionsWriter(tmp_path / "predictions.csv")
    _evaluator(data, batch_size=2, val_handlers=[writer]).run()
    with open(tmp_path / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["prediction"] for r in rows] == ["healthy", "lesion", "lesion"]
    assert [float(r["p_lesion"]) for r in rows] == pytest.approx([0.2, 0.8, 0.6], abs=1e-6)
    assert "label" not in rows[0] and rows[0]["patient_id"] == "p0"


@pytest.mark.parametrize("positive_class,decollate", [("lesion", True), ("healthy", True), ("lesion", False)])
def test_ignite_metrics_on_supervised_evaluator(positive_class, decollate):
    data, labels, probabilities, _ = _toy_records(n_patients=30, seed=6)
    evaluator = _evaluator(
        data,
        batch_size=4,
        decollate=decollate,
        key_val_metric={"val_auprc": PositiveClassAUPRC(positive_class)},
        additional_metrics={"val_auroc": PositiveClassAUROC(positive_class)},
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. no EpochMetricWarning from a one-class first batch
        evaluator.run()
    pos = POSITIVE_CLASSES[positive_class]
    y = (labels == pos).astype(int)
    s = probabilities if positive_class == "lesion" else 1.0 - probabilities
    assert evaluator.state.metrics["val_auprc"] == pytest.approx(average_precision_score(y, s), abs=1e-6)
    assert evaluator.state.metrics["val_auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-6)
    assert evaluator.state.best_metric == evaluator.state.metrics["val_auprc"]


def test_ignite_metric_output_formats_and_one_class():
    log_p = torch.log(torch.tensor([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]]))
    transform = positive_class_output_transform("lesion")
    decollated = [{"pred": log_p[i], "label": torch.tensor(v)} for i, v in enumerate([0, 1, 1])]
    batched = {"pred": log_p, "label": torch.tensor([[0], [1], [1]])}
    for output in (decollated, batched):
        p, y = transform(output)
        assert p.shape == (3,) and y.tolist() == [0, 1, 1]
        np.testing.assert_allclose(p.numpy(), [0.2, 0.7, 0.4], atol=1e-6)
    p, y = positive_class_output_transform("healthy")(decollated)
    assert y.tolist() == [1, 0, 0]
    np.testing.assert_allclose(p.numpy(), [0.8, 0.3, 0.6], atol=1e-6)

    metric = PositiveClassAUROC()
    metric.reset()
    metric.update(transform([{"pred": log_p[0], "label": torch.tensor([1])}]))
    with pytest.raises(ValueError, match="one class only"):
        metric.compute()


def test_ignite_metric_without_patches():
    from ignite.exceptions import NotComputableError

    for metric in (PositiveClassAUPRC(), PositiveClassAUROC("healthy")):
        metric.reset()
        with pytest.raises(NotComputableError, match="at least one patch"):
            metric.compute()

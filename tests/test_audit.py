"""Privacy and quality audit (mammoshare.audit) on phantom data: the search, the statistics, the
four families on generators with known behaviour, the gate API and the command line."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mammoshare.audit import (
    AuditError,
    AuditGateError,
    audit_summary,
    gate,
    load_audit,
    model_card_section,
    privacy_preservation_text,
    run_audit,
    run_or_load_audit,
)
from mammoshare.audit import metrics as M
from mammoshare.audit.features import EncoderSettings, train_encoder
from mammoshare.audit.neighbours import best_flip, flip_basis, nearest_flip_ncc, nearest_l2
from mammoshare.datalist import load_datalist, make_record, write_datalist

REPO = Path(__file__).resolve().parents[1]
FAST = {"msssim_pairs": 80, "progress": False}
ENCODER = {"steps": 15, "batch_size": 32}
FLIPS = (lambda y: y, lambda y: y[:, ::-1], lambda y: y[::-1], lambda y: y[::-1, ::-1])


# ------------------------------------------------------------------------------------------------
# data


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """The phantom BCDR (all lesion types) datalist and its canonical training patches."""
    from mammoshare.data import canonical_patch_transform
    from mammoshare.phantom import write_phantoms
    from mammoshare.readers import build_datalist
    from transforms import DecodedImageCache

    root = tmp_path_factory.mktemp("audit_phantom")
    write_phantoms(root, seed=2021, datasets=["bcdr"])
    datalist, _ = build_datalist("bcdr", root / "bcdr", task="all")
    path = write_datalist(datalist, root / "bcdr_all.json")
    data = load_datalist(path)
    load = canonical_patch_transform(cache=DecodedImageCache())
    train = np.stack([np.asarray(load(dict(r))["image"])[0] for r in data["training"]])
    return {"datalist": path, "data": data, "train_patches": train, "cache": root / "cache", "root": root}


def write_synthetic(folder: Path, images, name="gen", weights=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for i, image in enumerate(images):
        path = folder / f"s{i:05d}.png"
        Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8)).save(path)
        records.append(make_record(path, f"synthetic:{name}", 1, None, name))
    datalist = {"dataset": "synthetic", "task": "all", "phantom": True, "training": records, "validation": [], "test": []}
    if weights:
        datalist["generator"] = {"name": name, "version": "0", "weights": weights}
    return write_datalist(datalist, folder / "synthetic_datalist.json")


def copycat(train: np.ndarray, n: int, seed: int = 0) -> list:
    """Training patches, randomly flipped, with small noise."""
    rng = np.random.default_rng(seed)
    out = []
    for i in rng.integers(0, len(train), n):
        x = train[i]
        if rng.random() < 0.5:
            x = x[:, ::-1]
        if rng.random() < 0.5:
            x = x[::-1]
        out.append(x + rng.normal(0, 0.01, x.shape))
    return out


def audit(real, synthetic, out, labels="all", features="pixel", **kwargs):
    return run_audit(synthetic=synthetic, train=real["datalist"], holdout=real["datalist"], out=out, labels=labels,
                     features=features, cache_dir=real["cache"], encoder_settings=ENCODER, **{**FAST, **kwargs})


@pytest.fixture(scope="module")
def copycat_audit(real, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("copycat")
    syn = write_synthetic(tmp / "syn", copycat(real["train_patches"], 300))
    return audit(real, syn, tmp / "audit", features="encoder"), tmp / "audit"


# ------------------------------------------------------------------------------------------------
# the search and the statistics


def _ncc(x, y):
    x, y = x - x.mean(), y - y.mean()
    return float((x * y).sum() / np.linalg.norm(x) / np.linalg.norm(y))


def test_flip_invariant_ncc_search_equals_brute_force():
    rng = np.random.default_rng(0)
    a, b = rng.random((7, 16, 16)).astype(np.float32), rng.random((9, 16, 16)).astype(np.float32)
    b[3], b[5], b[6] = a[2][:, ::-1], a[4][::-1], a[1][::-1, ::-1]  # mirrored copies
    brute = np.array([[max(_ncc(x, f(y)) for f in FLIPS) for y in b] for x in a])
    groups = np.array(["train"] * 5 + ["holdout"] * 4)
    result = nearest_flip_ncc(flip_basis(a), flip_basis(b), groups, row_chunk=3, col_chunk=4)  # chunks cut the sets
    np.testing.assert_allclose(result.distance["train"], 1 - brute[:, :5].max(1), atol=1e-5)
    np.testing.assert_allclose(result.distance["holdout"], 1 - brute[:, 5:].max(1), atol=1e-5)
    assert (result.index["train"] == brute[:, :5].argmax(1)).all() and (result.index["holdout"] == brute[:, 5:].argmax(1)).all()
    np.testing.assert_allclose(result.reverse_distance, 1 - brute.max(0), atol=1e-5)
    assert result.distance["train"][2] < 1e-5 and result.distance["holdout"][1] < 1e-5  # flipped copies found
    flips, ncc = best_flip(flip_basis(a), np.array([2, 4, 1]), flip_basis(b), np.array([3, 5, 6]))
    assert list(flips) == [1, 2, 3] and np.allclose(ncc, 1, atol=1e-5)  # horizontal, vertical, both
    same = nearest_flip_ncc(flip_basis(a), flip_basis(a), ["x"] * 7, exclude_self=True, row_chunk=2, col_chunk=3)
    self_brute = np.array([[max(_ncc(x, f(y)) for f in FLIPS) for y in a] for x in a])
    np.fill_diagonal(self_brute, -9)
    np.testing.assert_allclose(same.distance["x"], 1 - self_brute.max(1), atol=1e-5)
    fa, fb = rng.random((7, 5)), rng.random((9, 5))
    l2 = nearest_l2(fa, fb, groups, row_chunk=2, col_chunk=3)
    d = np.linalg.norm(fa[:, None] - fb[None], axis=2)
    np.testing.assert_allclose(l2.distance["holdout"], d[:, 5:].min(1), atol=1e-5)
    assert (l2.reverse_index == d.argmin(0)).all()


def test_inception_features_from_a_local_weights_file(tmp_path):
    from torchvision.models import inception_v3

    from mammoshare.audit.features import inception_features

    torch.manual_seed(0)
    torch.save(inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), tmp_path / "inception.pth")
    features = inception_features(tmp_path / "inception.pth")(np.random.default_rng(0).random((2, 128, 128)))
    assert features.shape == (2, 2048) and np.isfinite(features).all()
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not torchvision Inception-v3 weights"):
        inception_features(tmp_path / "other.pth")


def test_statistics_against_known_answers():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 16)), rng.normal(size=(200, 16)) @ rng.normal(size=(16, 16)) * 0.3 + 1
    assert M.FrechetToReference(a)(b) == pytest.approx(M.frechet_distance(b, a), rel=1e-6)  # = MONAI's FIDMetric
    same = M.prdc(a, a, k=5)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    far = M.prdc(a, a + 100, k=5)
    assert far["precision"] == far["recall"] == far["coverage"] == far["density"] == 0.0
    separated = M.attack_figures(rng.normal(5, 1, 200), rng.normal(0, 1, 200), rng, resamples=50, permutations=50)
    assert separated["auc"] > 0.99 and separated["tpr_at_fpr"] > 0.9 and separated["auc_null_p99"] < 0.65
    alike = M.attack_figures(rng.normal(0, 1, 300), rng.normal(0, 1, 300), rng, resamples=50, permutations=50)
    assert abs(alike["auc"] - 0.5) < 0.07 and alike["auc_interval"][0] < 0.5 < alike["auc_interval"][1] + 0.02
    assert M.tpr_at_fpr(np.ones(10), np.ones(100)) == 0.0  # ties are never counted as detections
    assert M.authenticity(np.array([0.1, 0.5]), np.array([0, 1]), np.array([0.2, 0.4])).tolist() == [False, True]


def test_encoder_training_is_reproducible_with_a_seed(real):
    patches = real["train_patches"][:40]
    a = train_encoder(patches, seed=3, settings=EncoderSettings(steps=3, batch_size=16), progress=False).state_dict()
    b = train_encoder(patches, seed=3, settings=EncoderSettings(steps=3, batch_size=16), progress=False).state_dict()
    c = train_encoder(patches, seed=4, settings=EncoderSettings(steps=3, batch_size=16), progress=False).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


# ------------------------------------------------------------------------------------------------
# generators with known behaviour


def test_copycat_fails_memorisation_and_membership(copycat_audit):
    result, out = copycat_audit
    assert result["verdicts"]["memorisation"] == "fail" and result["verdicts"]["membership"] == "fail"
    mem = result["families"]["memorisation"]["figures"]
    assert mem["copy_rate_pixel"]["value"] > 0.5 and mem["median_distance_ratio_pixel"]["value"] < 0.5
    assert mem["authenticity_pixel"]["value"] < mem["authenticity_pixel"]["baseline"]
    mia = result["families"]["membership"]["figures"]
    assert mia["distance_attack_pixel_auc"]["value"] > 0.8 and mia["distance_attack_pixel_auc"]["interval"][0] > 0.6
    assert result["features"]["kind"] == "encoder" and result["features"]["justification"]
    for name in ("audit.json", "audit.md", "samples.png", "nearest_neighbours.png", "msssim_hist.png", "distance_ratio_hist.png", "worst_pairs.json"):
        assert (out / name).is_file(), name
    with Image.open(out / "nearest_neighbours.png") as sheet:
        assert sheet.width > 300
    pairs = json.loads((out / "worst_pairs.json").read_text())
    assert pairs[0]["ncc_train"] > 0.99 and pairs[0]["ncc_train"] > pairs[0]["ncc_holdout"]
    md = (out / "audit.md").read_text()
    assert "copy_rate_pixel" in md and "**fail**" in md and "Why:" in md


def test_noise_passes_memorisation_and_fails_fidelity(real, tmp_path):
    syn = write_synthetic(tmp_path / "syn", np.random.default_rng(1).random((200, 128, 128)))
    result = audit(real, syn, tmp_path / "audit", features="encoder")
    assert result["verdicts"]["memorisation"] == "pass" and result["verdicts"]["membership"] != "fail"
    assert result["verdicts"]["fidelity"] == "fail"
    fid = result["families"]["fidelity"]["figures"]
    assert fid["frechet_distance"]["value"] > 3 * fid["frechet_distance"]["baseline"]
    assert fid["coverage"]["value"] < fid["coverage"]["threshold"]["fail"]
    assert result["features"]["encoder"]["cached"]  # the copycat audit trained it on the same real data


def test_collapsed_generator_fails_diversity(real, tmp_path):
    yy, xx = np.mgrid[0:128, 0:128]
    blob = 0.3 + 0.4 * np.exp(-((xx - 60) ** 2 + (yy - 70) ** 2) / 400.0)  # one image for every latent
    result = audit(real, write_synthetic(tmp_path / "syn", [blob] * 120), tmp_path / "audit")
    assert result["verdicts"]["diversity"] == "fail"
    div = result["families"]["diversity"]["figures"]
    assert div["msssim_synthetic_pairs"]["value"] > 0.99 > div["msssim_synthetic_pairs"]["baseline"]
    assert div["cluster_ratio"]["synthetic_clusters"] == 1 < div["cluster_ratio"]["real_clusters"]


def test_unseen_real_patches_pass_the_privacy_families(real, tmp_path):
    """Real patches of patients in neither set are what a perfect generator makes: no privacy failure."""
    data = real["data"]
    from mammoshare.data import canonical_patch_transform
    from transforms import DecodedImageCache

    load = canonical_patch_transform(cache=DecodedImageCache())
    unseen = [np.asarray(load(dict(r))["image"])[0] for r in data["test"]]
    syn = write_synthetic(tmp_path / "syn", unseen)
    (tmp_path / "syn" / "s00003.png").unlink()  # a broken record: an error naming it, or skipped and counted
    kwargs = dict(train=real["datalist"], holdout=real["datalist"], holdout_subsets=["validation"], labels="all", features="pixel", **FAST)
    with pytest.raises(AuditError, match="s00003.png.*--skip-bad"):
        run_audit(synthetic=syn, out=tmp_path / "first", **kwargs)
    result = run_audit(synthetic=syn, out=tmp_path / "audit", skip_bad=True, **kwargs)
    assert result["data"]["synthetic"]["skipped"] == 1 and result["data"]["synthetic"]["patches"] == len(unseen) - 1
    assert result["verdicts"]["memorisation"] != "fail" and result["verdicts"]["membership"] != "fail"


def test_figures_are_reproducible_with_a_seed_and_thresholds_come_from_the_data(real, tmp_path):
    syn = write_synthetic(tmp_path / "syn", copycat(real["train_patches"], 60, seed=5) + list(np.random.default_rng(2).random((60, 128, 128))))
    a = audit(real, syn, tmp_path / "a", seed=1)
    b = audit(real, syn, tmp_path / "b", seed=1)
    c = audit(real, syn, tmp_path / "c", seed=2)
    assert a["families"] == b["families"] and a["calibration"] == b["calibration"]
    assert a["families"] != c["families"]  # the seed drives the bootstraps and pairs: the comparison can fail
    # the copy distance is the 1st percentile of the real holdout -> train distances, computed here by brute force
    from mammoshare.data import canonical_patch_transform
    from transforms import DecodedImageCache

    load = canonical_patch_transform(cache=DecodedImageCache())
    holdout = [np.asarray(load(dict(r))["image"])[0] for r in real["data"]["validation"] + real["data"]["test"]]
    def unit(x):
        x = x.reshape(len(x), -1) - x.reshape(len(x), -1).mean(1, keepdims=True)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    train = real["train_patches"]
    ncc = np.max([unit(np.asarray(holdout)) @ unit(np.stack([f(t) for t in train])).T for f in FLIPS], axis=0)
    nearest = 1 - ncc.max(1)
    assert a["calibration"]["pixel"]["copy_distance_train"] == pytest.approx(np.quantile(nearest, 0.01), abs=1e-5)
    # other real data -> other thresholds, nothing fixed per dataset
    from mammoshare.networks import PatchCNN

    torch.manual_seed(0)
    torch.save(PatchCNN().state_dict(), tmp_path / "classifier.pt")  # a classifier checkpoint as feature space
    d = run_audit(synthetic=syn, train=real["datalist"], holdout=real["datalist"], out=tmp_path / "d", labels="healthy",
                  features=str(tmp_path / "classifier.pt"), seed=1, **FAST)
    assert d["features"]["kind"] == "classifier" and d["features"]["dim"] == 128
    assert d["calibration"]["pixel"]["copy_distance_train"] != a["calibration"]["pixel"]["copy_distance_train"]
    assert d["families"]["diversity"]["figures"]["msssim_synthetic_pairs"]["threshold"] != \
        a["families"]["diversity"]["figures"]["msssim_synthetic_pairs"]["threshold"]


def test_a_briefly_trained_generator_passes_memorisation_per_snapshot_through_the_cli(real, tmp_path):
    from monai.bundle import run as bundle_run

    from mammoshare.cli import main

    bundle = tmp_path / "dcgan_tiny"
    shutil.copytree(REPO / "bundles" / "dcgan_bcdr", bundle, ignore=shutil.ignore_patterns("models"))
    config = json.loads((bundle / "configs" / "inference.json").read_text())
    config["ngf"] = 4
    (bundle / "configs" / "inference.json").write_text(json.dumps(config))
    bundle_run(config_file=str(bundle / "configs" / "train.json"), logging_file=False, ngf=4, ndf=4, batch_size=4,
               device="cpu", num_workers=0, datalist=str(real["datalist"]), output_dir=str(bundle / "models"),
               task="all", subsets=["training"], max_epochs=2, snapshot_start=1, snapshot_every=1, preview_every=100)
    out = tmp_path / "audit"
    code = main(["audit", str(bundle), "--train", str(real["datalist"]), "--holdout", str(real["datalist"]), "--out", str(out),
                 "--num_samples", "120", "--features", "pixel", "--seed", "0", "--snapshot_dir", str(bundle / "models" / "snapshots")])
    assert code == 0
    result = load_audit(out)
    # no copies: a 2-epoch GAN's near-mean blobs are as close to unseen patients as to training ones
    assert result["verdicts"]["memorisation"] == "pass"
    figures = result["families"]["memorisation"]["figures"]
    assert figures["copy_rate_pixel"]["verdict"] == figures["low_distance_ratio_rate_pixel"]["verdict"] == "pass"
    assert result["data"]["synthetic"]["sampled_by_audit"] and result["data"]["train"]["labels"] == "lesion"
    assert [s["snapshot"] for s in result["families"]["diversity"]["per_snapshot"]] == ["epoch_0001.pt", "epoch_0002.pt"]
    assert (out / "snapshots.png").is_file() and len(list((out / "synthetic").glob("*.png"))) == 120
    weights = {w["sha256"] for w in result["generator"]["weights"]}
    assert len(weights) == 2
    gate(result, weights_sha256=sorted(weights)[0])  # an audit of these weights passes the gate


# ------------------------------------------------------------------------------------------------
# the API the exchange gate, the medigan bridge and the study call


def test_gate_refuses_a_failed_privacy_audit_unless_the_risk_is_accepted(copycat_audit):
    _, out = copycat_audit
    audit_dict = run_or_load_audit(out)  # a finished audit is loaded, not rerun
    assert audit_dict["_sha256"] and audit_dict["verdicts"]["memorisation"] == "fail"
    with pytest.raises(AuditGateError) as info:
        gate(out)
    assert set(info.value.failed) == {"memorisation", "membership"}
    assert "--accept-risk" in str(info.value) and "copy_rate_pixel" in str(info.value)
    with pytest.raises(AuditGateError):
        gate(audit_dict, accept_risk="   ")  # a blank reason is no reason
    record = gate(audit_dict, accept_risk="research consortium under a data-sharing agreement")
    assert record["decision"] == "accepted-risk" and record["accepted_risk"]["families"] == ["memorisation", "membership"]
    assert record["audit_sha256"] == audit_dict["_sha256"] and record["summary"] == audit_summary(audit_dict)
    json.dumps(record)  # storable as it is
    with pytest.raises(AuditGateError, match="other generator weights"):
        gate(audit_dict, accept_risk="x", weights_sha256="0" * 64)


def test_summary_text_and_model_card_name_no_patient_or_path(copycat_audit, real):
    result, out = copycat_audit
    summary = audit_summary(out)
    assert summary["verdicts"] == result["verdicts"] and summary["samples"] == 300
    assert summary["figures"]["memorisation"]["copy_rate_pixel"]["threshold"]["fail"] is not None
    text = json.dumps(summary) + privacy_preservation_text(out) + model_card_section(out)
    patients = {r["patient_id"] for s in ("training", "validation", "test") for r in real["data"][s]}
    assert not any(p in text for p in patients if len(p) > 2)
    assert str(real["root"]) not in text and str(out) not in text
    prose = privacy_preservation_text(out, accepted_risk="reason given")
    assert "Memorisation: fail" in prose and "not a formal guarantee" in prose and "reason given" in prose
    assert model_card_section(out).startswith("## Privacy and quality audit")


def test_errors_name_the_file_and_the_fix(real, tmp_path):
    from mammoshare.cli import main

    with pytest.raises(AuditError, match="no audit here"):
        load_audit(tmp_path / "nothing")
    with pytest.raises(AuditError, match="arguments of a new audit"):
        run_or_load_audit()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "audit.json").write_text('{"schema": "other"}')
    with pytest.raises(AuditError, match="not a mammoshare audit"):
        load_audit(tmp_path / "bad")
    syn = write_synthetic(tmp_path / "syn", np.random.default_rng(0).random((10, 128, 128)))
    with pytest.raises(AuditError, match="never saw"):  # the holdout holds training patients
        run_audit(synthetic=syn, train=real["datalist"], holdout=real["datalist"], holdout_subsets=["training", "test"],
                  out=tmp_path / "o1", labels="all", features="pixel", **FAST)
    with pytest.raises(AuditError, match="not empty"):
        run_audit(synthetic=syn, train=real["datalist"], holdout=real["datalist"], out=tmp_path / "bad", features="pixel", **FAST)
    args = ["audit", "--synthetic", str(syn), "--train", str(real["datalist"]), "--holdout", str(real["datalist"])]
    assert main([*args, "--out", str(tmp_path / "o2"), str(tmp_path)]) == 2  # a bundle and --synthetic
    assert main(["audit", str(tmp_path / "no_bundle"), "--train", str(real["datalist"]), "--holdout", str(real["datalist"]),
                 "--out", str(tmp_path / "o3")]) == 2

"""``run_audit``: sample (or read) the synthetic set, load train and holdout, and compute the four
families of figures with thresholds calibrated on the real data; writes audit.json, audit.md and
the PNG sheets."""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from .. import __version__
from ..hashing import sha256_file
from . import metrics as M
from .data import (
    AuditInputError,
    PatchSet,
    check_disjoint,
    load_real_set,
    load_synthetic_set,
    sample_bundle,
    snapshot_groups,
)
from .neighbours import best_flip, flip_basis, nearest_flip_ncc, nearest_l2
from .verdicts import FAMILIES, AuditPolicy, family, figure, worst

__all__ = ["run_audit", "AUDIT_FILE", "SCHEMA"]

logger = logging.getLogger(__name__)

AUDIT_FILE = "audit.json"
SCHEMA = "mammoshare-audit/1"
COPY_QUANTILE = 0.01  # "closer than the 1st percentile of holdout-to-train distances"
MSSSIM_PAIRS = 500
CLUSTER_POINTS = 1000
WORST_PAIRS = 16
#: what the audit keeps of the synthetic datalist's ``generator`` entry (a diffusion model's also say how it was sampled)
GENERATOR_FIELDS = ("name", "version", "family", "sampler", "num_inference_steps", "training_scheduler", "lesion_type", "weights")


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        hint = " (it holds a finished audit: use it as it is, e.g. `pack --audit DIR`)" if (out / AUDIT_FILE).is_file() else ""
        raise AuditInputError(f"{out}: the audit folder exists and is not empty{hint}; give a new or empty --out folder")


class _Timer:
    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._start = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self._start, 2)
        self._start = now


def _features(kind: str, real: np.ndarray, synthetic: np.ndarray, seed: int, cache_dir, encoder_settings, progress):
    from . import features as F

    if kind == "encoder":
        encoder, info = F.obtain_encoder(real, seed, encoder_settings, cache_dir, progress)
        desc = {
            "kind": "encoder",
            "description": "self-supervised contrastive (SimCLR-style) CNN encoder, 128-d, trained by the audit on "
            "the run's real train and holdout patches, features averaged over the four flips",
            "justification": F.__doc__.split("\n\n")[1].replace("\n", " ").strip(),
            "encoder": info,
        }
        return F.encoder_features(encoder, real), F.encoder_features(encoder, synthetic), desc, encoder
    if kind == "pixel":
        pca = F.pixel_features(real, seed)
        desc = {
            "kind": "pixel",
            "description": f"pixels area-downsampled to 32x32, first {pca.pca.n_components_} principal components of the real patches",
            "justification": "no learnt weights at all: the most transparent feature space, but blind to texture "
            "realism (noise close to the mean patch may look plausible), so fidelity is weaker than with the encoder",
        }
        return pca(real), pca(synthetic), desc, None
    path = Path(kind)
    extract, name = F.classifier_features(path)
    desc = {
        "kind": "classifier",
        "file": path.name,
        "sha256": sha256_file(path),
        "description": f"{name} of the classifier checkpoint {path.name}, averaged over the four flips",
        "justification": "a classifier trained on the same centre's data knows what distinguishes its patches; its "
        "training patients may be mapped more tightly than holdout ones, which can inflate membership figures",
    }
    return extract(real), extract(synthetic), desc, None


def _memorisation(space: str, s_vs_r, r_vs_r, n_s: int, policy: AuditPolicy, rng) -> tuple[dict, dict, dict]:
    """Copy rates, distance ratios and authenticity in one space; returns figures, calibration and
    the per-sample arrays the sheets need."""
    dT_s, dH_s = s_vs_r.distance["train"], s_vs_r.distance["holdout"]
    dT_h = r_vs_r["holdout"].distance["train"]  # holdout -> nearest train
    dH_t = r_vs_r["train"].distance["holdout"]  # train -> nearest holdout
    dT_t = r_vs_r["train"].distance["train"]  # train -> nearest other train
    dH_h = r_vs_r["holdout"].distance["holdout"]  # holdout -> nearest other holdout
    tau_t = float(np.quantile(dT_h, COPY_QUANTILE))
    tau_h = float(np.quantile(dH_t, COPY_QUANTILE))
    copies_t = dT_s < tau_t
    copies_h = dH_s < tau_h  # the same test against holdout: what generic closeness gives
    rate_t, rate_h = float(copies_t.mean()), float(copies_h.mean())
    reference = max(COPY_QUANTILE, rate_h)
    warn = M.binomial_upper(n_s, reference, policy.alpha)
    fail = max(warn, min(1.0, policy.copy_fail_factor * reference))
    figures = {}
    figures[f"copy_rate_{space}"] = figure(
        rate_t, worse="higher", warn=warn, fail=fail, interval=M.wilson_interval(int(copies_t.sum()), n_s),
        baseline=COPY_QUANTILE, baseline_holdout=rate_h,
        rule=f"share of samples closer to a training patch than the 1st percentile of holdout-to-train distances "
        f"({tau_t:.4g}); real unseen patches give {COPY_QUANTILE:.0%} by construction, and the same test against the "
        f"holdout gives {rate_h:.2%} here; warn above the one-sided binomial critical rate at alpha {policy.alpha} of "
        f"the larger of the two, fail above {policy.copy_fail_factor:g} times it",
    )
    ratio_s = dT_s / np.maximum(dH_s, 1e-12)
    ratio_h = dT_h / np.maximum(dH_h, 1e-12)
    rho = float(np.quantile(ratio_h, COPY_QUANTILE))
    low = ratio_s < rho
    warn_r = M.binomial_upper(n_s, COPY_QUANTILE, policy.alpha)
    figures[f"low_distance_ratio_rate_{space}"] = figure(
        float(low.mean()), worse="higher", warn=warn_r, fail=max(warn_r, policy.copy_fail_factor * COPY_QUANTILE),
        interval=M.wilson_interval(int(low.sum()), n_s), baseline=COPY_QUANTILE,
        rule=f"share of samples whose nearest-train / nearest-holdout distance ratio is below the 1st percentile of "
        f"the same ratio for real holdout patches ({rho:.4g}, holdout leave-one-out); warn above the binomial critical "
        f"rate at alpha {policy.alpha}, fail above {policy.copy_fail_factor:g} times {COPY_QUANTILE:.0%}",
    )
    med_s, med_h = float(np.median(ratio_s)), float(np.median(ratio_h))
    figures[f"median_distance_ratio_{space}"] = figure(
        med_s, worse="lower", decides=False, baseline=med_h,
        interval=_bootstrap_stat(ratio_s, np.median, rng), baseline_interval=_bootstrap_stat(ratio_h, np.median, rng),
        rule="median nearest-train / nearest-holdout distance ratio (distance-to-closest-record test); real holdout "
        "patches give the baseline; below 1 = closer to training patients",
    )
    auth_s = M.authenticity(dT_s, s_vs_r.index["train"], dT_t)
    auth_h = M.authenticity(dT_h, r_vs_r["holdout"].index["train"], dT_t)
    # The same test against the holdout patients, whom the generator never saw: a blurry, near-mean
    # generator is "inauthentic" against them too; only what is worse against training is memorisation.
    auth_s_vs_holdout = M.authenticity(dH_s, s_vs_r.index["holdout"], dH_h)
    a_s, a_h, a_sh = float(auth_s.mean()), float(auth_h.mean()), float(auth_s_vs_holdout.mean())
    reference = min(a_h, a_sh)
    z = _z(policy.alpha)
    spread = np.sqrt(max(reference * (1 - reference), 1e-12) * (1 / n_s + 1 / len(auth_h)))
    figures[f"authenticity_{space}"] = figure(
        a_s, worse="lower", warn=reference - z * spread, interval=M.wilson_interval(int(auth_s.sum()), n_s),
        baseline=a_h, baseline_interval=M.wilson_interval(int(auth_h.sum()), len(auth_h)), baseline_holdout=a_sh,
        rule="share of samples not closer to their nearest training patch than that patch is to its own nearest "
        "other training patch (Alaa et al. 2022); real holdout patches give the baseline, and the same test of the "
        f"samples against the holdout gives {a_sh:.2%} here; warn when significantly below the smaller of the two "
        f"(one-sided, alpha {policy.alpha})",
    )
    calibration = {
        "copy_distance_train": tau_t,
        "copy_distance_holdout": tau_h,
        "ratio_threshold": rho,
        "holdout_to_train_quantiles": {f"q{int(q * 100):02d}": float(np.quantile(dT_h, q)) for q in (0.01, 0.05, 0.5)},
    }
    arrays = {"d_train": dT_s, "d_holdout": dH_s, "ratio": ratio_s, "ratio_holdout": ratio_h, "d_train_holdout": dT_h, "tau": tau_t, "rho": rho}
    return figures, calibration, arrays


def _z(alpha: float) -> float:
    from scipy.stats import norm

    return float(norm.isf(alpha))


def _bootstrap_stat(values: np.ndarray, stat, rng, resamples: int = 300) -> list[float]:
    values = np.asarray(values)
    boots = [stat(values[rng.integers(0, len(values), len(values))]) for _ in range(resamples)]
    return [float(v) for v in np.percentile(boots, [2.5, 97.5])]


def _attack(name: str, member: np.ndarray, nonmember: np.ndarray, policy: AuditPolicy, rng, what: str) -> dict:
    f = M.attack_figures(member, nonmember, rng, fpr=0.01)
    auc_warn = f["auc_null_p99"]
    tpr_warn = f["tpr_null_p99"]
    return {
        f"{name}_auc": figure(
            f["auc"], worse="higher", warn=auc_warn, fail=max(auc_warn, policy.attack_fail_auc), interval=f["auc_interval"],
            baseline=0.5, rule=f"{what}; AUC of training (members) vs holdout patients, stratified bootstrap 95% interval; "
            f"warn above the 99th percentile of its label-permutation null on this data, fail above {policy.attack_fail_auc:g}",
        ),
        f"{name}_tpr_at_1pct_fpr": figure(
            f["tpr_at_fpr"], worse="higher", warn=tpr_warn, fail=max(tpr_warn, policy.attack_fail_tpr_factor * 0.01),
            interval=f["tpr_interval"], baseline=0.01,
            rule=f"{what}; true-positive rate at 1% false positives; warn above the 99th percentile of its permutation "
            f"null, fail above {policy.attack_fail_tpr_factor:g} times the chance rate (1%)",
        ),
    }


def _membership(pix_s_vs_r, feat_s_vs_r, feat_real, feat_syn, n_t: int, policy: AuditPolicy, seed: int, rng) -> tuple[dict, dict]:
    figures = {}
    d_pix = pix_s_vs_r.reverse_distance  # each real patch -> its closest synthetic sample
    figures.update(_attack("distance_attack_pixel", -d_pix[:n_t], -d_pix[n_t:], policy, rng,
                           "distance attack in pixel space: a patient is called a member when a synthetic sample is close"))
    d_feat = feat_s_vs_r.reverse_distance
    figures.update(_attack("distance_attack_feature", -d_feat[:n_t], -d_feat[n_t:], policy, rng,
                           "distance attack in feature space"))
    # DOMIAS: density of the synthetic samples over the density of a reference set of real non-members
    # (half of the holdout); scored on the training patients and the other half of the holdout
    holdout_idx = np.arange(n_t, len(feat_real))
    perm = rng.permutation(holdout_idx)
    ref_idx, eval_idx = np.sort(perm[: len(perm) // 2]), np.sort(perm[len(perm) // 2 :])
    info = {}
    if len(ref_idx) >= 2 and len(eval_idx) >= 2:
        project = M.standardise(feat_real, components=8, seed=seed)
        syn_z, real_z = project(feat_syn), project(feat_real)
        score = M.kde_log_density(real_z, syn_z) - M.kde_log_density(real_z, real_z[ref_idx])
        figures.update(_attack("domias", score[:n_t], score[eval_idx], policy, rng,
                               "DOMIAS-style density-ratio attack: log density of the synthetic samples minus log density "
                               "of a real reference set (half of the holdout), Gaussian KDE on 8 whitened principal components of the features"))
        info["domias"] = {"reference": int(len(ref_idx)), "holdout_scored": int(len(eval_idx)), "dimensions": int(syn_z.shape[1])}
        ll_t, ll_h = M.gmm_log_likelihood(syn_z, real_z[:n_t], real_z[n_t:], seed=seed)
        gap = float(ll_t.mean() - ll_h.mean())
        pooled = np.concatenate([ll_t, ll_h])
        null = []
        for _ in range(200):
            p = rng.permutation(pooled)
            null.append(p[:n_t].mean() - p[n_t:].mean())
        boots = [ll_t[rng.integers(0, len(ll_t), len(ll_t))].mean() - ll_h[rng.integers(0, len(ll_h), len(ll_h))].mean() for _ in range(300)]
        figures["fld_likelihood_gap"] = figure(
            gap, worse="higher", warn=float(np.percentile(null, 99)), interval=np.percentile(boots, [2.5, 97.5]), baseline=0.0,
            unit="nats per patch",
            rule="FLD-style generalisation gap: mean log-likelihood of training minus holdout patches under a Gaussian "
            "mixture fitted on the synthetic features (8 whitened principal components); warn above the 99th "
            "percentile of its label-permutation null",
        )
    return figures, info


def _diversity(syn: PatchSet, real_patches: np.ndarray, feat_syn, feat_real, cluster_distance: float, groups,
               policy: AuditPolicy, rng, n_pairs: int) -> tuple[dict, list, dict]:
    pairs_s = M.random_pairs(len(syn), n_pairs, rng)
    pairs_r = M.random_pairs(len(real_patches), n_pairs, rng)
    ms_s = M.msssim_pairs(syn.patches, pairs_s)
    ms_r = M.msssim_pairs(real_patches, pairs_r)
    m_s, m_r = float(ms_s.mean()), float(ms_r.mean())
    figures = {
        "msssim_synthetic_pairs": figure(
            m_s, worse="higher", warn=m_r + policy.msssim_warn_fraction * (1 - m_r), fail=m_r + policy.msssim_fail_fraction * (1 - m_r),
            interval=M.bootstrap_mean(ms_s, rng), baseline=m_r, baseline_interval=M.bootstrap_mean(ms_r, rng), pairs=len(ms_s),
            rule=f"mean MS-SSIM (MONAI, kernel 7) of {len(ms_s)} random synthetic pairs against the same on real pairs; "
            f"warn {policy.msssim_warn_fraction:.0%} and fail {policy.msssim_fail_fraction:.0%} of the way from the real "
            "mean to 1 (every sample alike)",
        )
    }
    m = min(CLUSTER_POINTS, len(syn), len(feat_real))
    pick_s = np.sort(rng.choice(len(syn), m, replace=False))
    pick_r = np.sort(rng.choice(len(feat_real), m, replace=False))
    c_s = M.count_clusters(feat_syn[pick_s], cluster_distance)
    c_r = M.count_clusters(feat_real[pick_r], cluster_distance)
    ratio = c_s / max(c_r, 1)
    figures["cluster_ratio"] = figure(
        ratio, worse="lower", warn=policy.cluster_warn_ratio, fail=policy.cluster_fail_ratio,
        baseline=1.0, synthetic_clusters=c_s, real_clusters=c_r, points=m,
        rule=f"distinct clusters of {m} synthetic samples over those of {m} real patches (complete linkage in feature "
        f"space cut at the median holdout-to-train feature distance, {cluster_distance:.4g}); warn below "
        f"{policy.cluster_warn_ratio:g}, fail below {policy.cluster_fail_ratio:g}",
    )
    snapshots = []
    for name, idx in groups.items():
        pairs = M.random_pairs(len(idx), max(1, n_pairs // 2), rng)
        ms = M.msssim_pairs(syn.patches[idx], pairs) if len(pairs) else np.zeros(0)
        k = min(len(idx), len(feat_real))
        cs = M.count_clusters(feat_syn[idx[:k]], cluster_distance)
        cr = M.count_clusters(feat_real[np.sort(rng.choice(len(feat_real), k, replace=False))], cluster_distance)
        mean = float(ms.mean()) if len(ms) else None
        thresholds = figures["msssim_synthetic_pairs"]["threshold"]
        v = worst([
            figure(mean, worse="higher", rule="", **thresholds)["verdict"] if mean is not None else "pass",
            figure(cs / max(cr, 1), worse="lower", warn=policy.cluster_warn_ratio, fail=policy.cluster_fail_ratio, rule="")["verdict"],
        ])
        snapshots.append({"snapshot": name, "samples": int(len(idx)), "msssim_mean": None if mean is None else round(mean, 6), "clusters": cs,
                          "real_clusters": cr, "cluster_ratio": round(cs / max(cr, 1), 6), "verdict": v})
    return figures, snapshots, {"msssim_synthetic": ms_s, "msssim_real": ms_r}


def _fidelity(feat_syn, feat_t, feat_h, policy: AuditPolicy, rng, inception=None) -> tuple[dict, dict]:
    n_h = len(feat_h)
    fake = feat_syn if len(feat_syn) <= n_h else feat_syn[np.sort(rng.choice(len(feat_syn), n_h, replace=False))]
    from threadpoolctl import threadpool_limits

    to_train = M.FrechetToReference(feat_t)  # equals MONAI's FIDMetric (tested), without its slow sqrtm
    with threadpool_limits(1, user_api="blas"):  # small matrices: threads only contend
        fd_s, fd_h = to_train(fake), to_train(feat_h)
        boots_s = [to_train(fake[rng.integers(0, len(fake), len(fake))]) for _ in range(200)]
        boots_h = [to_train(feat_h[rng.integers(0, n_h, n_h)]) for _ in range(200)]
    h_int = np.percentile(boots_h, [2.5, 97.5])
    figures = {
        "frechet_distance": figure(
            fd_s, worse="higher", warn=float(np.percentile(boots_h, 100 * (1 - policy.alpha))), interval=np.percentile(boots_s, [2.5, 97.5]),
            baseline=fd_h, baseline_interval=h_int, samples=len(fake),
            rule=f"Fréchet distance of {len(fake)} synthetic samples to the training patches in feature space, beside "
            f"the real-vs-real baseline holdout-to-train (equal sizes); warn above the baseline's bootstrap "
            f"{100 * (1 - policy.alpha):g}th percentile",
        )
    }
    p_s, p_h = M.prdc(feat_t, fake, k=5), M.prdc(feat_t, feat_h, k=5)
    for key in ("precision", "recall", "density", "coverage"):
        side = "per_fake" if key in ("precision", "density") else "per_real"
        base_int = M.bootstrap_mean(p_h[side][key], rng)
        fails = key in ("precision", "coverage")
        figures[key] = figure(
            p_s[key], worse="lower", warn=base_int[0], fail=policy.fidelity_fail_fraction * p_h[key] if fails else None,
            interval=M.bootstrap_mean(p_s[side][key], rng), baseline=p_h[key], baseline_interval=base_int, k=p_s["k"],
            rule=f"{key} (Naeem et al. 2020, k = {p_s['k']}) of the synthetic samples against the training patches, beside "
            "holdout-vs-training; warn below the baseline's 95% interval"
            + (f", fail below {policy.fidelity_fail_fraction:g} times the baseline" if fails else ""),
        )
    info = {}
    if inception is not None:
        inc_s, inc_t, inc_h = inception
        to_inc_train = M.FrechetToReference(inc_t)
        figures["fid_inception"] = figure(
            to_inc_train(inc_s), worse="higher", decides=False, baseline=to_inc_train(inc_h),
            rule="standard FID: Inception-v3 pool features (user-given local weights), synthetic vs training, beside "
            "holdout vs training; reported only",
        )
    return figures, info


def run_audit(
    *,
    train: str | os.PathLike,
    holdout: str | os.PathLike,
    out: str | os.PathLike,
    bundle_dir: str | os.PathLike | None = None,
    synthetic: str | os.PathLike | None = None,
    num_samples: int | None = 2000,
    features: str = "encoder",
    seed: int = 0,
    checkpoint: str | os.PathLike | None = None,
    snapshot_dir: str | os.PathLike | None = None,
    num_inference_steps: int | None = None,
    inception: str | os.PathLike | None = None,
    train_subsets=("training",),
    holdout_subsets=("validation", "test"),
    labels: str = "lesion",
    skip_bad: bool = False,
    cache_dir: str | os.PathLike | None = None,
    encoder_settings: dict | None = None,
    policy: AuditPolicy | None = None,
    device: str = "cpu",
    msssim_pairs: int = MSSSIM_PAIRS,
    progress: bool = True,
) -> dict:
    """Audit a generator bundle (sampled here) or a finished synthetic datalist.

    Args:
        train, holdout: datalists of the generator's training patches and of unseen patients'
            patches (``train_subsets`` / ``holdout_subsets`` of them, ``labels`` lesion/healthy/all).
        out: a new or empty folder: audit.json, audit.md, the PNG sheets, worst_pairs.json and, for
            a bundle, the samples in ``synthetic/``.
        bundle_dir / synthetic: the generator bundle to sample (``num_samples``, default 2000;
            ``checkpoint`` or every snapshot of ``snapshot_dir``), or a finished synthetic datalist
            (all of it, or ``num_samples`` drawn with the seed). A diffusion bundle is sampled with
            the settings of its ``inference.json``; ``num_inference_steps`` overrides its steps.
        features: ``"encoder"`` (default), ``"pixel"`` or a classifier checkpoint file.
        inception: a local torchvision Inception-v3 weights file: adds the standard FID.
        cache_dir / encoder_settings: where the trained encoder is cached; its training settings.
        msssim_pairs: random pairs for the MS-SSIM statistics (per set).

    Returns:
        the audit dict, also written to ``out/audit.json``.
    """
    import torch

    from . import figures as sheets
    from .features import EncoderSettings
    from .report import write_markdown

    if (bundle_dir is None) == (synthetic is None):
        raise AuditInputError("give either a generator bundle folder or --synthetic DATALIST (one of them)")
    if synthetic is not None and num_inference_steps is not None:
        raise AuditInputError(f"{synthetic}: --num_inference_steps samples a diffusion bundle; a finished --synthetic set "
                              "is audited as it was sampled, so leave the option out")
    policy = policy or AuditPolicy()
    out = Path(out)
    _check_out(out)
    timer = _Timer()
    out.mkdir(parents=True, exist_ok=True)
    generator_info: dict = {}
    if bundle_dir is not None:
        n = 2000 if num_samples is None else int(num_samples)
        if n < 2:
            raise AuditInputError("--num_samples must be at least 2")
        synthetic = sample_bundle(bundle_dir, n, out / "synthetic", seed=seed, checkpoint=checkpoint,
                                  snapshot_dir=snapshot_dir, device=device, progress=progress,
                                  num_inference_steps=num_inference_steps)
        generator_info["bundle"] = Path(bundle_dir).absolute().name
        timer.lap("sample")
        syn, gen_entry = load_synthetic_set(synthetic, None, seed, skip_bad, progress)
    else:
        syn, gen_entry = load_synthetic_set(synthetic, num_samples, seed, skip_bad, progress)
    generator_info.update({k: gen_entry[k] for k in GENERATOR_FIELDS if k in gen_entry})
    train_set = load_real_set(train, "train", tuple(train_subsets), labels, skip_bad, progress)
    holdout_set = load_real_set(holdout, "holdout", tuple(holdout_subsets), labels, skip_bad, progress)
    check_disjoint(train_set, holdout_set)
    timer.lap("load")
    n_t, n_h, n_s = len(train_set), len(holdout_set), len(syn)
    real = np.concatenate([train_set.patches, holdout_set.patches])
    train_set.patches, holdout_set.patches = real[:n_t], real[n_t:]
    groups = np.array(["train"] * n_t + ["holdout"] * n_h)
    streams = np.random.SeedSequence(seed).spawn(6)
    rngs = [np.random.default_rng(s) for s in streams]

    torch.manual_seed(seed)
    settings = EncoderSettings(**(encoder_settings or {}))
    feat_real, feat_syn, feature_desc, _ = _features(features, real, syn.patches, seed, cache_dir, settings, progress)
    feature_desc["dim"] = int(feat_real.shape[1])
    timer.lap("features")

    from tqdm import tqdm

    basis_real, basis_syn = flip_basis(real), flip_basis(syn.patches)
    with tqdm(total=n_s + len(real), desc="nearest neighbours (pixels, 4 flips)", disable=not progress, leave=False) as bar:
        pix_s = nearest_flip_ncc(basis_syn, basis_real, groups, progress=bar)
        pix_r_all = nearest_flip_ncc(basis_real, basis_real, groups, exclude_self=True, progress=bar)
    timer.lap("pixel_search")
    feat_s = nearest_l2(feat_syn, feat_real, groups)
    feat_r_all = nearest_l2(feat_real, feat_real, groups, exclude_self=True)
    timer.lap("feature_search")

    def split(result):  # rows of the real-vs-real search, per query set
        from .neighbours import NearestResult

        parts = {}
        for name, rows in (("train", slice(0, n_t)), ("holdout", slice(n_t, None))):
            parts[name] = NearestResult({g: d[rows] for g, d in result.distance.items()},
                                        {g: i[rows] for g, i in result.index.items()}, result.reverse_distance, result.reverse_index)
        return parts

    pix_r, feat_r = split(pix_r_all), split(feat_r_all)
    mem_pix, cal_pix, arr_pix = _memorisation("pixel", pix_s, pix_r, n_s, policy, rngs[0])
    mem_feat, cal_feat, arr_feat = _memorisation("feature", feat_s, feat_r, n_s, policy, rngs[0])
    memorisation = family({**mem_pix, **mem_feat})
    timer.lap("memorisation")
    mem_figures, mem_info = _membership(pix_s, feat_s, feat_real, feat_syn, n_t, policy, seed, rngs[1])
    membership = family(mem_figures)
    timer.lap("membership")
    cluster_distance = float(np.median(feat_r["holdout"].distance["train"]))
    snap_groups = snapshot_groups(syn, gen_entry)
    div_figures, snapshots, div_arrays = _diversity(syn, real, feat_syn, feat_real, cluster_distance, snap_groups, policy, rngs[2], msssim_pairs)
    diversity = family(div_figures, [("warn" if s["verdict"] != "pass" else "pass") for s in snapshots])
    if snapshots:
        diversity["per_snapshot"] = snapshots
    timer.lap("diversity")
    inception_feats = None
    if inception is not None:
        from .features import inception_features

        extract = inception_features(inception)
        pick = np.sort(rngs[3].choice(n_s, min(n_s, n_h), replace=False))
        inception_feats = (extract(syn.patches[pick]), extract(train_set.patches), extract(holdout_set.patches))
        feature_desc["inception"] = {"file": Path(inception).name, "sha256": sha256_file(Path(inception))}
    fid_figures, _ = _fidelity(feat_syn, feat_real[:n_t], feat_real[n_t:], policy, rngs[4], inception_feats)
    fidelity = family(fid_figures)
    timer.lap("fidelity")

    # the worst pairs: samples closest to a training patch in pixel space, with their flip
    worst_idx = np.argsort(arr_pix["d_train"], kind="stable")[:WORST_PAIRS]
    t_idx = pix_s.index["train"][worst_idx]
    h_idx = pix_s.index["holdout"][worst_idx]
    flips_t, _ = best_flip(basis_syn, worst_idx, basis_real, t_idx)
    flips_h, _ = best_flip(basis_syn, worst_idx, basis_real, h_idx + n_t)
    del basis_real, basis_syn
    families = {"memorisation": memorisation, "membership": membership, "diversity": diversity, "fidelity": fidelity}
    files = sheets.write_sheets(
        out, syn=syn, real=real, n_t=n_t, worst=(worst_idx, t_idx, h_idx, flips_t, flips_h, arr_pix),
        arrays={"pixel": arr_pix, "feature": arr_feat}, msssim=div_arrays, snapshots=snapshots,
        families=families, seed=seed,
        note="PHANTOM data: a demo, no clinical meaning" if any(s.phantom for s in (syn, train_set, holdout_set)) else None,
    )
    worst_pairs = [
        {"synthetic": str(syn.records[i]["image"]), "train": str(train_set.records[t]["image"]),
         "train_patient": train_set.records[t].get("patient_id"), "train_box": train_set.records[t].get("box"),
         "holdout": str(holdout_set.records[h]["image"]), "flip_train": int(ft), "ncc_train": round(1 - float(arr_pix["d_train"][i]), 6),
         "ncc_holdout": round(1 - float(arr_pix["d_holdout"][i]), 6)}
        for i, t, h, ft in zip(worst_idx, t_idx, h_idx, flips_t)
    ]
    (out / "worst_pairs.json").write_text(json.dumps(worst_pairs, indent=1) + "\n")
    timer.lap("sheets")

    def source(path, subsets, patch_set: PatchSet):
        return {"datalist": Path(path).name, "sha256": sha256_file(Path(path)), "subsets": list(subsets), "labels": labels,
                "patches": len(patch_set), "patients": len(set(patch_set.patient_ids)), "skipped": len(patch_set.skipped)}

    audit = {
        "schema": SCHEMA,
        "mammoshare_version": __version__,
        "seed": int(seed),
        "generator": generator_info,
        "data": {
            "synthetic": {"datalist": Path(synthetic).name, "sha256": sha256_file(Path(synthetic)), "patches": n_s,
                          "skipped": len(syn.skipped), "sampled_by_audit": bundle_dir is not None},
            "train": source(train, train_subsets, train_set),
            "holdout": source(holdout, holdout_subsets, holdout_set),
            "preprocessing": "canonical 128x128 patch (box crop, cv2.INTER_AREA resize, [0, 1]) for every set",
        },
        "features": feature_desc,
        "policy": policy.as_dict(),
        "calibration": {"pixel": cal_pix, "feature": cal_feat, "cluster_distance": cluster_distance,
                        "pixel_distance": "1 - max over the four flips of the normalised cross-correlation",
                        "feature_distance": "Euclidean", **mem_info},
        "families": families,
        "verdicts": {name: families[name]["verdict"] for name in FAMILIES},
        "files": files,
        "run": {"created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "seconds": timer.seconds},
    }
    audit = json.loads(json.dumps(audit, allow_nan=False, default=_jsonable))
    (out / AUDIT_FILE).write_text(json.dumps(audit, indent=1) + "\n")
    write_markdown(audit, out / "audit.md")
    return audit


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")

"""The audit's statistics: rates and their intervals, attack AUCs, densities, PRDC, Fréchet
distance, MS-SSIM of random pairs and cluster counts. Every function takes its randomness from a
``numpy.random.Generator`` so that a seed reproduces every figure."""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = [
    "wilson_interval",
    "binomial_upper",
    "bootstrap_mean",
    "auc",
    "tpr_at_fpr",
    "attack_figures",
    "authenticity",
    "standardise",
    "kde_log_density",
    "gmm_log_likelihood",
    "prdc",
    "frechet_distance",
    "FrechetToReference",
    "msssim_pairs",
    "count_clusters",
    "random_pairs",
]

Z95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion (95% by default)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def binomial_upper(n: int, p: float, alpha: float = 0.01) -> float:
    """The smallest rate ``k / n`` that a one-sided binomial test at level ``alpha`` finds above ``p``."""
    from scipy.stats import binom

    return float(binom.isf(alpha, n, p)) / max(n, 1)


def bootstrap_mean(values: np.ndarray, rng: np.random.Generator, resamples: int = 1000) -> tuple[float, float]:
    """95% percentile bootstrap interval of a mean."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return (float("nan"), float("nan"))
    means = np.empty(resamples)
    for start in range(0, resamples, 100):
        idx = rng.integers(0, len(values), size=(min(100, resamples - start), len(values)))
        means[start : start + len(idx)] = values[idx].mean(1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return (float(lo), float(hi))


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties count half): P(score_pos > score_neg)."""
    from scipy.stats import rankdata

    scores = np.concatenate([positive, negative])
    ranks = rankdata(scores)
    n1, n0 = len(positive), len(negative)
    return float((ranks[:n1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def tpr_at_fpr(positive: np.ndarray, negative: np.ndarray, fpr: float = 0.01) -> float:
    """True-positive rate at a threshold whose false-positive rate is at most ``fpr`` (ties are not
    counted as positives, so the rate is never overstated)."""
    negative = np.sort(np.asarray(negative))[::-1]
    allowed = int(math.floor(fpr * len(negative)))
    threshold = negative[min(allowed, len(negative) - 1)]
    return float(np.mean(np.asarray(positive) > threshold))


def attack_figures(member: np.ndarray, nonmember: np.ndarray, rng: np.random.Generator, resamples: int = 500,
                   permutations: int = 200, fpr: float = 0.01) -> dict:
    """AUC and TPR at ``fpr`` of a membership score (higher = more likely a training patient), each
    with a stratified bootstrap 95% interval and the 99th percentile of its label-permutation null
    (what the same attack reaches on this data when membership carries no signal)."""
    member, nonmember = np.asarray(member, float), np.asarray(nonmember, float)
    value_auc, value_tpr = auc(member, nonmember), tpr_at_fpr(member, nonmember, fpr)
    boot_auc, boot_tpr = np.empty(resamples), np.empty(resamples)
    for b in range(resamples):
        m = member[rng.integers(0, len(member), len(member))]
        n = nonmember[rng.integers(0, len(nonmember), len(nonmember))]
        boot_auc[b], boot_tpr[b] = auc(m, n), tpr_at_fpr(m, n, fpr)
    pooled = np.concatenate([member, nonmember])
    null_auc, null_tpr = np.empty(permutations), np.empty(permutations)
    for b in range(permutations):
        perm = rng.permutation(pooled)
        m, n = perm[: len(member)], perm[len(member) :]
        null_auc[b], null_tpr[b] = auc(m, n), tpr_at_fpr(m, n, fpr)
    return {
        "auc": value_auc,
        "auc_interval": [float(v) for v in np.percentile(boot_auc, [2.5, 97.5])],
        "auc_null_p99": float(np.percentile(null_auc, 99)),
        "tpr_at_fpr": value_tpr,
        "tpr_interval": [float(v) for v in np.percentile(boot_tpr, [2.5, 97.5])],
        "tpr_null_p99": float(np.percentile(null_tpr, 99)),
        "fpr": fpr,
    }


def authenticity(d_query_to_train: np.ndarray, nearest_train: np.ndarray, d_train_to_train: np.ndarray) -> np.ndarray:
    """Per query, authentic (Alaa et al. 2022): not closer to its nearest training patch than that
    patch is to its own nearest other training patch."""
    return np.asarray(d_query_to_train) >= np.asarray(d_train_to_train)[np.asarray(nearest_train)]


def standardise(reference: np.ndarray, components: int, seed: int):
    """A function features -> PCA (fitted on ``reference``, at most ``components`` dimensions),
    whitened to unit variance: the low-dimensional space of the density estimates."""
    from sklearn.decomposition import PCA

    k = max(1, min(components, reference.shape[1], reference.shape[0] - 1))
    pca = PCA(n_components=k, whiten=True, random_state=seed).fit(reference)
    return lambda x: pca.transform(x).astype(np.float64)


def kde_log_density(points: np.ndarray, sample: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Gaussian kernel density of ``sample`` (n, d) at ``points`` (m, d), Scott's bandwidth on
    whitened coordinates: ``log p`` per point."""
    sample_t = torch.as_tensor(sample, dtype=torch.float64)
    n, d = sample_t.shape
    h = n ** (-1.0 / (d + 4))
    sn = (sample_t * sample_t).sum(1)
    out = []
    for start in range(0, len(points), chunk):
        p = torch.as_tensor(points[start : start + chunk], dtype=torch.float64)
        d2 = ((p * p).sum(1)[:, None] + sn[None] - 2 * p @ sample_t.T).clamp_min(0)
        out.append(torch.logsumexp(-d2 / (2 * h * h), dim=1) - math.log(n) - 0.5 * d * math.log(2 * math.pi * h * h))
    return torch.cat(out).numpy()


def gmm_log_likelihood(fit_on: np.ndarray, *score: np.ndarray, seed: int = 0) -> list[np.ndarray]:
    """A Gaussian mixture fitted on ``fit_on`` (one component per 50 samples, 1-10, full covariance),
    then ``log p`` of each array of ``score``."""
    from sklearn.mixture import GaussianMixture

    components = int(np.clip(len(fit_on) // 50, 1, 10))
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    gmm = GaussianMixture(n_components=components, covariance_type="full", reg_covar=1e-3, random_state=seed, max_iter=200)
    with warnings.catch_warnings():  # identical samples (a collapsed generator) converge at once, with a warning
        warnings.simplefilter("ignore", ConvergenceWarning)
        gmm.fit(fit_on)
    return [gmm.score_samples(s) for s in score]


def _pairwise(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T).clamp_min(0).sqrt()


def _kth_neighbour_radius(x: torch.Tensor, k: int, chunk: int = 2048) -> torch.Tensor:
    out = []
    for start in range(0, len(x), chunk):
        d = _pairwise(x[start : start + chunk], x)
        out.append(d.topk(k + 1, dim=1, largest=False).values[:, k])  # the 0th is the point itself
    return torch.cat(out)


def prdc(real: np.ndarray, fake: np.ndarray, k: int = 5, chunk: int = 2048) -> dict:
    """Precision, recall, density and coverage (Naeem et al. 2020) with per-sample indicators.

    Returns the four figures and ``per_fake`` (precision indicator, density count) / ``per_real``
    (recall indicator, coverage indicator) arrays for bootstrap intervals.
    """
    r = torch.as_tensor(real, dtype=torch.float32)
    f = torch.as_tensor(fake, dtype=torch.float32)
    k = min(k, len(r) - 1, len(f) - 1)
    if k < 1:
        raise ValueError("precision/recall need at least 2 real and 2 synthetic samples")
    real_radius, fake_radius = _kth_neighbour_radius(r, k), _kth_neighbour_radius(f, k)
    inside_count = torch.zeros(len(f))
    covered = torch.zeros(len(r), dtype=torch.bool)
    recalled = torch.zeros(len(r), dtype=torch.bool)
    for start in range(0, len(f), chunk):
        d = _pairwise(f[start : start + chunk], r)  # (fake chunk, real)
        inside = d <= real_radius[None]
        inside_count[start : start + chunk] = inside.sum(1).float()
        covered |= (d.min(0).values <= real_radius)
        recalled |= (d <= fake_radius[start : start + chunk, None]).any(0)
    precision_ind = (inside_count > 0).numpy().astype(float)
    density_ind = inside_count.numpy() / k
    return {
        "precision": float(precision_ind.mean()),
        "recall": float(recalled.float().mean()),
        "density": float(density_ind.mean()),
        "coverage": float(covered.float().mean()),
        "k": k,
        "per_fake": {"precision": precision_ind, "density": density_ind},
        "per_real": {"recall": recalled.numpy().astype(float), "coverage": covered.numpy().astype(float)},
    }


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (MONAI's ``FIDMetric``)."""
    from monai.metrics import FIDMetric

    value = FIDMetric()(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64))
    return float(value)


class FrechetToReference:
    """Fréchet distances of many feature sets to one fixed reference set, for bootstrap intervals.

    Same value as :func:`frechet_distance`, computed as ``|mu_a - mu_r|^2 + tr S_a + tr S_r -
    2 sum sqrt(eig(R S_a R))`` with ``R = S_r^(1/2)`` found once: a symmetric eigenproblem per set
    instead of a general matrix square root (MONAI's scipy ``sqrtm``), which makes a bootstrap of
    hundreds of resamples cheap.
    """

    def __init__(self, reference: np.ndarray):
        ref = np.asarray(reference, dtype=np.float64)
        self.mu = ref.mean(0)
        cov = np.atleast_2d(np.cov(ref, rowvar=False))
        w, v = np.linalg.eigh(cov)
        self.root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
        self.trace = float(np.trace(cov))

    def __call__(self, features: np.ndarray) -> float:
        x = np.asarray(features, dtype=np.float64)
        cov = np.atleast_2d(np.cov(x, rowvar=False))
        eig = np.linalg.eigvalsh(self.root @ cov @ self.root)
        diff = x.mean(0) - self.mu
        return float(diff @ diff + np.trace(cov) + self.trace - 2 * np.sqrt(np.clip(eig, 0, None)).sum())


def random_pairs(n: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` random pairs ``(i, j)``, ``i != j``, of ``n`` items ``(count, 2)``."""
    if n < 2:
        return np.zeros((0, 2), dtype=np.int64)
    i = rng.integers(0, n, count)
    j = (i + rng.integers(1, n, count)) % n
    return np.stack([i, j], 1)


def msssim_pairs(patches: np.ndarray, pairs: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """MS-SSIM (MONAI, kernel 7 as 128 px patches need, data range 1) of each pair of patches."""
    from monai.metrics import MultiScaleSSIMMetric

    metric = MultiScaleSSIMMetric(spatial_dims=2, data_range=1.0, kernel_size=7)
    out = []
    with torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            p = pairs[start : start + batch_size]
            x = torch.as_tensor(patches[p[:, 0]], dtype=torch.float32).unsqueeze(1)
            y = torch.as_tensor(patches[p[:, 1]], dtype=torch.float32).unsqueeze(1)
            out.append(metric(x, y).flatten().numpy())
    values = np.concatenate(out) if out else np.zeros(0)
    return np.nan_to_num(values.astype(np.float64), nan=0.0)


def count_clusters(features: np.ndarray, threshold: float) -> int:
    """Distinct clusters: complete-linkage agglomerative clustering cut at ``threshold`` (every
    cluster's diameter is below it)."""
    from sklearn.cluster import AgglomerativeClustering

    if len(features) < 2:
        return len(features)
    model = AgglomerativeClustering(n_clusters=None, distance_threshold=max(threshold, 1e-12), linkage="complete")
    return int(model.fit(np.asarray(features, dtype=np.float64)).n_clusters_)

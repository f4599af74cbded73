"""Feature spaces of the audit: a self-supervised encoder trained on the run's real patches (the
default), PCA of downsampled pixels, a classifier's penultimate layer, or Inception-v3 for FID.

Why the self-supervised encoder is the default: it needs nothing but the centre's own real patches
(lesion-only sets have no labels to train a classifier on), so it is available offline for every
generator; it is trained on train and holdout alike, so its features favour neither set (a
classifier trained on the training patients would map them more tightly and bias the membership and
copy figures); it is small enough to train in a minute on a CPU and is cached by the hash of its
training data, its settings and the seed, so audits against the same real data reuse it. Its
augmentations (flips, crops, contrast, noise) make it ignore what a copy changes, and its features
are averaged over the four flips, so they are exactly flip invariant.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..hashing import sha256_text

__all__ = [
    "FEATURE_KINDS",
    "AuditEncoder",
    "EncoderSettings",
    "train_encoder",
    "obtain_encoder",
    "encoder_features",
    "pixel_features",
    "classifier_features",
    "inception_features",
    "default_cache_dir",
]

logger = logging.getLogger(__name__)

FEATURE_KINDS = ("encoder", "pixel")
ENCODER_VERSION = 1


def default_cache_dir() -> Path:
    """``$MAMMOSHARE_CACHE_DIR/audit``, else ``~/.cache/mammoshare/audit``."""
    root = os.environ.get("MAMMOSHARE_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "mammoshare") / "audit"


class AuditEncoder(nn.Module):
    """Canonical patch ``(B, 1, 128, 128)`` in [0, 1] -> feature ``(B, 128)``.

    Area-downsampled to 64, four stride-2 3x3 conv blocks (16/32/64/64 channels, BatchNorm, ReLU),
    then Linear 1024 -> 128. ``mean``/``std`` of the real patches normalise the input.
    """

    def __init__(self, dim: int = 128):
        super().__init__()
        layers: list[nn.Module] = []
        for c_in, c_out in ((1, 16), (16, 32), (32, 64), (64, 64)):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(64 * 4 * 4, dim)
        self.register_buffer("mean", torch.tensor(0.5))
        self.register_buffer("std", torch.tensor(0.25))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = F.avg_pool2d(image, 2) if image.shape[-1] > 64 else image  # training feeds 64 px views directly
        x = (x - self.mean) / self.std
        return self.head(self.body(x).flatten(1))


class EncoderSettings(dict):
    """The encoder's training settings (a dict, part of its cache key)."""

    def __init__(self, steps: int = 200, batch_size: int = 64, lr: float = 1e-3, temperature: float = 0.2, **extra):
        super().__init__(steps=int(steps), batch_size=int(batch_size), lr=float(lr), temperature=float(temperature), **extra)


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random flips, zoom-in crop (scale 0.7-1, shifted), contrast/brightness and noise, per sample."""
    b = x.shape[0]
    u = lambda *shape: torch.rand(*shape, generator=gen)  # noqa: E731
    scale = 0.7 + 0.3 * u(b)
    shift = (1 - scale)[:, None] * (2 * u(b, 2) - 1)
    sign = torch.where(u(b, 2) < 0.5, -1.0, 1.0)  # flips
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = scale * sign[:, 0], scale * sign[:, 1]
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    contrast = (0.8 + 0.4 * u(b)).view(-1, 1, 1, 1)
    bright = (0.2 * u(b) - 0.1).view(-1, 1, 1, 1)
    noise = 0.03 * u(b).view(-1, 1, 1, 1) * torch.randn(x.shape, generator=gen)
    return (x - mean) * contrast + mean + bright + noise


def _nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / temperature
    n = z1.shape[0]
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(sim, target)


class one_thread:
    """Runs a block with one torch thread: the encoder's small convolutions gain nothing from a
    second thread, and on a busy machine its synchronisation makes them several times slower."""

    def __enter__(self):
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.threads)


def train_encoder(patches: np.ndarray, seed: int = 0, settings: EncoderSettings | None = None, progress: bool = True) -> AuditEncoder:
    """SimCLR-style contrastive training of :class:`AuditEncoder` on real patches ``(n, 128, 128)``.

    A fixed number of steps (not epochs), so the time does not grow with the data.
    """
    with one_thread():
        return _train_encoder(patches, seed, settings or EncoderSettings(), progress)


def _train_encoder(patches: np.ndarray, seed: int, settings: EncoderSettings, progress: bool) -> AuditEncoder:
    from tqdm import tqdm

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    # augmented at 64 px, the encoder's working size: a quarter of the cost of 128 px views
    data = F.avg_pool2d(torch.as_tensor(patches, dtype=torch.float32).unsqueeze(1), 2)
    encoder = AuditEncoder()
    encoder.mean.fill_(float(data.mean()))
    encoder.std.fill_(float(data.std().clamp_min(1e-3)))
    projector = nn.Sequential(nn.Linear(128, 128), nn.ReLU(True), nn.Linear(128, 64))
    params = list(encoder.parameters()) + list(projector.parameters())
    optimiser = torch.optim.Adam(params, lr=settings["lr"])
    batch = min(settings["batch_size"], len(data))
    if batch < 2:
        raise ValueError("the encoder needs at least 2 real patches")
    encoder.train()
    for _ in tqdm(range(settings["steps"]), desc="audit encoder", disable=not progress, leave=False):
        idx = torch.randperm(len(data), generator=gen)[:batch]
        x = data[idx]
        loss = _nt_xent(projector(encoder(_augment(x, gen))), projector(encoder(_augment(x, gen))), settings["temperature"])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return encoder.eval()


def _array_digest(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for a in arrays:
        digest.update(str(a.shape).encode())
        digest.update(np.ascontiguousarray(a).tobytes())
    return digest.hexdigest()


def obtain_encoder(patches: np.ndarray, seed: int, settings: EncoderSettings | None = None,
                   cache_dir: str | os.PathLike | None = None, progress: bool = True) -> tuple[AuditEncoder, dict]:
    """The cached encoder for these real patches, settings and seed, trained when absent.

    Returns the encoder and its description (cache key, file, whether it came from the cache).
    """
    settings = settings or EncoderSettings()
    key_text = json.dumps({"data": _array_digest(patches), "settings": settings, "seed": int(seed),
                           "version": ENCODER_VERSION, "torch": torch.__version__.split("+")[0]}, sort_keys=True)
    key = sha256_text(key_text)[:32]
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache / f"encoder_{key}.pt"
    encoder = AuditEncoder()
    if path.is_file():
        try:
            encoder.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            logger.info("audit encoder from the cache: %s", path)
            return encoder.eval(), {"cache_key": key, "file": path.name, "cached": True, "settings": dict(settings)}
        except Exception as e:  # a broken cache entry is retrained, not trusted
            logger.warning("%s: unusable cached encoder (%s); training a new one", path, e)
    encoder = train_encoder(patches, seed, settings, progress)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    torch.save(encoder.state_dict(), tmp)
    os.replace(tmp, path)
    return encoder, {"cache_key": key, "file": path.name, "cached": False, "settings": dict(settings)}


def _flip_averaged(fn, patches: np.ndarray, batch_size: int = 256) -> np.ndarray:
    out = []
    with torch.no_grad(), one_thread():
        for start in range(0, len(patches), batch_size):
            x = torch.as_tensor(patches[start : start + batch_size], dtype=torch.float32).unsqueeze(1)
            views = (x, x.flip(3), x.flip(2), x.flip(2, 3))
            out.append(torch.stack([fn(v) for v in views]).mean(0).numpy())
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)


def encoder_features(encoder: nn.Module, patches: np.ndarray) -> np.ndarray:
    """Flip-averaged encoder features ``(n, 128)`` of patches ``(n, 128, 128)``."""
    encoder.eval()
    return _flip_averaged(encoder, patches)


class PixelPCA:
    """Pixels area-downsampled to 32x32, projected on the first principal components of the real
    patches (fitted once, seeded)."""

    def __init__(self, real: np.ndarray, components: int = 64, seed: int = 0):
        from sklearn.decomposition import PCA

        flat = self._small(real)
        self.pca = PCA(n_components=min(components, flat.shape[0] - 1, flat.shape[1]), svd_solver="randomized", random_state=seed)
        self.pca.fit(flat)

    @staticmethod
    def _small(patches: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(patches, dtype=torch.float32).unsqueeze(1)
        return F.adaptive_avg_pool2d(x, 32).flatten(1).numpy()

    def __call__(self, patches: np.ndarray) -> np.ndarray:
        return self.pca.transform(self._small(patches)).astype(np.float32)


def pixel_features(real: np.ndarray, seed: int = 0):
    """A :class:`PixelPCA` fitted on the real patches (call it on any patches)."""
    return PixelPCA(real, seed=seed)


def _load_state(path: Path, what: str) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} weights file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not loadable as plain tensors with weights_only=True ({type(e).__name__}: {e})") from e
    if isinstance(state, dict):
        for key in ("model", "state_dict"):
            if isinstance(state.get(key), dict):
                state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: a state_dict of tensors is expected for the {what}")
    return state


def classifier_features(path: str | os.PathLike):
    """A function patches ``(n, 128, 128)`` -> flip-averaged penultimate features of a classifier
    checkpoint of the project (:class:`~mammoshare.networks.PatchCNN`: 128-d after FC-BN-ReLU;
    :class:`~mammoshare.networks.SwinClassifier`: 768-d pre-logits), loaded with ``weights_only=True``."""
    from mammoshare.networks import PatchCNN, SwinClassifier

    path = Path(path)
    state = _load_state(path, "classifier")
    if any(k.startswith("features.") for k in state):
        net = PatchCNN()
        forward = lambda x: net.classifier[:4](net.features(x))  # noqa: E731
        name = "PatchCNN penultimate layer (128)"
    elif any(k.startswith("model.") for k in state):
        from transforms import SwinInput

        net = SwinClassifier()
        swin_input = SwinInput()
        forward = lambda x: net.model.forward_head(net.model.forward_features(torch.stack([swin_input(i) for i in x])), pre_logits=True)  # noqa: E731
        name = "Swin-T pre-logits (768)"
    else:
        raise ValueError(f"{path}: not a classifier checkpoint of the project (PatchCNN 'features.*' or Swin-T 'model.*' keys)")
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{path}: weights of another architecture than {type(net).__name__}: {e}") from e
    net.eval()
    return (lambda patches: _flip_averaged(forward, patches, batch_size=64)), name


def inception_features(path: str | os.PathLike):
    """A function patches -> Inception-v3 pool features ``(n, 2048)`` from a local torchvision-layout
    weights file (``inception_v3_google-*.pth``); nothing is downloaded. Patches are resized to 299
    (bilinear), stacked to three channels and normalised with the ImageNet statistics."""
    from torchvision.models import inception_v3

    path = Path(path)
    state = _load_state(path, "Inception-v3")
    fc = state.get("fc.weight")
    if fc is None or "Mixed_7c.branch_pool.conv.weight" not in state:
        raise ValueError(f"{path}: not torchvision Inception-v3 weights (no 'fc.weight' / 'Mixed_7c.*' keys)")
    aux = any(k.startswith("AuxLogits.") for k in state)
    net = inception_v3(weights=None, aux_logits=aux, init_weights=False, num_classes=fc.shape[0])
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{path}: Inception-v3 weights of another layout: {e}") from e
    net.fc = nn.Identity()
    net.eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def extract(patches: np.ndarray) -> np.ndarray:
        out = []
        with torch.no_grad():
            for start in range(0, len(patches), 32):
                x = torch.as_tensor(patches[start : start + 32], dtype=torch.float32).unsqueeze(1)
                x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False).expand(-1, 3, -1, -1)
                out.append(net((x - mean) / std).numpy())
        return np.concatenate(out).astype(np.float64)

    return extract

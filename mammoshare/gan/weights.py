"""Generator weights in every layout the bundles accept, loaded with ``weights_only=True``.

Layouts:

- ``ours``: a plain ``state_dict`` of :class:`~mammoshare.networks.DCGANGenerator` (keys ``0.weight``,
  ``1.running_mean``...): ``model.pt`` and ``snapshots/epoch_XXXX.pt``. Trained on images in
  [-1, 1]: decoded as ``(out + 1) / 2``.
- ``last``: our full training state ``last.pt``; its ``generator`` entry is used.
- ``medigan``: the study's published medigan checkpoints, ``500.pt`` (00005, BCDR DCGAN) and
  ``10000.pt`` (00006, BCDR WGAN-GP): a dict whose ``generator`` entry has ``main.N.*`` keys (plus a
  duplicate ``first_layers.*`` and an unused ``embed_nn.*``), or the medigan zip holding it. These
  generators were trained against [0, 1] images: decoded as ``clip(out, 0, 1)``.
- ``medigan-00002``: the OPTIMAM DCGAN of the medigan hub (``00002_DCGAN_MMG_MASS_ROI``): its weights
  file ``malign_mass_gen`` (no extension), a plain ``state_dict`` with ``model.N.*`` keys, or the
  package zip ``MALIGN_DCGAN.zip`` holding it (with ``__init__.py``, never executed) at the zip root.
  Trained with a Tanh output against [-1, 1] images: decoded as ``(out + 1) / 2``.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["GeneratorWeights", "WeightsError", "load_generator_weights", "load_into", "decode_output", "sha256_of", "DECODINGS", "LAYOUT_DECODINGS"]

DECODINGS = ("tanh", "clip01")
#: how each layout's generator output is decoded to [0, 1]
LAYOUT_DECODINGS = {"ours": "tanh", "last": "tanh", "medigan": "clip01", "medigan-00002": "tanh"}


class WeightsError(ValueError):
    """A weights file that cannot be used; names the file and what was expected."""


@dataclass
class GeneratorWeights:
    state_dict: dict[str, torch.Tensor]
    layout: str  # "ours", "last", "medigan" or "medigan-00002"
    decoding: str  # "tanh": (out + 1) / 2; "clip01": clip(out, 0, 1)
    path: str
    sha256: str


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def decode_output(output: torch.Tensor, decoding: str) -> torch.Tensor:
    """Generator output -> image in [0, 1] by the generator's convention."""
    if decoding == "tanh":
        return ((output + 1.0) / 2.0).clamp(0.0, 1.0)
    if decoding == "clip01":
        return output.clamp(0.0, 1.0)
    raise ValueError(f"unknown output decoding {decoding!r}; use one of {list(DECODINGS)}")


def _torch_load(source, name: str):
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling refused (code objects), truncated file, not a torch file
        raise WeightsError(
            f"{name}: cannot be loaded as plain tensors with weights_only=True ({type(e).__name__}: {e})"
        ) from e


#: weights files of medigan packages that have no ``.pt`` extension (00002: ``malign_mass_gen``)
MEDIGAN_EXTENSIONLESS_WEIGHTS = ("malign_mass_gen",)


def _package_weights_names(names: list[str]) -> list[str]:
    """The weights files among a package zip's entries: ``*.pt`` files, else the known extension-less
    weights files (``malign_mass_gen``); macOS resource forks are skipped."""
    names = [n for n in names if not n.endswith("/") and not n.startswith("__MACOSX") and not n.rsplit("/", 1)[-1].startswith("._")]
    candidates = [n for n in names if n.endswith(".pt")]
    if not candidates:
        candidates = [n for n in names if n.rsplit("/", 1)[-1] in MEDIGAN_EXTENSIONLESS_WEIGHTS]
    return candidates


def _read_zip(path: Path):
    with zipfile.ZipFile(path) as archive:
        candidates = _package_weights_names(archive.namelist())
        if len(candidates) != 1:
            raise WeightsError(
                f"{path}: a medigan package zip with exactly one weights file (a .pt file, or "
                f"{' / '.join(MEDIGAN_EXTENSIONLESS_WEIGHTS)}) is expected, found {candidates or 'none'}"
            )
        return _torch_load(io.BytesIO(archive.read(candidates[0])), f"{path}:{candidates[0]}")


def _is_package_zip(path: Path) -> bool:
    """A medigan package zip; a ``torch.save`` file is a zip archive too (``<name>/data.pkl``...)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return not any(n.count("/") == 1 and n.endswith("/data.pkl") for n in archive.namelist())


def _is_tensor_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _describe(obj) -> str:
    if isinstance(obj, dict):
        keys = list(obj)[:6]
        return f"a dict with keys {keys}{' ...' if len(obj) > 6 else ''}"
    return f"a {type(obj).__name__}"


def load_generator_weights(path: str | os.PathLike) -> GeneratorWeights:
    """Load generator weights from ``path`` in any accepted layout (see the module docstring).

    Raises :class:`WeightsError` naming the file and the accepted layouts otherwise.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    obj = _read_zip(path) if _is_package_zip(path) else _torch_load(path, str(path))
    layout = "ours"
    if isinstance(obj, dict) and "generator" in obj and isinstance(obj["generator"], dict):
        inner = obj["generator"]
        if any(k.startswith("main.") for k in inner):
            layout = "medigan"
            obj = {k[len("main.") :]: v for k, v in inner.items() if k.startswith("main.")}
        else:
            layout = "last"
            obj = inner
    elif _is_tensor_dict(obj) and all(k.startswith("model.") for k in obj):
        layout = "medigan-00002"
        obj = {k[len("model.") :]: v for k, v in obj.items()}
        for key in [k for k in obj if k.endswith(".running_mean")]:  # counters of old checkpoints, unused in eval
            obj.setdefault(key[: -len("running_mean")] + "num_batches_tracked", torch.tensor(0, dtype=torch.long))
    if not _is_tensor_dict(obj) or not all(re.fullmatch(r"\d+\.[A-Za-z_]+", k) for k in obj):
        raise WeightsError(
            f"{path}: not a generator checkpoint: found {_describe(obj)}; expected a state_dict of the DCGAN "
            "generator (keys like '0.weight'), our last.pt, a medigan 00005/00006 checkpoint ('generator' "
            "entry with 'main.N.*' keys) or its zip, or the medigan 00002 weights malign_mass_gen ('model.N.*' "
            "keys) or its zip MALIGN_DCGAN.zip"
        )
    return GeneratorWeights(
        state_dict=dict(obj),
        layout=layout,
        decoding=LAYOUT_DECODINGS[layout],
        path=str(path),
        sha256=sha256_of(path),
    )


def load_into(network: torch.nn.Module, weights: GeneratorWeights) -> torch.nn.Module:
    """Load weights into a generator; a wrong architecture raises :class:`WeightsError` saying what
    the network expected and what the file holds."""
    expected = network.state_dict()
    missing = sorted(set(expected) - set(weights.state_dict))
    unexpected = sorted(set(weights.state_dict) - set(expected))
    mismatched = [
        f"{k}: file {tuple(weights.state_dict[k].shape)}, network {tuple(v.shape)}"
        for k, v in expected.items()
        if k in weights.state_dict and weights.state_dict[k].shape != v.shape
    ]
    if missing or unexpected or mismatched:
        details = []
        if mismatched:
            details.append("shape mismatch " + "; ".join(mismatched[:4]))
        if missing:
            details.append(f"missing keys {missing[:6]}")
        if unexpected:
            details.append(f"unexpected keys {unexpected[:6]}")
        raise WeightsError(
            f"{weights.path}: weights of another architecture than the configured generator "
            f"(latent size, ngf): {'; '.join(details)}"
        )
    network.load_state_dict(weights.state_dict)
    return network

"""The one template of every DCGAN-family generator's ``configs/inference.json`` that runs with the
project installed: the repo bundles (``dcgan_bcdr``, ``wgangp_bcdr``, ``dcgan_optimam``) and the
bundles ``medigan-import`` writes. (A packed archive's receiver runs the pinned, project-free
config of :func:`mammoshare.gan.weights.pinned_inference` instead.)

``python -m mammoshare.gan.configs [BUNDLES_DIR]`` rewrites the repo bundles' files from it; a test
checks that they are up to date.
"""

from __future__ import annotations

import json
import sys
from importlib.resources import files
from pathlib import Path
from typing import Any, Sequence

__all__ = ["generator_inference_config", "render_generator_inference", "REPO_GENERATORS", "write_repo_configs", "logging_conf"]

_TEMPLATE = "generator_inference.json"

#: the repo's generator bundles and the geometry their inference.json states
REPO_GENERATORS: dict[str, dict[str, Any]] = {
    "dcgan_bcdr": {},
    "wgangp_bcdr": {},
    "dcgan_optimam": {"latent_size": 200, "ngf": 45, "multipliers": [10, 8, 4, 2, 1], "leaky_slope": 0.2, "decoding": "tanh"},
}


def generator_inference_config(
    latent_size: int = 100,
    ngf: int = 64,
    multipliers: Sequence[int] = (16, 8, 4, 2, 1),
    leaky_slope: float | None = None,
    decoding: str | None = None,
    weights_file: str = "model.pt",
) -> dict[str, Any]:
    """The inference config (a dict) of a DCGAN-family generator of this geometry whose weights are
    ``models/<weights_file>``; ``decoding`` None = the one the checkpoint states (else tanh)."""
    config = json.loads(files(__package__).joinpath("templates", _TEMPLATE).read_text(encoding="utf-8"))
    config.update(latent_size=int(latent_size), ngf=int(ngf), multipliers=[int(m) for m in multipliers],
                  leaky_slope=None if leaky_slope is None else float(leaky_slope), decoding=decoding)
    config["default_checkpoint"] = f"$@bundle_root + '/models/{weights_file}'"
    return config


def render_generator_inference(**geometry) -> str:
    """:func:`generator_inference_config` as the file's text (4-space JSON, final newline)."""
    return json.dumps(generator_inference_config(**geometry), indent=4) + "\n"


def logging_conf() -> bytes:
    """Every bundle's ``configs/logging.conf`` (INFO to standard output, MONAI's model-zoo format):
    written by ``medigan-import`` and by ``unpack`` (a received archive never carries one, since
    ``logging.config.fileConfig`` evaluates its handler arguments)."""
    return files(__package__).joinpath("templates", "logging.conf").read_bytes()


def write_repo_configs(bundles_dir: str | Path) -> list[Path]:
    """Rewrite ``configs/inference.json`` of each of :data:`REPO_GENERATORS` under ``bundles_dir``."""
    written = []
    for name, geometry in REPO_GENERATORS.items():
        path = Path(bundles_dir) / name / "configs" / "inference.json"
        path.write_text(render_generator_inference(**geometry), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for written_path in write_repo_configs(sys.argv[1] if len(sys.argv) > 1 else "bundles"):
        print(f"wrote {written_path}")

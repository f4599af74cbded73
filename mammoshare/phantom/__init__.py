"""Phantom datasets: small, deterministic, clearly labelled synthetic data in the real layouts.

``write_phantoms(out, seed)`` writes ``out/inbreast``, ``out/bcdr``, ``out/cbis-ddsm`` and ``out/mias``; each
root holds a ``PHANTOM_README.txt`` that says the data is synthetic (datalists built from such a
root say ``"phantom": true``).
"""

from __future__ import annotations

import os
from pathlib import Path

from .synth import PHANTOM_NOTICE, PhantomImage, PhantomLesion, synth_mammogram

__all__ = ["PHANTOM_NOTICE", "PhantomImage", "PhantomLesion", "synth_mammogram", "write_phantoms", "PHANTOM_WRITERS"]


def _writers():
    from .bcdr import write_bcdr_phantom
    from .cbis_ddsm import write_cbis_ddsm_phantom
    from .inbreast import write_inbreast_phantom
    from .mias import write_mias_phantom

    return {
        "inbreast": write_inbreast_phantom, "bcdr": write_bcdr_phantom, "cbis-ddsm": write_cbis_ddsm_phantom,
        "mias": write_mias_phantom,
    }


PHANTOM_WRITERS = ("inbreast", "bcdr", "cbis-ddsm", "mias")


def write_phantoms(out: str | os.PathLike, seed: int = 2021, datasets=PHANTOM_WRITERS) -> dict[str, Path]:
    """Write the phantom datasets under ``out``; returns ``{dataset: root}``."""
    writers = _writers()
    out = Path(out)
    return {name: writers[name](out / name, seed=seed) for name in datasets}

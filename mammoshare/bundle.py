"""Helpers for configs run by ``python -m monai.bundle``."""

from __future__ import annotations

import inspect
import os
import sys
from pathlib import Path

__all__ = ["bundle_root", "SCHEMA_FILE"]

#: MONAI's bundle metadata schema, shipped so that validation never needs a download
SCHEMA_FILE = Path(__file__).parent / "schemas" / "meta_schema_20240725.json"


def _root_of(config_root: Path) -> Path:
    config_root = Path(config_root).absolute()
    return config_root.parent if config_root.name == "configs" else config_root


def bundle_root() -> str:
    """The folder of the bundle whose config is being parsed (the parent of its ``configs/``).

    ``monai.bundle run`` does not set ``bundle_root`` and the model-zoo value ``"."`` means the
    working directory; this finds the running ``ConfigWorkflow`` on the call stack (it knows its
    config folder), else the ``--config_file`` of the command line, else the working directory.
    """
    from monai.bundle import ConfigWorkflow

    frame = inspect.currentframe()
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, ConfigWorkflow):
            return str(_root_of(candidate.config_root_path))
        frame = frame.f_back
    argv = sys.argv
    for i, arg in enumerate(argv):
        value = None
        if arg == "--config_file" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--config_file="):
            value = arg.split("=", 1)[1]
        if value:
            first = value.strip("[]'\" ").split(",")[0].strip("'\" ")
            return str(_root_of(Path(first).parent))
    return os.getcwd()

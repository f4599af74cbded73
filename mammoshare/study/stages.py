"""Stages of a study: their records, configuration hashes, logs, and how one stage runs.

Every stage (a datalist, a GAN training, a synthetic set, a classifier cell) lives in its own
folder under the study folder with a ``stage.json`` record::

    {"id": "...", "kind": "cell", "hash": "<sha256 of the config>", "config": {...},
     "status": "running" | "done" | "failed", "started": ..., "finished": ..., "seconds": ...,
     "outputs": {...}, "error": "...", "warnings": [...]}

The config holds everything that determines the stage's result, including the hashes of the stages
it reads (so a changed datalist re-runs everything below it); settings that do not change the
result (device, loader workers) are kept apart in ``runtime``. A stage whose record says ``done``
with the same hash, and whose outputs exist, is reused as it is; any other state of its folder is
cleared and the stage runs again (a GAN training interrupted while ``running`` resumes from its
``last.pt``).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..hashing import sha256_text

__all__ = [
    "STAGE_FILE",
    "RECORD_VERSION",
    "config_hash",
    "read_record",
    "write_json_atomically",
    "record_is_reusable",
    "describe_error",
    "StageError",
    "captured_logs",
    "run_bundle",
    "placement",
    "stage_dir",
]

logger = logging.getLogger(__name__)

STAGE_FILE = "stage.json"
LOG_FILE = "log.txt"
#: bump when a stage's meaning changes incompatibly, so that old records are not reused (2: datalists
#: carry a healthy reserve, runs write training_counts.json)
RECORD_VERSION = 2


def config_hash(config: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a stage config (with the record version)."""
    text = json.dumps({"record_version": RECORD_VERSION, "config": config}, sort_keys=True, default=str)
    return sha256_text(text)


def now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def write_json_atomically(path: Path, data: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def read_record(folder: Path) -> dict | None:
    path = Path(folder) / STAGE_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def stage_dir(study_dir: Path, spec: dict) -> Path:
    folder = (Path(study_dir) / spec["dir"]).absolute()
    if not folder.is_relative_to(Path(study_dir).absolute()):  # never clear anything outside the study
        raise ValueError(f"stage folder {folder} is outside the study folder")
    return folder


def required_outputs(spec: dict) -> list[str]:
    """Files (relative to the stage folder) that a done stage must have."""
    return list(spec.get("required", []))


def record_is_reusable(record: dict | None, spec: dict, folder: Path) -> bool:
    return (
        record is not None
        and record.get("status") == "done"
        and record.get("hash") == spec["hash"]
        and all((folder / name).exists() for name in required_outputs(spec))
    )


# ----------------------------------------------------------------------------------------------
# errors and logs
# ----------------------------------------------------------------------------------------------

class StageError(RuntimeError):
    """A stage's failure with a message that says it all (shown without the exception's type)."""


_WRAPPER_PREFIXES = ("Failed to evaluate", "Failed to instantiate", "Component to instantiate must represent")


def describe_error(error: BaseException) -> str:
    """A clear one-paragraph message: MONAI wraps errors of config expressions in RuntimeErrors
    ("Failed to evaluate ConfigExpression ..."); the message is that of the innermost real error."""
    chain: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        if isinstance(current, StageError):
            break  # our own message already says what failed and why
        if current.__cause__ is not None:
            current = current.__cause__
        else:
            current = None if current.__suppress_context__ else current.__context__
    meaningful = [e for e in chain if not str(e).startswith(_WRAPPER_PREFIXES)]
    root = meaningful[-1] if meaningful else chain[-1]
    message = str(root).strip() or type(root).__name__
    return message if isinstance(root, StageError) else f"{type(root).__name__}: {message}"


class _WarningCollector(logging.Handler):
    def __init__(self, limit: int = 200):
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []
        self.limit = limit

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.messages) < self.limit:
            try:
                self.messages.append(f"{record.name}: {record.getMessage()}")
            except Exception:  # pragma: no cover - a broken log call must not break the stage
                pass


@contextlib.contextmanager
def captured_logs(log_path: Path, console_level: int = logging.ERROR) -> Iterator[_WarningCollector]:
    """Everything logged at INFO and above during a stage goes to ``log_path``; the console
    handlers (the root's, and MONAI's own, which do not propagate) only show ``console_level`` and
    above meanwhile, so that the progress bars stay readable. Python warnings are logged too.
    Restores every logger as it was."""
    root = logging.getLogger()
    file_handler = logging.FileHandler(log_path, encoding="utf-8")
    file_handler.setLevel(logging.INFO)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    collector = _WarningCollector()
    saved_root = (root.level, [(h, h.level) for h in root.handlers])
    saved_loggers = []
    for name, lg in list(logging.Logger.manager.loggerDict.items()):
        if isinstance(lg, logging.Logger) and (name == "monai" or name.startswith("monai.")) and lg.handlers and not lg.propagate:
            saved_loggers.append((lg, list(lg.handlers), lg.propagate))
    try:
        for handler, level in saved_root[1]:
            handler.setLevel(max(level, console_level))
        root.setLevel(logging.INFO)
        root.addHandler(file_handler)
        root.addHandler(collector)
        for lg, _, _ in saved_loggers:  # MONAI's loggers print to stdout themselves: route them through the root
            lg.handlers = []
            lg.propagate = True
        logging.captureWarnings(True)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="parsing config_file")  # MONAI's eval() notice, every run
            warnings.filterwarnings("ignore", message=".*Logging file is set to False")
            yield collector
    finally:
        logging.captureWarnings(False)
        root.removeHandler(file_handler)
        root.removeHandler(collector)
        file_handler.close()
        root.setLevel(saved_root[0])
        for handler, level in saved_root[1]:
            handler.setLevel(level)
        for lg, handlers, propagate in saved_loggers:
            lg.handlers = handlers
            lg.propagate = propagate


def _config_keys(config_files: Sequence[Path]) -> set[str]:
    keys: set[str] = set()
    for config_file in config_files:
        try:
            keys |= set(json.loads(Path(config_file).read_text()))
        except (OSError, json.JSONDecodeError):
            pass
    return keys


def run_bundle(config_file: Path | Sequence[Path], overrides: dict[str, Any], required: tuple[str, ...] = ()) -> None:
    """Run a bundle config in this process, as ``monai.bundle.run(config_file=..., logging_file=False,
    **overrides)`` does; a list of configs is merged the MONAI way (each overrides the ones before,
    e.g. ``[train.json, evaluate.json]``). Overrides of keys that the configs do not have are dropped
    unless ``required``."""
    from monai.bundle import create_workflow

    files = [str(config_file)] if isinstance(config_file, (str, os.PathLike)) else [str(f) for f in config_file]
    keys = _config_keys(files)
    settings = {k: v for k, v in overrides.items() if k in keys or k in required}
    path = list(sys.path)
    try:
        workflow = create_workflow(config_file=files[0] if len(files) == 1 else files, logging_file=False,
                                   **settings)
        workflow.run()
        workflow.finalize()
    finally:
        sys.path[:] = path  # monai.bundle.run puts the bundle folder on sys.path every time


def placement(runtime: dict) -> str:
    """Where a stage runs, for its record and the report: ``"GPU 1 (NVIDIA ...)"`` for a worker pinned
    to a GPU, else the device of this process (``"cpu"``, ``"cuda (NVIDIA ...)"``); a CPU worker of
    a GPU slot (``--gpus`` with ``--device cpu``) says so."""
    import torch

    device = str(runtime.get("device") or ("cuda" if torch.cuda.is_available() else "cpu"))
    name = None
    if device.startswith("cuda") and torch.cuda.is_available():
        try:
            name = torch.cuda.get_device_name(torch.device(device))
        except Exception:  # noqa: BLE001 - a name is only for the report
            name = None
    slot = runtime.get("gpu_slot")
    if not device.startswith("cuda"):
        return f"{device} (worker of the {slot} slot)" if slot else device
    where = slot or device
    return f"{where} ({name})" if name else where

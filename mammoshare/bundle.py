"""Helpers for configs run by ``python -m monai.bundle``."""

from __future__ import annotations

import datetime
import inspect
import os
import sys
import tempfile
import traceback
from pathlib import Path

__all__ = ["bundle_root", "SCHEMA_FILE", "one_line_errors", "project_error", "flag", "FlagError", "claim_output_dir", "OutputDirError", "RUN_OUTPUTS"]

#: set to 1 to print the full traceback of a failed bundle run instead of one line
DEBUG_VARIABLE = "MAMMOSHARE_DEBUG"
_PROJECT_DIRS = tuple(str(Path(__file__).resolve().parent.parent / name) for name in ("mammoshare", "transforms"))

#: MONAI's bundle metadata schema, shipped so that validation never needs a download
SCHEMA_FILE = Path(__file__).parent / "schemas" / "meta_schema_20240725.json"


_TRUE, _FALSE = ("true", "1"), ("false", "0")


class FlagError(ValueError):
    """A boolean option given a value that is not True/False/true/false/1/0."""


def flag(value, name: str) -> bool:
    """A boolean option as the command line gives it -> bool, strictly.

    ``python -m monai.bundle run`` passes ``--resume False`` as False but ``--resume false`` as the
    string "false", which ``bool()`` reads as True. Accepts bools, 0/1 and the strings
    True/False/true/false/1/0; anything else is a :class:`FlagError` naming the option.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise FlagError(f"--{name} {value!r}: give True or False (also true/false/1/0)")


#: what a training run leaves in its output folder; their presence means the folder holds a run
RUN_OUTPUTS = ("model.pt", "last.pt", "model_final.pt", "tensorboard", "snapshots", "previews")


class OutputDirError(FileExistsError):
    """An output folder that holds another run, given without --resume or --overwrite."""


def _holds(path: Path) -> bool:
    return path.is_file() or (path.is_dir() and any(path.iterdir()))


def claim_output_dir(output_dir: str | os.PathLike, resume=False, overwrite=False) -> str:
    """Make ``output_dir`` this run's: refuse a folder that holds another run (see
    :data:`RUN_OUTPUTS`) unless resuming, or clear those outputs with ``overwrite``.

    Returns the folder as a normalised absolute path (what the logs print). A config calls it in
    ``initialize``; files other than :data:`RUN_OUTPUTS` (datalists, phantoms) are never touched.
    """
    resume, overwrite = flag(resume, "resume"), flag(overwrite, "overwrite")
    if resume and overwrite:
        raise OutputDirError("--resume True and --overwrite True contradict each other: give one of them")
    folder = Path(os.path.abspath(os.path.expanduser(output_dir)))
    found = [name for name in RUN_OUTPUTS if _holds(folder / name)]
    if found and not resume:
        if not overwrite:
            raise OutputDirError(
                f"{folder} holds another run ({', '.join(found)}): give --resume True to continue it, "
                "--overwrite True to replace it, or another --output_dir"
            )
        import shutil

        for name in found:
            target = folder / name
            shutil.rmtree(target) if target.is_dir() else target.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder)


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


def _raised_in_project(exc: BaseException) -> bool:
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    return last is not None and str(Path(last.tb_frame.f_code.co_filename).resolve()).startswith(_PROJECT_DIRS)


def project_error(exc: BaseException) -> BaseException | None:
    """The project's own error inside an exception chain (MONAI wraps it as ``Failed to evaluate
    ConfigExpression``, once per nested reference), or None when the failure is not ours."""
    found, seen = None, set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if type(exc).__module__.split(".")[0] in ("mammoshare", "transforms") or _raised_in_project(exc):
            found = exc
        exc = exc.__cause__ or exc.__context__
    return found


def _error_log(text: str) -> Path:
    folder = Path(tempfile.gettempdir()) / "mammoshare-errors"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{datetime.datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}.log"
    path.write_text(text, encoding="utf-8")
    return path


def one_line_errors() -> bool:
    """Make a failing bundle run end with the project's own error message, not a MONAI traceback.

    Put ``"$mammoshare.bundle.one_line_errors()"`` first in a config's ``initialize``. Errors that
    are not the project's (and every error with ``MAMMOSHARE_DEBUG=1``) keep Python's traceback;
    otherwise the full traceback goes to a log file that the first printed line names.
    Returns True (a config expression needs a value).
    """
    previous = sys.excepthook
    if getattr(previous, "_mammoshare", False):
        return True

    def hook(kind, value, tb):
        cause = project_error(value)
        if cause is None or os.environ.get(DEBUG_VARIABLE, "") not in ("", "0"):
            return previous(kind, value, tb)
        log = _error_log("".join(traceback.format_exception(kind, value, tb)))
        print(f"(full traceback: {log}; {DEBUG_VARIABLE}=1 prints it)", file=sys.stderr)
        print(f"error: {cause}", file=sys.stderr)

    hook._mammoshare = True
    sys.excepthook = hook
    return True

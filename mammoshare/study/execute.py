"""Running one study stage: clear its folder, run its kind (:data:`mammoshare.study.kinds.KINDS`)
with its logs captured, and write its record (see :mod:`mammoshare.study.stages`)."""

from __future__ import annotations

import gc
import logging
import shutil
import time
import traceback
from pathlib import Path

from .kinds import KINDS
from .stages import LOG_FILE, STAGE_FILE, captured_logs, describe_error, now, placement, read_record, stage_dir, write_json_atomically

__all__ = ["execute_spec"]

logger = logging.getLogger(__name__)


def _clear(folder: Path, keep: tuple[str, ...] = ()) -> None:
    if folder.exists():
        for child in folder.iterdir():
            if child.name in keep:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    folder.mkdir(parents=True, exist_ok=True)



def execute_spec(spec: dict, study_dir: Path, console_level: int = logging.ERROR) -> dict:
    """Run one stage in this process and write its record; returns the record.

    Never raises for a failure of the stage itself (the record says ``failed`` with the error);
    KeyboardInterrupt leaves the record ``running`` (an interrupted stage, run again next time)."""
    study_dir = Path(study_dir).absolute()
    folder = stage_dir(study_dir, spec)
    previous = read_record(folder)
    resume = (
        spec["kind"] == "gan"
        and previous is not None
        and previous.get("status") == "running"
        and previous.get("hash") == spec["hash"]
        and (folder / "run" / "last.pt").is_file()
    )
    _clear(folder, keep=("run",) if resume else ())
    record = {
        "id": spec["id"],
        "kind": spec["kind"],
        "label": spec.get("label", spec["id"]),
        "hash": spec["hash"],
        "config": spec["config"],
        "runtime": spec.get("runtime", {}),
        "status": "running",
        "started": now(),
        "resumed": resume,
        "ran_on": placement(spec.get("runtime", {})),
    }
    write_json_atomically(folder / STAGE_FILE, record)
    start = time.perf_counter()
    with captured_logs(folder / LOG_FILE, console_level) as collected:
        logger.info("stage %s (%s), config hash %s", spec["id"], spec.get("label", ""), spec["hash"])
        try:
            outputs = KINDS[spec["kind"]](spec, folder, study_dir, resume)
            record.update(status="done", outputs=outputs)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001 - a failed stage is recorded, the study goes on
            record.update(status="failed", error=describe_error(e))
            logging.getLogger(__name__).error("stage %s failed:\n%s", spec["id"], traceback.format_exc())
        finally:
            gc.collect()
    record.update(finished=now(), seconds=round(time.perf_counter() - start, 3), warnings=collected.messages)
    write_json_atomically(folder / STAGE_FILE, record)
    return record

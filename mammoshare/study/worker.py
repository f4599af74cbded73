"""A worker process that runs one study stage: ``python -m mammoshare.study.worker SPEC.json``.

The study starts one per GPU at a time with ``CUDA_VISIBLE_DEVICES`` set to that GPU; the worker
runs the very function that runs a stage in-process (:func:`mammoshare.study.execute.execute_spec`),
which writes the stage record. Exit status 0 when a record was written (done or failed).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m mammoshare.study.worker SPEC.json", file=sys.stderr)
        return 2
    job = json.loads(Path(argv[0]).read_text())
    from .execute import execute_spec

    record = execute_spec(job["spec"], Path(job["study_dir"]), int(job.get("console_level", 40)))
    return 0 if record.get("status") in ("done", "failed") else 1


if __name__ == "__main__":
    sys.exit(main())

"""What the benchmark scripts share: a temporary work folder that goes away even when the run is
killed, and one progress line over the cases."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["TMP_PREFIX", "work_folder", "Progress"]

TMP_PREFIX = "mammoshare-bench-"


def _stale_folders() -> Iterator[Path]:
    """Folders of earlier runs whose process is gone (killed with SIGKILL)."""
    for folder in Path(tempfile.gettempdir()).glob(TMP_PREFIX + "*"):
        try:
            pid = int((folder / "pid").read_text())
            os.kill(pid, 0)
        except ProcessLookupError:
            yield folder
        except (OSError, ValueError):
            if time.time() - folder.stat().st_mtime > 24 * 3600:
                yield folder


@contextlib.contextmanager
def work_folder() -> Iterator[Path]:
    for stale in _stale_folders():
        shutil.rmtree(stale, ignore_errors=True)
    folder = Path(tempfile.mkdtemp(prefix=TMP_PREFIX))
    (folder / "pid").write_text(str(os.getpid()))
    previous = {}

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        previous[sig] = signal.signal(sig, stop)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class Progress:
    """One progress line over the benchmark cases (tqdm), naming the case that runs."""

    def __init__(self, total: int):
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc="benchmarks", unit="case", dynamic_ncols=True, file=sys.stderr)

    @contextlib.contextmanager
    def case(self, name: str):
        self.bar.set_postfix_str(name, refresh=True)
        try:
            yield
        finally:
            self.bar.update(1)

    def close(self):
        self.bar.close()

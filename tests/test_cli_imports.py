"""``mammoshare --help`` is instant: building the command line's parser imports no torch."""

import os
import subprocess
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
COMMANDS = ("phantom", "datalist", "grid", "pack", "verify", "unpack", "keygen", "medigan-import", "medigan-export",
            "study", "audit")


def _heavy_modules_after(code: str) -> list[str]:
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in ('torch', 'monai', 'transforms') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.split()


def test_help_lists_every_command():
    result = subprocess.run([sys.executable, "-m", "mammoshare", "--help"], cwd=REPO, env=ENV, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert all(command in result.stdout for command in COMMANDS)


def test_building_the_parser_imports_no_torch():
    assert _heavy_modules_after("from mammoshare.cli import build_parser\nbuild_parser()") == []

"""A bundle run that fails on one of the project's own errors ends with one line naming the file."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mammoshare.bundle import project_error
from mammoshare.datalist import DatalistError

REPO = Path(__file__).resolve().parents[1]


def _wrapped(inner: BaseException) -> RuntimeError:
    """``inner`` wrapped twice, the way nested MONAI config expressions wrap it."""
    try:
        try:
            try:
                raise inner
            except BaseException as e:
                raise RuntimeError("Failed to evaluate ConfigExpression: @datalist") from e
        except RuntimeError as e:
            raise RuntimeError("Failed to evaluate ConfigExpression: @train#dataset") from e
    except RuntimeError as outer:
        return outer


def test_project_error_is_found_under_monai_wrappers():
    inner = DatalistError("x.json: datalist not found")
    assert project_error(_wrapped(inner)) is inner


def test_an_error_outside_the_project_is_not_ours():
    assert project_error(_wrapped(ZeroDivisionError("division by zero"))) is None


def _run_with_missing_datalist(tmp_path, debug: bool):
    env = {**os.environ, "MAMMOSHARE_DEBUG": "1" if debug else "0"}
    missing = tmp_path / "missing.json"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(REPO / "bundles/dcgan_bcdr/configs/train.json"),
           "--datalist", str(missing), "--output_dir", str(tmp_path / "out")]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300), missing


@pytest.mark.parametrize("debug", [False, True])
def test_a_failing_bundle_run_ends_with_one_line(tmp_path, debug):
    result, missing = _run_with_missing_datalist(tmp_path, debug)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if debug:
        assert "Traceback" in result.stderr
        return
    assert "Traceback" not in result.stderr and "ConfigExpression" not in result.stderr
    assert lines[-1].startswith("error: ") and str(missing) in lines[-1]
    assert sum(str(missing) in line for line in lines if line.startswith("error: ")) == 1
    log = Path(lines[-2].split("full traceback: ", 1)[1].split(";", 1)[0])
    assert "Traceback" in log.read_text()


@pytest.mark.parametrize("value, expected", [(True, True), (False, False), ("True", True), ("false", False),
                                             ("FALSE", False), ("true", True), (1, True), (0, False), ("1", True), ("0", False)])
def test_flags_parse_strictly(value, expected):
    from mammoshare.bundle import flag

    assert flag(value, "resume") is expected


@pytest.mark.parametrize("value", ["no", "yes", "", None, 2, "fasle", 0.5])
def test_a_flag_that_is_not_a_boolean_is_an_error_naming_the_option(value):
    from mammoshare.bundle import FlagError, flag

    with pytest.raises(FlagError, match="--resume"):
        flag(value, "resume")

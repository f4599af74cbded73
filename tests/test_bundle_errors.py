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


def test_an_output_folder_with_another_run_is_refused_unless_resume_or_overwrite(tmp_path):
    from mammoshare.bundle import OutputDirError, claim_output_dir

    out = tmp_path / "run"
    assert claim_output_dir(out) == str(out)  # a new folder is made
    (out / "datalist.json").write_text("{}")
    assert claim_output_dir(out, resume="false") == str(out)  # files that are not a run's outputs are fine
    (out / "last.pt").write_bytes(b"x")
    (out / "tensorboard").mkdir()
    (out / "tensorboard" / "events.1").write_bytes(b"x")
    with pytest.raises(OutputDirError, match=r"last\.pt, tensorboard.*--resume True.*--overwrite True"):
        claim_output_dir(out, resume="false")
    assert claim_output_dir(out, resume=True) == str(out) and (out / "last.pt").is_file()
    with pytest.raises(OutputDirError, match="contradict"):
        claim_output_dir(out, resume=True, overwrite=True)
    claim_output_dir(out, overwrite="true")
    assert not (out / "last.pt").exists() and not (out / "tensorboard").exists() and (out / "datalist.json").is_file()
    assert claim_output_dir(str(out) + "/../run") == str(out)  # normalised


def _train_cmd(out: Path, datalist: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(REPO / "bundles/dcgan_bcdr/configs/train.json"),
            "--datalist", str(datalist), "--output_dir", str(out), "--max_epochs", "1", "--ngf", "4", "--ndf", "4",
            "--batch_size", "4", "--device", "cpu", "--num_workers", "0", *extra]


def test_resume_false_is_false_and_a_second_run_does_not_clobber_the_first(phantom_root, tmp_path):
    from mammoshare.datalist import write_datalist
    from mammoshare.readers import build_datalist

    datalist = write_datalist(build_datalist("bcdr", phantom_root / "bcdr", task="mass")[0], tmp_path / "bcdr_mass.json")
    out = tmp_path / "run"
    first = subprocess.run(_train_cmd(out, datalist), capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    weights = (out / "model.pt").read_bytes()
    for resume in ("false",):  # the strings that bool() reads as True; the parsing itself is tested above
        again = subprocess.run(_train_cmd(out, datalist, "--resume", resume), capture_output=True, text=True, cwd=tmp_path, timeout=600)
        assert again.returncode != 0
        last = [line for line in again.stderr.splitlines() if line.strip()][-1]
        assert last.startswith(f"error: {out} holds another run") and "--overwrite True" in last
    bad = subprocess.run(_train_cmd(out, datalist, "--resume", "no"), capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert bad.returncode != 0 and bad.stderr.strip().splitlines()[-1] == "error: --resume 'no': give True or False (also true/false/1/0)"
    assert (out / "model.pt").read_bytes() == weights  # nothing was touched
    resumed = subprocess.run(_train_cmd(out, datalist, "--resume", "true", "--max_epochs", "2"), capture_output=True, text=True,
                             cwd=tmp_path, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stderr + resumed.stdout

"""README.md is a contract: its ```bash blocks run as written, in order, on the phantom data.

The blocks run one after another in one temporary folder, each as ``bash -e``, the way a user
pastes them; nothing is rewritten but what these two visible tables say:

- ``DATA``: the real datasets' roots become the phantom datasets that the README's first quick
  start writes (``mammoshare phantom --out phantoms``);
- ``TINY``: every command line that contains a key gets the value appended (the option given
  twice: MONAI's command line, like argparse, keeps the last), so networks are tiny, runs last one
  epoch and samples are few.

The folder gets a copy of the repository's ``bundles/`` (the README's main job writes into
``bundles/wgangp_bcdr/models/``; the checkout stays clean) and ``HOME`` is the folder's ``home/``
(keys go to ``~/.mammoshare``). ``mammoshare audit`` and ``pack`` read the copied bundle's own
``configs/inference.json``, which no command line reaches: its ``ngf`` becomes the ``TINY`` width.
A block preceded by ``<!-- readme-test: skip (reason) -->`` is reported as skipped; one preceded by
``<!-- readme-test: xfail (bug) -->`` is expected to fail because of that bug.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

DATA = {  # README path -> phantom dataset (written by the README's `mammoshare phantom --out phantoms`)
    "/data/INbreast": "phantoms/inbreast",
    "/data/BCDR": "phantoms/bcdr",
    "/data/CBIS-DDSM": "phantoms/cbis-ddsm",
    "/data/mini-MIAS": "phantoms/mias",
}
GAN = "--ngf 4 --ndf 4 --batch_size 4 --max_epochs 1 --device cpu"
DDPM_NET = "--channels '[8,8,8,8]' --attention_levels '[False,False,False,False]' --num_head_channels 8 --norm_num_groups 8"
TINY = {  # a command line containing the key -> appended options (applied in this order)
    "bundles/wgangp_bcdr/configs/train.json": GAN,
    "bundles/dcgan_bcdr/configs/train.json": GAN,
    "bundles/wgangp_bcdr/configs/inference.json": "--ngf 4 --num_samples 8 --device cpu",
    "bundles/dcgan_bcdr/configs/inference.json": "--ngf 4 --num_samples 8 --device cpu",
    "received/wgangp_bcdr/configs/inference.json": "--num_samples 8 --device cpu",
    "bundles/ddpm_bcdr/configs/train.json": f"{DDPM_NET} --num_train_timesteps 20 --max_epochs 1 --batch_size 16 --preview_steps 2 --preview_per_class 2 --device cpu",
    "bundles/ddpm_bcdr/configs/inference.json": f"{DDPM_NET} --num_train_timesteps 20 --num_inference_steps 2 --num_samples 4 --device cpu",
    "bundles/classifier_inbreast/configs/train.json": "--max_epochs 1 --epoch_length 2 --synthetic_count 8 --device cpu",
    # the evaluation runs "['.../train.json','.../evaluate.json']" (an override of train.json): it
    # gets the line above too, whose training keys it does not run, then this one
    "bundles/classifier_inbreast/configs/evaluate.json": "--n_bootstrap 20 --device cpu",
    "--resume True": "--max_epochs 2",  # one epoch more than the one-epoch run it continues
    "mammoshare audit": "--num_samples 32 --features pixel",
    # a one-epoch generator of width 4, audited on a few dozen phantom patches, may fail the audit
    # gate: what it measures means nothing here; the acceptance is recorded in the signed manifest
    "mammoshare pack": "--accept-risk 'README test: a one-epoch tiny generator on phantom data'",
}
BUNDLE_INFERENCE_NGF = 4  # the copied GAN bundles' configs/inference.json, as trained with TINY

MARKER = re.compile(r"<!-- readme-test: (skip|xfail) \((.*?)\) -->\s*\n")
BLOCK = re.compile(r"(?:<!-- readme-test: (skip|xfail) \((.*?)\) -->\s*\n)?```bash\n(.*?)```", re.S)


def readme_blocks() -> list[dict]:
    """The README's bash blocks in order: ``{"line", "code", "mark", "reason"}``."""
    text = (REPO / "README.md").read_text()
    blocks = []
    for m in BLOCK.finditer(text):
        blocks.append({"line": text.count("\n", 0, m.start(3)), "code": m.group(3), "mark": m.group(1), "reason": m.group(2)})
    return blocks


def tiny_script(code: str) -> str:
    """A block with ``DATA`` substituted and ``TINY`` appended to each command (continuations joined)."""
    lines = []
    for line in code.replace("\\\n", " ").splitlines():
        command, comment = re.match(r"(.*?)(\s+#\s.*)?$", line).groups()
        for real, phantom in DATA.items():
            command = re.sub(re.escape(real) + r"(?=[\s/]|$)", phantom, command)
        if not command.lstrip().startswith("#"):
            command += "".join(f" {extra}" for key, extra in TINY.items() if key in command)
        lines.append(command + (comment or ""))
    return "\n".join(lines) + "\n"


def _git_status() -> str | None:
    try:
        result = subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=REPO, capture_output=True, text=True)
    except OSError:
        return None
    if result.returncode != 0:
        return None
    # the blocks' Python processes import the checkout's modules and may compile them: that is no output
    return "\n".join(line for line in result.stdout.splitlines() if "__pycache__" not in line)


BLOCKS = readme_blocks()


class _Session:
    """Runs the blocks in order, once, in one folder; remembers each result."""

    def __init__(self, work: Path):
        self.work, self.results, self.next = work, {}, 0
        shutil.copytree(REPO / "bundles", work / "bundles", ignore=shutil.ignore_patterns("models"))
        for bundle in (work / "bundles").iterdir():
            (bundle / "models").mkdir(exist_ok=True)
            config = bundle / "configs" / "inference.json"
            if bundle.name in ("wgangp_bcdr", "dcgan_bcdr"):
                config.write_text(json.dumps({**json.loads(config.read_text()), "ngf": BUNDLE_INFERENCE_NGF}, indent=4))
        (work / "home").mkdir()
        self.env = {
            **os.environ,
            "HOME": str(work / "home"),
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
            "MPLBACKEND": "Agg",
            "CUDA_VISIBLE_DEVICES": "",
        }

    def run_through(self, index: int) -> subprocess.CompletedProcess | None:
        while self.next <= index:
            block = BLOCKS[self.next]
            if block["mark"] != "skip":
                self.results[self.next] = subprocess.run(
                    ["bash", "-euo", "pipefail", "-c", tiny_script(block["code"])], cwd=self.work, env=self.env,
                    capture_output=True, text=True, timeout=600,
                )
            self.next += 1
        return self.results.get(index)


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    status = _git_status()
    yield _Session(tmp_path_factory.mktemp("readme"))
    assert _git_status() == status, "running the README's blocks changed the checkout"


def test_readme_blocks_are_found_and_marked_with_reasons():
    assert len(BLOCKS) >= 15
    text = (REPO / "README.md").read_text()
    # every marker stands right before a block, and states its reason
    assert len(MARKER.findall(text)) == sum(b["mark"] is not None for b in BLOCKS)
    assert all(b["reason"].strip() for b in BLOCKS if b["mark"])
    # the sender's private key is written outside the checkout
    assert "keygen --out ~/" in text and "keygen --out keys/" not in text


def test_tiny_overrides_are_appended_to_commands_only():
    script = tiny_script(
        "python -m monai.bundle run --config_file bundles/dcgan_bcdr/configs/train.json \\\n"
        "    --datalist x.json --max_epochs 1000 --resume True   # a comment\n"
        "mammoshare datalist --dataset bcdr --root /data/BCDR --out datalists/bcdr_mass.json\n"
    )
    first, second = script.splitlines()
    assert first.endswith(f"--max_epochs 1000 --resume True {GAN} --max_epochs 2   # a comment")
    assert second == "mammoshare datalist --dataset bcdr --root phantoms/bcdr --out datalists/bcdr_mass.json"


def test_tiny_overrides_reach_the_evaluation_override():
    """The README evaluates with train.json + evaluate.json; those lines still get the tiny bootstrap."""
    evaluations = [line for block in BLOCKS for line in tiny_script(block["code"]).splitlines()
                   if "configs/evaluate.json" in line]
    assert evaluations
    for line in evaluations:
        assert "configs/train.json','bundles/classifier_inbreast/configs/evaluate.json']" in line, line
        assert line.endswith("--n_bootstrap 20 --device cpu"), line


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[f"line{b['line']}" for b in BLOCKS])
def test_readme_block_runs_as_written(session, index):
    block = BLOCKS[index]
    if block["mark"] == "skip":
        pytest.skip(f"README.md line {block['line']}: {block['reason']}")
    result = session.run_through(index)
    output = f"README.md line {block['line']}:\n{tiny_script(block['code'])}\n--- output ---\n" + (result.stdout + result.stderr)[-6000:]
    if block["mark"] == "xfail":
        if result.returncode != 0:
            pytest.xfail(f"README.md line {block['line']}: {block['reason']}")
        pytest.fail(f"the block marked xfail ({block['reason']}) passes now: remove its marker\n{output}")
    assert result.returncode == 0, output


def test_readme_outputs_are_ignored_by_git(session):
    """Everything the blocks wrote (run from the repository root) is covered by .gitignore."""
    session.run_through(len(BLOCKS) - 1)
    written = []
    for path in session.work.rglob("*"):
        relative = path.relative_to(session.work)
        if path.is_dir() or relative.parts[0] == "home" or (REPO / relative).exists():
            continue
        written.append(relative.as_posix())
    assert written
    result = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], cwd=REPO, input="\n".join(written),
                            capture_output=True, text=True)
    if result.returncode == 128:
        pytest.skip(f"git check-ignore unavailable: {result.stderr.strip()}")
    not_ignored = sorted(set(written) - set(result.stdout.splitlines()))
    assert not not_ignored, f"README outputs that git would offer to commit: {not_ignored[:20]}"


def test_real_data_quick_start_outputs(session):
    """What the real-data quick start's blocks wrote (on the mini-MIAS and CBIS-DDSM phantoms)."""
    session.run_through(len(BLOCKS) - 1)
    work = session.work
    mias = json.loads((work / "datalists/mias_mass.json").read_text())
    assert mias["dataset"] == "mias" and mias["task"] == "mass" and mias["phantom"]
    cbis = json.loads((work / "datalists/cbis_mass.json").read_text())
    assert cbis["split_method"] == "official"
    assert (work / "mias_mass_grid.png").stat().st_size > 0
    synthetic = json.loads((work / "synthetic/dcgan_mias/synthetic_datalist.json").read_text())
    assert synthetic["task"] == "mass" and len(synthetic["training"]) > 0
    for run in ("cnn_cbis", "cnn_cbis_dcgan"):
        metrics = json.loads((work / "eval" / run / "metrics.json").read_text())
        assert metrics["n_patches"] == len(cbis["test"]) and {"auroc", "auprc"} <= set(metrics)

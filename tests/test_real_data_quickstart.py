"""The README's real-data quick start, command for command, on the mini-MIAS and CBIS-DDSM phantoms.

The commands are read from the README (so the documented path cannot rot); only the dataset roots
become the phantoms' and the bundle runs get tiny overrides (small networks, one epoch, few samples).
They run in this process (``mammoshare.cli.main``, ``monai.bundle.run`` with the arguments parsed
as the command line would), which saves an interpreter start per command.
"""

import ast
import json
import re
import shlex
from pathlib import Path

from monai.bundle import run as bundle_run

from mammoshare.cli import main as mammoshare_main

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Quick start on real data"
ROOTS = {"/data/mini-MIAS": "mias", "/data/CBIS-DDSM": "cbis-ddsm"}
TINY = {
    "dcgan_bcdr/configs/train.json": {"ngf": "4", "ndf": "4", "batch_size": "4", "max_epochs": "1", "device": "cpu"},
    "dcgan_bcdr/configs/inference.json": {"ngf": "4", "num_samples": "8", "device": "cpu"},
    "classifier_inbreast/configs/train.json": {
        "max_epochs": "1", "epoch_length": "2", "synthetic_count": "8", "device": "cpu",
    },
    "classifier_inbreast/configs/evaluate.json": {"n_bootstrap": "20", "device": "cpu"},
}


def readme_commands() -> list[list[str]]:
    text = (REPO / "README.md").read_text()
    section = text[text.index(SECTION) :]
    section = section[: section.index("\n## ", 1)]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                commands.append(shlex.split(line))
    return commands


def _value(text: str):
    try:
        return ast.literal_eval(text)  # as monai's command line parses a value
    except (ValueError, SyntaxError):
        return text


def _run_tiny(command: list[str], phantoms: Path) -> None:
    command = [str(phantoms / ROOTS[a]) if a in ROOTS else a for a in command]
    if command[0] == "mammoshare":
        assert mammoshare_main(command[1:]) == 0, command
        return
    assert command[:4] == ["python", "-m", "monai.bundle", "run"], command
    args = {k.lstrip("-"): v for k, v in zip(command[4::2], command[5::2])}
    config = args.pop("config_file")
    args.update(next(v for k, v in TINY.items() if config.endswith(k)))
    bundle_run(config_file=str(REPO / config), logging_file=False, **{k: _value(v) for k, v in args.items()})


def test_readme_lists_the_quick_start():
    commands = readme_commands()
    kinds = [c[1] if c[0] == "mammoshare" else Path(c[c.index("--config_file") + 1]).name for c in commands]
    assert kinds == ["datalist", "grid", "train.json", "inference.json", "datalist", "train.json", "train.json",
                     "evaluate.json", "evaluate.json"]
    assert all("--task" not in c for c in commands if c[0] == "python")  # the task comes from the datalist
    text = (REPO / "README.md").read_text()
    assert "http://peipa.essex.ac.uk/info/mias.html" in text
    assert "https://www.cancerimagingarchive.net/collection/cbis-ddsm/" in text


def test_readme_quick_start_runs_on_the_phantoms(phantom_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    work = tmp_path
    for command in readme_commands():
        _run_tiny(command, phantom_root)
    mias = json.loads((work / "datalists/mias_mass.json").read_text())
    assert mias["dataset"] == "mias" and mias["task"] == "mass" and mias["phantom"]
    cbis = json.loads((work / "datalists/cbis_mass.json").read_text())
    assert cbis["split_method"] == "official"
    assert (work / "mias_mass_grid.png").stat().st_size > 0
    synthetic = json.loads((work / "synthetic/dcgan_mias/synthetic_datalist.json").read_text())
    assert synthetic["task"] == "mass" and len(synthetic["training"]) == 8
    for run in ("cnn_cbis", "cnn_cbis_dcgan"):
        metrics = json.loads((work / "eval" / run / "metrics.json").read_text())
        assert metrics["n_patches"] == len(cbis["test"]) and {"auroc", "auprc"} <= set(metrics)

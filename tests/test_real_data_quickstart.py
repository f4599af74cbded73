"""The README's real-data quick start, command for command, on the mini-MIAS and CBIS-DDSM phantoms.

The commands themselves run in ``tests/test_readme.py`` (with every other README block, and the
checks of what they wrote); this file checks that the section lists the quick start.
"""

import ast
import re
import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Quick start on real data"
ROOTS = {"/data/mini-MIAS": "mias", "/data/CBIS-DDSM": "cbis-ddsm"}
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


def _last_config(config_file: str) -> str:
    """The name of a ``--config_file``'s last config: of ``"['train.json','evaluate.json']"`` (a
    list merged in order, the last one overriding) ``evaluate.json``."""
    files = ast.literal_eval(config_file) if config_file.startswith("[") else [config_file]
    return Path(files[-1]).name


def test_readme_lists_the_quick_start():
    commands = readme_commands()
    kinds = [c[1] if c[0] == "mammoshare" else _last_config(c[c.index("--config_file") + 1]) for c in commands]
    assert kinds == ["datalist", "grid", "train.json", "inference.json", "datalist", "train.json", "train.json",
                     "evaluate.json", "evaluate.json"]
    assert all("--task" not in c for c in commands if c[0] == "python")  # the task comes from the datalist
    text = (REPO / "README.md").read_text()
    assert "http://peipa.essex.ac.uk/info/mias.html" in text
    assert "https://www.cancerimagingarchive.net/collection/cbis-ddsm/" in text

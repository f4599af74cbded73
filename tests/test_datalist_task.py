"""The bundles take the task from the datalist when --task is not given; a conflict is an error."""

import json
from pathlib import Path

import pytest
from monai.bundle import ConfigParser

from mammoshare.datalist import DatalistError
from mammoshare.obtain import obtain_datalist
from mammoshare.readers import datalist_task

REPO = Path(__file__).resolve().parents[1]
TRAIN_CONFIGS = [
    "bundles/dcgan_bcdr/configs/train.json",
    "bundles/wgangp_bcdr/configs/train.json",
    "bundles/classifier_inbreast/configs/train.json",
    # evaluate.json overrides train.json, the model-zoo way: both, in this order
    ["bundles/classifier_inbreast/configs/train.json", "bundles/classifier_inbreast/configs/evaluate.json"],
]


def _datalist(path: Path, task: str | None) -> Path:
    data = {"dataset": "mias", "phantom": True, "seed": 0, "training": [], "validation": [], "test": []}
    if task is not None:
        data["task"] = task
    path.write_text(json.dumps(data))
    return path


def _parsed(config: str | list[str], **overrides):
    parser = ConfigParser()
    parser.read_config([REPO / name for name in ([config] if isinstance(config, str) else config)])
    parser.update(overrides)
    return parser


def test_datalist_task(tmp_path):
    assert datalist_task(None) == "mass" and datalist_task(None, default="all") == "all"
    assert datalist_task(_datalist(tmp_path / "all.json", "all")) == "all"
    assert datalist_task(_datalist(tmp_path / "old.json", None)) == "mass"  # a datalist without a task
    with pytest.raises(DatalistError, match="unknown task 'calc'"):
        datalist_task(_datalist(tmp_path / "bad.json", "calc"))
    with pytest.raises(DatalistError, match="missing.json: datalist not found"):
        datalist_task(tmp_path / "missing.json")


@pytest.mark.parametrize("config", TRAIN_CONFIGS)
def test_bundle_task_follows_the_datalist(tmp_path, config):
    all_lesions = str(_datalist(tmp_path / "all.json", "all"))
    assert _parsed(config).get_parsed_content("task") == "mass"  # no datalist: the default
    assert _parsed(config, datalist=all_lesions).get_parsed_content("task") == "all"
    assert _parsed(config, datalist=all_lesions, task="mass").get_parsed_content("task") == "mass"


def test_wgangp_epochs_follow_the_datalist_task(tmp_path):
    parser = _parsed(TRAIN_CONFIGS[1], datalist=str(_datalist(tmp_path / "all.json", "all")))
    assert parser.get_parsed_content("max_epochs") == 2700


def test_a_task_that_conflicts_with_the_datalist_is_an_error(tmp_path):
    path = _datalist(tmp_path / "all.json", "all")
    data, source = obtain_datalist(path, task=datalist_task(path))
    assert data["task"] == "all" and source == path
    with pytest.raises(DatalistError, match=r"all\.json is a datalist of the task 'all', but this run is for the task 'mass'"):
        obtain_datalist(path, task="mass")

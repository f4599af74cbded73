"""Multi-GPU training the MONAI way, on CPU: torchrun with 2 processes and gloo runs every training
bundle's train.json + multi_gpu_train.json; a short run trains, writes one checkpoint, resumes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mammoshare.datalist import write_datalist
from mammoshare.gan.data import StreamBatchSampler
from mammoshare.networks import DCGANGenerator, PatchCNN

REPO = Path(__file__).resolve().parents[1]
TINY_GAN = ["--ngf", "4", "--ndf", "4", "--batch_size", "4", "--device", "cpu", "--preview_every", "1"]


def _torchrun(bundle: str, tmp_path: Path, *args: str) -> str:
    configs = REPO / "bundles" / bundle / "configs"
    files = f"['{configs / 'train.json'}','{configs / 'multi_gpu_train.json'}']"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "monai.bundle", "run", "--config_file", files, *args]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
               OMP_NUM_THREADS="1")
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    return log


@pytest.fixture(scope="module")
def datalists(phantom_root, tmp_path_factory):
    from mammoshare.readers import build_datalist

    folder = tmp_path_factory.mktemp("multi_gpu_data")
    bcdr, _ = build_datalist("bcdr", phantom_root / "bcdr", task="mass")
    inbreast, _ = build_datalist("inbreast", phantom_root / "inbreast", task="mass")
    return {"bcdr": write_datalist(bcdr, folder / "bcdr.json"), "inbreast": write_datalist(inbreast, folder / "inbreast.json")}


def test_dcgan_trains_checkpoints_and_resumes_on_two_processes(datalists, tmp_path):
    out = tmp_path / "run"
    common = ["--datalist", str(datalists["bcdr"]), "--subsets", "['training']", "--output_dir", str(out), *TINY_GAN]
    log = _torchrun("dcgan_bcdr", tmp_path, *common, "--max_epochs", "1")
    assert "process 0 of 2 (gloo backend) on cpu" in log and "process 1 of 2 (gloo backend) on cpu" in log
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["epoch"] == 1 and state["iteration"] == 2  # 18 patches / (4 per batch x 2 processes)
    assert set(state["generator"]) == set(DCGANGenerator(ngf=4).state_dict())  # no DDP "module." prefix
    assert sorted(p.name for p in (out / "previews").iterdir()) == ["epoch_0001.png"]  # previews: process 0 only
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 1  # TensorBoard: process 0 only
    first = torch.load(out / "model.pt", weights_only=True)

    log = _torchrun("dcgan_bcdr", tmp_path, *common, "--max_epochs", "2", "--resume", "True")
    assert log.count("resumed from") == 2  # both processes restore the same state
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["epoch"] == 2 and state["iteration"] == 4
    second = torch.load(out / "model.pt", weights_only=True)
    assert not all(torch.equal(first[k], second[k]) for k in first)  # the resumed epoch trained


def test_wgangp_trains_on_two_processes(datalists, tmp_path):
    out = tmp_path / "run"
    _torchrun("wgangp_bcdr", tmp_path, "--datalist", str(datalists["bcdr"]), "--output_dir", str(out), *TINY_GAN,
              "--max_epochs", "1")
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["engine_state"]["generator_updates"] == 1 and state["engine_state"]["critic_updates"] == 5
    assert (out / "model.pt").is_file()


def test_classifier_trains_and_resumes_on_two_processes(datalists, tmp_path):
    out = tmp_path / "run"
    common = ("--datalist", str(datalists["inbreast"]), "--output_dir", str(out), "--device", "cpu")
    log = _torchrun("classifier_inbreast", tmp_path, *common, "--max_epochs", "1")
    assert log.count("saved final checkpoint") == 1  # checkpoints: process 0 only
    weights = torch.load(out / "model.pt", weights_only=True)
    assert set(weights) == set(PatchCNN().state_dict())
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 1
    log = _torchrun("classifier_inbreast", tmp_path, *common, "--max_epochs", "2", "--resume", "True")
    assert log.count("resumed from") == 2  # every process restores the same state
    last = torch.load(out / "last.pt", weights_only=True)
    assert last["epoch"] == 2 and set(last["network"]) == set(PatchCNN().state_dict())  # the network unwrapped from DDP


def test_stream_sampler_shards_one_stream_over_processes():
    whole = StreamBatchSampler(40, 4, seed=3)
    shards = [StreamBatchSampler(40, 4, seed=3, num_replicas=2, rank=r) for r in (0, 1)]
    for epoch in (1, 2):
        for s in [whole, *shards]:
            s.set_epoch(epoch)
        mine = [list(s) for s in shards]
        assert len(mine[0]) == len(mine[1]) == 5 and len(whole) == 10
        interleaved = [b for pair in zip(*mine) for b in pair]
        assert interleaved == list(whole)  # together: the one-process stream of this epoch, batch for batch
    with pytest.raises(ValueError, match="rank 2 is not in"):
        StreamBatchSampler(40, 4, num_replicas=2, rank=2)


def test_multi_gpu_configs_exist_for_every_training_bundle():
    for bundle in ("dcgan_bcdr", "wgangp_bcdr", "classifier_inbreast"):
        config = json.loads((REPO / "bundles" / bundle / "configs" / "multi_gpu_train.json").read_text())
        assert "mammoshare.distributed.init_process_group" in " ".join(config["initialize"])
        assert "rank_handlers" in json.dumps(config)

"""MONAI's own bundle tooling passes on every bundle (temporary copies, tiny-width weights)."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, ckpt_export, verify_net_in_out

from mammoshare.bundle import SCHEMA_FILE

REPO = Path(__file__).resolve().parents[1]
BUNDLES = sorted(p.parent.parent.name for p in (REPO / "bundles").glob("*/configs/metadata.json"))
#: small widths where the network takes them; other keys are ignored by configs that lack them
TINY = {"ngf": 4}
DIFFUSION_BUNDLES = ("ddpm_bcdr",)


def _copy(bundle: str, tmp_path: Path) -> Path:
    target = tmp_path / bundle
    shutil.copytree(REPO / "bundles" / bundle, target, ignore=shutil.ignore_patterns("models", "synthetic", "eval", "predictions"))
    (target / "models").mkdir()
    return target


def _tiny_weights(bundle_dir: Path) -> Path:
    parser = ConfigParser()
    parser.read_config(bundle_dir / "configs" / "inference.json")
    for key, value in TINY.items():
        if key in parser.get():
            parser[key] = value
    parser["bundle_root"] = str(bundle_dir)
    network = parser.get_parsed_content("network_def")
    path = bundle_dir / "models" / "model.pt"
    path.parent.mkdir(exist_ok=True)
    torch.save(network.state_dict(), path)
    return path


def test_every_bundle_is_found():
    assert {"dcgan_bcdr", "wgangp_bcdr", "classifier_inbreast"} <= set(BUNDLES)


@pytest.mark.parametrize("bundle", BUNDLES)
def test_layout_and_version_rules(bundle):
    root = REPO / "bundles" / bundle
    for required in ("configs/metadata.json", "configs/inference.json", "configs/logging.conf", "docs/README.md", "LICENSE"):
        assert (root / required).is_file(), required
    meta = json.loads((root / "configs" / "metadata.json").read_text())
    assert re.fullmatch(r"\d+\.\d+\.\d+", meta["version"])
    assert meta["version"] in meta["changelog"]  # model-zoo rule: the version is in the changelog
    assert "bundles/*/models/*" in (REPO / ".gitignore").read_text().splitlines()  # weights are never committed


@pytest.mark.parametrize("bundle", BUNDLES)
def test_verify_metadata_with_the_shipped_schema(bundle, tmp_path):
    copy = _copy(bundle, tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "verify_metadata", "--meta_file", str(copy / "configs" / "metadata.json"),
         "--filepath", str(SCHEMA_FILE)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 0 and "verified with no error" in result.stdout + result.stderr, result.stderr[-2000:]


@pytest.mark.parametrize("bundle", BUNDLES)
def test_verify_net_in_out_and_ckpt_export(bundle, tmp_path):
    copy = _copy(bundle, tmp_path)
    overrides = {k: v for k, v in TINY.items() if k in json.loads((copy / "configs" / "inference.json").read_text())}
    meta, config = str(copy / "configs" / "metadata.json"), str(copy / "configs" / "inference.json")
    if bundle in DIFFUSION_BUNDLES:
        # a denoising UNet also takes the timestep and the class; MONAI's ckpt_export traces or scripts
        # a one-input network only, so the diffusion bundle's shared form is its safetensors weights
        extra = {"timesteps": torch.zeros(1, dtype=torch.long), "class_labels": torch.zeros(1, dtype=torch.long)}
        verify_net_in_out(net_id="network_def", meta_file=meta, config_file=config, device="cpu", bundle_root=str(copy),
                          extra_forward_args=extra, **overrides)
        return
    verify_net_in_out(net_id="network_def", meta_file=meta, config_file=config, device="cpu", bundle_root=str(copy), **overrides)
    weights = _tiny_weights(copy)
    exported = copy / "models" / "model.ts"
    ckpt_export(net_id="network_def", filepath=str(exported), ckpt_file=str(weights), meta_file=meta,
                config_file=config, bundle_root=str(copy), **overrides)
    assert exported.is_file()
    scripted = torch.jit.load(str(exported))
    fmt = json.loads(Path(meta).read_text())["network_data_format"]
    shape = [2, fmt["inputs"]["image"]["num_channels"], *fmt["inputs"]["image"]["spatial_shape"]]
    parser = ConfigParser()
    parser.read_config(config)
    parser.update({"bundle_root": str(copy), **overrides})
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(weights, weights_only=True))
    network.eval()
    x = torch.rand(*shape)
    with torch.no_grad():
        assert torch.allclose(scripted(x), network(x), atol=1e-5)

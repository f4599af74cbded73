"""The medigan bridge: published packages -> bundles (import), bundles -> packages medigan runs (export).

The packages are built here in the three published layouts (facts: reference/paper-facts.md); their
``__init__.py`` writes a marker file and raises when executed, which must never happen.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from PIL import Image
from torch import nn

from mammoshare.bundle import SCHEMA_FILE
from mammoshare.exchange.cli import add_medigan_export_parser, add_medigan_import_parser
from mammoshare.exchange.medigan import importer as bridge
from mammoshare.exchange.medigan.exporter import export_medigan_package
from mammoshare.exchange.medigan.importer import import_medigan_package
from mammoshare.exchange.medigan.models import OFFLINE_ENV, MediganPackageError, normalise_model_id
from mammoshare.datalist import SYNTHETIC_DATALIST
from mammoshare.gan.inference import MissingWeightsError, generate_synthetic_patches
from mammoshare.gan.weights import load_generator_weights

REPO = Path(__file__).resolve().parents[1]
OPTIMAM = dict(nz=200, ngf=45, mults=(10, 8, 4, 2, 1), leaky=0.2)  # the published 00002 width
BCDR_TINY = dict(nz=100, ngf=8, mults=(16, 8, 4, 2, 1), leaky=None)  # 00005/00006 layout, small width
OPTIMAM_TINY = dict(nz=200, ngf=4, mults=(10, 8, 4, 2, 1), leaky=0.2)
ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


# ------------------------------------------------------------------------------------------------
# reference generators and packages, built from torch layers only


def reference_generator(nz: int, ngf: int, mults: tuple, leaky: float | None, seed: int) -> nn.Sequential:
    """The published architecture, written independently of mammoshare.networks; weights scaled so
    that images use the whole grey range, BatchNorm statistics non-trivial."""
    torch.manual_seed(seed)
    channels = [nz] + [ngf * m for m in mults]
    layers: list[nn.Module] = []
    for i, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:])):
        layers.append(nn.ConvTranspose2d(c_in, c_out, 4, 1 if i == 0 else 2, 0 if i == 0 else 1, bias=False))
        layers.append(nn.BatchNorm2d(c_out))
        layers.append(nn.ReLU(True) if leaky is None else nn.LeakyReLU(leaky, True))
    layers += [nn.ConvTranspose2d(channels[-1], 1, 4, 2, 1, bias=False), nn.Tanh()]
    net = nn.Sequential(*layers)
    for module in net:
        if isinstance(module, nn.ConvTranspose2d):
            taps = 16 if module.stride[0] == 1 else 4
            module.weight.data.normal_(0.0, (3.0 / (module.in_channels * taps)) ** 0.5)
        elif isinstance(module, nn.BatchNorm2d):
            module.weight.data.uniform_(0.8, 1.2)
            module.bias.data.uniform_(-0.1, 0.1)
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    return net.eval()


def reference_images(net: nn.Sequential, latents: torch.Tensor, decoding: str) -> np.ndarray:
    """uint8 images the published package would make: tanh -> (out + 1) / 2, clip01 -> clip(out, 0, 1)."""
    with torch.no_grad():
        out = net(latents[:, :, None, None])
    x = ((out + 1) / 2).clamp(0, 1) if decoding == "tanh" else out.clamp(0, 1)
    return (x[:, 0] * 255).round().clamp(0, 255).to(torch.uint8).numpy()


def trap_init(marker: Path) -> str:
    """A package __init__.py that leaves a marker and fails loudly if anything executes it."""
    return (
        "import pathlib\n"
        f"pathlib.Path({str(marker)!r}).write_text('executed')\n"
        "raise RuntimeError('the medigan package __init__.py was executed')\n"
    )


def _torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def bcdr_checkpoint(net: nn.Sequential, embed: bool) -> dict:
    """The 00005/00006 layout: {"generator": {main.N.*, first_layers.{0,1,3,4}.*, [embed_nn.*]}}."""
    state = net.state_dict()
    inner = {f"first_layers.{k}": v.clone() for k, v in state.items() if k.split(".")[0] in ("0", "1", "3", "4")}
    inner.update({f"main.{k}": v for k, v in state.items()})
    if embed:
        inner.update({f"embed_nn.0.{k}": v for k, v in nn.Linear(1, 100).state_dict().items()})
        inner.update({f"embed_nn.1.{k}": v for k, v in nn.BatchNorm1d(100).state_dict().items()})
    return {"generator": inner}


def write_zip(path: Path, files: dict[str, bytes | str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def package_00002(folder: Path, net: nn.Sequential, marker: Path) -> Path:
    weights = {f"model.{k}": v for k, v in net.state_dict().items()}
    return write_zip(folder / "MALIGN_DCGAN.zip", {"__init__.py": trap_init(marker), "malign_mass_gen": _torch_bytes(weights)})


def package_00005(folder: Path, net: nn.Sequential, marker: Path) -> Path:
    root = "00005_DCGAN_MMG_MASS_ROI"
    return write_zip(
        folder / f"{root}.zip",
        {f"{root}/__init__.py": trap_init(marker), f"{root}/500.pt": _torch_bytes(bcdr_checkpoint(net, embed=True))},
    )


def package_00006(folder: Path, net: nn.Sequential, marker: Path) -> Path:
    root = folder / "00006_WGANGP_MMG_MASS_ROI"
    root.mkdir(parents=True)
    (root / "__init__.py").write_text(trap_init(marker))
    torch.save(bcdr_checkpoint(net, embed=False), root / "10000.pt")
    return root


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def bundle_network(bundle: Path) -> tuple[nn.Module, dict]:
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(load_generator_weights(bundle / "models" / "model.safetensors").state_dict)
    return network.eval(), parser.get()


def pngs(folder: Path) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))])


def latents(n: int, nz: int, seed: int) -> torch.Tensor:
    return torch.randn(n, nz, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    root = tmp_path_factory.mktemp("packages")
    marker = root / "EXECUTED"
    nets = {
        "00002": reference_generator(**OPTIMAM, seed=2),
        "00005": reference_generator(**BCDR_TINY, seed=5),
        "00006": reference_generator(**BCDR_TINY, seed=6),
        "00002_tiny": reference_generator(**OPTIMAM_TINY, seed=12),
    }
    paths = {
        "00002": package_00002(root / "p2", nets["00002"], marker),
        "00005": package_00005(root / "p5", nets["00005"], marker),
        "00006": package_00006(root / "p6", nets["00006"], marker),
        "00002_tiny": package_00002(root / "p2tiny", nets["00002_tiny"], marker),
    }
    modules_before = set(sys.modules)
    yield {"nets": nets, "paths": paths, "marker": marker, "root": root}
    # nothing of the packages ever ran or was imported
    assert not marker.exists(), "a package __init__.py was executed"
    new = {m for m in set(sys.modules) - modules_before if "MALIGN" in m or "MMG_MASS" in m or m.startswith("models")}
    assert not new, new


def _valid_metadata(bundle: Path) -> dict:
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    jsonschema.validate(meta, json.loads(SCHEMA_FILE.read_text()))
    return meta


# ------------------------------------------------------------------------------------------------
# import


def test_import_00002_zip_gives_the_published_generator(packages, tmp_path):
    zip_path = packages["paths"]["00002"]
    bundle = import_medigan_package(zip_path, tmp_path / "optimam")
    for required in ("configs/metadata.json", "configs/generator.json", "configs/inference.json", "configs/logging.conf",
                     "docs/README.md", "LICENSE", "models/model.safetensors"):
        assert (bundle / required).is_file(), required
    meta = _valid_metadata(bundle)
    origin = meta["origin"]
    assert origin["medigan_model_id"] == "00002_DCGAN_MMG_MASS_ROI" and origin["layout"] == "medigan-00002"
    assert origin["package_file"] == "MALIGN_DCGAN.zip" and origin["package_sha256"] == sha256(zip_path)
    assert origin["model_sha256"] == sha256(bundle / "models" / "model.safetensors")
    assert not (bundle / "models" / "model.pt").exists()  # re-saved as safetensors, no pickle
    assert meta["network_data_format"]["inputs"]["image"]["num_channels"] == 200
    assert meta["network_data_format"]["inputs"]["image"]["spatial_shape"] == [1, 1]
    assert meta["network_data_format"]["outputs"]["pred"]["spatial_shape"] == [128, 128]
    card = (bundle / "docs" / "README.md").read_text()
    assert "00002_DCGAN_MMG_MASS_ROI" in card and "MIT" in card and "OPTIMAM" in card and "Alyafi" in card

    network, config = bundle_network(bundle)
    assert (config["latent_size"], config["ngf"], config["multipliers"], config["leaky_slope"], config["decoding"]) == (
        200, 45, [10, 8, 4, 2, 1], 0.2, "tanh")
    # our layout, as safetensors: plain tensors with the Sequential's keys
    weights = load_generator_weights(bundle / "models" / "model.safetensors")
    assert weights.layout == "safetensors" and "0.weight" in weights.state_dict
    spec = json.loads((bundle / "configs" / "generator.json").read_text())
    assert spec["family"] == "dcgan" and spec["parameters"]["widths"] == [450, 360, 180, 90, 45] and spec["output_decoding"] == "tanh"
    z = latents(4, 200, seed=1)
    reference = packages["nets"]["00002"]
    with torch.no_grad():
        assert torch.equal(network(z), reference(z[:, :, None, None]))
    # the weights loader reads the published zip and the bare weights file too (layout medigan-00002)
    for source in (zip_path, _extract(zip_path, "malign_mass_gen", tmp_path)):
        published = load_generator_weights(source)
        assert published.layout == "medigan-00002" and published.decoding == "tanh"
        assert all(torch.equal(published.state_dict[k], v) for k, v in weights.state_dict.items())


def _extract(zip_path: Path, name: str, folder: Path) -> Path:
    target = folder / name
    with zipfile.ZipFile(zip_path) as archive:
        target.write_bytes(archive.read(name))
    return target


def test_imported_00002_bundle_runs_with_monai_from_another_directory(packages, tmp_path):
    bundle = import_medigan_package(packages["paths"]["00002"], tmp_path / "optimam")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(bundle / "configs" / "inference.json"),
               "--device", "cpu", "--num_samples", "3", "--seed", "4", "--output_dir", str(tmp_path / "out")]
    result = subprocess.run(command, cwd=elsewhere, capture_output=True, text=True, timeout=300, env=ENV)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    expected = reference_images(packages["nets"]["00002"], latents(3, 200, seed=4), "tanh")
    assert np.array_equal(pngs(tmp_path / "out"), expected)
    datalist = json.loads((tmp_path / "out" / SYNTHETIC_DATALIST).read_text())
    assert datalist["generator"]["name"] == "dcgan_optimam"
    assert datalist["generator"]["weights"][0]["decoding"] == "tanh"


def test_import_00005_zip_keeps_the_clip_decoding(packages, tmp_path):
    zip_path = packages["paths"]["00005"]
    bundle = import_medigan_package(zip_path, tmp_path / "b5")
    meta = _valid_metadata(bundle)
    assert meta["origin"]["medigan_model_id"] == "00005_DCGAN_MMG_MASS_ROI"  # detected: it carries embed_nn
    assert meta["origin"]["weights_file"] == "00005_DCGAN_MMG_MASS_ROI/500.pt"
    assert meta["origin"]["package_sha256"] == sha256(zip_path)
    assert "Szafranowska" in (bundle / "docs" / "README.md").read_text()
    network, config = bundle_network(bundle)
    assert (config["latent_size"], config["ngf"], config["leaky_slope"], config["decoding"]) == (100, 8, None, "clip01")
    datalist = generate_synthetic_patches(
        network, 5, tmp_path / "out", seed=7, default_checkpoint=bundle / "models" / "model.pt",
        generator_name=meta["name"], generator_version=meta["version"], decoding=config["decoding"], progress=False,
    )
    expected = reference_images(packages["nets"]["00005"], latents(5, 100, seed=7), "clip01")
    assert np.array_equal(pngs(datalist.parent), expected)
    assert json.loads(datalist.read_text())["generator"]["weights"][0]["decoding"] == "clip01"


def test_import_00006_folder(packages, tmp_path):
    folder = packages["paths"]["00006"]
    bundle = import_medigan_package(folder, tmp_path / "b6")
    meta = _valid_metadata(bundle)
    origin = meta["origin"]
    assert origin["medigan_model_id"] == "00006_WGANGP_MMG_MASS_ROI" and origin["package_kind"] == "folder"
    assert origin["package_sha256"] is None and origin["weights_sha256"] == sha256(folder / "10000.pt")
    network, config = bundle_network(bundle)
    assert config["decoding"] == "clip01"
    z = latents(3, 100, seed=0)
    with torch.no_grad():
        assert torch.equal(network(z), packages["nets"]["00006"](z[:, :, None, None]))


def test_install_into_an_existing_bundle_evaluates_nothing(packages, tmp_path):
    """medigan-import into an existing bundle reads its configs as JSON only: a trap expression in
    its network_def (run by MONAI's parser, which the import once used) never runs."""
    copy = tmp_path / "dcgan_optimam"
    shutil.copytree(REPO / "bundles" / "dcgan_optimam", copy, ignore=shutil.ignore_patterns("model.pt", "synthetic"))
    marker = tmp_path / "CONFIG_EVALUATED"
    config = json.loads((copy / "configs" / "inference.json").read_text())
    config["network_def"]["ngf"] = f"$__import__('pathlib').Path({str(marker)!r}).write_text('ran') and 45"
    config["trap"] = f"$__import__('pathlib').Path({str(marker)!r}).write_text('ran')"
    (copy / "configs" / "inference.json").write_text(json.dumps(config))
    before = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    import_medigan_package(packages["paths"]["00002"], copy)
    assert not marker.exists()
    assert all(p.read_bytes() == data for p, data in before.items())  # nothing of the bundle's own changed
    added = sorted(p.relative_to(copy).as_posix() for p in copy.rglob("*") if p.is_file() and p not in before)
    assert added == ["models/model.safetensors", "models/origin.json"]


def test_install_into_the_shipped_optimam_bundle(packages, tmp_path):
    shipped = REPO / "bundles" / "dcgan_optimam"
    _valid_metadata(shipped)
    assert not (shipped / "configs" / "train.json").exists()  # inference only
    copy = tmp_path / "dcgan_optimam"
    shutil.copytree(shipped, copy, ignore=shutil.ignore_patterns("models", "synthetic"))  # not a user's install
    (copy / "models").mkdir()
    config_before = (copy / "configs" / "inference.json").read_bytes()
    with pytest.raises(MissingWeightsError, match="inference-only.*mammoshare medigan-import"):  # no weights shipped
        generate_synthetic_patches(nn.Identity(), 1, tmp_path / "none",
                                   default_checkpoint=copy / "models" / "model.pt", generator_name="x", generator_version="0")
    zip_path = packages["paths"]["00002"]
    assert import_medigan_package(zip_path, copy) == copy
    assert (copy / "configs" / "inference.json").read_bytes() == config_before
    meta = _valid_metadata(copy)
    assert meta == _valid_metadata(shipped)  # only the files the import owns are written
    origin = json.loads((copy / "models" / "origin.json").read_text())
    assert origin["package_sha256"] == sha256(zip_path) and origin["model_sha256"] == sha256(copy / "models" / "model.safetensors")
    network, _ = bundle_network(copy)  # the shipped network_def takes the published tensors
    z = latents(2, 200, seed=3)
    with torch.no_grad():
        assert torch.equal(network(z), packages["nets"]["00002"](z[:, :, None, None]))
    # the published zip also works directly as --checkpoint of the shipped bundle
    meta_shipped = json.loads((shipped / "configs" / "metadata.json").read_text())
    datalist = generate_synthetic_patches(
        network, 2, tmp_path / "direct", seed=3, checkpoint=zip_path, generator_name=meta_shipped["name"],
        generator_version=meta_shipped["version"], decoding="tanh", progress=False,
    )
    assert np.array_equal(pngs(datalist.parent), reference_images(packages["nets"]["00002"], z, "tanh"))
    assert json.loads(datalist.read_text())["generator"]["weights"][0]["layout"] == "medigan-00002"
    with pytest.raises(MediganPackageError, match="--force"):
        import_medigan_package(zip_path, copy)
    import_medigan_package(zip_path, copy, overwrite=True)
    # a BCDR package does not fit the OPTIMAM bundle
    with pytest.raises(MediganPackageError, match="does not fit"):
        import_medigan_package(packages["paths"]["00005"], copy, overwrite=True)


# ------------------------------------------------------------------------------------------------
# errors


def test_unknown_layout_wrong_shapes_and_missing_weights(packages, tmp_path):
    marker = packages["marker"]
    unknown = write_zip(tmp_path / "unknown.zip", {"__init__.py": trap_init(marker), "weights.pt": _torch_bytes({"foo": torch.zeros(2)})})
    with pytest.raises(MediganPackageError, match=r"unknown\.zip:weights\.pt: unknown medigan weights layout"):
        import_medigan_package(unknown, tmp_path / "x1")

    state = {f"model.{k}": v for k, v in packages["nets"]["00002_tiny"].state_dict().items()}
    state["model.4.running_mean"] = torch.zeros(7)  # BatchNorm of the wrong width
    wrong = write_zip(tmp_path / "MALIGN_DCGAN.zip", {"__init__.py": trap_init(marker), "malign_mass_gen": _torch_bytes(state)})
    with pytest.raises(MediganPackageError, match=r"MALIGN_DCGAN\.zip:malign_mass_gen: wrong tensor shapes.*4\.running_mean"):
        import_medigan_package(wrong, tmp_path / "x2")

    chain = {f"model.{k}": v for k, v in packages["nets"]["00002_tiny"].state_dict().items()}
    chain["model.3.weight"] = torch.zeros(33, 32, 4, 4)  # the second conv does not continue the first
    broken = write_zip(tmp_path / "broken" / "MALIGN_DCGAN.zip", {"__init__.py": trap_init(marker), "malign_mass_gen": _torch_bytes(chain)})
    with pytest.raises(MediganPackageError, match=r"broken/MALIGN_DCGAN\.zip:malign_mass_gen: wrong tensor shapes"):
        import_medigan_package(broken, tmp_path / "x3")

    empty = write_zip(tmp_path / "empty.zip", {"__init__.py": trap_init(marker), "README.md": "no weights"})
    with pytest.raises(MediganPackageError, match=r"empty\.zip: a medigan package with exactly one weights file.*none"):
        import_medigan_package(empty, tmp_path / "x4")

    unsafe = tmp_path / "unsafe.pt"
    torch.save({"generator": {"main.0.weight": Path("code")}}, unsafe)  # not plain tensors: refused unpickled
    with pytest.raises(MediganPackageError, match=r"unsafe\.pt: the pickle names pathlib.*refused unread"):
        import_medigan_package(unsafe, tmp_path / "x5")

    with pytest.raises(MediganPackageError, match="00002_DCGAN_MMG_MASS_ROI, not of 00005"):
        import_medigan_package(packages["paths"]["00002_tiny"], tmp_path / "x6", model_id="5")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("x")
    with pytest.raises(MediganPackageError, match="neither empty nor a bundle"):
        import_medigan_package(packages["paths"]["00002_tiny"], tmp_path / "full")
    with pytest.raises(MediganPackageError, match="unsupported medigan model id"):
        normalise_model_id("7")
    assert normalise_model_id("2") == normalise_model_id("00002") == "00002_DCGAN_MMG_MASS_ROI"
    assert not any((tmp_path / f"x{i}").exists() for i in range(1, 7))  # nothing half-made


def _cli(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mammoshare")
    sub = parser.add_subparsers(dest="command", required=True)
    add_medigan_import_parser(sub)
    add_medigan_export_parser(sub)
    return parser.parse_args(list(argv))


def test_model_id_offline_gives_a_clear_error_without_trying(monkeypatch, tmp_path, capsys):
    def forbidden(*args, **kwargs):
        raise AssertionError("network or subprocess used")

    monkeypatch.setattr(bridge.socket, "create_connection", forbidden)
    monkeypatch.setattr(bridge.subprocess, "run", forbidden)
    monkeypatch.setenv(OFFLINE_ENV, "1")
    args = _cli("medigan-import", "--model-id", "00002", "--out", str(tmp_path / "b"))
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert "00002_DCGAN_MMG_MASS_ROI" in err and "MALIGN_DCGAN.zip" in err and "zenodo.org" in err and OFFLINE_ENV in err
    # no environment variable, no network: the probe says so and nothing is downloaded
    monkeypatch.delenv(OFFLINE_ENV)
    monkeypatch.setattr(bridge, "_network_available", lambda *a, **k: False)
    args = _cli("medigan-import", "--model-id", "6", "--out", str(tmp_path / "b"))
    assert args.func(args) == 2
    assert "no network access" in capsys.readouterr().err
    args = _cli("medigan-import", "--out", str(tmp_path / "b"))
    assert args.func(args) == 2
    assert not (tmp_path / "b").exists()


# ------------------------------------------------------------------------------------------------
# export, run by medigan itself


_MEDIGAN_SCRIPT = """
import json, socket, sys
def _no_network(*args, **kwargs):
    raise RuntimeError("network use")
socket.socket.connect = _no_network
socket.create_connection = _no_network
import numpy as np
from medigan import Generators
generators = Generators()
summary = {}
for model_id in sys.argv[1:]:
    images = generators.generate(model_id=model_id, num_samples=3, save_images=False, install_dependencies=False, seed=5)
    np.save(model_id + ".npy", np.stack(images))
    generators.generate(model_id=model_id, num_samples=3, save_images=True, install_dependencies=False,
                        output_path="png_" + model_id, seed=5)
    none = generators.generate(model_id=model_id, num_samples=0, save_images=False, install_dependencies=False)
    summary[model_id] = {"n": len(images), "shape": list(images[0].shape), "dtype": str(images[0].dtype), "zero": len(none)}
print(json.dumps(summary))
"""


def test_export_runs_in_medigan_offline(packages, tmp_path):
    bcdr = import_medigan_package(packages["paths"]["00005"], tmp_path / "bcdr")  # ReLU, clip01
    optimam = import_medigan_package(packages["paths"]["00002_tiny"], tmp_path / "optimam")  # LeakyReLU, tanh
    exported = {}
    for bundle, model_id in ((bcdr, "mammoshare_test_bcdr"), (optimam, "mammoshare_test_optimam")):
        args = _cli("medigan-export", str(bundle), "--out", str(tmp_path / "export"), "--model-id", model_id)
        assert args.func(args) == 0
        package = tmp_path / "export" / model_id
        assert {p.name for p in package.iterdir()} >= {"__init__.py", "generator.pt", "README.md", "LICENSE", "metadata.json"}
        imported = {
            alias.name.split(".")[0]
            for node in ast.walk(ast.parse((package / "__init__.py").read_text()))
            if isinstance(node, (ast.Import, ast.ImportFrom))
            for alias in (node.names if isinstance(node, ast.Import) else [argparse.Namespace(name=node.module)])
        }
        assert imported <= {"os", "numpy", "torch", "PIL"}, imported
        exported[model_id] = bundle
    with pytest.raises(MediganPackageError, match="exist"):
        export_medigan_package(bcdr, tmp_path / "export", "mammoshare_test_bcdr")
    with pytest.raises(MediganPackageError, match="no dots|letters, digits"):
        export_medigan_package(bcdr, tmp_path / "export2", "bad.id")

    # medigan's working directory: config/global.json = the exported entries (one global.json for both),
    # plus an entry whose package_link is the package folder instead of the zip
    config = json.loads((tmp_path / "export" / "global.json").read_text())
    assert set(config) == set(exported)
    entry = config["mammoshare_test_bcdr"]
    assert entry["execution"]["package_link"] == str((tmp_path / "export" / "mammoshare_test_bcdr.zip").absolute())
    assert {"execution", "selection", "description"} <= set(entry)
    folder_entry = json.loads(json.dumps(entry))
    folder_entry["execution"]["package_link"] = str(tmp_path / "export" / "mammoshare_test_bcdr")
    config["mammoshare_test_folder"] = folder_entry
    exported["mammoshare_test_folder"] = bcdr
    work = tmp_path / "medigan_work"
    (work / "config").mkdir(parents=True)
    (work / "config" / "global.json").write_text(json.dumps(config))
    result = subprocess.run([sys.executable, "-c", _MEDIGAN_SCRIPT, *exported], cwd=work, capture_output=True, text=True,
                            timeout=300, env=ENV)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])

    for model_id, bundle in exported.items():
        assert summary[model_id] == {"n": 3, "shape": [128, 128], "dtype": "uint8", "zero": 0}
        # our own generator, same latents (seed 5), same decoding
        network, config_ = bundle_network(bundle)
        meta = json.loads((bundle / "configs" / "metadata.json").read_text())
        ours = generate_synthetic_patches(
            network, 3, tmp_path / "ours" / model_id, seed=5, default_checkpoint=bundle / "models" / "model.pt",
            generator_name=meta["name"], generator_version=meta["version"], decoding=config_["decoding"], progress=False,
        ).parent
        expected = pngs(ours)
        assert np.array_equal(np.load(work / f"{model_id}.npy"), expected)
        written = sorted((work / f"png_{model_id}").glob("*.png"))
        assert [p.name for p in written] == [f"batch_0_synthetic_{i:05d}.png" for i in range(3)]
        assert np.array_equal(np.stack([np.asarray(Image.open(p)) for p in written]), expected)
        assert "SYNTHETIC" in Image.open(written[0]).text["Description"]
    # the BCDR package decodes clip01: about half its pixels are black, unlike the tanh one
    assert (np.load(work / "mammoshare_test_bcdr.npy") == 0).mean() > 0.2

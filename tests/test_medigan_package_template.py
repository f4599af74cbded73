"""The exported medigan package's ``__init__.py`` is a real module: imported and run here on a tiny generator."""

from __future__ import annotations

import ast
import importlib.util

import numpy as np
import torch
from PIL import Image

from mammoshare.exchange.medigan.templates import PACKAGE_INIT, render_package_init, template_text
from mammoshare.gan.weights import FAMILIES, GeneratorSpec, build_generator, decode_output


def _tiny_spec(decoding: str) -> GeneratorSpec:
    parameters = FAMILIES["dcgan"].check_parameters(
        {"latent_size": 4, "widths": [6, 3], "out_channels": 1, "activation": "leaky_relu", "leaky_slope": 0.2,
         "conv_bias": False}, "tiny")
    return GeneratorSpec("dcgan", parameters, decoding)


def _load(path, name):
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def test_rendered_package_generates_what_the_project_generates(tmp_path):
    for decoding in ("tanh", "clip01"):
        spec = _tiny_spec(decoding)
        network = build_generator(spec)
        torch.manual_seed(0)
        for p in network.parameters():
            p.data.normal_(0, 0.5)
        weights = tmp_path / f"{decoding}.pt"
        torch.save(network.state_dict(), weights)
        text = render_package_init({"NAME": "tiny", "VERSION": "0.1.0", "LATENT_SIZE": 4, "DECODING": decoding,
                                    "LAYERS": spec.family_impl.layers(spec.parameters)})
        imported = {a.name.split(".")[0] for n in ast.walk(ast.parse(text)) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module.split(".")[0] for n in ast.walk(ast.parse(text)) if isinstance(n, ast.ImportFrom)}
        assert imported <= {"os", "numpy", "torch", "PIL"}, imported
        path = tmp_path / f"pkg_{decoding}.py"
        path.write_text(text)
        package = _load(path, f"pkg_{decoding}")
        images = package.generate(str(weights), 3, str(tmp_path / "unused"), False, seed=5)
        latents = torch.randn(3, 4, 1, 1, generator=torch.Generator().manual_seed(5))
        with torch.no_grad():
            ours = (decode_output(network(latents), decoding)[:, 0] * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()
        assert len(images) == 3 and images[0].shape == (16, 16) and images[0].dtype == np.uint8
        assert np.array_equal(np.stack(images), ours)
        paths = package.generate(str(weights), 2, str(tmp_path / f"png_{decoding}"), True, seed=5)
        assert len(paths) == 2 and "SYNTHETIC" in Image.open(paths[0]).text["Description"]
        assert package.generate(str(weights), 0, str(tmp_path), False) == []


def test_template_module_itself_imports_and_refuses_unknown_layers(tmp_path):
    path = tmp_path / "template.py"
    path.write_text(template_text(PACKAGE_INIT))
    module = _load(path, "template_as_shipped")
    assert module.LAYERS == [] and isinstance(module.build_generator(), torch.nn.Sequential)
    module.LAYERS = [{"_target_": "os.system", "command": "true"}]
    try:
        module.build_generator()
    except ValueError as e:
        assert "unknown layer" in str(e)
    else:
        raise AssertionError("an unknown layer was built")

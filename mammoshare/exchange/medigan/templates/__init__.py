"""Files the medigan bridge writes: the exported package's ``__init__.py`` (:mod:`.package_init` for
a GAN, :mod:`.diffusion_package_init` for a diffusion model: real modules whose generator values
:func:`render_package_init` writes in) and the script that fetches a package through medigan
(``fetch_package.py``)."""

from __future__ import annotations

import re
from importlib.resources import files

__all__ = ["render_package_init", "template_text", "PACKAGE_INIT", "PACKAGE_VALUES", "DIFFUSION_PACKAGE_INIT", "DIFFUSION_PACKAGE_VALUES"]

PACKAGE_INIT = "package_init.py"
#: the names of the package's values, in the order they are written
PACKAGE_VALUES = ("NAME", "VERSION", "LATENT_SIZE", "DECODING", "LAYERS")
DIFFUSION_PACKAGE_INIT = "diffusion_package_init.py"
DIFFUSION_PACKAGE_VALUES = ("NAME", "VERSION", "DECODING", "IMAGE_SIZE", "NETWORK", "CLASS_NAMES", "TRAINING_SCHEDULER",
                            "NUM_TRAIN_TIMESTEPS", "SAMPLER", "NUM_INFERENCE_STEPS")
_VALUES = {PACKAGE_INIT: PACKAGE_VALUES, DIFFUSION_PACKAGE_INIT: DIFFUSION_PACKAGE_VALUES}
_BLOCK = re.compile(r"(# --- the generator's values: .*?\n)(.*?)(# --- end of the generator's values ---\n)", re.S)


def template_text(name: str) -> str:
    """A template file of this folder, as installed."""
    return files(__package__).joinpath(name).read_text(encoding="utf-8")


def render_package_init(values: dict, template: str = PACKAGE_INIT) -> str:
    """The package's ``__init__.py``: ``template`` (:data:`PACKAGE_INIT` or
    :data:`DIFFUSION_PACKAGE_INIT`) with ``values`` (every name of its :data:`PACKAGE_VALUES` /
    :data:`DIFFUSION_PACKAGE_VALUES`, Python literals) written into its values block."""
    names = _VALUES[template]
    if set(values) != set(names):
        raise ValueError(f"the package's values are {list(names)}, got {sorted(values)}")
    text = template_text(template)
    block = _BLOCK.search(text)
    if block is None:
        raise ValueError(f"{template}: its values block is missing; reinstall mammoshare")
    lines = [f"{key} = {values[key]!r}\n" for key in names if key != "LAYERS"]
    if "LAYERS" in names:
        lines.append("#: the generator, layer by layer (a torch.nn.Sequential; state_dict keys 0.weight, 1.running_mean...)\n")
        lines.append("LAYERS = [\n" + "".join(f"    {layer!r},\n" for layer in values["LAYERS"]) + "]\n")
    return text[: block.start(2)] + "".join(lines) + text[block.end(2):]

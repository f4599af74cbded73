"""Generator weights, in one place: reading, recognising, describing, building and decoding.

Every part of the project that touches generator weights goes through this module: training's
exports, :mod:`mammoshare.gan.inference`, ``mammoshare pack`` / ``verify`` / ``unpack`` and the
medigan bridge.

Families. A generator is described declaratively by ``configs/generator.json``
(:class:`GeneratorSpec`): a *family* from :data:`FAMILIES` and that family's parameters, the image
size and channels it makes and its output decoding. Each family (:class:`GeneratorFamily`) checks
its parameters against fixed ranges *before* anything is built, lists the tensors (names, shapes)
its weights must hold, builds the network from torch layers, recognises its parameters from a
``state_dict``'s shapes, and renders the pinned ``configs/inference.json`` from a fixed template
whose SHA-256 it knows (:func:`pinned_inference`). Two families exist: ``dcgan``
(:class:`DCGANFamily`, a layer list of torch modules) and ``diffusion_unet``
(:class:`DiffusionUNetFamily`, MONAI's ``DiffusionModelUNet`` with its noise schedule and sampler);
a new one is one more subclass passed to :func:`register_family`, with its template under
``mammoshare/gan/templates/``.

Files. Shared weights are safetensors (:func:`read_safetensors`: header size cap, tensor count,
rank and element limits, dtype allow-list, offsets that tile the file exactly; nothing is
unpickled). The project's own checkpoints (``model.pt``, snapshots, ``last.pt``) and the published
medigan checkpoints are pickles: they are read by :func:`read_pickled_weights` only, the ONE place
where a pickle is read, a restricted loader (size caps, the torch file's records checked, every
pickle opcode scanned against an allow-list of the globals a tensor checkpoint needs, then
``torch.load(weights_only=True)``).

Layouts :func:`load_generator_weights` accepts:

- ``safetensors``: a plain ``state_dict`` as safetensors (the shared form);
- ``ours``: a plain ``state_dict`` of :class:`~mammoshare.networks.DCGANGenerator` (keys ``0.weight``,
  ``1.running_mean``...): ``model.pt`` and ``snapshots/epoch_XXXX.pt``; decoded as ``(out + 1) / 2``;
- ``last``: our full training state ``last.pt``; its ``generator`` entry is used;
- ``medigan``: the study's published 00005 / 00006 checkpoints (``500.pt``, ``10000.pt``): a dict whose
  ``generator`` entry has ``main.N.*`` keys (plus a duplicate ``first_layers.*`` and an unused
  ``embed_nn.*``), or the medigan zip holding it; decoded as ``clip(out, 0, 1)``;
- ``medigan-00002``: the OPTIMAM DCGAN's ``malign_mass_gen`` (``model.N.*`` keys) or its zip
  ``MALIGN_DCGAN.zip``; decoded as ``(out + 1) / 2``.
- ``diffusion`` / ``diffusion-last``: a diffusion bundle's ``model.pt`` (the EMA UNet's
  ``state_dict``) / its training state ``last.pt`` (the ``ema`` entry is used; never shared).

A package zip's ``__init__.py`` (or any other code) is never executed or imported.
"""

from __future__ import annotations

import io
import json
import math
import os
import pickletools
import re
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mammoshare.gan.errors import WeightsError
from mammoshare.hashing import sha256_bytes, sha256_file

__all__ = [
    "WeightsError",
    "Limits",
    "LIMITS",
    "GeneratorFamily",
    "DCGANFamily",
    "DiffusionUNetFamily",
    "DIFFUSION_SAMPLERS",
    "FAMILIES",
    "register_family",
    "GeneratorSpec",
    "read_generator_spec",
    "recognise_generator",
    "build_generator",
    "build_layers",
    "recognise_network",
    "dcgan_geometry",
    "describe_checkpoint",
    "LAYER_TYPES",
    "TensorInfo",
    "read_safetensors_header",
    "read_safetensors",
    "safetensors_bytes",
    "save_safetensors",
    "check_tensors_against",
    "read_pickled_weights",
    "convert_layout",
    "is_safetensors",
    "is_package_zip",
    "package_weights_names",
    "read_package_entry",
    "GeneratorWeights",
    "load_generator_weights",
    "load_into",
    "decode_output",
    "pinned_inference",
    "template_sha256",
    "DECODINGS",
    "LAYOUT_DECODINGS",
    "SPEC_FORMAT",
    "SAFE_NAME",
]

DECODINGS = ("tanh", "clip01")
#: how each layout's generator output is decoded to [0, 1]
LAYOUT_DECODINGS = {"ours": "tanh", "last": "tanh", "safetensors": "tanh", "medigan": "clip01", "medigan-00002": "tanh",
                    "diffusion": "tanh", "diffusion-last": "tanh"}
SPEC_FORMAT = "mammoshare-generator"
SPEC_VERSION = 1
#: names and versions written into the pinned config: letters, digits and . _ + - only
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
_TEMPLATES = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class Limits:
    """What a received or foreign weights file may be, checked before its tensors are read."""

    max_file_bytes: int = 1 << 30
    max_header_bytes: int = 1 << 20
    max_tensors: int = 1024
    max_rank: int = 8
    max_pickle_bytes: int = 64 << 20
    max_pickle_ops: int = 2_000_000
    max_records: int = 4096


LIMITS = Limits()

#: safetensors dtypes accepted (name -> torch dtype, bytes per element)
SAFETENSORS_DTYPES: dict[str, tuple[torch.dtype, int]] = {
    "F32": (torch.float32, 4),
    "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2),
    "F64": (torch.float64, 8),
    "I64": (torch.int64, 8),
}
_FLOAT_DTYPES = frozenset({"F32", "F16", "BF16", "F64"})


def decode_output(output: torch.Tensor, decoding: str) -> torch.Tensor:
    """Generator output -> image in [0, 1] by the generator's convention."""
    if decoding == "tanh":
        return ((output + 1.0) / 2.0).clamp(0.0, 1.0)
    if decoding == "clip01":
        return output.clamp(0.0, 1.0)
    raise ValueError(f"unknown output decoding {decoding!r}; use one of {list(DECODINGS)}")


# --- families ---------------------------------------------------------------------------------


def _int_in(value: Any, low: int, high: int, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise WeightsError(f"{where}: an integer in [{low}, {high}] is expected, got {value!r}")
    if not low <= value <= high:
        raise WeightsError(f"{where}: {value} is outside the accepted range [{low}, {high}]")
    return int(value)


def _number_in(value: Any, low: float, high: float, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise WeightsError(f"{where}: a number in [{low}, {high}] is expected, got {value!r}")
    if not low <= value <= high:
        raise WeightsError(f"{where}: {value} is outside the accepted range [{low}, {high}]")
    return float(value)


class GeneratorFamily:
    """One architecture family of :data:`FAMILIES`. Subclasses define the methods below; every
    method receives parameters already normalised by :meth:`check_parameters`."""

    name: str = ""
    #: the pinned inference template (a file of ``mammoshare/gan/templates``) and its SHA-256, as
    #: the project ships it: :func:`pinned_inference` refuses an installed template that differs
    template: str = ""
    template_sha256: str = ""
    #: the most parameters a generator of the family may have (bounds verify's memory)
    max_parameters: int = 50_000_000

    def check_parameters(self, parameters: Any, where: str) -> dict:
        """Normalised parameters; raises :class:`WeightsError` for unknown keys or values out of range."""
        raise NotImplementedError

    def image_size(self, parameters: dict) -> list[int]:
        raise NotImplementedError

    def channels(self, parameters: dict) -> int:
        raise NotImplementedError

    def latent_shape(self, parameters: dict) -> list[int]:
        """The shape of one input sample (without the batch)."""
        raise NotImplementedError

    def tensor_shapes(self, parameters: dict) -> dict[str, tuple[int, ...]]:
        """Every tensor the weights must hold, name -> shape."""
        raise NotImplementedError

    def layers(self, parameters: dict) -> list[dict]:
        """The network as a list of layers, each ``{"_target_": "torch.nn.<type>", **arguments}``
        with a type of :data:`LAYER_TYPES`: what :func:`build_layers` builds, the pinned template's
        ``network_layers`` and the exported medigan package's ``LAYERS``."""
        raise NotImplementedError

    def build(self, parameters: dict) -> nn.Module:
        """The network from torch layers only; its ``state_dict`` keys are :meth:`tensor_shapes`'."""
        return build_layers(self.layers(parameters))

    def recognise(self, shapes: dict[str, tuple[int, ...]], hints: dict, where: str) -> dict:
        """The parameters read from tensor shapes (``hints``: what shapes cannot tell, e.g. the activation)."""
        raise NotImplementedError

    def template_values(self, parameters: dict) -> dict[str, Any]:
        """The family's values substituted into its template."""
        raise NotImplementedError

    def parameter_count(self, parameters: dict) -> int:
        return sum(math.prod(shape) for shape in self.tensor_shapes(parameters).values())

    def trial_output(self, network: nn.Module, parameters: dict) -> torch.Tensor:
        """One forward pass on a zero input of :meth:`latent_shape` (batch 1): what verify and
        pack check the shape and finiteness of."""
        with torch.no_grad():
            return network(torch.zeros(1, *self.latent_shape(parameters)))


class DCGANFamily(GeneratorFamily):
    """The study's DCGAN generator: latent ``(B, latent_size, 1, 1)`` -> transposed conv k4 s1 p0 to
    ``widths[0]`` x 4 x 4, then k4 s2 p1 transposed convs through ``widths`` (each with BatchNorm and
    ReLU or LeakyReLU), then k4 s2 p1 to ``out_channels`` and Tanh: images of ``4 * 2 ** len(widths)``
    pixels a side. Parameters: ``latent_size`` [1, 1024], ``widths`` 1 to 7 integers in [1, 4096],
    ``out_channels`` [1, 4], ``activation`` ``relu`` | ``leaky_relu``, ``leaky_slope`` [0, 1] (only
    with ``leaky_relu``), ``conv_bias``; at most :attr:`max_parameters` parameters."""

    name = "dcgan"
    template = "dcgan_inference.json"
    template_sha256 = "2ed8ad0d501d7642fbe79070de4d5c9f92bdc2db61460e5e3acc4db463a0c2cc"
    KEYS = frozenset({"latent_size", "widths", "out_channels", "activation", "leaky_slope", "conv_bias"})
    _BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")

    def check_parameters(self, parameters: Any, where: str) -> dict:
        if not isinstance(parameters, dict):
            raise WeightsError(f"{where}: the parameters must be a JSON object")
        unknown = sorted(set(map(str, parameters)) - self.KEYS)
        missing = sorted(self.KEYS - set(parameters) - {"leaky_slope"})
        if unknown or missing:
            raise WeightsError(
                f"{where}: dcgan parameters {'unknown ' + str(unknown) if unknown else ''}"
                f"{' and ' if unknown and missing else ''}{'missing ' + str(missing) if missing else ''}; "
                f"expected exactly {sorted(self.KEYS)}"
            )
        widths = parameters["widths"]
        if not isinstance(widths, list) or not 1 <= len(widths) <= 7:
            raise WeightsError(f"{where}: widths must be a list of 1 to 7 integers, got {str(widths)[:80]}")
        out = {
            "latent_size": _int_in(parameters["latent_size"], 1, 1024, f"{where}: latent_size"),
            "widths": [_int_in(w, 1, 4096, f"{where}: widths[{i}]") for i, w in enumerate(widths)],
            "out_channels": _int_in(parameters["out_channels"], 1, 4, f"{where}: out_channels"),
        }
        activation = parameters["activation"]
        if activation not in ("relu", "leaky_relu"):
            raise WeightsError(f"{where}: activation {activation!r} is not 'relu' or 'leaky_relu'")
        out["activation"] = activation
        slope = parameters.get("leaky_slope")
        if activation == "leaky_relu":
            out["leaky_slope"] = _number_in(slope, 0.0, 1.0, f"{where}: leaky_slope")
        elif slope is not None:
            raise WeightsError(f"{where}: leaky_slope {slope!r} given with activation 'relu' (null expected)")
        else:
            out["leaky_slope"] = None
        if not isinstance(parameters["conv_bias"], bool):
            raise WeightsError(f"{where}: conv_bias must be true or false")
        out["conv_bias"] = parameters["conv_bias"]
        count = self.parameter_count(out)
        if count > self.max_parameters:
            raise WeightsError(f"{where}: {count:,} parameters, more than the {self.max_parameters:,} accepted for a shared generator")
        return out

    def image_size(self, parameters: dict) -> list[int]:
        side = 4 * 2 ** len(parameters["widths"])
        return [side, side]

    def channels(self, parameters: dict) -> int:
        return parameters["out_channels"]

    def latent_shape(self, parameters: dict) -> list[int]:
        return [parameters["latent_size"], 1, 1]

    def _convs(self, p: dict) -> list[tuple[int, int]]:
        widths = [p["latent_size"], *p["widths"], p["out_channels"]]
        return list(zip(widths[:-1], widths[1:]))

    def tensor_shapes(self, parameters: dict) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {}
        convs = self._convs(parameters)
        for i, (c_in, c_out) in enumerate(convs):
            shapes[f"{3 * i}.weight"] = (c_in, c_out, 4, 4)
            if parameters["conv_bias"]:
                shapes[f"{3 * i}.bias"] = (c_out,)
            if i < len(convs) - 1:
                for key in self._BN:
                    shapes[f"{3 * i + 1}.{key}"] = () if key == "num_batches_tracked" else (c_out,)
        return shapes

    def recognise(self, shapes: dict[str, tuple[int, ...]], hints: dict, where: str) -> dict:
        layers: dict[int, dict[str, tuple[int, ...]]] = {}
        for key, shape in shapes.items():
            match = re.fullmatch(r"(\d{1,3})\.([a-z_]+)", key)
            if match is None:
                raise WeightsError(f"{where}: key {key!r} is not a key of the generator's torch.nn.Sequential ('<index>.<tensor>')")
            layers.setdefault(int(match.group(1)), {})[match.group(2)] = shape
        if not layers:
            raise WeightsError(f"{where}: no tensors")
        for index, tensors in sorted(layers.items()):
            w = tensors.get("weight")
            if w is not None and len(w) == 4 and w[2:] != (4, 4):
                raise WeightsError(
                    f"{where}: {index}.weight of shape {w} is not a 4x4 transposed-convolution kernel "
                    "(a discriminator, critic or classifier is not a generator)"
                )
        last = max(layers)
        if last % 3 != 0 or last < 3:
            raise WeightsError(
                f"{where}: layer indices {sorted(layers)} do not form the DCGAN generator (transposed conv, BatchNorm, "
                "activation repeated, then a last transposed conv and Tanh); a discriminator, critic or classifier is not a generator"
            )
        convs = [layers.get(3 * i, {}).get("weight") for i in range(last // 3 + 1)]
        if any(w is None or len(w) != 4 for w in convs):
            raise WeightsError(f"{where}: layers {sorted(layers)} lack the 4-D transposed-convolution weights of a DCGAN generator")
        parameters = {
            "latent_size": convs[0][0],
            "widths": [w[1] for w in convs[:-1]],
            "out_channels": convs[-1][1],
            "activation": "relu" if hints.get("leaky_slope") is None else "leaky_relu",
            "leaky_slope": hints.get("leaky_slope"),
            "conv_bias": "0.bias" in shapes,
        }
        try:
            parameters = self.check_parameters(parameters, where)
        except WeightsError as e:
            raise WeightsError(f"{e} (read from the tensor shapes)") from None
        expected = self.tensor_shapes(parameters)
        problems = [f"{k}: file {shapes[k]}, generator {v}" for k, v in expected.items() if k in shapes and shapes[k] != v]
        missing = sorted(set(expected) - set(shapes))
        unexpected = sorted(set(shapes) - set(expected))
        if problems or missing or unexpected:
            details = (["shape mismatch " + "; ".join(problems[:4])] if problems else []) + (
                [f"missing {missing[:6]}"] if missing else []) + ([f"unexpected {unexpected[:6]}"] if unexpected else [])
            raise WeightsError(
                f"{where}: wrong tensor shapes for a DCGAN generator (latent {parameters['latent_size']}, widths "
                f"{parameters['widths']}): {'; '.join(details)}"
            )
        return parameters

    def template_values(self, parameters: dict) -> dict[str, Any]:
        return {"latent_size": parameters["latent_size"], "network_layers": self.layers(parameters)}

    def layers(self, parameters: dict) -> list[dict]:
        layers: list[dict] = []
        convs = self._convs(parameters)
        for i, (c_in, c_out) in enumerate(convs):
            stride, padding = (1, 0) if i == 0 else (2, 1)
            layers.append({"_target_": "torch.nn.ConvTranspose2d", "in_channels": c_in, "out_channels": c_out, "kernel_size": 4,
                           "stride": stride, "padding": padding, "bias": parameters["conv_bias"]})
            if i < len(convs) - 1:
                layers.append({"_target_": "torch.nn.BatchNorm2d", "num_features": c_out})
                if parameters["leaky_slope"] is None:
                    layers.append({"_target_": "torch.nn.ReLU", "inplace": True})
                else:
                    layers.append({"_target_": "torch.nn.LeakyReLU", "negative_slope": parameters["leaky_slope"], "inplace": True})
        layers.append({"_target_": "torch.nn.Tanh"})
        return layers


#: what each diffusion sampler needs the model to be trained with
DIFFUSION_SAMPLERS = {"ddim": "ddpm", "ddpm": "ddpm", "rflow": "rflow"}
#: the ``DiffusionModelUNet`` arguments the diffusion family declares (the others keep MONAI's defaults)
_UNET_ARGUMENTS = ("channels", "attention_levels", "num_res_blocks", "num_head_channels", "norm_num_groups", "num_class_embeds")


class DiffusionUNetFamily(GeneratorFamily):
    """A denoising diffusion model: MONAI's 2D ``DiffusionModelUNet`` (one channel in and out), the
    noise schedule it was trained with and its default sampler.

    Parameters: ``image_size`` [8, 1024] (a side, divisible by ``2 ** (len(channels) - 1)``);
    ``channels`` 1 to 6 integers in [4, 2048], each divisible by ``norm_num_groups`` [1, 256];
    ``attention_levels`` one boolean per level; ``num_res_blocks`` [1, 8]; ``num_head_channels``
    [1, 2048], dividing the channels of every attention level; ``num_class_embeds`` null or
    [1, 64] with ``class_names`` (one safe name per class index, e.g. mass, calcification, other,
    any); ``training_scheduler`` ``ddpm`` (linear betas, noise prediction) or ``rflow`` (velocity);
    ``num_train_timesteps`` [1, 10000]; ``sampler`` (``ddim`` or ``ddpm`` for ``ddpm`` training,
    ``rflow`` for ``rflow``) and ``num_inference_steps`` [1, ``num_train_timesteps``]: the default
    sampling. Built from MONAI's class only; nothing of the archive is code."""

    name = "diffusion_unet"
    template = "diffusion_inference.json"
    template_sha256 = "4488de89d0a67d412071be865c4d59466966cae212c9928d2c888d59c6c5aec7"
    max_parameters = 200_000_000
    KEYS = frozenset({"image_size", *_UNET_ARGUMENTS, "class_names", "training_scheduler", "num_train_timesteps", "sampler",
                      "num_inference_steps"})

    def check_parameters(self, parameters: Any, where: str) -> dict:
        if not isinstance(parameters, dict):
            raise WeightsError(f"{where}: the parameters must be a JSON object")
        unknown = sorted(set(map(str, parameters)) - self.KEYS)
        missing = sorted(self.KEYS - set(parameters))
        if unknown or missing:
            raise WeightsError(
                f"{where}: diffusion_unet parameters {'unknown ' + str(unknown) if unknown else ''}"
                f"{' and ' if unknown and missing else ''}{'missing ' + str(missing) if missing else ''}; "
                f"expected exactly {sorted(self.KEYS)}"
            )
        channels, levels = parameters["channels"], parameters["attention_levels"]
        if not isinstance(channels, list) or not 1 <= len(channels) <= 6:
            raise WeightsError(f"{where}: channels must be a list of 1 to 6 integers, got {str(channels)[:80]}")
        if not isinstance(levels, list) or len(levels) != len(channels) or not all(isinstance(a, bool) for a in levels):
            raise WeightsError(f"{where}: attention_levels must be {len(channels)} booleans (one per channel level), got {str(levels)[:80]}")
        out: dict[str, Any] = {
            "channels": [_int_in(c, 4, 2048, f"{where}: channels[{i}]") for i, c in enumerate(channels)],
            "attention_levels": list(levels),
            "num_res_blocks": _int_in(parameters["num_res_blocks"], 1, 8, f"{where}: num_res_blocks"),
            "num_head_channels": _int_in(parameters["num_head_channels"], 1, 2048, f"{where}: num_head_channels"),
            "norm_num_groups": _int_in(parameters["norm_num_groups"], 1, 256, f"{where}: norm_num_groups"),
            "image_size": _int_in(parameters["image_size"], 8, 1024, f"{where}: image_size"),
        }
        bad = [c for c in out["channels"] if c % out["norm_num_groups"]]
        if bad:
            raise WeightsError(f"{where}: channels {bad} are not divisible by norm_num_groups {out['norm_num_groups']}")
        bad = [c for c, a in zip(out["channels"], levels) if a and c % out["num_head_channels"]]
        if bad:
            raise WeightsError(f"{where}: attention-level channels {bad} are not divisible by num_head_channels {out['num_head_channels']}")
        if out["image_size"] % 2 ** (len(channels) - 1):
            raise WeightsError(f"{where}: image_size {out['image_size']} is not divisible by 2 ** {len(channels) - 1} (the UNet's downsamplings)")
        embeds, names = parameters["num_class_embeds"], parameters["class_names"]
        if embeds is None:
            if names is not None:
                raise WeightsError(f"{where}: class_names given without num_class_embeds (null expected)")
            out["num_class_embeds"], out["class_names"] = None, None
        else:
            out["num_class_embeds"] = _int_in(embeds, 1, 64, f"{where}: num_class_embeds")
            if (not isinstance(names, list) or len(names) != out["num_class_embeds"] or len(set(map(str, names))) != len(names)
                    or not all(isinstance(n, str) and SAFE_NAME.fullmatch(n) for n in names)):
                raise WeightsError(f"{where}: class_names must be {out['num_class_embeds']} different names (letters, digits, . _ + -), "
                                   f"one per class index, got {str(names)[:80]}")
            out["class_names"] = list(names)
        trained, sampler = parameters["training_scheduler"], parameters["sampler"]
        if trained not in ("ddpm", "rflow"):
            raise WeightsError(f"{where}: training_scheduler {str(trained)[:20]!r} is not 'ddpm' or 'rflow'")
        if DIFFUSION_SAMPLERS.get(sampler) != trained:
            raise WeightsError(f"{where}: sampler {str(sampler)[:20]!r} does not sample a model trained with {trained!r} "
                               f"(use {[s for s, t in DIFFUSION_SAMPLERS.items() if t == trained]})")
        out["training_scheduler"], out["sampler"] = trained, sampler
        out["num_train_timesteps"] = _int_in(parameters["num_train_timesteps"], 1, 10000, f"{where}: num_train_timesteps")
        out["num_inference_steps"] = _int_in(parameters["num_inference_steps"], 1, out["num_train_timesteps"], f"{where}: num_inference_steps")
        count = self.parameter_count(out)
        if count > self.max_parameters:
            raise WeightsError(f"{where}: {count:,} parameters, more than the {self.max_parameters:,} accepted for a shared generator")
        return out

    def image_size(self, parameters: dict) -> list[int]:
        return [parameters["image_size"]] * 2

    def channels(self, parameters: dict) -> int:
        return 1

    def latent_shape(self, parameters: dict) -> list[int]:
        return [1, *self.image_size(parameters)]

    def unet_arguments(self, parameters: dict) -> dict:
        """The ``monai.networks.nets.DiffusionModelUNet`` keyword arguments."""
        return {"spatial_dims": 2, "in_channels": 1, "out_channels": 1, **{k: parameters[k] for k in _UNET_ARGUMENTS}}

    def build(self, parameters: dict) -> nn.Module:
        from monai.networks.nets import DiffusionModelUNet

        return DiffusionModelUNet(**self.unet_arguments(parameters))

    def tensor_shapes(self, parameters: dict) -> dict[str, tuple[int, ...]]:
        try:
            with torch.device("meta"):  # shapes only: nothing is allocated
                network = self.build(parameters)
        except (ValueError, TypeError, AssertionError) as e:
            raise WeightsError(f"MONAI's DiffusionModelUNet refuses these parameters: {e}") from None
        return {k: tuple(v.shape) for k, v in network.state_dict().items()}

    def layers(self, parameters: dict) -> list[dict]:
        raise WeightsError("a diffusion UNet is not a layer list; build it with DiffusionUNetFamily.build")

    def recognise(self, shapes: dict[str, tuple[int, ...]], hints: dict, where: str) -> dict:
        """``hints["parameters"]``: the UNet and scheduler settings of the bundle's config (shapes
        alone cannot tell attention heads or the schedule); the shapes must be exactly theirs."""
        parameters = self.check_parameters(hints.get("parameters"), where)
        expected = self.tensor_shapes(parameters)
        problems = [f"{k}: file {shapes[k]}, UNet {v}" for k, v in expected.items() if k in shapes and shapes[k] != v]
        missing, unexpected = sorted(set(expected) - set(shapes)), sorted(set(shapes) - set(expected))
        if problems or missing or unexpected:
            details = (["shape mismatch " + "; ".join(problems[:3])] if problems else []) + (
                [f"missing {missing[:4]}"] if missing else []) + ([f"unexpected {unexpected[:4]}"] if unexpected else [])
            raise WeightsError(
                f"{where}: not the weights of the configured UNet (channels {parameters['channels']}, attention "
                f"{parameters['attention_levels']}, {parameters['num_res_blocks']} res blocks, class embeddings "
                f"{parameters['num_class_embeds']}): {'; '.join(details)}"
            )
        return parameters

    def template_values(self, parameters: dict) -> dict[str, Any]:
        return {
            "network_parameters": self.unet_arguments(parameters),
            "class_names": parameters["class_names"],
            "training_scheduler": parameters["training_scheduler"],
            "num_train_timesteps": parameters["num_train_timesteps"],
            "sampler": parameters["sampler"],
            "num_inference_steps": parameters["num_inference_steps"],
        }

    def trial_output(self, network: nn.Module, parameters: dict) -> torch.Tensor:
        labels = None if parameters["num_class_embeds"] is None else torch.tensor([parameters["num_class_embeds"] - 1])
        with torch.no_grad():
            return network(torch.zeros(1, *self.latent_shape(parameters)), timesteps=torch.tensor([0]), class_labels=labels)


#: the known families, by name
FAMILIES: dict[str, GeneratorFamily] = {}


def template_sha256(family: GeneratorFamily) -> str:
    """The SHA-256 of the family's template file as installed."""
    return sha256_bytes((_TEMPLATES / family.template).read_bytes())


def register_family(family: GeneratorFamily) -> GeneratorFamily:
    """Add a family to :data:`FAMILIES` (its name must be new)."""
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", family.name) or family.name in FAMILIES:
        raise ValueError(f"family name {family.name!r}: new, lower-case letters, digits and _ only")
    FAMILIES[family.name] = family
    return family


register_family(DCGANFamily())
register_family(DiffusionUNetFamily())


# --- generator.json ---------------------------------------------------------------------------


@dataclass(frozen=True)
class GeneratorSpec:
    """What ``configs/generator.json`` declares: family, its (checked) parameters, image size,
    channels, output decoding."""

    family: str
    parameters: dict
    output_decoding: str = "tanh"

    @property
    def family_impl(self) -> GeneratorFamily:
        return FAMILIES[self.family]

    @property
    def image_size(self) -> list[int]:
        return self.family_impl.image_size(self.parameters)

    @property
    def channels(self) -> int:
        return self.family_impl.channels(self.parameters)

    @property
    def latent_shape(self) -> list[int]:
        return self.family_impl.latent_shape(self.parameters)

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        return self.family_impl.tensor_shapes(self.parameters)

    def to_dict(self) -> dict:
        return {
            "format": SPEC_FORMAT,
            "format_version": SPEC_VERSION,
            "family": self.family,
            "parameters": self.parameters,
            "image_size": self.image_size,
            "channels": self.channels,
            "output_decoding": self.output_decoding,
        }

    def to_json(self) -> bytes:
        """The canonical ``generator.json`` bytes (keys sorted, 4-space indent, trailing newline)."""
        return (json.dumps(self.to_dict(), indent=4, sort_keys=True) + "\n").encode("ascii")


_SPEC_KEYS = frozenset({"format", "format_version", "family", "parameters", "image_size", "channels", "output_decoding"})


def read_generator_spec(source: bytes | dict, where: str = "configs/generator.json") -> GeneratorSpec:
    """Parse and check a ``generator.json`` (bytes or parsed). Everything is checked against the
    known families and their ranges; nothing is built. Raises :class:`WeightsError` naming ``where``."""
    if isinstance(source, (bytes, bytearray)):
        if len(source) > 64 << 10:
            raise WeightsError(f"{where}: {len(source)} bytes, more than the 65536 accepted for a generator description")
        try:
            data = json.loads(bytes(source).decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise WeightsError(f"{where}: not UTF-8 JSON ({e})") from None
    else:
        data = source
    if not isinstance(data, dict):
        raise WeightsError(f"{where}: a JSON object is expected")
    unknown = sorted(set(map(str, data)) - _SPEC_KEYS)
    if unknown:
        raise WeightsError(f"{where}: unknown keys {unknown}; expected {sorted(_SPEC_KEYS)}")
    if data.get("format") != SPEC_FORMAT or data.get("format_version") != SPEC_VERSION:
        raise WeightsError(f"{where}: format {data.get('format')!r} version {data.get('format_version')!r}; {SPEC_FORMAT!r} version {SPEC_VERSION} expected")
    family = data.get("family")
    if not isinstance(family, str) or family not in FAMILIES:
        raise WeightsError(f"{where}: family {str(family)[:40]!r} is not a known generator family {sorted(FAMILIES)}")
    impl = FAMILIES[family]
    parameters = impl.check_parameters(data.get("parameters"), f"{where}: parameters")
    decoding = data.get("output_decoding")
    if decoding not in DECODINGS:
        raise WeightsError(f"{where}: output_decoding {str(decoding)[:40]!r} is not one of {list(DECODINGS)}")
    spec = GeneratorSpec(family, parameters, decoding)
    for key, value in (("image_size", spec.image_size), ("channels", spec.channels)):
        if key in data and data[key] != value:
            raise WeightsError(f"{where}: {key} {str(data[key])[:40]} does not follow from the parameters ({value})")
    return spec


def recognise_generator(state_dict: dict, where: str, *, family: str = "dcgan", leaky_slope: float | None = None,
                        decoding: str = "tanh") -> GeneratorSpec:
    """The :class:`GeneratorSpec` of a ``state_dict`` from its tensor shapes (what the shapes cannot
    tell, the activation and the decoding, is given)."""
    shapes = {k: tuple(int(s) for s in v.shape) for k, v in state_dict.items()}
    parameters = FAMILIES[family].recognise(shapes, {"leaky_slope": leaky_slope}, where)
    if decoding not in DECODINGS:
        raise WeightsError(f"{where}: unknown output decoding {decoding!r}")
    return GeneratorSpec(family, parameters, decoding)


def build_generator(spec: GeneratorSpec) -> nn.Module:
    """The generator network of ``spec`` (torch layers only, eval mode)."""
    return spec.family_impl.build(spec.parameters).eval()


#: the torch layers a generator's layer list may name (``torch.nn.<name>``), with their accepted arguments
LAYER_TYPES: dict[str, frozenset[str]] = {
    "ConvTranspose2d": frozenset({"in_channels", "out_channels", "kernel_size", "stride", "padding", "bias"}),
    "BatchNorm2d": frozenset({"num_features"}),
    "ReLU": frozenset({"inplace"}),
    "LeakyReLU": frozenset({"negative_slope", "inplace"}),
    "Tanh": frozenset(),
}


def build_layers(layers: list[dict]) -> nn.Sequential:
    """A ``torch.nn.Sequential`` of a layer list (:meth:`GeneratorFamily.layers`); only the types
    and arguments of :data:`LAYER_TYPES` are built, anything else raises :class:`WeightsError`."""
    modules = []
    for i, layer in enumerate(layers):
        target = str(layer.get("_target_", "")) if isinstance(layer, dict) else ""
        kind = target.removeprefix("torch.nn.")
        arguments = {k: v for k, v in layer.items() if k != "_target_"} if isinstance(layer, dict) else {}
        if kind not in LAYER_TYPES or not set(arguments) <= LAYER_TYPES[kind]:
            raise WeightsError(f"layer {i}: {str(layer)[:80]} is not one of the generator layers {sorted(LAYER_TYPES)} with their arguments")
        modules.append(getattr(nn, kind)(**arguments))
    return nn.Sequential(*modules)


def recognise_network(network: nn.Module, where: str, decoding: str = "tanh") -> GeneratorSpec:
    """The :class:`GeneratorSpec` of a built generator (a ``torch.nn.Sequential`` of the DCGAN
    family, e.g. :class:`~mammoshare.networks.DCGANGenerator`): its tensor shapes and activation; the
    layers :func:`build_generator` makes of it must be the network's."""
    if not isinstance(network, nn.Sequential):
        raise WeightsError(f"{where}: the network is not a plain torch Sequential generator")
    slopes = {m.negative_slope for m in network if isinstance(m, nn.LeakyReLU)}
    if len(slopes) > 1:
        raise WeightsError(f"{where}: LeakyReLU layers with different slopes {sorted(slopes)}")
    spec = recognise_generator(network.state_dict(), where, leaky_slope=slopes.pop() if slopes else None, decoding=decoding)
    built = [type(m) for m in build_generator(spec)]
    if [type(m) for m in network] != built:
        raise WeightsError(f"{where}: layers {[type(m).__name__ for m in network]} are not those of the {spec.family} "
                           f"generator its tensors describe ({[t.__name__ for t in built]})")
    return spec


def dcgan_geometry(spec: GeneratorSpec) -> dict | None:
    """A DCGAN spec in :class:`~mammoshare.networks.DCGANGenerator`'s terms: ``latent_size``,
    ``ngf`` (the last width), ``multipliers`` (each width / ngf), ``out_channels``, ``leaky_slope``;
    None when a width is not a multiple of the last one."""
    p = spec.parameters
    ngf = p["widths"][-1]
    if spec.family != "dcgan" or any(w % ngf for w in p["widths"]):
        return None
    return {"latent_size": p["latent_size"], "ngf": ngf, "multipliers": tuple(w // ngf for w in p["widths"]),
            "out_channels": p["out_channels"], "leaky_slope": p["leaky_slope"]}


def pinned_inference(spec: GeneratorSpec, name: str, version: str, weights_sha256: str, phantom: bool = False) -> bytes:
    """The pinned ``configs/inference.json``: the family's fixed template with ``spec``'s values,
    byte for byte the same for the same inputs. ``phantom`` (the archive's training record says the
    generator learnt phantom data) goes into every PNG's text chunks and the synthetic datalist.
    The template's SHA-256 is checked against the one the project ships, so a changed installed
    template is refused."""
    impl = spec.family_impl
    path = _TEMPLATES / impl.template
    text = path.read_bytes()
    if sha256_bytes(text) != impl.template_sha256:
        raise WeightsError(f"{path}: the installed template's SHA-256 is not the pinned one; reinstall mammoshare")
    for what, value in (("name", name), ("version", version)):
        if not isinstance(value, str) or not SAFE_NAME.fullmatch(value):
            raise WeightsError(f"metadata {what} {str(value)[:40]!r}: letters, digits and . _ + - only (at most 64)")
    if not re.fullmatch(r"[0-9a-f]{64}", weights_sha256):
        raise WeightsError(f"not a SHA-256 hex digest: {weights_sha256!r}")
    values = {
        **impl.template_values(spec.parameters),
        "generator_name": name,
        "generator_version": version,
        "output_decoding": spec.output_decoding,
        "image_size": spec.image_size,
        "packed_weights_sha256": weights_sha256,
        "phantom": bool(phantom),
    }
    out = text.decode("utf-8")
    for key, value in values.items():
        placeholder = '"{{' + key + '}}"'
        if placeholder not in out:
            raise WeightsError(f"{path}: has no placeholder {placeholder}")
        out = out.replace(placeholder, json.dumps(value))
    if "{{" in out:
        raise WeightsError(f"{path}: placeholders left unfilled")
    return out.encode("utf-8")


# --- safetensors ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


def read_safetensors_header(head: bytes, total_size: int, where: str, limits: Limits = LIMITS) -> tuple[dict[str, TensorInfo], dict]:
    """Check a safetensors header from the file's first bytes (at least 8 + header length) and its
    total size, without reading any tensor data: header size cap, tensor count, ranks, dtype
    allow-list, each tensor's byte size, offsets that tile the data exactly. Returns
    ``({name: TensorInfo}, __metadata__)``."""
    if total_size > limits.max_file_bytes:
        raise WeightsError(f"{where}: {total_size} bytes, more than the {limits.max_file_bytes} accepted for a weights file")
    if len(head) < 8:
        raise WeightsError(f"{where}: not a safetensors file (shorter than its 8-byte header length)")
    (length,) = struct.unpack("<Q", head[:8])
    if length > limits.max_header_bytes:
        raise WeightsError(f"{where}: safetensors header of {length} bytes, more than the {limits.max_header_bytes} accepted")
    if 8 + length > total_size or len(head) < 8 + length:
        raise WeightsError(f"{where}: not a safetensors file (its header length {length} exceeds the file)")
    raw = head[8 : 8 + length]
    if not raw[:1] == b"{":
        raise WeightsError(f"{where}: not a safetensors file (the header is not a JSON object); a pickle or another format is never read")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise WeightsError(f"{where}: safetensors header is not UTF-8 JSON ({e})") from None
    if not isinstance(header, dict):
        raise WeightsError(f"{where}: safetensors header is not a JSON object")
    metadata = header.pop("__metadata__", {}) or {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise WeightsError(f"{where}: safetensors __metadata__ must map strings to strings")
    if len(header) > limits.max_tensors:
        raise WeightsError(f"{where}: {len(header)} tensors, more than the {limits.max_tensors} accepted")
    infos: dict[str, TensorInfo] = {}
    data_size = total_size - 8 - length
    for key, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise WeightsError(f"{where}: tensor {key[:60]!r}: dtype, shape and data_offsets expected")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in SAFETENSORS_DTYPES:
            raise WeightsError(f"{where}: tensor {key[:60]!r}: dtype {str(dtype)[:20]!r} is not accepted ({sorted(SAFETENSORS_DTYPES)})")
        if (not isinstance(shape, list) or len(shape) > limits.max_rank
                or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 1 << 40 for s in shape)):
            raise WeightsError(f"{where}: tensor {key[:60]!r}: shape {str(shape)[:60]} is not a list of at most {limits.max_rank} sizes")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
            raise WeightsError(f"{where}: tensor {key[:60]!r}: data_offsets must be two integers")
        begin, end = offsets
        nbytes = math.prod(shape) * SAFETENSORS_DTYPES[dtype][1]
        if not 0 <= begin <= end <= data_size or end - begin != nbytes:
            raise WeightsError(f"{where}: tensor {key[:60]!r}: data_offsets {offsets} do not hold {nbytes} bytes inside the file")
        infos[key] = TensorInfo(dtype, tuple(shape), begin, end)
    position = 0
    for info in sorted(infos.values(), key=lambda i: (i.begin, i.end)):
        if info.begin != position:
            raise WeightsError(f"{where}: tensor data overlap or leave gaps (at byte {info.begin}, expected {position})")
        position = info.end
    if position != data_size:
        raise WeightsError(f"{where}: {data_size - position} bytes after the last tensor; the data must end with it")
    return infos, metadata


def check_tensors_against(infos: dict[str, TensorInfo], spec: GeneratorSpec, where: str) -> None:
    """The tensors a header declares against those ``spec``'s family needs (before any data is read)."""
    expected = spec.tensor_shapes()
    missing = sorted(set(expected) - set(infos))
    unexpected = sorted(set(infos) - set(expected))
    wrong = [f"{k}: {infos[k].shape}, expected {v}" for k, v in expected.items() if k in infos and infos[k].shape != v]
    dtypes = [f"{k}: {i.dtype}" for k, i in infos.items() if k in expected and
              ((i.dtype not in _FLOAT_DTYPES) != k.endswith("num_batches_tracked"))]
    if missing or unexpected or wrong or dtypes:
        details = ([f"missing {missing[:6]}"] if missing else []) + ([f"unexpected {[u[:40] for u in unexpected[:6]]}"] if unexpected else []) + (
            [f"shapes {wrong[:4]}"] if wrong else []) + ([f"dtypes {dtypes[:4]}"] if dtypes else [])
        raise WeightsError(f"{where}: not the tensors of the generator described by generator.json: {'; '.join(details)}")


def read_safetensors(data: bytes, where: str, spec: GeneratorSpec | None = None, limits: Limits = LIMITS) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file's bytes, after :func:`read_safetensors_header` (and, with
    ``spec``, :func:`check_tensors_against`) passed. Nothing is unpickled."""
    from safetensors.torch import load as load_safetensors

    infos, _ = read_safetensors_header(data, len(data), where, limits)
    if spec is not None:
        check_tensors_against(infos, spec, where)
    try:
        return load_safetensors(bytes(data))
    except Exception as e:  # the library's own checks (the header passed ours)
        raise WeightsError(f"{where}: safetensors could not read it ({type(e).__name__}: {str(e)[:200]})") from None


def safetensors_bytes(state_dict: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """A ``state_dict`` as safetensors bytes (deterministic for the same tensors and metadata)."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()}
    return save(tensors, metadata=metadata)


def save_safetensors(state_dict: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """Write a ``state_dict`` as safetensors, kill-safely."""
    from mammoshare.atomic import atomic_write_bytes

    return atomic_write_bytes(path, safetensors_bytes(state_dict, metadata))


def is_safetensors(head: bytes) -> bool:
    return len(head) >= 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] < 1 << 30


# --- the restricted pickle loader -------------------------------------------------------------

#: the globals a tensor checkpoint's pickle may name (module, name)
_PICKLE_GLOBALS = frozenset(
    {("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor"),
     ("torch._utils", "_rebuild_parameter"), ("torch", "Size")}
    | {("torch", f"{kind}Storage") for kind in ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool")}
)
_TORCH_RECORD = re.compile(r"[^/]+/(data\.pkl|\.format_version|\.storage_alignment|byteorder|version|\.data/serialization_id|data/\d+)")


def _scan_pickles(data: bytes, count: int, where: str, limits: Limits) -> None:
    """Scan ``count`` consecutive pickles of ``data``: every opcode parses, every global is on the
    allow-list, and the number of opcodes is bounded; nothing is executed."""
    stream = io.BytesIO(data)
    ops = 0
    for _ in range(count):
        try:
            for opcode, arg, _pos in pickletools.genops(stream):
                ops += 1
                if ops > limits.max_pickle_ops:
                    raise WeightsError(f"{where}: more than {limits.max_pickle_ops} pickle operations; refused unread")
                if opcode.name in ("GLOBAL", "INST"):
                    module, _, name = str(arg).partition(" ")
                    if (module, name) not in _PICKLE_GLOBALS:
                        raise WeightsError(f"{where}: the pickle names {module}.{name}, which a tensor checkpoint never needs; refused unread")
                elif opcode.name in ("STACK_GLOBAL", "OBJ", "EXT1", "EXT2", "EXT4"):
                    raise WeightsError(f"{where}: the pickle uses {opcode.name}, which torch's tensor checkpoints never use; refused unread")
        except WeightsError:
            raise
        except Exception as e:  # truncated or not a pickle
            raise WeightsError(f"{where}: not a readable torch checkpoint ({type(e).__name__}: {str(e)[:120]})") from None


def read_pickled_weights(data: bytes, where: str, limits: Limits = LIMITS) -> Any:
    """Read a torch checkpoint (a pickle) in the restricted loader: THE one place a pickle is read.

    Size caps; a torch zip file may hold only torch's own records; every pickle opcode is scanned
    and may name only the globals of :data:`_PICKLE_GLOBALS`; then ``torch.load(weights_only=True)``.
    """
    if len(data) > limits.max_file_bytes:
        raise WeightsError(f"{where}: {len(data)} bytes, more than the {limits.max_file_bytes} accepted for a checkpoint")
    buffer = io.BytesIO(data)
    if zipfile.is_zipfile(buffer):
        try:
            with zipfile.ZipFile(buffer) as zf:
                infos = zf.infolist()
                if len(infos) > limits.max_records:
                    raise WeightsError(f"{where}: {len(infos)} records, more than {limits.max_records}")
                names = [i.filename for i in infos]
                prefixes = {n.split("/", 1)[0] for n in names}
                foreign = [n for n in names if not _TORCH_RECORD.fullmatch(n)]
                if len(prefixes) != 1 or foreign:
                    raise WeightsError(f"{where}: holds records that torch.save does not write {foreign[:6] or sorted(prefixes)}; only generator tensors may be read")
                if sum(i.file_size for i in infos) > limits.max_file_bytes or any(i.compress_type != zipfile.ZIP_STORED for i in infos):
                    raise WeightsError(f"{where}: records larger than the file limit, or compressed (torch stores them uncompressed)")
                pickle_info = next((i for i in infos if i.filename.endswith("/data.pkl")), None)
                if pickle_info is None or pickle_info.file_size > limits.max_pickle_bytes:
                    raise WeightsError(f"{where}: no data.pkl record, or one larger than {limits.max_pickle_bytes} bytes")
                _scan_pickles(zf.read(pickle_info), 1, where, limits)
        except zipfile.BadZipFile as e:
            raise WeightsError(f"{where}: a damaged torch file ({e})") from None
    else:
        # torch's legacy format: magic, protocol, system info, the object, the storage keys, then raw data
        _scan_pickles(data, 5, where, limits)
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # code objects or classes refused, truncated file
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise WeightsError(f"{where}: cannot be loaded as plain tensors with weights_only=True ({type(e).__name__}: {first[:300]})") from None


# --- layouts ----------------------------------------------------------------------------------


def _is_tensor_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _is_diffusion_unet(obj) -> bool:
    """A ``state_dict`` of MONAI's ``DiffusionModelUNet`` (its input convolution and timestep embedding)."""
    return _is_tensor_dict(obj) and "conv_in.conv.weight" in obj and "time_embed.0.weight" in obj


def describe_checkpoint(obj) -> str:
    """What a loaded checkpoint is, in a few words, for error messages (its first keys)."""
    if isinstance(obj, dict):
        keys = list(obj)[:6]
        return f"a dict with keys {keys}{' ...' if len(obj) > 6 else ''}"
    return f"a {type(obj).__name__}"


def _fill_batch_counts(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """BatchNorm ``num_batches_tracked`` counters that old checkpoints lack (unused in eval mode)."""
    out = dict(state)
    for key in list(state):
        if key.endswith(".running_mean"):
            out.setdefault(key[: -len("running_mean")] + "num_batches_tracked", torch.tensor(0, dtype=torch.long))
    return out


def convert_layout(obj: Any, where: str) -> tuple[str, dict[str, torch.Tensor], dict]:
    """A loaded checkpoint -> ``(layout, state_dict in our keys, facts)``; ``facts["embed_nn"]``
    tells the 00005 checkpoint (which carries an unused ``embed_nn``) from 00006."""
    facts: dict[str, Any] = {}
    if isinstance(obj, dict) and isinstance(obj.get("generator"), dict):
        inner = obj["generator"]
        main = {k[len("main."):]: v for k, v in inner.items() if isinstance(k, str) and k.startswith("main.")}
        if main:
            facts["embed_nn"] = any(str(k).startswith("embed_nn.") for k in inner)
            layout, state = "medigan", _fill_batch_counts(main)
        else:
            layout, state = "last", dict(inner)
            facts["training_state"] = sorted(k for k in obj if k != "generator")
    elif _is_tensor_dict(obj) and all(k.startswith("model.") for k in obj):
        layout, state = "medigan-00002", _fill_batch_counts({k[len("model."):]: v for k, v in obj.items()})
    elif isinstance(obj, dict) and _is_diffusion_unet(obj.get("ema")):
        layout, state = "diffusion-last", dict(obj["ema"])
        facts["training_state"] = sorted(str(k) for k in obj if k != "ema")
    elif _is_diffusion_unet(obj):
        layout, state = "diffusion", obj
    else:
        layout, state = "ours", obj
    if layout.startswith("diffusion"):
        facts["family"] = "diffusion_unet"
        bad_keys = [k for k in state if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+){1,12}", k)]
        if bad_keys:
            raise WeightsError(f"{where}: keys {bad_keys[:4]} are not those of a MONAI DiffusionModelUNet state_dict")
    elif not _is_tensor_dict(state) or not all(re.fullmatch(r"\d+\.[A-Za-z_]+", k) for k in state):
        raise WeightsError(
            f"{where}: not a generator checkpoint: found {describe_checkpoint(state)}; expected a state_dict of the DCGAN "
            "generator (keys like '0.weight'), our last.pt, a medigan 00005/00006 checkpoint ('generator' "
            "entry with 'main.N.*' keys) or its zip, the medigan 00002 weights malign_mass_gen ('model.N.*' "
            "keys) or its zip MALIGN_DCGAN.zip, or a diffusion UNet's model.pt / last.pt"
        )
    bad = [k for k, v in state.items() if v.layout != torch.strided or v.is_quantized or v.device.type != "cpu"]
    if bad:
        raise WeightsError(f"{where}: tensors that are not dense CPU tensors: {bad[:6]}")
    return layout, {k: (v.detach() if isinstance(v, nn.Parameter) else v) for k, v in state.items()}, facts


#: weights files of medigan packages that have no ``.pt`` extension (00002: ``malign_mass_gen``)
MEDIGAN_EXTENSIONLESS_WEIGHTS = ("malign_mass_gen",)


def package_weights_names(names: list[str]) -> list[str]:
    """The weights files among a package's entries: ``*.pt`` files, else the known extension-less
    weights files (``malign_mass_gen``); macOS resource forks are skipped."""
    names = [n for n in names if not n.endswith("/") and not n.startswith("__MACOSX") and not n.rsplit("/", 1)[-1].startswith("._")]
    candidates = [n for n in names if n.endswith(".pt")]
    if not candidates:
        candidates = [n for n in names if n.rsplit("/", 1)[-1] in MEDIGAN_EXTENSIONLESS_WEIGHTS]
    return candidates


def is_package_zip(path: Path) -> bool:
    """A medigan package zip; a ``torch.save`` file is a zip archive too (``<name>/data.pkl``...)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return not any(n.count("/") == 1 and n.endswith("/data.pkl") for n in archive.namelist())


def read_package_entry(path: Path, name: str, limits: Limits = LIMITS) -> bytes:
    """One entry of a package zip, read with the size limits (declared and actual)."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(name)
        if info.flag_bits & 0x1:
            raise WeightsError(f"{path}:{name}: encrypted")
        if info.file_size > limits.max_file_bytes:
            raise WeightsError(f"{path}:{name}: {info.file_size} bytes, more than the {limits.max_file_bytes} accepted")
        with archive.open(info) as f:
            data = f.read(limits.max_file_bytes + 1)
    if len(data) > limits.max_file_bytes:
        raise WeightsError(f"{path}:{name}: more than the {limits.max_file_bytes} bytes accepted")
    return data


@dataclass
class GeneratorWeights:
    state_dict: dict[str, torch.Tensor]
    layout: str  # "safetensors", "ours", "last", "medigan", "medigan-00002", "diffusion" or "diffusion-last"
    decoding: str  # "tanh": (out + 1) / 2; "clip01": clip(out, 0, 1)
    path: str
    sha256: str
    facts: dict = field(default_factory=dict)

    @property
    def family(self) -> str:
        """The generator family the tensors are of: ``dcgan`` or ``diffusion_unet``."""
        return self.facts.get("family", "dcgan")

    @property
    def training_state(self) -> bool:
        """A training state (``last.pt``): resumable, never shared."""
        return self.layout in ("last", "diffusion-last")


def load_generator_weights(path: str | os.PathLike, limits: Limits = LIMITS) -> GeneratorWeights:
    """Load generator weights from ``path`` in any accepted layout (see the module docstring).

    Raises :class:`WeightsError` naming the file and the accepted layouts otherwise.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    size = path.stat().st_size
    if size > limits.max_file_bytes:
        raise WeightsError(f"{path}: {size} bytes, more than the {limits.max_file_bytes} accepted for a weights file")
    with open(path, "rb") as f:
        head = f.read(16)
    if is_safetensors(head):
        state = read_safetensors(path.read_bytes(), str(path), limits=limits)
        layout, state, facts = convert_layout(state, str(path))
        layout = "safetensors"
    else:
        if is_package_zip(path):
            with zipfile.ZipFile(path) as archive:
                candidates = package_weights_names(archive.namelist())
            if len(candidates) != 1:
                raise WeightsError(
                    f"{path}: a medigan package zip with exactly one weights file (a .pt file, or "
                    f"{' / '.join(MEDIGAN_EXTENSIONLESS_WEIGHTS)}) is expected, found {candidates or 'none'}"
                )
            where = f"{path}:{candidates[0]}"
            obj = read_pickled_weights(read_package_entry(path, candidates[0], limits), where, limits)
        else:
            where = str(path)
            obj = read_pickled_weights(path.read_bytes(), where, limits)
        layout, state, facts = convert_layout(obj, where)
    return GeneratorWeights(state_dict=state, layout=layout, decoding=LAYOUT_DECODINGS[layout], path=str(path),
                            sha256=sha256_file(path), facts=facts)


def load_into(network: torch.nn.Module, weights: GeneratorWeights) -> torch.nn.Module:
    """Load weights into a generator; a wrong architecture raises :class:`WeightsError` saying what
    the network expected and what the file holds."""
    expected = network.state_dict()
    missing = sorted(set(expected) - set(weights.state_dict))
    unexpected = sorted(set(weights.state_dict) - set(expected))
    mismatched = [
        f"{k}: file {tuple(weights.state_dict[k].shape)}, network {tuple(v.shape)}"
        for k, v in expected.items()
        if k in weights.state_dict and weights.state_dict[k].shape != v.shape
    ]
    if missing or unexpected or mismatched:
        details = []
        if mismatched:
            details.append("shape mismatch " + "; ".join(mismatched[:4]))
        if missing:
            details.append(f"missing keys {missing[:6]}")
        if unexpected:
            details.append(f"unexpected keys {unexpected[:6]}")
        raise WeightsError(
            f"{weights.path}: weights of another architecture than the configured generator "
            f"(latent size, ngf): {'; '.join(details)}"
        )
    network.load_state_dict(weights.state_dict)
    return network

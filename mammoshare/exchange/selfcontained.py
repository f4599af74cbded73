"""The packed ``configs/inference.json``: a generator bundle that runs with MONAI and torch alone.

``mammoshare pack`` does not copy a bundle's own ``inference.json`` (it imports ``mammoshare``). It
writes this one instead, from the bundle's metadata, the architecture read from ``models/model.pt``'s
tensor shapes and the activation and output decoding stated by the bundle's own config. A receiving
centre runs it with nothing but MONAI (with its PNG writer, Pillow), torch and numpy installed::

    python -m monai.bundle run --config_file DIR/configs/inference.json --bundle_root DIR \\
        --num_samples 1200 --output_dir OUT --seed 0

``bundle_root``
    ``monai.bundle run`` does not set ``bundle_root`` and no MONAI or torch expression can see the
    path of the config file being run, so the packed config follows the MONAI model-zoo
    convention: ``"bundle_root": "."`` (the working directory). Run it from the bundle folder, or
    from anywhere with ``--bundle_root DIR`` (``bundle_root=DIR`` for ``monai.bundle.run`` called in
    Python). Nothing else is needed: the weights are ``@bundle_root + '/models/model.pt'``, the
    default ``output_dir`` is ``@bundle_root + '/synthetic'``.

The run:

1. the network: ``"$torch.nn.Sequential(*@network_layers)"`` where ``network_layers`` is a JSON list
   of ``torch.nn.ConvTranspose2d`` / ``BatchNorm2d`` / ``ReLU`` or ``LeakyReLU`` / ``Tanh``
   components (MONAI 1.6's config components take keyword arguments only, so the positional
   ``Sequential`` is built by an expression that unpacks the list);
2. the weights: ``torch.load(@checkpoint, map_location='cpu', weights_only=True)`` and a strict
   ``load_state_dict``; eval mode, no gradients (``requires_grad_(False)`` on the network, so the
   process's global autograd switch is left alone);
3. the latents: ``torch.randn(num_samples, latent_size, generator=torch.Generator('cpu').manual_seed(seed))``
   drawn at once, then the network in batches of ``batch_size`` in order: the same latents, batches
   and arithmetic as :func:`mammoshare.gan.inference.generate_synthetic_patches`, hence the same
   pixels for the same seed, batch size and device;
4. decoding by ``output_decoding``: ``"tanh"`` -> ``(out + 1) / 2``, ``"clip01"`` -> ``out``, then
   clipped to [0, 1], ``* 255``, rounded to uint8;
5. the PNG files ``synthetic_00000.png`` ... through ``monai.transforms.SaveImage`` with
   ``monai.data.PILWriter`` (8-bit greyscale; the writer swaps the first two axes, so each image
   is handed over transposed); the folder is made by ``monai.data.FolderLayout(makedirs=True)``;
6. ``synthetic_datalist.json`` beside them (written by ``numpy.savetxt`` as one line of JSON text):
   the project's synthetic datalist (one ``training`` record per PNG, label 1, ``box`` null,
   ``patient_id`` ``synthetic:<name>``, generator name, version, weights SHA-256, seed, index), so
   the folder is a ``--synthetic`` source of the classifier bundle like the project's own output.

What it loses compared with the project's own inference (:mod:`mammoshare.gan.inference`):

- the PNG text chunks (synthetic flag, generator, weights hash, seed, index): MONAI's PNG writer
  cannot write them; the same facts are in ``synthetic_datalist.json`` only, so a PNG copied out of
  its folder no longer says by itself that it is synthetic;
- ``--snapshot_dir`` (samples spread over every snapshot): one weights file per run
  (``--checkpoint models/snapshots/epoch_0500.pt`` for a snapshot; the packed metadata lists the
  snapshots and their SHA-256); the datalist then records ``weights_sha256`` "unknown" unless
  ``--weights_sha256`` is given too;
- the refusal of a non-empty output folder (same-named files are overwritten) and the clean-up of a
  half-written folder after an error;
- the other weights layouts (``last.pt``, medigan checkpoints): the packed ``model.pt`` is always
  a plain generator ``state_dict``;
- the progress bar.

The packed config passes :func:`mammoshare.exchange.verify.check_config` (the receiver's
allow-list) and :func:`build_network` rebuilds its network without evaluating anything.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = [
    "GeneratorArchitecture",
    "infer_architecture",
    "bundle_generator_settings",
    "network_layers",
    "build_network",
    "self_contained_inference",
    "DECODINGS",
    "LAYER_CLASSES",
    "SAFE_NAME",
    "check_safe_names",
    "check_against_settings",
]

DECODINGS = ("tanh", "clip01")
#: names and versions that may appear inside the JSON text the packed config writes
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
#: the only classes :func:`build_network` instantiates, with the keyword arguments each accepts
LAYER_CLASSES: dict[str, tuple[type[nn.Module], frozenset[str]]] = {
    "torch.nn.ConvTranspose2d": (
        nn.ConvTranspose2d,
        frozenset({"in_channels", "out_channels", "kernel_size", "stride", "padding", "output_padding", "bias", "dilation", "groups"}),
    ),
    "torch.nn.BatchNorm2d": (nn.BatchNorm2d, frozenset({"num_features", "eps", "momentum", "affine", "track_running_stats"})),
    "torch.nn.ReLU": (nn.ReLU, frozenset({"inplace"})),
    "torch.nn.LeakyReLU": (nn.LeakyReLU, frozenset({"negative_slope", "inplace"})),
    "torch.nn.Tanh": (nn.Tanh, frozenset()),
}
#: the packed network definition
SEQUENTIAL_EXPRESSION = "$torch.nn.Sequential(*@network_layers)"
_BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
#: the bundle's own network definitions whose activation we can read
_OWN_GENERATOR = "mammoshare.networks.DCGANGenerator"
_DCGAN_ARGS = frozenset({"latent_size", "ngf", "multipliers", "out_channels", "leaky_slope"})


@dataclass
class GeneratorArchitecture:
    """The DCGAN generator read from its ``state_dict``: ``latent_size`` -> ``channels`` (hidden
    widths, one transposed conv + BatchNorm + activation each) -> ``out_channels`` + Tanh."""

    latent_size: int
    channels: list[int]
    out_channels: int
    conv_bias: bool = False
    leaky_slope: float | None = None
    keys: list[str] = field(default_factory=list)

    @property
    def image_size(self) -> int:
        return 4 * 2 ** len(self.channels)


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(s) for s in t.shape)


def infer_architecture(state_dict: dict[str, torch.Tensor], name: str = "model.pt") -> GeneratorArchitecture:
    """Read the generator's geometry from its tensors; raises ``ValueError`` naming ``name`` when
    they do not form the project's DCGAN generator (k4 transposed convs, BatchNorm, a last conv to
    the image channels), e.g. for a discriminator's or classifier's weights."""
    layers: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        match = re.fullmatch(r"(\d+)\.([A-Za-z_]+)", key)
        if match is None:
            raise ValueError(f"{name}: key {key!r} is not a key of the generator's torch.nn.Sequential ('<index>.<tensor>')")
        layers.setdefault(int(match.group(1)), {})[match.group(2)] = value
    if not layers:
        raise ValueError(f"{name}: no tensors")
    for index, tensors in sorted(layers.items()):
        w = tensors.get("weight")
        if w is not None and w.ndim == 4 and _shape(w)[2:] != (4, 4):
            raise ValueError(
                f"{name}: {index}.weight of shape {_shape(w)} is not a 4x4 transposed-convolution kernel "
                "(a discriminator, critic or classifier is not a generator)"
            )
    last = max(layers)
    if last % 3 != 0 or last < 3:
        raise ValueError(
            f"{name}: layer indices {sorted(layers)} do not form the DCGAN generator "
            "(transposed conv, BatchNorm, activation repeated, then a last transposed conv and Tanh); "
            "a discriminator, critic or classifier is not a generator"
        )
    hidden = last // 3
    expected = {3 * i for i in range(hidden + 1)} | {3 * i + 1 for i in range(hidden)}
    if set(layers) != expected:
        raise ValueError(f"{name}: layers with tensors {sorted(layers)}, expected {sorted(expected)} for a generator with {hidden} hidden layers")
    channels: list[int] = []
    conv_bias = None
    c_in = None
    latent = None
    out_channels = None
    for i in range(hidden + 1):
        conv = layers[3 * i]
        extra = set(conv) - {"weight", "bias"}
        if "weight" not in conv or extra:
            raise ValueError(f"{name}: layer {3 * i} should be a transposed convolution (weight[, bias]), has {sorted(conv)}")
        w = conv["weight"]
        if w.ndim != 4 or _shape(w)[2:] != (4, 4):
            raise ValueError(
                f"{name}: {3 * i}.weight of shape {_shape(w)} is not a 4x4 transposed-convolution kernel "
                "(a discriminator or classifier is not a generator)"
            )
        has_bias = "bias" in conv
        if conv_bias is None:
            conv_bias = has_bias
        elif conv_bias != has_bias:
            raise ValueError(f"{name}: some transposed convolutions have a bias and some do not")
        if has_bias and _shape(conv["bias"]) != (_shape(w)[1],):
            raise ValueError(f"{name}: {3 * i}.bias of shape {_shape(conv['bias'])} does not match {3 * i}.weight")
        if c_in is None:
            latent = _shape(w)[0]
        elif _shape(w)[0] != c_in:
            raise ValueError(f"{name}: {3 * i}.weight takes {_shape(w)[0]} channels, the layer before makes {c_in}")
        c_in = _shape(w)[1]
        if i < hidden:
            norm = layers[3 * i + 1]
            if set(norm) - set(_BN_KEYS) or not {"weight", "bias", "running_mean", "running_var"} <= set(norm):
                raise ValueError(f"{name}: layer {3 * i + 1} should be a BatchNorm2d ({', '.join(_BN_KEYS)}), has {sorted(norm)}")
            for k, v in norm.items():
                want = () if k == "num_batches_tracked" else (c_in,)
                if _shape(v) != want:
                    raise ValueError(f"{name}: {3 * i + 1}.{k} of shape {_shape(v)}, expected {want}")
            channels.append(c_in)
        else:
            out_channels = c_in
    return GeneratorArchitecture(
        latent_size=int(latent), channels=channels, out_channels=int(out_channels), conv_bias=bool(conv_bias), keys=sorted(state_dict)
    )


def _literal(config: dict, value: Any, what: str, seen: tuple = ()) -> Any:
    """A config value that is a JSON literal, or an ``@id`` reference to a top-level literal."""
    if isinstance(value, str) and re.fullmatch(r"@\w+", value):
        ref = value[1:]
        if ref in seen or ref not in config:
            raise ValueError(f"{what}: reference {value} cannot be resolved to a value of the config")
        return _literal(config, config[ref], what, seen + (ref,))
    if isinstance(value, str) and value[:1] in ("$", "%", "@"):
        raise ValueError(f"{what}: {value!r} is an expression; a plain value is needed to pack the generator")
    if isinstance(value, list):
        return [_literal(config, v, what, seen) for v in value]
    return value


def _layers_of(config: dict, network_def: Any) -> list | None:
    """The layer list of an already packed config (``network_def`` = :data:`SEQUENTIAL_EXPRESSION`)."""
    if network_def == SEQUENTIAL_EXPRESSION and isinstance(config.get("network_layers"), list):
        return config["network_layers"]
    return None


def bundle_generator_settings(inference_config: dict, metadata: dict, name: str = "configs/inference.json") -> dict:
    """What the bundle's own config says about its generator, read without evaluating anything.

    Returns ``{"leaky_slope", "latent_size", "ngf", "multipliers", "out_channels", "decoding",
    "task"}`` (``None`` where not stated). ``network_def`` must be ``mammoshare.networks.DCGANGenerator``
    with literal (or ``@``-referenced literal) arguments, or an already packed layer list.
    Decoding: ``metadata["output_decoding"]`` or the config's ``"decoding"`` (they must agree); else
    ``clip01`` for a generator converted from the medigan checkpoints 00005/00006 (``origin``), else
    ``tanh``.
    """
    settings: dict[str, Any] = dict.fromkeys(("leaky_slope", "latent_size", "ngf", "multipliers", "out_channels"))
    network_def = inference_config.get("network_def")
    layers = _layers_of(inference_config, network_def)
    if layers is not None:
        acts = [l.get("_target_") for l in layers if isinstance(l, dict) and l.get("_target_") in ("torch.nn.ReLU", "torch.nn.LeakyReLU")]
        if not acts or len(set(acts)) != 1:
            raise ValueError(f"{name}: network_layers should use one activation (ReLU or LeakyReLU), found {sorted(set(map(str, acts)))}")
        if acts[0] == "torch.nn.LeakyReLU":
            slopes = {float(l.get("negative_slope", 0.01)) for l in layers if isinstance(l, dict) and l.get("_target_") == "torch.nn.LeakyReLU"}
            if len(slopes) != 1:
                raise ValueError(f"{name}: LeakyReLU layers with different slopes {sorted(slopes)}")
            settings["leaky_slope"] = slopes.pop()
    elif isinstance(network_def, dict) and network_def.get("_target_") == _OWN_GENERATOR:
        unknown = sorted(k for k in network_def if k != "_target_" and k not in _DCGAN_ARGS and not (k.startswith("_") and k.endswith("_")))
        if unknown:
            raise ValueError(f"{name}: network_def has arguments {unknown} that the packer does not know")
        for key in _DCGAN_ARGS:
            if key in network_def:
                try:
                    settings[key] = _literal(inference_config, network_def[key], f"{name}: network_def#{key}")
                except ValueError:
                    if key == "leaky_slope":  # the activation cannot be read from the weights
                        raise
                    settings[key] = None  # the geometry is read from the weights; no cross-check then
        slope = settings["leaky_slope"]
        if slope is not None and (isinstance(slope, bool) or not isinstance(slope, (int, float))):
            raise ValueError(f"{name}: network_def#leaky_slope must be a number or null, got {slope!r}")
    else:
        target = network_def.get("_target_") if isinstance(network_def, dict) else network_def
        raise ValueError(
            f"{name}: network_def {target!r} is neither {_OWN_GENERATOR} nor a packed torch.nn.Sequential; "
            "cannot tell the generator's activation"
        )
    decodings = {}
    if metadata.get("output_decoding") is not None:
        decodings["metadata.json output_decoding"] = metadata["output_decoding"]
    if inference_config.get("decoding") is not None:
        decodings["inference.json decoding"] = _literal(inference_config, inference_config["decoding"], f"{name}: decoding")
    if inference_config.get("output_decoding") is not None:
        decodings["inference.json output_decoding"] = _literal(inference_config, inference_config["output_decoding"], f"{name}: output_decoding")
    for where, value in decodings.items():
        if value not in DECODINGS:
            raise ValueError(f"{where}: unknown output decoding {value!r}; use one of {list(DECODINGS)}")
    if len(set(decodings.values())) > 1:
        raise ValueError(f"the bundle states different output decodings: {decodings}")
    if decodings:
        settings["decoding"] = next(iter(decodings.values()))
    else:
        origin = metadata.get("origin") if isinstance(metadata.get("origin"), dict) else {}
        model_id = str(origin.get("medigan_model_id", ""))
        settings["decoding"] = "clip01" if model_id.startswith(("00005", "00006")) else "tanh"
    task = inference_config.get("task", "mass")
    settings["task"] = task if task in ("mass", "all") else "mass"
    return settings


def check_against_settings(arch: GeneratorArchitecture, settings: dict, name: str = "models/model.pt") -> None:
    """Raise ``ValueError`` when the bundle's config states a geometry its weights do not have."""
    problems = []
    if settings.get("latent_size") is not None and int(settings["latent_size"]) != arch.latent_size:
        problems.append(f"latent size {settings['latent_size']} in the config, {arch.latent_size} in the weights")
    if settings.get("out_channels") is not None and int(settings["out_channels"]) != arch.out_channels:
        problems.append(f"{settings['out_channels']} output channels in the config, {arch.out_channels} in the weights")
    ngf = settings.get("ngf")
    multipliers = settings.get("multipliers") or ((16, 8, 4, 2, 1) if ngf is not None else None)
    if ngf is not None and multipliers is not None:
        widths = [int(ngf) * int(m) for m in multipliers]
        if widths != arch.channels:
            problems.append(f"hidden widths {widths} (ngf {ngf}) in the config, {arch.channels} in the weights")
    if problems:
        raise ValueError(f"{name}: the weights do not match the bundle's inference.json: " + "; ".join(problems))


def network_layers(arch: GeneratorArchitecture) -> list[dict]:
    """The generator as a JSON list of torch layer components (see :func:`build_network`)."""
    widths = [arch.latent_size, *arch.channels]
    layers: list[dict] = []
    for i, (c_in, c_out) in enumerate(zip(widths, widths[1:] + [arch.out_channels])):
        stride, padding = (1, 0) if i == 0 else (2, 1)
        layers.append(
            {
                "_target_": "torch.nn.ConvTranspose2d",
                "in_channels": c_in,
                "out_channels": c_out,
                "kernel_size": 4,
                "stride": stride,
                "padding": padding,
                "bias": arch.conv_bias,
            }
        )
        if i < len(arch.channels):
            layers.append({"_target_": "torch.nn.BatchNorm2d", "num_features": c_out})
            if arch.leaky_slope is None:
                layers.append({"_target_": "torch.nn.ReLU", "inplace": True})
            else:
                layers.append({"_target_": "torch.nn.LeakyReLU", "negative_slope": float(arch.leaky_slope), "inplace": True})
    layers.append({"_target_": "torch.nn.Tanh"})
    return layers


def _plain(value: Any, where: str) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return tuple(value)
    raise ValueError(f"{where}: {value!r} is not a plain number, boolean or list of integers")


def build_network(layers: Any, where: str = "network_layers") -> nn.Sequential:
    """Build ``torch.nn.Sequential`` from a JSON layer list without evaluating anything: only the
    classes of :data:`LAYER_CLASSES`, only their listed keyword arguments, only plain values."""
    if not isinstance(layers, list) or not layers:
        raise ValueError(f"{where}: a non-empty list of layer components is expected")
    modules: list[nn.Module] = []
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict) or not isinstance(layer.get("_target_"), str):
            raise ValueError(f"{where}[{i}]: a component with a _target_ is expected")
        target = layer["_target_"]
        if target not in LAYER_CLASSES:
            raise ValueError(f"{where}[{i}]: {target!r} is not one of the allowed layers {sorted(LAYER_CLASSES)}")
        cls, allowed = LAYER_CLASSES[target]
        kwargs = {k: v for k, v in layer.items() if k != "_target_"}
        unknown = sorted(set(kwargs) - allowed)
        if unknown:
            raise ValueError(f"{where}[{i}]: {target} does not take {unknown} here (allowed: {sorted(allowed)})")
        modules.append(cls(**{k: _plain(v, f"{where}[{i}].{k}") for k, v in kwargs.items()}))
    return nn.Sequential(*modules)


def check_safe_names(name: str, version: str) -> None:
    """The packed config writes the bundle's name and version into JSON text without escaping:
    refuse anything but letters, digits and ``. _ + -``."""
    for what, value in (("name", name), ("version", version)):
        if not SAFE_NAME.fullmatch(value):
            raise ValueError(f"metadata {what} {value!r}: only letters, digits and . _ + - are allowed in a shared bundle's {what}")


def self_contained_inference(
    arch: GeneratorArchitecture,
    metadata: dict,
    weights_sha256: str,
    decoding: str = "tanh",
    task: str = "mass",
    num_samples: int = 1200,
    batch_size: int = 64,
) -> dict:
    """The packed ``configs/inference.json`` (a dict; write it with ``json.dumps(..., indent=4)``)."""
    if decoding not in DECODINGS:
        raise ValueError(f"unknown output decoding {decoding!r}; use one of {list(DECODINGS)}")
    if task not in ("mass", "all"):
        raise ValueError(f"unknown task {task!r}; use 'mass' or 'all'")
    if not re.fullmatch(r"[0-9a-f]{64}", weights_sha256):
        raise ValueError(f"not a SHA-256 hex digest: {weights_sha256!r}")
    name, version = str(metadata.get("name", "")), str(metadata.get("version", ""))
    check_safe_names(name, version)
    record = (
        "$numpy.char.add(numpy.char.add(numpy.char.add(numpy.char.add('{\"image\": \"', @stems), "
        "'.png\", \"patient_id\": \"synthetic:' + @generator_name + '\", \"label\": 1, \"lesion_types\": ' + @lesion_types_json + "
        "', \"box\": null, \"density\": null, \"birads\": null, \"laterality\": null, \"view\": null, \"source\": \"' + "
        "@generator_name + '\", \"weights_sha256\": \"' + @weights_sha256 + '\", \"seed\": ' + str(int(@seed)) + ', \"index\": '), "
        "numpy.arange(int(@num_samples)).astype(str)), '}')"
    )
    datalist_text = (
        "$'{\"dataset\": \"synthetic\", \"task\": \"' + @task + '\", \"phantom\": false, \"seed\": ' + str(int(@seed)) + "
        "', \"batch_size\": ' + str(int(@batch_size)) + ', \"device\": \"' + torch.device(@device).type + '\", "
        "\"generator\": {\"name\": \"' + @generator_name + '\", \"version\": \"' + @generator_version + '\", "
        "\"weights\": [{\"file\": \"' + @checkpoint.split('/')[-1] + '\", \"sha256\": \"' + @weights_sha256 + "
        "'\", \"layout\": \"ours\", \"decoding\": \"' + @output_decoding + '\", \"samples\": ' + str(int(@num_samples)) + '}], "
        "\"self_contained\": true}, \"training\": [' + ', '.join(@datalist_records.tolist()) + '], \"validation\": [], \"test\": []}'"
    )
    config = {
        "bundle_root": ".",
        "output_dir": "$@bundle_root + '/synthetic'",
        "checkpoint": "$@bundle_root + '/models/model.pt'",
        "num_samples": int(num_samples),
        "seed": 0,
        "batch_size": int(batch_size),
        "device": "$'cuda' if torch.cuda.is_available() else 'cpu'",
        "task": task,
        "output_decoding": decoding,
        "latent_size": arch.latent_size,
        "image_size": arch.image_size,
        "generator_name": "@_meta_#name",
        "generator_version": "@_meta_#version",
        "packed_weights_sha256": weights_sha256,
        "weights_sha256": "$@packed_weights_sha256 if @checkpoint == @bundle_root + '/models/model.pt' else 'unknown'",
        "network_layers": network_layers(arch),
        "network_def": SEQUENTIAL_EXPRESSION,
        "network": "$@network_def.to(@device)",
        "state_dict": "$torch.load(@checkpoint, map_location='cpu', weights_only=True)",
        "rng": "$torch.Generator(device='cpu').manual_seed(int(@seed))",
        "latents": "$torch.randn(int(@num_samples), @latent_size, generator=@rng).view(-1, @latent_size, 1, 1)",
        "raw": "$torch.cat(list(map(@network, torch.split(@latents.to(@device), int(@batch_size))))).float().cpu()",
        "images": "${'tanh': (@raw + 1.0) / 2.0, 'clip01': @raw}[@output_decoding].clamp(0.0, 1.0)",
        "pixels": "$(@images[:, 0] * 255.0).round().clamp(0, 255).to(torch.uint8)",
        "writer_images": "$list(@pixels[:, None].transpose(2, 3))",
        "digits": "$max(5, len(str(int(@num_samples) - 1)))",
        "stems": "$numpy.char.add('synthetic_', numpy.char.zfill(numpy.arange(int(@num_samples)).astype(str), @digits))",
        "lesion_types_json": "$'[\"mass\"]' if @task == 'mass' else '[]'",
        "saver": {
            "_target_": "monai.transforms.SaveImage",
            "output_dir": "@output_dir",
            "output_postfix": "",
            "output_ext": ".png",
            "output_dtype": "$numpy.uint8",
            "scale": None,
            "separate_folder": False,
            "print_log": False,
            "writer": "$monai.data.PILWriter",
        },
        "datalist_records": record,
        "datalist_text": datalist_text,
        "run": [
            "$@network.load_state_dict(@state_dict, strict=True)",
            "$@network.requires_grad_(False).eval()",
            "$monai.data.FolderLayout(output_dir=@output_dir, makedirs=True).filename(subject='synthetic')",
            "$list(map(@saver, @writer_images, [None] * int(@num_samples), numpy.char.add(@output_dir + '/', @stems).tolist()))",
            "$numpy.savetxt(@output_dir + '/synthetic_datalist.json', numpy.array([@datalist_text]), fmt='%s', encoding='utf-8')",
        ],
    }
    return copy.deepcopy(config)

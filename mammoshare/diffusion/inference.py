"""Synthetic lesion patches from a shared diffusion model: the ``run`` of ``ddpm_bcdr``'s ``inference.json``.

The files are those of the GAN bundles (:class:`~mammoshare.gan.inference.SyntheticPatchWriter`):
exactly ``num_samples`` 128x128 8-bit PNGs with the same provenance text chunks (plus
``mammoshare:lesion_type`` and ``mammoshare:sampler``) and one ``synthetic_datalist.json``.

The same seed gives byte-identical files: the initial noise of all samples is drawn at once from a
CPU ``torch.Generator`` seeded with ``seed`` (the same noise whatever the batch size and device),
the default DDIM sampler (eta 0) and RFlow are deterministic given that noise, and the ancestral
DDPM sampler draws its noise from the global generator seeded with ``seed``. Sampling is batched
(``batch_size`` patches per UNet call).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..gan.inference import (
    MissingWeightsError,
    SyntheticPatchWriter,
    batch_progress,
    sampling_counts,
    weights_file,
)
from ..gan.weights import GeneratorWeights, WeightsError, decode_output, load_generator_weights, load_into
from ..datalist import trained_on_phantom
from .conditioning import ClassConditionedDiffusionInferer, class_index, sampling_scheduler

__all__ = ["load_diffusion_weights", "generate_diffusion_patches"]


def load_diffusion_weights(path: str | os.PathLike) -> GeneratorWeights:
    """The UNet weights of a file, read by the restricted loader of the generators
    (:func:`~mammoshare.gan.weights.load_generator_weights`: nothing but tensors is unpickled):
    layout ``diffusion`` (``model.pt``, the EMA weights), ``diffusion-last`` (the ``ema`` entry of a
    training state ``last.pt``) or ``safetensors`` (an unpacked archive's ``model.safetensors``).

    Raises:
        MissingWeightsError: no such file.
        WeightsError: anything but a diffusion UNet's tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(f"{path}: weights file not found")
    try:
        weights = load_generator_weights(path)
    except WeightsError as e:
        raise WeightsError(f"{e}; a diffusion bundle takes its models/model.pt (EMA weights), a last.pt or a model.safetensors") from None
    if weights.family != "diffusion_unet":
        raise WeightsError(
            f"{path}: the weights of a {weights.family} generator ({weights.layout} layout), not of a diffusion UNet: "
            "sample them with a GAN bundle's inference.json"
        )
    return weights


def _load_into(network: torch.nn.Module, weights: GeneratorWeights) -> None:
    """Load the weights into the UNet; another architecture raises :class:`WeightsError` naming the
    options that must match training (the key and shape check is the generators' ``load_into``)."""
    try:
        load_into(network, weights)
    except WeightsError as e:
        raise WeightsError(
            f"{weights.path}: weights of another UNet than the configured one (--channels, --attention_levels, "
            f"--num_res_blocks, --num_head_channels, --num_class_embeds must be those of training): {e}"
        ) from e


def _missing_message(default: Path | None) -> str:
    bundle = default.parent.parent.as_posix() if default is not None and default.parent.name == "models" else "bundles/ddpm_bcdr"
    where = f"{default}: no diffusion model weights (the bundle ships none until it is trained)" if default else "no weights given"
    return (
        f"{where}. Train it with `python -m monai.bundle run --config_file {bundle}/configs/train.json` (it writes "
        "models/model.pt, the EMA weights), or pass --checkpoint FILE"
    )


def generate_diffusion_patches(
    network: torch.nn.Module,
    num_samples: int,
    output_dir: str | os.PathLike,
    seed: int = 0,
    checkpoint: str | os.PathLike | None = None,
    default_checkpoint: str | os.PathLike | None = None,
    *,
    generator_name: str,
    generator_version: str,
    task: str = "mass",
    lesion_type: str | None = None,
    sampler: str = "ddim",
    training_scheduler: str = "ddpm",
    num_inference_steps: int = 50,
    num_train_timesteps: int = 1000,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
    amp: bool = False,
    phantom: bool | None = None,
    progress: bool = True,
) -> Path:
    """Write ``num_samples`` synthetic lesion patches of a diffusion model and their datalist.

    Args:
        network: the ``DiffusionModelUNet`` (2D, 1 channel in and out), configured as in training.
        num_samples: how many PNG files to write (1200 in the study).
        output_dir: an empty or new folder.
        seed: seeds the noise; the same seed (and batch size and device) gives byte-identical files.
        checkpoint: a weights file (``model.pt`` or a ``last.pt``, whose EMA weights are used);
            default ``default_checkpoint`` (the bundle's ``models/model.pt``).
        generator_name, generator_version: the bundle's name and version, in every PNG.
        task: ``"mass"`` or ``"all"``, the datalist's task.
        lesion_type: the class to sample (:data:`~mammoshare.diffusion.conditioning.LESION_CLASSES`);
            None: ``mass`` for the mass task, ``any`` (every type, in the training proportions) for
            ``all``. The mass task takes masses only.
        sampler: ``"ddim"`` (default), ``"ddpm"`` or ``"rflow"``; must suit ``training_scheduler``.
        training_scheduler: what the weights were trained with, ``"ddpm"`` or ``"rflow"``.
        num_inference_steps: sampling steps (DDIM: 50).
        device, batch_size: where and how many patches per UNet call.
        amp: sample under CUDA autocast (float16), on a GPU only.
        phantom: whether the model was trained on phantom data; None (default): as the training
            counts next to the weights say (:func:`~mammoshare.datalist.trained_on_phantom`).
        progress: a tqdm bar over the batches.

    Returns:
        the path of the datalist JSON.
    """
    num_samples, seed, batch_size = sampling_counts(num_samples, seed, batch_size)
    conditional = getattr(network, "num_class_embeds", None) is not None
    if lesion_type is None:
        lesion_type = "mass" if task == "mass" else "any"
    label = class_index(lesion_type)
    if task == "mass" and lesion_type != "mass":
        raise ValueError(f"the mass task takes masses only; --lesion_type {lesion_type} needs --task all")
    if not conditional and lesion_type not in ("any", "mass" if task == "mass" else "any"):
        raise ValueError(f"--lesion_type {lesion_type}: this UNet has no class embedding (--num_class_embeds None)")
    scheduler = sampling_scheduler(sampler, training_scheduler, num_inference_steps, num_train_timesteps)
    name, version = str(generator_name), str(generator_version)
    path = weights_file(checkpoint, default_checkpoint, _missing_message)
    phantom = trained_on_phantom(path) if phantom is None else bool(phantom)
    writer = SyntheticPatchWriter(output_dir, num_samples, generator_name=name, generator_version=version, task=task,
                                  seed=seed, phantom=phantom)
    device = torch.device(device)
    weights = load_diffusion_weights(path)
    _load_into(network, weights)
    network = network.to(device).eval()
    del weights.state_dict

    noise = torch.randn(num_samples, 1, 128, 128, generator=torch.Generator().manual_seed(seed))
    inferer = ClassConditionedDiffusionInferer(scheduler)
    types = [] if lesion_type == "any" else [lesion_type]  # "any": the lesion type is not known
    text = {"lesion_type": lesion_type, "sampler": f"{sampler}-{int(num_inference_steps)}"}
    use_amp = bool(amp) and device.type == "cuda"
    batches = -(-num_samples // batch_size)
    with (
        writer,
        torch.random.fork_rng(devices=[device] if device.type == "cuda" else []),
        batch_progress(name, "sampling", batches, progress) as bar,
    ):
        torch.manual_seed(seed)  # the ancestral sampler's noise
        for start in range(0, num_samples, batch_size):
            stop = min(start + batch_size, num_samples)
            labels = torch.full((stop - start,), label, device=device) if conditional else None
            with torch.autocast("cuda", enabled=use_amp):
                out = inferer.sample(noise[start:stop].to(device), network, scheduler, class_labels=labels)
            writer.add(
                decode_output(out.float(), "tanh"),
                weights_file=path.name,
                weights_sha256=weights.sha256,
                lesion_types=types,
                extra_text=[text] * (stop - start),
            )
            bar.update(1)
        return writer.finish(
            batch_size=batch_size,
            device=device.type,
            generator={
                "name": name,
                "version": version,
                "family": "diffusion",
                "sampler": sampler,
                "num_inference_steps": int(num_inference_steps),
                "training_scheduler": training_scheduler,
                "lesion_type": lesion_type,
                "class_label": label if conditional else None,
                "weights": [{"file": path.name, "sha256": weights.sha256, "layout": weights.layout, "samples": num_samples}],
            },
        )

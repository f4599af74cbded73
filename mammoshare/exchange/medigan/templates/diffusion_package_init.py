"""medigan model package exported by mammoshare from the diffusion bundle NAME VERSION (see below).

It makes SYNTHETIC 128x128 mammography lesion patches (uint8, one channel) with a denoising
diffusion model; never present them as patient images. Needs torch, numpy, PIL and MONAI (its
DiffusionModelUNet, schedulers and DiffusionInferer); the weights are plain tensors loaded with
weights_only=True.

generate(model_file, num_samples, output_path, save_images, seed=None, device="cpu",
         lesion_type=None, num_inference_steps=None, batch_size=64):
    save_images False: returns a list of num_samples uint8 arrays of shape (128, 128);
    save_images True: writes num_samples PNG files into output_path (returns their paths).
    seed: the initial noise from torch.Generator().manual_seed(seed) (the same noise as the
    bundle's inference.json with --seed; with the same batch size, the same images); None: torch's
    global random state.
    lesion_type: one of CLASS_NAMES (default "mass"; "any" samples every lesion type); ignored by a
    model without class embedding.
    num_inference_steps: sampling steps (default NUM_INFERENCE_STEPS, with SAMPLER).
    medigan calls generate once per batch of 32 with the same arguments when it saves images,
    so a fixed seed repeats the same noise in every batch there.
"""

import functools
import os

import numpy as np
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

# --- the generator's values: mammoshare medigan-export writes them in (render_package_init) ---
NAME = "generator"
VERSION = "0.0.0"
DECODING = "tanh"
IMAGE_SIZE = 128
#: monai.networks.nets.DiffusionModelUNet keyword arguments
NETWORK = {}
#: the lesion class of each class-embedding index (None: no class embedding)
CLASS_NAMES = None
TRAINING_SCHEDULER = "ddpm"
NUM_TRAIN_TIMESTEPS = 1000
SAMPLER = "ddim"
NUM_INFERENCE_STEPS = 50
# --- end of the generator's values ---


def build_network():
    """The UNet of NETWORK (MONAI's DiffusionModelUNet)."""
    from monai.networks.nets import DiffusionModelUNet

    return DiffusionModelUNet(**NETWORK)


def build_scheduler(num_inference_steps):
    """SAMPLER's MONAI scheduler, set to num_inference_steps."""
    from monai.networks import schedulers

    steps = int(num_inference_steps)
    if not 1 <= steps <= NUM_TRAIN_TIMESTEPS:
        raise ValueError("num_inference_steps must be between 1 and %d, got %d" % (NUM_TRAIN_TIMESTEPS, steps))
    if SAMPLER == "rflow":
        scheduler = schedulers.RFlowScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, use_discrete_timesteps=True, spatial_dim=2,
                                              base_img_size_numel=IMAGE_SIZE * IMAGE_SIZE)
        scheduler.set_timesteps(steps, input_img_size_numel=IMAGE_SIZE * IMAGE_SIZE)
        return scheduler
    scheduler = (schedulers.DDIMScheduler if SAMPLER == "ddim" else schedulers.DDPMScheduler)(num_train_timesteps=NUM_TRAIN_TIMESTEPS)
    scheduler.set_timesteps(steps)
    return scheduler


def _to_uint8(output):
    """Model output (B, 1, H, W) -> uint8 images (B, H, W), decoded by DECODING."""
    if DECODING == "tanh":
        images = ((output + 1.0) / 2.0).clamp(0.0, 1.0)
    else:
        images = output.clamp(0.0, 1.0)
    return (images[:, 0].float().cpu() * 255.0).round().clamp(0, 255).to(torch.uint8).numpy()


def generate(model_file, num_samples, output_path, save_images, seed=None, device="cpu", lesion_type=None,
             num_inference_steps=None, batch_size=64, **kwargs):
    """medigan's entry point (see the module docstring)."""
    from monai.inferers import DiffusionInferer

    num_samples = int(num_samples)
    if num_samples < 0:
        raise ValueError("num_samples must be >= 0, got " + str(num_samples))
    lesion_type = "mass" if lesion_type is None else str(lesion_type)
    if CLASS_NAMES is not None and lesion_type not in CLASS_NAMES:
        raise ValueError("lesion_type " + repr(lesion_type) + " is not one of " + repr(CLASS_NAMES))
    images = []
    if num_samples > 0:
        network = build_network()
        network.load_state_dict(torch.load(model_file, map_location="cpu", weights_only=True))
        network = network.to(device).eval()
        scheduler = build_scheduler(NUM_INFERENCE_STEPS if num_inference_steps is None else num_inference_steps)
        inferer = DiffusionInferer(scheduler)
        generator = None if seed is None else torch.Generator().manual_seed(int(seed))
        noise = torch.randn(num_samples, 1, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
        if seed is not None:
            torch.manual_seed(int(seed))  # the ancestral (ddpm) sampler's noise, as the bundle's inference draws it
        for chunk in noise.split(int(batch_size)):
            model = network
            if CLASS_NAMES is not None:
                labels = torch.full((len(chunk),), CLASS_NAMES.index(lesion_type), device=device)
                model = functools.partial(network, class_labels=labels)
            with torch.autocast(device_type=torch.device(device).type, enabled=torch.device(device).type == "cuda"):
                out = inferer.sample(chunk.to(device), model, scheduler, verbose=False)
            images.extend(np.ascontiguousarray(a) for a in _to_uint8(out.float()))
    if not save_images:
        return images
    os.makedirs(output_path, exist_ok=True)
    paths = []
    for index, array in enumerate(images):
        info = PngInfo()
        info.add_text("Description", "SYNTHETIC lesion patch generated by " + NAME + " " + VERSION + "; not a patient image")
        info.add_text("lesion_type", lesion_type)
        path = os.path.join(output_path, "synthetic_%05d.png" % index)
        Image.fromarray(array).save(path, format="PNG", pnginfo=info)
        paths.append(path)
    return paths

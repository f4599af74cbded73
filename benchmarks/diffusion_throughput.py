"""Images/s of the ddpm_bcdr diffusion model: training steps and DDIM sampling.

- ``train``: images/s of the bundle's training iteration (SupervisedTrainer, DiffusionPrepareBatch
  with the lesion class, MSE on the noise, Adam, AMP on CUDA), on batches held in memory, so that
  the number is the network's;
- ``sample``: finished patches/s of DDIM sampling with ``--steps`` steps (50, the bundle default),
  ``--sample_batch`` patches per UNet call, as the inference config runs it.

The UNet is the bundle's default (channels 64/128/128, attention at the two lower levels) unless
``--channels`` says otherwise. Rates are from the median of ``--repeats`` timings after a warm-up.

    python benchmarks/diffusion_throughput.py [--device cpu] [--batch_size 8] [--sample_batch 8] [--steps 50]
    python benchmarks/diffusion_throughput.py --quick     # a tiny UNet and 2 steps: seconds, checks the script runs

``python benchmarks/run.py --only diffusion`` runs the same measurement (:func:`measure`) and records it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import time

import sys
from pathlib import Path

import torch
from monai.engines import SupervisedTrainer
from monai.networks.nets import DiffusionModelUNet

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import Progress  # noqa: E402
from mammoshare.diffusion.conditioning import (  # noqa: E402
    ClassConditionedDiffusionInferer,
    LesionDiffusionPrepareBatch,
    sampling_scheduler,
    training_scheduler,
)


def measure(device: str | torch.device = "cpu", channels=(64, 128, 128), batch_size: int = 8, sample_batch: int = 8,
            steps: int = 50, train_iterations: int = 3, repeats: int = 2, progress: bool = True) -> dict:
    """Images/s of the training iteration and of DDIM sampling (also the ``diffusion`` case of
    ``benchmarks/run.py``); returns the figures and the settings they were measured with."""
    device = torch.device(device)
    bar = Progress(total=2 * repeats + 1) if progress else None
    channels = [int(c) for c in channels]
    attention = [False] + [True] * (len(channels) - 1)
    torch.manual_seed(0)
    network = DiffusionModelUNet(
        spatial_dims=2, in_channels=1, out_channels=1, channels=channels, attention_levels=attention,
        num_res_blocks=1, num_head_channels=channels[-1], num_class_embeds=4, norm_num_groups=min(32, channels[0]),
    ).to(device)
    amp = device.type == "cuda"
    batches = [
        {"image": torch.rand(batch_size, 1, 128, 128) * 2 - 1, "class_label": torch.randint(0, 3, (batch_size,))}
        for _ in range(train_iterations)
    ]
    trainer = SupervisedTrainer(
        device=device, max_epochs=1, train_data_loader=batches, network=network,
        optimizer=torch.optim.Adam(network.parameters(), 2.5e-5), loss_function=torch.nn.MSELoss(),
        inferer=ClassConditionedDiffusionInferer(training_scheduler("ddpm", 1000)),
        prepare_batch=LesionDiffusionPrepareBatch(1000), amp=amp, decollate=False,
    )

    def case(name: str):
        return bar.case(name) if bar is not None else contextlib.nullcontext()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def train_once() -> float:
        trainer.state.max_epochs, trainer.state.epoch, trainer.state.iteration = None, 0, 0
        sync()
        start = time.perf_counter()
        trainer.run()
        sync()
        return (time.perf_counter() - start) / train_iterations

    with case("training warm-up"):
        train_once()
    train_times = []
    for i in range(repeats):
        with case(f"training timing {i + 1}"):
            train_times.append(train_once())

    network.eval()
    scheduler = sampling_scheduler("ddim", "ddpm", steps, 1000)
    inferer = ClassConditionedDiffusionInferer(scheduler)
    noise = torch.randn(sample_batch, 1, 128, 128, device=device)
    labels = torch.zeros(sample_batch, dtype=torch.long, device=device)

    def sample_once() -> float:
        sync()
        start = time.perf_counter()
        with torch.autocast("cuda", enabled=amp):
            inferer.sample(noise, network, scheduler, class_labels=labels)
        sync()
        return time.perf_counter() - start

    if device.type == "cuda":
        sample_once()  # warm-up (kernel selection)
    sample_times = []
    for i in range(repeats):
        with case(f"sampling timing {i + 1}"):
            sample_times.append(sample_once())
    if bar is not None:
        bar.close()
    return {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "channels": channels,
        "amp": amp,
        "train_batch": batch_size,
        "train_iterations_per_timing": train_iterations,
        "train_images_per_s": round(batch_size / statistics.median(train_times), 3),
        "sample_batch": sample_batch,
        "ddim_steps": steps,
        "sample_images_per_s": round(sample_batch / statistics.median(sample_times), 4),
        "timings": repeats,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--channels", default="64,128,128")
    parser.add_argument("--batch_size", type=int, default=8, help="training batch (the bundle default)")
    parser.add_argument("--sample_batch", type=int, default=8, help="patches per sampling batch")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps")
    parser.add_argument("--train_iterations", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2, help="timings of training and of sampling")
    parser.add_argument("--quick", action="store_true", help="a tiny UNet (8,8,8), 2 DDIM steps, 2 patches, one timing")
    args = parser.parse_args()
    if args.quick:
        args.channels, args.steps, args.batch_size, args.sample_batch, args.repeats, args.train_iterations = "8,8,8", 2, 2, 2, 1, 1
    result = measure(args.device, [int(c) for c in args.channels.split(",")], args.batch_size, args.sample_batch,
                     args.steps, args.train_iterations, args.repeats)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

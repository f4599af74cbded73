"""Does GAN training wait on data? The training step rate with the real pipeline against the same
loop fed from memory, in one run.

Both runs use MONAI's GanTrainer with the dcgan_bcdr networks, losses and batch size:
- ``pipeline``: the bundle's data path, cached canonical patches + random flips + scaling, drawn
  through the bundle's loader (StreamBatchSampler) on the phantom BCDR masses;
- ``memory``: the same batches materialised beforehand, handed over as they are.

The ratio pipeline / memory is the share of the step rate that the data path keeps (the project's
target: >= 0.9). Steps alternate (pipeline, memory, pipeline, memory...) on one trainer so that
machine drift hits both alike; rates are from the median step times.

    python benchmarks/gan_data_pipeline.py [--ngf 64] [--steps 20] [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from monai.engines import GanTrainer
from monai.transforms import RandFlipd, ScaleIntensityRanged

from mammoshare.data import patch_dataset
from mammoshare.datalist import datalist_records
from mammoshare.gan.data import gan_dataloader
from mammoshare.gan.losses import DCGANLoss
from mammoshare.gan.trainers import latent_maker, prepare_real_batch
from mammoshare.networks import DCGANDiscriminator, DCGANGenerator
from mammoshare.phantom import write_phantoms
from mammoshare.readers import build_datalist


def make_trainer(loader, steps: int, ngf: int, ndf: int, batch_size: int, device: torch.device) -> GanTrainer:
    torch.manual_seed(0)
    generator = DCGANGenerator(ngf=ngf).to(device)
    discriminator = DCGANDiscriminator(ndf=ndf).to(device)
    loss = DCGANLoss(discriminator)
    return GanTrainer(
        device=device,
        max_epochs=1,
        epoch_length=steps,
        train_data_loader=loader,
        g_network=generator,
        g_optimizer=torch.optim.Adam(generator.parameters(), 2e-4, betas=(0.5, 0.999)),
        g_loss_function=loss.generator_loss,
        d_network=discriminator,
        d_optimizer=torch.optim.Adam(discriminator.parameters(), 2e-4, betas=(0.5, 0.999)),
        d_loss_function=loss.discriminator_loss,
        latent_shape=100,
        d_prepare_batch=prepare_real_batch,
        g_prepare_batch=latent_maker(batch_size),
        decollate=False,
    )


def step_times(trainer: GanTrainer, pipeline_loader, memory_batches, steps: int) -> dict[str, list[float]]:
    """Alternate one pipeline step (fetch from the loader + GanTrainer iteration) and one memory step
    (GanTrainer iteration on a ready batch): machine drift hits both alike."""
    sync = torch.cuda.synchronize if trainer.state.device.type == "cuda" else (lambda: None)
    batches = iter(())
    times = {"pipeline": [], "memory": []}
    for i in range(steps):
        sync()
        start = time.perf_counter()
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(pipeline_loader)
            batch = next(batches)
        trainer._iteration(trainer, batch)
        sync()
        times["pipeline"].append(time.perf_counter() - start)
        start = time.perf_counter()
        trainer._iteration(trainer, memory_batches[i % len(memory_batches)])
        sync()
        times["memory"].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ngf", type=int, default=64)
    parser.add_argument("--ndf", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20, help="training steps per timed run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, help="also write the result as JSON here")
    args = parser.parse_args()
    device = torch.device(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        roots = write_phantoms(tmp, datasets=["bcdr"])
        datalist, _ = build_datalist("bcdr", roots["bcdr"], task="mass")
        records = [r for r in datalist_records(datalist) if r["label"] == 1]
        transforms = [
            RandFlipd("image", prob=0.5, spatial_axis=0),
            RandFlipd("image", prob=0.5, spatial_axis=1),
            ScaleIntensityRanged("image", 0.0, 1.0, -1.0, 1.0),
        ]
        dataset = patch_dataset(records, transforms, cache="memory", progress=False)
        pipeline_loader = gan_dataloader(dataset, batch_size=args.batch_size, seed=0)
        # the same number of batches, materialised once, on the device: the loop fed from memory
        batches = []
        while len(batches) < args.steps:
            batches += [{"image": b["image"].to(device)} for b in pipeline_loader]

        trainer = make_trainer(pipeline_loader, args.steps, args.ngf, args.ndf, args.batch_size, device)
        trainer.state.device = device
        step_times(trainer, pipeline_loader, batches, 2)  # first-call costs outside the timings
        times = step_times(trainer, pipeline_loader, batches, args.steps * args.repeats)

    rate = {name: 1.0 / statistics.median(values) for name, values in times.items()}
    result = {
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "ngf": args.ngf,
        "ndf": args.ndf,
        "batch_size": args.batch_size,
        "steps_each": args.steps * args.repeats,
        "steps_per_s": {k: round(v, 3) for k, v in rate.items()},
        "images_per_s": {k: round(v * args.batch_size, 1) for k, v in rate.items()},
        "ratio_pipeline_over_memory": round(rate["pipeline"] / rate["memory"], 3),
    }
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()

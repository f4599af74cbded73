"""Training samples/s of the CNN and Swin-T classifiers, with the bundle's data pipeline against the
same steps fed from memory, in one run.

For each network: MONAI's SupervisedTrainer with the bundle's loss, optimiser and batch size;
``pipeline`` steps draw batches through the bundle's path (cached canonical patches, jitter, and
for Swin the 224x224 three-channel input) from the phantom INbreast data; ``memory`` steps take the
same batches ready on the device. Steps alternate so that machine drift hits both alike; rates
come from the median step times.

    python benchmarks/classifier_throughput.py [--steps 10] [--networks cnn swin] [--device cpu]
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
from monai.data import DataLoader
from monai.engines import SupervisedTrainer

from mammoshare.classifier.data import build_training_set
from mammoshare.classifier.model import KEEP_KEYS, training_transforms
from mammoshare.data import patch_dataset
from mammoshare.networks import patch_classifier
from mammoshare.phantom import write_phantoms
from mammoshare.readers import build_datalist


def measure(name: str, records: list[dict], steps: int, batch_size: int, device: torch.device) -> dict:
    torch.manual_seed(0)
    network = patch_classifier(name).to(device)
    transforms = training_transforms(name)  # the bundle's: jitter with its defaults, then the network input
    dataset = patch_dataset(records, transforms, cache="memory", progress=False, keep_keys=KEEP_KEYS)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True)
    trainer = SupervisedTrainer(
        device=device,
        max_epochs=1,
        train_data_loader=loader,
        network=network,
        optimizer=torch.optim.SGD(network.parameters(), lr=0.001, momentum=0.9),
        loss_function=torch.nn.NLLLoss(),
    )
    plain = lambda x: x.as_tensor() if hasattr(x, "as_tensor") else x  # noqa: E731
    ready = [{"image": plain(b["image"]).to(device), "label": b["label"].to(device)} for b, _ in zip(loader, range(4))]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = {"pipeline": [], "memory": []}
    batches = iter(())
    for i in range(steps + 1):  # the first pair warms up
        sync()
        start = time.perf_counter()
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(loader)
            batch = next(batches)
        trainer._iteration(trainer, batch)
        sync()
        pipeline = time.perf_counter() - start
        start = time.perf_counter()
        trainer._iteration(trainer, ready[i % len(ready)])
        sync()
        if i:
            times["pipeline"].append(pipeline)
            times["memory"].append(time.perf_counter() - start)
    rate = {k: batch_size / statistics.median(v) for k, v in times.items()}
    return {
        "samples_per_s": {k: round(v, 1) for k, v in rate.items()},
        "ratio_pipeline_over_memory": round(rate["pipeline"] / rate["memory"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--networks", nargs="+", default=["cnn", "swin"], choices=["cnn", "swin"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=12)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        roots = write_phantoms(tmp, datasets=["inbreast"])
        datalist, _ = build_datalist("inbreast", roots["inbreast"], task="all")
        records = build_training_set(datalist, "all", 0, tmp)
        result = {
            "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
            "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "batch_size": args.batch_size,
            "steps": args.steps,
        }
        for name in args.networks:
            result[name] = measure(name, records, args.steps, args.batch_size, device)
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()

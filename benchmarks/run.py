"""mammoshare benchmarks: every comparison in one command, each against the naive or the bare way.

    python benchmarks/run.py [--quick | --paper-widths] [--device cpu|cuda]
                             [--only patch gan generation classifier fastpaths audit diffusion]

Modes: ``--quick`` (minutes: small blocks, GANs at ngf = ndf = 8, generation at ngf 32, a tiny
diffusion UNet); ``--paper-widths`` (about 20 minutes on a 2-core CPU: the GAN and generation cases
at the paper widths ngf = ndf = 64 in one-iteration blocks, the diffusion UNet at the bundle's
widths, everything else as in quick mode); the default full mode (everything at full size, hours on
a CPU, meant for a GPU).

Each benchmark runs its two ways in the same process, alternating short blocks (A, B, A, B...) so
that a busy or drifting machine slows both alike; rates come from the median block.

- patch: patches/s of the cached pipeline (canonical patch decoded once, then jitter) against the
  naive one (full DICOM read per sample, crop, area-resize, jitter) on phantom INbreast-sized 16-bit
  3328x4084 DICOM files;
- gan: generator updates/s and images/s of DCGAN and WGAN-GP (the bundles' train.json, 128x128,
  batch 16 and 64) fed by the bundle's pipeline against the same loop fed from memory;
- generation: patches/s of the bundle inference (PNG files and datalist) against the bare generator
  forward at the same batch size;
- classifier: samples/s of the CNN and Swin-T (the bundle's train.json) pipeline against memory;
- fastpaths: DCGAN batch 64 images/s with each fast path (channels_last, AMP, torch.compile, no host
  sync per iteration, loader workers) against the plain loop;
- audit: samples/s of the audit's chunked, vectorised flip-NCC nearest-neighbour search against a
  naive per-sample loop, and one whole audit (``mammoshare.audit.benchmark``, see :func:`audit_benchmark`; the audit at the issue's scale
  alone: ``benchmarks/audit_scale.py``);
- diffusion: images/s of the ddpm_bcdr bundle's training iteration and of DDIM-50 sampling
  (``benchmarks/diffusion_throughput.py``; a throughput, not a comparison).

Writes ``benchmarks/results.json`` (``--out``), ``benchmarks/ratios.png`` and the results section of
``benchmarks/BENCHMARKS.md`` (between its ``<!-- results -->`` markers; ``--no-markdown`` to skip).
Temporary data lives in one folder that is removed at the end, on Ctrl-C and on SIGTERM/SIGHUP; a
folder left by a run killed with SIGKILL is removed by the next run.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
import os
import platform
import shlex
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the checkout's mammoshare and transforms, installed or not

from benchmarks.common import Progress, work_folder  # noqa: E402  (after the path insert)

BENCHMARKS = ("patch", "gan", "generation", "classifier", "fastpaths", "audit", "diffusion")
MODES = ("quick", "paper-widths", "full")
#: what each mode runs, as the results section states it
MODE_TEXT = {
    "quick": "quick mode: small blocks; GAN cases at ngf = ndf = 8 and generation at ngf 32, narrower than the paper's 64 "
             "(less compute to hide the data path behind); a tiny diffusion UNet (8/8/8, 2 DDIM steps)",
    "paper-widths": "paper-widths mode: GAN cases at the paper widths ngf = ndf = 64 in one-iteration blocks (3 timed rounds per "
                    "way), generation at ngf 64 (1200 patches per block, the study's count, 3 rounds), the diffusion UNet at the bundle's widths; "
                    "the patch, classifier, fast-path (ngf 8) and audit cases as in quick mode",
    "full": "full mode: every case at full size (GANs and generation at ngf = ndf = 64, long blocks)",
}
MARK_BEGIN, MARK_END = "<!-- results -->", "<!-- /results -->"


# ----------------------------------------------------------------------------------------------
# temporary folder, cleaned up even when killed
# ----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------
# measuring
# ----------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def alternate(ways: dict[str, Callable[[], int]], rounds: int, device: torch.device, warmup: int = 1,
              blocks: dict[str, list[float]] | None = None) -> dict[str, float]:
    """Run each way's block (returns the items it did) in turn, ``rounds`` times after ``warmup``
    rounds; returns items/s of each way from its median block (``blocks``, when given, receives
    every timed block's items/s, in order)."""
    rates: dict[str, list[float]] = {name: [] for name in ways}
    for r in range(warmup + rounds):
        for name, block in ways.items():
            _sync(device)
            start = time.perf_counter()
            items = block()
            _sync(device)
            if r >= warmup:
                rates[name].append(items / (time.perf_counter() - start))
    if blocks is not None:
        blocks.update(rates)
    return {name: statistics.median(values) for name, values in rates.items()}


def balanced_warmup(n_critic: int, steps: int, rounds: int, ways: int = 2, limit: int = 64) -> int:
    """The fewest warm-up rounds (at least 1) after which, with blocks of ``steps`` critic updates
    taken in turn by ``ways`` ways for ``rounds`` timed rounds, every way has the same number of
    timed blocks that hold a generator update (every ``n_critic``-th critic update, counted over the
    run from 1), so that WGAN-GP's generator updates weigh on the ways alike."""
    for warmup in range(1, limit + 1):
        counts = []
        for way in range(ways):
            count = 0
            for r in range(warmup, warmup + rounds):
                first = (r * ways + way) * steps + 1
                count += any(u % n_critic == 0 for u in range(first, first + steps))
            counts.append(count)
        if len(set(counts)) == 1:
            return warmup
    raise ValueError(f"no warm-up up to {limit} rounds balances the generator updates")


def _comparison(rates: dict[str, float], fast: str, slow: str, unit: str, **extra) -> dict:
    return {"unit": unit, "rates": {k: round(v, 2) for k, v in rates.items()},
            "ratio": round(rates[fast] / rates[slow], 3), "ratio_of": f"{fast} / {slow}", **extra}


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------


def synthetic_patch_datalist(folder: Path, count: int, device: torch.device) -> Path:
    """``count`` 128x128 PNG lesion-like patches and their datalist, made by the generation code
    itself from a randomly initialised tiny generator (data for the GAN loaders)."""
    from mammoshare.gan.inference import generate_synthetic_patches
    from mammoshare.networks import DCGANGenerator

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    network = DCGANGenerator(ngf=4)
    weights = folder / "tiny_generator.pt"
    torch.save(network.state_dict(), weights)
    return generate_synthetic_patches(network, count, folder / "patches", seed=0, checkpoint=weights,
                                      generator_name="benchmark", generator_version="0", device=device,
                                      progress=False)


def _parse_bundle(bundle: str, **overrides):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / bundle / "configs" / "train.json"))
    for key, value in overrides.items():
        parser[key] = value
    parser.parse()
    return parser


def _ready(batch: dict, device: torch.device) -> dict:
    """A batch as the memory-fed loop gets it: the same tensors already on the device."""
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.as_tensor() if hasattr(value, "as_tensor") else value
            out[key] = value.to(device)
        else:
            out[key] = value
    return out


def _stream(loader) -> Callable[[], dict]:
    """Endless batches from a loader, re-entering it (a new epoch) when it ends."""
    state = {"it": iter(loader)}

    def next_batch():
        try:
            return next(state["it"])
        except StopIteration:
            state["it"] = iter(loader)
            return next(state["it"])

    return next_batch


# ----------------------------------------------------------------------------------------------
# benchmarks
# ----------------------------------------------------------------------------------------------


def patch_benchmark(work: Path, quick: bool, device: torch.device) -> dict:
    from mammoshare.data import patch_dataset
    from mammoshare.phantom.dicom import write_mg_dicom
    from transforms import RandPatchJitterd, area_resize, read_mammogram

    width, height = 3328, 4084
    rng = np.random.RandomState(0)
    images = []
    for i in range(2):
        yy, xx = np.mgrid[0:height, 0:width]
        pixels = (2000 + 1500 * np.sin(xx / (300 + 50 * i)) * np.cos(yy / 400) + rng.randint(0, 500, (height, width)))
        images.append(write_mg_dicom(work / f"mammogram_{i}.dcm", pixels.astype(np.uint16), f"P{i}", "L", "CC"))
    records = []
    for i in range(64):
        side = int(rng.randint(128, 600))
        x0, y0 = int(rng.randint(0, width - side)), int(rng.randint(0, height - side))
        records.append({"image": str(images[i % 2]), "box": [x0, y0, x0 + side, y0 + side], "label": 1})
    jitter = RandPatchJitterd("image", zoom_std=0.1, shift_std=0.05)
    start = time.perf_counter()
    dataset = patch_dataset(records, [jitter], cache="memory", progress=False, keep_keys=("image", "label"))
    cache_seconds = time.perf_counter() - start
    naive_jitter = RandPatchJitterd("image", zoom_std=0.1, shift_std=0.05)
    position = {"naive": 0, "cached": 0}

    def naive() -> int:  # the whole mammogram decoded for one sample
        record = records[position["naive"] % len(records)]
        position["naive"] += 1
        image, _ = read_mammogram(record["image"])
        x0, y0, x1, y1 = record["box"]
        patch = torch.from_numpy(area_resize(image[y0:y1, x0:x1], 128)[None])
        naive_jitter({"image": patch})
        return 1

    block = 50 if quick else 200

    def cached() -> int:
        for _ in range(block):
            dataset[position["cached"] % len(dataset)]
            position["cached"] += 1
        return block

    rates = alternate({"cached": cached, "naive": naive}, rounds=3 if quick else 8, device=torch.device("cpu"))
    return _comparison(rates, "cached", "naive", "patches/s", image_size=f"{width}x{height} uint16 DICOM",
                       cache_fill_seconds=round(cache_seconds, 2), target=">= 100")


#: per mode, the GAN cases: network width (ngf = ndf), iterations per block, timed rounds
GAN_SIZES = {"quick": {"width": 8, "steps": 2, "rounds": 3},
             "paper-widths": {"width": 64, "steps": 1, "rounds": 3},
             "full": {"width": 64, "steps": 10, "rounds": 6}}


def _gan_case(kind: str, batch_size: int, datalist: Path, work: Path, mode: str, device: torch.device,
              **switches) -> dict:
    bundle = {"dcgan": "dcgan_bcdr", "wgangp": "wgangp_bcdr"}[kind]
    sizes = GAN_SIZES[mode]
    width, steps, rounds = sizes["width"], sizes["steps"], sizes["rounds"]
    parser = _parse_bundle(bundle, datalist=str(datalist), output_dir=str(work / f"{kind}_{batch_size}"),
                           batch_size=batch_size, device=str(device), ngf=width, ndf=width,
                           **{"train#handlers": []}, **switches)
    trainer, loader = parser.get_parsed_content("train#trainer"), parser.get_parsed_content("train#dataloader")
    next_batch = _stream(loader)
    ready = [_ready(next_batch(), device) for _ in range(4)]
    count = {"memory": 0}

    def pipeline() -> int:
        for _ in range(steps):
            trainer._iteration(trainer, next_batch())
        return steps

    def memory() -> int:
        for _ in range(steps):
            trainer._iteration(trainer, ready[count["memory"] % len(ready)])
            count["memory"] += 1
        return steps

    per_update = trainer.n_critic if kind == "wgangp" else 1
    warmup, extra = 1, {}
    if steps % per_update:
        # blocks shorter than a generator cycle: the generator update (every n_critic-th critic update,
        # counted over the run) falls into some blocks only; the warm-up gives every way as many of
        # those blocks (1-step blocks, 3 rounds, n_critic 5: two warm-up rounds, the timed updates 5
        # to 10, one generator update for each way, at 5 and 10, so both medians are critic updates alone)
        warmup = balanced_warmup(per_update, steps, rounds)
        extra["blocks"] = ("one critic update per block: each way's median block is a critic update alone "
                           "(the generator update, every n_critic-th, is left out of both alike)" if steps == 1 and rounds == 3
                           else f"{steps} critic updates per block, n_critic {per_update}: each way has as many "
                                "blocks with a generator update")
    block_rates: dict[str, list[float]] = {}
    rates = alternate({"pipeline": pipeline, "memory": memory}, rounds=rounds, device=device, warmup=warmup,
                      blocks=block_rates)
    extra["block_rates"] = {k: [round(v * batch_size, 2) for v in values] for k, values in block_rates.items()}
    if "blocks" not in extra:
        extra["generator_updates_per_s"] = {k: round(v / per_update, 3) for k, v in rates.items()}
    return _comparison(
        {k: v * batch_size for k, v in rates.items()}, "pipeline", "memory", "images/s (critic/discriminator batches)",
        ngf=width, ndf=width, batch_size=batch_size, iterations_per_block=steps, rounds=rounds, target=">= 0.9", **extra,
    )


def gan_benchmark(work: Path, mode: str, device: torch.device, datalist: Path, progress: Progress) -> dict:
    out = {}
    for kind in ("dcgan", "wgangp"):
        for batch_size in (16, 64):
            with progress.case(f"gan {kind} batch {batch_size}"):
                out[f"{kind}_batch{batch_size}"] = _gan_case(kind, batch_size, datalist, work, mode, device)
    return out


def fastpaths_benchmark(work: Path, quick: bool, device: torch.device, datalist: Path) -> dict:
    """DCGAN batch 64, memory-fed unless the fast path is about the loader: each switch alone
    against the plain loop, in one alternating run."""
    width = 8 if quick else 64
    cuda = device.type == "cuda"
    variants: dict[str, dict] = {"plain": {}, "channels_last": {"channels_last": True}}
    notes = {}
    if cuda:
        variants["amp_bf16"] = {"amp": "bf16"}
        variants["amp_bf16_channels_last"] = {"amp": "bf16", "channels_last": True}
        variants["compile"] = {"compile": True}
        variants["amp_bf16_channels_last_compile"] = {"amp": "bf16", "channels_last": True, "compile": True}
    else:
        notes["amp"] = "GPU only (autocast on CPU is not a fast path): not measured on CPU"
        notes["compile"] = "not measured on CPU (inductor's CPU code generation is not what the switch is for)"
    trainers = {}
    for name, switches in variants.items():
        parser = _parse_bundle("dcgan_bcdr", datalist=str(datalist), output_dir=str(work / f"fast_{name}"),
                               batch_size=64, device=str(device), ngf=width, ndf=width,
                               **{"train#handlers": []}, **switches)
        trainers[name] = parser.get_parsed_content("train#trainer")
        loader = parser.get_parsed_content("train#dataloader")
    ready = [_ready(b, device) for b, _ in zip(loader, range(2))]
    steps = 1 if quick else 10

    def loop(trainer, sync_every_iteration: bool = False):
        def block() -> int:
            for i in range(steps):
                output = trainer._iteration(trainer, ready[i % len(ready)])
                if sync_every_iteration:  # what the trainers did before: .item() of every loss, every iteration
                    [float(v) for v in output.values() if isinstance(v, torch.Tensor)]
            return steps * 64
        return block

    ways = {name: loop(t) for name, t in trainers.items()}
    ways["host_sync_every_iteration"] = loop(trainers["plain"], sync_every_iteration=True)
    rates = alternate(ways, rounds=2 if quick else 6, device=device)
    result = {"unit": "images/s", "batch_size": 64, "ngf": width, "ndf": width,
              "rates": {k: round(v, 1) for k, v in rates.items()},
              "ratio_vs_plain": {k: round(v / rates["plain"], 3) for k, v in rates.items()},
              "not_measured": notes}
    # loader workers with pinned memory: the pipeline-fed loop with 2 workers against 0
    loaders = {}
    for workers in (0, 2):
        parser = _parse_bundle("dcgan_bcdr", datalist=str(datalist), output_dir=str(work / f"workers_{workers}"),
                               batch_size=64, device=str(device), ngf=width, ndf=width, num_workers=workers,
                               **{"train#handlers": []})
        loaders[workers] = (parser.get_parsed_content("train#trainer"), _stream(parser.get_parsed_content("train#dataloader")))

    def fed(workers):
        trainer, next_batch = loaders[workers]

        def block() -> int:
            for _ in range(steps):
                trainer._iteration(trainer, next_batch())
            return steps * 64
        return block

    worker_rates = alternate({"workers_2_pinned": fed(2), "workers_0": fed(0)}, rounds=2 if quick else 6, device=device)
    result["loader_workers"] = _comparison(worker_rates, "workers_2_pinned", "workers_0", "images/s",
                                           pin_memory=cuda)
    if cuda:
        result["dcgan_amp_batch64_images_per_s"] = round(rates["amp_bf16_channels_last"], 1)
        result["target_h100"] = ">= 2000 images/s (DCGAN, batch 64, AMP)"
    return result


#: per mode, the generation case: generator width, samples per block (batches of 64), timed rounds
GENERATION_SIZES = {"quick": {"width": 32, "samples": 384, "rounds": 3},
                    "paper-widths": {"width": 64, "samples": 1200, "rounds": 3},  # the study's count per generator
                    "full": {"width": 64, "samples": 2048, "rounds": 5}}


def generation_benchmark(work: Path, mode: str, device: torch.device) -> dict:
    from mammoshare.gan.inference import generate_synthetic_patches
    from mammoshare.networks import DCGANGenerator

    sizes = GENERATION_SIZES[mode]
    width, samples, rounds = sizes["width"], sizes["samples"], sizes["rounds"]
    batch_size = 64
    torch.manual_seed(0)
    network = DCGANGenerator(ngf=width).to(device).eval()
    weights = work / "generator.pt"
    torch.save({k: v.cpu() for k, v in network.state_dict().items()}, weights)
    latents = torch.randn(samples, 100)
    runs = {"n": 0}

    def to_png() -> int:
        runs["n"] += 1
        generate_synthetic_patches(network, samples, work / f"generated_{runs['n']}", seed=0, checkpoint=weights,
                                   generator_name="benchmark", generator_version="0", device=device,
                                   batch_size=batch_size, progress=False)
        return samples  # the files are removed after the measurement: deleting them is no part of generating

    def bare() -> int:
        with torch.no_grad():
            for start in range(0, samples, batch_size):
                network(latents[start:start + batch_size].to(device))
        return samples

    block_rates: dict[str, list[float]] = {}
    rates = alternate({"png_files": to_png, "bare_forward": bare}, rounds=rounds, device=device, blocks=block_rates)
    for folder in work.glob("generated_*"):
        shutil.rmtree(folder)
    return _comparison(rates, "png_files", "bare_forward", "patches/s", ngf=width, batch_size=batch_size,
                       samples_per_block=samples, rounds=rounds,
                       block_rates={k: [round(v, 2) for v in values] for k, values in block_rates.items()},
                       target=">= 0.9")


def classifier_benchmark(work: Path, quick: bool, device: torch.device, progress: Progress) -> dict:
    from mammoshare.datalist import write_datalist
    from mammoshare.phantom import write_phantoms
    from mammoshare.readers import build_datalist

    roots = write_phantoms(work / "phantom", datasets=["inbreast"])
    datalist, _ = build_datalist("inbreast", roots["inbreast"], task="all")
    datalist_path = write_datalist(datalist, work / "inbreast_all.json")
    out = {}
    for name in ("cnn", "swin"):
        with progress.case(f"classifier {name}"):
            parser = _parse_bundle("classifier_inbreast", datalist=str(datalist_path), task="all", classifier=name,
                                   output_dir=str(work / f"clf_{name}"), device=str(device),
                                   **{"train#handlers": []})
            trainer = parser.get_parsed_content("train#trainer")
            loader = parser.get_parsed_content("train#dataloader")
            batch_size = parser.get_parsed_content("batch_size")
            next_batch = _stream(loader)
            ready = [_ready(next_batch(), device) for _ in range(3)]
            steps = (4 if name == "cnn" else 1) if quick else (20 if name == "cnn" else 5)
            rounds = (3 if name == "cnn" else 2) if quick else 6
            count = {"memory": 0}

            def pipeline() -> int:
                for _ in range(steps):
                    trainer._iteration(trainer, next_batch())
                return steps * batch_size

            def memory() -> int:
                for _ in range(steps):
                    trainer._iteration(trainer, ready[count["memory"] % len(ready)])
                    count["memory"] += 1
                return steps * batch_size

            rates = alternate({"pipeline": pipeline, "memory": memory}, rounds=rounds, device=device)
            out[name] = _comparison(rates, "pipeline", "memory", "samples/s", batch_size=batch_size,
                                    num_workers=parser.get_parsed_content("num_workers"), target=">= 0.9")
    return out


def audit_benchmark(work: Path, quick: bool, device: torch.device) -> dict:
    """The hook for the audit: when ``mammoshare.audit`` exists and has ``benchmark(workdir, quick,
    device) -> dict`` (its samples/s, e.g. ``{"unit": "samples/s", "rates": {...}, "ratio": ...}``),
    its result is recorded; otherwise the result says why the audit was not measured."""
    if importlib.util.find_spec("mammoshare.audit") is None:
        return {"status": "not run: mammoshare.audit does not exist in this checkout"}
    import mammoshare.audit as audit

    benchmark = getattr(audit, "benchmark", None)
    if not callable(benchmark):
        return {"status": "not run: mammoshare.audit has no benchmark(workdir, quick, device) function; "
                          "add one (the contract is in benchmarks/run.py, audit_benchmark)"}
    folder = work / "audit"
    folder.mkdir()
    return {"status": "done", **benchmark(folder, quick, str(device))}


def diffusion_benchmark(mode: str, device: torch.device) -> dict:
    """Images/s of the ddpm_bcdr bundle's training iteration and DDIM-50 sampling
    (:func:`benchmarks.diffusion_throughput.measure`): a tiny UNet and 2 steps in quick mode, the
    bundle's UNet (64/128/128) otherwise, with one timing each in paper-widths mode."""
    from benchmarks.diffusion_throughput import measure

    if mode == "quick":
        return measure(device, channels=(8, 8, 8), batch_size=2, sample_batch=2, steps=2, train_iterations=1, repeats=1)
    return measure(device, repeats=1 if mode == "paper-widths" else 2)


# ----------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------


def machine(device: torch.device) -> dict:
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": sys.version.split()[0], "device": str(device)}
    try:
        info["load_average_at_start"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def plot_ratios(results: dict, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    labels, values, targets = [], [], []

    def add(label, entry, target):
        if isinstance(entry, dict) and "ratio" in entry:
            labels.append(label)
            values.append(entry["ratio"])
            targets.append(target)

    add("patch cached/naive (log)", results.get("patch"), 100)
    for key, entry in (results.get("gan") or {}).items():
        add(f"GAN {key}", entry, 0.9)
    add("generation PNG/bare", results.get("generation"), 0.9)
    add("audit NN search chunked/naive", results.get("audit"), 10)
    for key, entry in (results.get("classifier") or {}).items():
        add(f"classifier {key}", entry, 0.9)
    if not labels:
        return None
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(labels) + 1.2))
    colours = ["tab:green" if v >= t else "tab:red" for v, t in zip(values, targets)]
    ax.barh(labels, values, color=colours)
    for i, (v, t) in enumerate(zip(values, targets)):
        ax.plot([t, t], [i - 0.4, i + 0.4], color="black", lw=1)
        ax.text(v, i, f" {v:g}", va="center", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("ratio (black tick: target)")
    ax.set_title(f"mammoshare benchmarks on {results['machine']['device']} ({results['mode']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [f"Run {results['date']} with `{results['command']}` ({results['mode']} mode) on {m['device']}"
             + (f" ({m['gpu']})" if m.get("gpu") else "") + f", {m['processor']}, {m['cpu_count']} CPU cores, "
             f"torch {m['torch']}, {m['torch_threads']} torch threads"
             + (f", load average {m['load_average_at_start']} at the start" if m.get("load_average_at_start") else "")
             + (f", {m['load_average_at_end']} at the end" if m.get("load_average_at_end") else "")
             + f"; {results['seconds']:.0f} s.", "", f"Mode: {MODE_TEXT.get(results['mode'], results['mode'])}.", "",
             "![ratios](ratios.png)", "",
             "| benchmark | fast way | rate | reference way | rate | ratio | target |", "|---|---|---:|---|---:|---:|---|"]

    def row(name, entry):
        if not isinstance(entry, dict) or "ratio" not in entry:
            return
        fast, slow = entry["ratio_of"].split(" / ")
        lines.append(f"| {name} | {fast} | {entry['rates'][fast]:g} {entry['unit']} | {slow} | "
                     f"{entry['rates'][slow]:g} | **{entry['ratio']:g}** | {entry.get('target', '')} |")

    if "patch" in results:
        row(f"patch pipeline ({results['patch']['image_size']})", results["patch"])
    for key, entry in (results.get("gan") or {}).items():
        row(f"GAN training {key} (ngf {entry['ngf']})", entry)
    if "generation" in results:
        e = results["generation"]
        row(f"generation (batch {e['batch_size']}, ngf {e['ngf']})", e)
    for key, entry in (results.get("classifier") or {}).items():
        row(f"classifier training {key} (workers {entry['num_workers']})", entry)
    audit = results.get("audit")
    if isinstance(audit, dict) and "ratio" in audit:
        row(f"audit nearest-neighbour search ({audit['references']} references, 4 flips)", audit)
        w = audit.get("whole_audit")
        if w:
            lines += ["", f"Whole audit: {w['samples']} samples against {w['train']} training and {w['holdout']} holdout "
                      f"patches ({w['features']} features) in {w['audit_seconds']:g} s, peak memory "
                      f"{w['peak_memory_gib']:g} GiB; same neighbours as the naive loop: {audit['same_neighbours']}."]
    elif audit is not None:
        lines += ["", f"Audit: {audit.get('status')}"]
    spread = [(f"GAN {key}", e) for key, e in (results.get("gan") or {}).items()]
    spread += [("generation", results["generation"])] if "generation" in results else []
    spread = [(name, e) for name, e in spread if e.get("block_rates")]
    if spread:
        lines += ["", "Timed blocks, in order (rates as in the table; the ratio is of the median blocks):", ""]
        lines += [f"- {name}: " + "; ".join(f"{way} {', '.join(f'{v:g}' for v in values)}"
                                            for way, values in e["block_rates"].items()) for name, e in spread]
    if "fastpaths" in results:
        f = results["fastpaths"]
        lines += ["", f"Fast paths, DCGAN batch 64 (ngf {f['ngf']}), fed from memory, images/s and ratio to the plain loop:",
                  "", "| variant | images/s | ratio |", "|---|---:|---:|"]
        lines += [f"| {k} | {v:g} | {f['ratio_vs_plain'][k]:g} |" for k, v in f["rates"].items()]
        w = f["loader_workers"]
        lines += [f"| pipeline-fed, 2 loader workers{' + pinned memory' if w['pin_memory'] else ''} vs 0 | "
                  f"{w['rates']['workers_2_pinned']:g} vs {w['rates']['workers_0']:g} | {w['ratio']:g} |"]
        for key, note in f.get("not_measured", {}).items():
            lines.append(f"\n- {key}: {note}")
    if "diffusion" in results:
        d = results["diffusion"]
        lines += ["", f"Diffusion (`ddpm_bcdr`, UNet channels {'/'.join(map(str, d['channels']))}, {d['device']}"
                  f"{', AMP' if d['amp'] else ''}): training {d['train_images_per_s']:g} images/s at batch {d['train_batch']} "
                  f"(batches in memory); DDIM-{d['ddim_steps']} sampling {d['sample_images_per_s']:g} finished patches/s "
                  f"at batch {d['sample_batch']}, that is {d['sample_batch'] / d['sample_images_per_s']:.0f} s per batch."]
    return "\n".join(lines)


def write_markdown(path: Path, text: str) -> None:
    doc = path.read_text() if path.is_file() else f"# Benchmarks\n\n{MARK_BEGIN}\n{MARK_END}\n"
    if MARK_BEGIN not in doc or MARK_END not in doc:
        doc += f"\n{MARK_BEGIN}\n{MARK_END}\n"
    head, rest = doc.split(MARK_BEGIN, 1)
    _, tail = rest.split(MARK_END, 1)
    path.write_text(f"{head}{MARK_BEGIN}\n{text}\n{MARK_END}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--quick", action="store_true", help="small blocks and narrower GANs: minutes on a CPU")
    modes.add_argument("--paper-widths", action="store_true",
                       help="GAN and generation cases at the paper widths (ngf = ndf = 64) in one-iteration blocks, "
                            "the diffusion UNet at the bundle's widths, the rest as --quick: about 20 minutes on a 2-core CPU")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results.json")
    parser.add_argument("--markdown", type=Path, default=REPO / "benchmarks" / "BENCHMARKS.md")
    parser.add_argument("--no-markdown", action="store_true")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    mode = "quick" if args.quick else "paper-widths" if args.paper_widths else "full"
    quick = mode != "full"  # the cases without paper widths run as in quick mode in paper-widths mode
    import logging

    logging.basicConfig(level=logging.ERROR)
    started = time.perf_counter()
    command = "python benchmarks/run.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    results: dict = {"date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"), "command": command.strip(),
                     "mode": mode, "machine": machine(device)}
    cases = sum({"gan": 4, "classifier": 2}.get(b, 1) for b in args.only)
    progress = Progress(cases)
    try:
        with work_folder() as work:
            datalist = None
            if {"gan", "fastpaths"} & set(args.only):
                datalist = synthetic_patch_datalist(work / "gan_data", 256, torch.device("cpu"))
            if "patch" in args.only:
                with progress.case("patch pipeline"):
                    results["patch"] = patch_benchmark(work, quick, device)
            if "gan" in args.only:
                results["gan"] = gan_benchmark(work, mode, device, datalist, progress)
            if "generation" in args.only:
                with progress.case("generation"):
                    results["generation"] = generation_benchmark(work, mode, device)
            if "classifier" in args.only:
                results["classifier"] = classifier_benchmark(work, quick, device, progress)
            if "fastpaths" in args.only:
                with progress.case("fast paths"):
                    results["fastpaths"] = fastpaths_benchmark(work, quick, device, datalist)
            if "audit" in args.only:
                with progress.case("audit"):
                    results["audit"] = audit_benchmark(work, quick, device)
            if "diffusion" in args.only:
                with progress.case("diffusion"):
                    results["diffusion"] = diffusion_benchmark(mode, device)
    finally:
        progress.close()
    results["seconds"] = round(time.perf_counter() - started, 1)
    try:
        results["machine"]["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        pass
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    if not args.no_markdown:
        plot_ratios(results, args.markdown.parent / "ratios.png")
        write_markdown(args.markdown, markdown(results))
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

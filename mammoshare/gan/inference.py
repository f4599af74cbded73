"""Synthetic lesion patches from a shared generator: the ``run`` of the GAN bundles' ``inference.json``.

One call writes exactly ``num_samples`` 128x128 8-bit greyscale PNG files and one datalist JSON
(``synthetic_datalist.json``) into an empty folder. Every PNG says in its text chunks that it is
synthetic, which generator and weights made it, and with which seed; the datalist has the project's
format (``dataset`` "synthetic", one ``training`` record per PNG, ``box`` null = the whole image), so
it goes through :func:`mammoshare.datalist.load_datalist` and :func:`mammoshare.data.patch_dataset`
like any real datalist.

Weights: every ``*.pt`` snapshot of a folder (the samples spread evenly over them, the study's DCGAN
scheme of checkpoints every 50th epoch from epoch 500), or one checkpoint in any layout of
:mod:`mammoshare.gan.weights` (our ``model.pt`` or ``model.safetensors``, a snapshot, ``last.pt``, the published medigan
``500.pt`` / ``10000.pt`` / ``malign_mass_gen`` or their zips), by default the bundle's
``models/model.pt``. The output decoding follows each file's layout unless ``decoding`` forces one.

The same seed gives byte-identical PNG files: the latents come from one CPU ``torch.Generator``
seeded with ``seed``, drawn for all samples at once (the same latents whatever the batch size and
device), and the network runs in eval mode without gradients. Another batch size or device can move
a few pixels by one grey level (floating-point summation order), so the datalist records both.
"""

from __future__ import annotations

import os
import re
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from tqdm import tqdm

from mammoshare import __version__
from mammoshare.datalist import SYNTHETIC_DATALIST, TASKS, make_record, trained_on_phantom, write_datalist
from mammoshare.gan.weights import (
    DECODINGS,
    GeneratorWeights,
    WeightsError,
    decode_output,
    load_generator_weights,
    load_into,
)

__all__ = [
    "generate_synthetic_patches",
    "SyntheticPatchWriter",
    "encode_patch_pixels",
    "write_patch_png",
    "snapshot_files",
    "spread_samples",
    "MissingWeightsError",
    "safe_name",
    "sampling_counts",
    "weights_file",
    "batch_progress",
    "PATCH_SIZE",
]

#: the datalist file written beside the PNG files
#: the size of the generated patches (the canonical patch size)
PATCH_SIZE = 128

#: how to get weights for a bundle, shown when none are found
_PUBLISHED = (
    "the study's published weights from the medigan model hub: 00005_DCGAN_MMG_MASS_ROI (BCDR DCGAN, "
    "500.pt or 00005_DCGAN_MMG_MASS_ROI.zip) or 00006_WGANGP_MMG_MASS_ROI (BCDR WGAN-GP, 10000.pt or its zip); "
    "for the OPTIMAM bundle 00002_DCGAN_MMG_MASS_ROI (malign_mass_gen or MALIGN_DCGAN.zip)"
)


class MissingWeightsError(WeightsError, FileNotFoundError):
    """No generator weights where they were looked for; says how to get some."""


@dataclass
class _Source:
    """One weights file and the samples it makes."""

    path: Path
    samples: int
    sha256: str = ""
    layout: str = ""
    decoding: str = ""


def _epoch_key(path: Path) -> tuple:
    numbers = re.findall(r"\d+", path.stem)
    return (0, int(numbers[-1]), path.name) if numbers else (1, 0, path.name)


def snapshot_files(snapshot_dir: str | os.PathLike) -> list[Path]:
    """The ``*.pt`` files of a snapshot folder, sorted by the epoch number in their names
    (``epoch_0500.pt`` < ``epoch_1000.pt``); files without a number come last, by name."""
    folder = Path(snapshot_dir)
    if not folder.is_dir():
        raise MissingWeightsError(f"{folder}: snapshot folder not found")
    files = sorted((p for p in folder.glob("*.pt") if p.is_file()), key=_epoch_key)
    if not files:
        raise MissingWeightsError(
            f"{folder}: no generator snapshots (*.pt) in the snapshot folder; training writes them to "
            "the bundle's models/snapshots/, or pass --checkpoint FILE for a single weights file"
        )
    return files


def spread_samples(num_samples: int, num_sources: int) -> list[int]:
    """``num_samples`` spread as evenly as possible: ``num_samples // num_sources`` each, the first
    ``num_samples % num_sources`` one more (10 over 3 -> [4, 3, 3])."""
    if num_sources < 1:
        raise ValueError("at least one weights file is needed")
    base, extra = divmod(int(num_samples), num_sources)
    return [base + (1 if i < extra else 0) for i in range(num_sources)]


def _missing_weights_message(default_checkpoint: Path | None) -> str:
    if default_checkpoint is not None and default_checkpoint.parent.name == "models":
        bundle = default_checkpoint.parent.parent
        if (bundle / "configs").is_dir() and not (bundle / "configs" / "train.json").is_file():
            return (
                f"{default_checkpoint}: no generator weights. This bundle is inference-only: install its weights "
                f"as its model card ({bundle.as_posix()}/docs/README.md) says, e.g. `mammoshare medigan-import "
                f"PACKAGE.zip --out {bundle.as_posix()}`, or pass --checkpoint FILE with {_PUBLISHED}"
            )
        train = f"python -m monai.bundle run --config_file {bundle.as_posix()}/configs/train.json"
        where = f"{default_checkpoint}: no generator weights (the bundle ships none until it is trained)"
    else:
        train = "python -m monai.bundle run --config_file bundles/<name>/configs/train.json"
        where = f"{default_checkpoint}: no generator weights" if default_checkpoint else "no generator weights given"
    return (
        f"{where}. To get weights: train the generator with `{train}` (it writes models/model.pt and "
        f"models/snapshots/), or pass --checkpoint FILE with {_PUBLISHED}; "
        "--snapshot_dir DIR samples from every *.pt snapshot in DIR"
    )


def _sources(
    num_samples: int,
    checkpoint: str | os.PathLike | None,
    snapshot_dir: str | os.PathLike | None,
    default_checkpoint: str | os.PathLike | None,
) -> list[_Source]:
    if snapshot_dir is not None and checkpoint is not None:
        raise ValueError("pass either --checkpoint (one weights file) or --snapshot_dir (a folder of snapshots), not both")
    if snapshot_dir is not None:
        files = snapshot_files(snapshot_dir)
    else:
        # a bundle's weights are model.pt (trained here) or model.safetensors (imported or received)
        files = [weights_file(checkpoint, default_checkpoint, _missing_weights_message, (".safetensors", ".pt"))]
    return [_Source(path, n) for path, n in zip(files, spread_samples(num_samples, len(files)))]


def _check_output_dir(output_dir: Path) -> bool:
    """Refuses a folder that holds anything; returns whether the folder must be created."""
    if output_dir.exists():
        if not output_dir.is_dir():
            raise FileExistsError(f"{output_dir}: exists and is not a folder; give an empty or new output folder")
        if any(output_dir.iterdir()):
            raise FileExistsError(
                f"{output_dir}: the output folder is not empty; synthetic patches go into an empty or new folder "
                "(nothing was written)"
            )
        return False
    return True


def _latent_size(network: torch.nn.Module) -> int:
    size = getattr(network, "latent_size", None)
    if size is None:
        first = next(iter(network.state_dict().values()), None)
        if first is None or first.ndim != 4:
            raise ValueError("cannot tell the generator's latent size; give it a latent_size attribute")
        size = first.shape[0]
    return int(size)


def safe_name(text: str) -> str:
    """A generator name -> letters, digits, ``.``, ``_`` and ``-`` only (other runs become ``_``),
    for progress bars and file names; ``"generator"`` when nothing is left."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "generator"


def sampling_counts(num_samples: int, seed: int, batch_size: int) -> tuple[int, int, int]:
    """The counts of a sampling run as ints; fewer than one sample or a batch size under 1 raise."""
    num_samples, seed, batch_size = int(num_samples), int(seed), int(batch_size)
    if num_samples < 1:
        raise ValueError(f"num_samples must be at least 1, got {num_samples}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    return num_samples, seed, batch_size


def weights_file(
    checkpoint: str | os.PathLike | None,
    default_checkpoint: str | os.PathLike | None,
    missing_message: Callable[[Path | None], str],
    alternatives: Sequence[str] = (),
) -> Path:
    """The weights file of a sampling run: ``checkpoint`` when given (it must exist), else
    ``default_checkpoint`` or, when that is missing, the first existing sibling with one of the
    ``alternatives`` suffixes. None found raises :class:`MissingWeightsError` with
    ``missing_message(default)`` (how to get weights)."""
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            raise MissingWeightsError(f"{path}: weights file not found")
        return path
    default = Path(default_checkpoint) if default_checkpoint is not None else None
    if default is not None and not default.is_file():
        for sibling in (default.with_suffix(suffix) for suffix in alternatives):
            if sibling.is_file():
                default = sibling
                break
    if default is None or not default.is_file():
        raise MissingWeightsError(missing_message(default))
    return default


def batch_progress(generator_name: str, activity: str, batches: int, enabled: bool = True) -> tqdm:
    """A tqdm bar over the ``batches`` of a sampling run, ``"<name>: <activity>"``."""
    return tqdm(total=batches, desc=f"{safe_name(generator_name)}: {activity}", unit="batch", disable=not enabled)


def _png_info(
    name: str, version: str, weights_file: str, weights_sha256: str, seed: int, index: int, task: str, extra_text: dict,
    phantom: bool = False,
) -> PngInfo:
    info = PngInfo()
    info.add_text("Title", f"Synthetic lesion patch {index}")
    info.add_text("Description", f"SYNTHETIC lesion patch generated by {name} {version}; not a patient image"
                  + ("; the generator was trained on PHANTOM data (no clinical meaning)" if phantom else ""))
    info.add_text("Software", f"mammoshare {__version__}")
    info.add_text("mammoshare:synthetic", "true")
    info.add_text("mammoshare:phantom", "true" if phantom else "false")
    info.add_text("mammoshare:generator", name)
    info.add_text("mammoshare:generator_version", version)
    info.add_text("mammoshare:weights_file", weights_file)
    info.add_text("mammoshare:weights_sha256", weights_sha256)
    info.add_text("mammoshare:task", task)
    info.add_text("mammoshare:seed", str(seed))
    info.add_text("mammoshare:index", str(index))
    for key, value in extra_text.items():
        info.add_text(f"mammoshare:{key}", str(value))
    return info


def encode_patch_pixels(images: torch.Tensor) -> np.ndarray:
    """Decoded generator output ``(B, 1, H, W)`` in [0, 1] -> ``(B, H, W)`` uint8 (value * 255, rounded):
    the 8-bit encoding that :func:`transforms.read_patch` decodes as value / 255."""
    scaled = torch.mul(images[:, 0].float().cpu(), 255.0)  # a new tensor: rounded and clamped in place
    return scaled.round_().clamp_(0, 255).to(torch.uint8).numpy()


#: zlib settings of the PNG files: level 1 with run-length matching encodes a 128x128 patch about 8x
#: faster than Pillow's default (level 6: about 0.35 ms against 2.8 ms on one x86_64 core), and the
#: files come out slightly smaller (about 4.3 against 4.6 KB). At the default the encoding alone cost
#: about a quarter of a paper-width (ngf 64) generator forward on a 2-core CPU, where no idle core can
#: hide it. The pixels are the same with any setting (PNG is lossless).
PNG_COMPRESS_LEVEL, PNG_COMPRESS_TYPE = 1, zlib.Z_RLE


def write_patch_png(path: Path, array: np.ndarray, info: PngInfo) -> None:
    """One 2D uint8 patch -> an 8-bit greyscale PNG (mode L) with its provenance text chunks."""
    Image.fromarray(np.ascontiguousarray(array)).save(path, format="PNG", pnginfo=info,
                                                    compress_level=PNG_COMPRESS_LEVEL, compress_type=PNG_COMPRESS_TYPE)


class _PNGWriter:
    """Encodes and writes the PNG files of whole batches in background threads (PNG compression
    releases the GIL), at most a few batches behind the generator; the first error is raised in
    the generating thread, at the next batch or when the block ends."""

    def __init__(self, threads: int = 2, max_pending: int = 4):
        self.threads = max(0, int(threads))
        self.max_pending = max(1, int(max_pending)) * max(1, self.threads)
        self.pool: ThreadPoolExecutor | None = None
        self.pending: deque[Future] = deque()

    def __enter__(self) -> _PNGWriter:
        if self.threads:
            self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="png-writer")
        return self

    @staticmethod
    def _write(pixels: np.ndarray, paths: list[Path], infos: list[PngInfo]) -> None:
        for array, path, info in zip(pixels, paths, infos):
            write_patch_png(path, array, info)

    def submit(self, pixels: np.ndarray, paths: list[Path], infos: list[PngInfo]) -> None:
        if self.pool is None:
            self._write(pixels, paths, infos)
            return
        while len(self.pending) >= self.max_pending or (self.pending and self.pending[0].done()):
            self.pending.popleft().result()
        step = -(-len(paths) // self.threads)  # a batch in one share per thread: a short tail after the last batch
        for i in range(0, len(paths), step):
            self.pending.append(self.pool.submit(self._write, pixels[i : i + step], paths[i : i + step], infos[i : i + step]))

    def drain(self) -> None:
        """Wait for every pending write; raises the first error."""
        while self.pending:
            self.pending.popleft().result()

    def __exit__(self, *exc) -> None:
        if self.pool is None:
            return
        try:
            while self.pending:
                future = self.pending.popleft()
                if exc[0] is None:
                    future.result()
                else:
                    future.cancel()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)


class SyntheticPatchWriter:
    """Writes synthetic lesion patches into an empty or new folder: one 8-bit greyscale PNG per image,
    with the provenance text chunks, and at the end one datalist JSON (:data:`~mammoshare.datalist.SYNTHETIC_DATALIST`).

    Used as a context manager: when the block raises, every file written so far (and the folder,
    when the writer created it) is removed, so that nothing half-made is left behind. Every kind of
    generator (GANs, diffusion models) writes through this class, so their outputs are alike.

    Args:
        output_dir: an empty or new folder; a folder that holds anything is refused at once.
        num_samples: how many patches will be written (sets the width of the file numbers).
        generator_name, generator_version: the generator's identity, in every PNG and the datalist.
        task: the datalist's task, ``"mass"`` or ``"all"``.
        seed: the seed of the run, in every PNG and the datalist.
        phantom: the generator was trained on phantom data: said in every PNG and the datalist.
        writer_threads: threads that encode and write the PNG files while the generator makes the
            next batches (file writing hides behind the network); 0 writes in the calling thread.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        num_samples: int,
        *,
        generator_name: str,
        generator_version: str,
        task: str,
        seed: int,
        phantom: bool = False,
        writer_threads: int = 2,
    ):
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; use one of {list(TASKS)}")
        self.output_dir = Path(output_dir).absolute()
        self.name, self.version = str(generator_name), str(generator_version)
        self.task, self.seed, self.phantom = task, int(seed), bool(phantom)
        self.digits = max(5, len(str(int(num_samples) - 1)))
        self.records: list[dict] = []
        self.written: list[Path] = []
        self._create_dir = _check_output_dir(self.output_dir)
        self._png = _PNGWriter(writer_threads)

    def __enter__(self) -> SyntheticPatchWriter:
        if self._create_dir:
            self.output_dir.mkdir(parents=True)
        self._png.__enter__()
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        try:
            self._png.__exit__(exc_type, exc, traceback)  # waits for the last files, or cancels them
        except BaseException:
            self._remove_written()
            raise
        if exc_type is not None:
            self._remove_written()

    def _remove_written(self) -> None:
        for path in self.written:
            path.unlink(missing_ok=True)
        if self._create_dir:
            try:
                self.output_dir.rmdir()
            except OSError:
                pass

    def add(
        self,
        images: torch.Tensor,
        *,
        weights_file: str,
        weights_sha256: str,
        lesion_types: list[str] | list[list[str]],
        extra_text: list[dict] | None = None,
    ) -> None:
        """Write a batch of images ``(B, 1, 128, 128)`` in [0, 1] as the next PNG files.

        ``lesion_types``: the records' lesion types, one list for the whole batch or one per image;
        ``extra_text``: per image, more ``mammoshare:KEY`` text chunks (e.g. the lesion type).
        """
        if images.ndim != 4 or tuple(images.shape[1:]) != (1, PATCH_SIZE, PATCH_SIZE):
            raise ValueError(
                f"the generator makes images of shape {tuple(images.shape[1:])}; (1, {PATCH_SIZE}, "
                f"{PATCH_SIZE}) patches are expected"
            )
        pixels = encode_patch_pixels(images)
        per_image = bool(lesion_types) and isinstance(lesion_types[0], list | tuple)
        paths, infos = [], []
        for offset in range(len(pixels)):
            i = len(self.records)
            path = self.output_dir / f"synthetic_{i:0{self.digits}d}.png"
            self.written.append(path)
            paths.append(path)
            text = extra_text[offset] if extra_text is not None else {}
            infos.append(_png_info(self.name, self.version, weights_file, weights_sha256, self.seed, i, self.task, text, self.phantom))
            self.records.append(
                make_record(
                    image=path,
                    patient_id=f"synthetic:{self.name}",
                    label=1,
                    box=None,
                    source=self.name,
                    lesion_types=lesion_types[offset] if per_image else lesion_types,
                    image_type="patch",
                    weights_sha256=weights_sha256,
                    seed=self.seed,
                    index=i,
                )
            )
        self._png.submit(pixels, paths, infos)

    def finish(self, **fields) -> Path:
        """Write the datalist (``fields``, e.g. ``batch_size``, ``device``, ``generator``, go between
        the seed and the records) and return its path."""
        self._png.drain()  # every PNG is on disk before the datalist names it
        datalist = {"dataset": "synthetic", "task": self.task, "phantom": self.phantom, "seed": self.seed, **fields}
        datalist.update({"training": self.records, "validation": [], "test": []})
        out = self.output_dir / SYNTHETIC_DATALIST
        self.written.append(out)
        return write_datalist(datalist, out)


def generate_synthetic_patches(
    network: torch.nn.Module,
    num_samples: int,
    output_dir: str | os.PathLike,
    seed: int = 0,
    checkpoint: str | os.PathLike | None = None,
    snapshot_dir: str | os.PathLike | None = None,
    default_checkpoint: str | os.PathLike | None = None,
    *,
    generator_name: str,
    generator_version: str,
    task: str = "mass",
    device: str | torch.device = "cpu",
    batch_size: int = 64,
    phantom: bool | None = None,
    progress: bool = True,
    decoding: str | None = None,
    writer_threads: int = 2,
) -> Path:
    """Write ``num_samples`` synthetic lesion patches and their datalist into ``output_dir``.

    Args:
        network: the generator (e.g. :class:`~mammoshare.networks.DCGANGenerator`), latent
            ``(B, nz)`` -> image ``(B, 1, 128, 128)``.
        num_samples: how many PNG files to write (1200 in the study).
        output_dir: an empty or new folder; a folder that holds anything is refused.
        seed: seeds the latents; the same seed gives byte-identical files.
        checkpoint: one weights file in any layout :func:`~mammoshare.gan.weights.load_generator_weights`
            accepts.
        snapshot_dir: a folder whose ``*.pt`` snapshots all generate, the samples spread evenly
            over them in epoch order. Exclusive with ``checkpoint``.
        default_checkpoint: used when neither is given (the bundle's ``models/model.pt``).
        generator_name, generator_version: the generator's identity (the bundle metadata's name
            and version), written into every PNG and the datalist.
        task: ``"mass"`` (records have lesion type mass) or ``"all"`` (lesion types unknown: ``[]``).
        device: where the generator runs.
        batch_size: latents per forward pass (the same batch size and device reproduce the files
            byte for byte).
        phantom: whether the generator was trained on phantom data; None (default): as the training
            counts next to the weights say (:func:`~mammoshare.datalist.trained_on_phantom`).
        progress: show a tqdm progress bar over the batches.
        decoding: how the generator's output becomes a [0, 1] image, for every weights file:
            ``"tanh"`` ((out + 1) / 2) or ``"clip01"`` (clip(out, 0, 1)); ``None`` (default): by the
            layout of each file (see :mod:`mammoshare.gan.weights`). A bundle converted from a
            medigan package whose generator was trained against [0, 1] images (00005, 00006) keeps
            its weights in our layout and sets ``"clip01"`` here.
        writer_threads: threads that encode and write the PNG files while the generator makes the
            next batches (file writing hides behind the network); 0 writes in this thread.

    Returns:
        the path of the datalist JSON.

    Raises:
        MissingWeightsError: no weights found (says how to get some).
        WeightsError: a file that is not generator weights, or weights of another architecture.
        FileExistsError: ``output_dir`` is not empty.
    """
    num_samples, seed, batch_size = sampling_counts(num_samples, seed, batch_size)
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; use one of {list(TASKS)}")
    if decoding is not None and decoding not in DECODINGS:
        raise ValueError(f"unknown output decoding {decoding!r}; use one of {list(DECODINGS)} or None (by the weights layout)")
    name, version = str(generator_name), str(generator_version)
    sources = _sources(num_samples, checkpoint, snapshot_dir, default_checkpoint)
    if phantom is None:
        phantom = any(trained_on_phantom(s.path) for s in sources)
    writer = SyntheticPatchWriter(
        output_dir, num_samples, generator_name=name, generator_version=version, task=task, seed=seed,
        phantom=phantom, writer_threads=writer_threads,
    )
    device = torch.device(device)
    network = network.to(device).eval()

    # check every weights file before anything is written; keep the weights of a single source
    loaded: GeneratorWeights | None = None
    for source in sources:
        weights = load_generator_weights(source.path)
        load_into(network, weights)
        source.sha256, source.layout = weights.sha256, weights.layout
        source.decoding = decoding if decoding is not None else weights.decoding
        loaded = weights if len(sources) == 1 else None
        del weights

    generator = torch.Generator(device="cpu").manual_seed(seed)
    latents = torch.randn(num_samples, _latent_size(network), generator=generator)
    lesion_types = ["mass"] if task == "mass" else []
    batches = sum(-(-s.samples // batch_size) for s in sources)
    with writer, torch.no_grad(), batch_progress(name, "generating", batches, progress) as bar:
        index = 0
        for source in sources:
            if source.samples == 0:
                continue
            weights = loaded if loaded is not None else load_generator_weights(source.path)
            if weights.sha256 != source.sha256:
                raise WeightsError(f"{source.path}: the file changed while the patches were being generated")
            load_into(network, weights)
            network.eval()
            del weights
            for start in range(index, index + source.samples, batch_size):
                stop = min(start + batch_size, index + source.samples)
                images = decode_output(network(latents[start:stop].to(device)), source.decoding)
                writer.add(images, weights_file=source.path.name, weights_sha256=source.sha256, lesion_types=lesion_types)
                bar.update(1)
            index += source.samples
        return writer.finish(
            batch_size=batch_size,
            device=device.type,
            generator={
                "name": name,
                "version": version,
                "weights": [
                    {"file": s.path.name, "sha256": s.sha256, "layout": s.layout, "decoding": s.decoding, "samples": s.samples}
                    for s in sources
                ],
            },
        )

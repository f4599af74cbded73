"""Ignite handlers shared by the bundles: progress bar, averaged losses, kill-safe checkpoints, and
the bases of the generative bundles' training checkpointers and preview grids."""

from __future__ import annotations

import logging
import math
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from PIL import Image

from mammoshare.atomic import atomic_torch_save
from mammoshare.datalist import write_training_counts
from mammoshare.hashing import sha256_file

__all__ = [
    "TrainingProgressBar",
    "AveragedLossLogger",
    "AtomicCheckpointSaver",
    "TrainingCheckpointer",
    "EpochSeeder",
    "epoch_seed",
    "GridPreviewer",
    "image_grid",
    "plain_weights",
]

logger = logging.getLogger(__name__)


class TrainingProgressBar:
    """One tqdm bar over every iteration of a run (progress within the epoch, ETA of the whole run),
    titled with the run and the device, e.g. ``wgangp_bcdr on cuda:0: epoch 3/10``; at each epoch end
    it shows ``output_transform(engine.state.output)`` of the last iteration (e.g. the losses).

    The bar only counts iterations, so it reads nothing from the device between epoch ends (no
    per-iteration synchronisation). A resumed run starts the bar where it stands.
    """

    def __init__(self, output_transform: Callable | None = None, desc: str = "training", device: Any = None):
        self.output_transform = output_transform
        self.desc = f"{desc} on {device}" if device is not None else desc
        self.bar = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.open)
        engine.add_event_handler(Events.EPOCH_STARTED, self.show_epoch)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.step)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.show_output)
        engine.add_event_handler(Events.COMPLETED, self.close)

    def open(self, engine: Engine) -> None:
        from tqdm.auto import tqdm

        state = engine.state
        total = state.max_epochs * state.epoch_length if state.epoch_length else None
        self.close(engine)
        self.bar = tqdm(total=total, initial=state.iteration, desc=self.desc, unit="it", dynamic_ncols=True)

    def show_epoch(self, engine: Engine) -> None:
        if self.bar is not None:
            self.bar.set_description(f"{self.desc}: epoch {engine.state.epoch}/{engine.state.max_epochs}", refresh=False)

    def step(self, engine: Engine) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def show_output(self, engine: Engine) -> None:
        if self.bar is not None and self.output_transform is not None and engine.state.output is not None:
            values = self.output_transform(engine.state.output)
            self.bar.set_postfix({k: f"{float(v):.4g}" for k, v in dict(values).items()})

    def close(self, engine: Engine) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class AveragedLossLogger:
    """Losses averaged over every ``every`` iterations, read from the device once per ``every``
    iterations instead of several times per iteration (each read waits for a GPU to finish).

    Every iteration adds ``output_transform(engine.state.output)`` (``{name: 0-d tensor}``, kept on
    the device) to running sums; every ``every``-th iteration and at each epoch end the means are
    read in one transfer, logged (``logger_name``, like MONAI's StatsHandler), written to
    TensorBoard (``summary_writer``, or a writer on ``log_dir``) as ``{tag}/{name}``, and kept in
    ``engine.state.averaged_losses``. A mean that is not finite stops the run with a clear error
    (a NaN of any iteration reaches the mean).
    """

    def __init__(
        self,
        output_transform: Callable[[Any], dict[str, Any]],
        every: int = 10,
        summary_writer: Any = None,
        log_dir: str | None = None,
        tag: str = "train",
        logger_name: str = "mammoshare.train",
        check_finite: bool = True,
    ):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.output_transform = output_transform
        self.every = int(every)
        self.summary_writer = summary_writer
        self.log_dir = log_dir
        self.tag = tag
        self.logger = logging.getLogger(logger_name)
        self.check_finite = check_finite
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}

    def attach(self, engine: Engine) -> None:
        if self.summary_writer is None and self.log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.summary_writer = SummaryWriter(log_dir=self.log_dir)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.accumulate)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.flush)

    def accumulate(self, engine: Engine) -> None:
        for name, value in self.output_transform(engine.state.output).items():
            value = value.detach().float() if isinstance(value, torch.Tensor) else torch.tensor(float(value))
            self._sums[name] = self._sums[name] + value if name in self._sums else value.clone()
            self._counts[name] = self._counts.get(name, 0) + 1
        if engine.state.iteration % self.every == 0:
            self.flush(engine)

    def flush(self, engine: Engine) -> None:
        if not self._sums:
            return
        names = list(self._sums)
        devices = {self._sums[n].device for n in names}
        device = devices.pop() if len(devices) == 1 else torch.device("cpu")
        stacked = torch.stack([self._sums[n].to(device) / self._counts[n] for n in names])
        means = dict(zip(names, stacked.tolist()))  # the one host synchronisation
        self._sums.clear()
        self._counts.clear()
        engine.state.averaged_losses = means
        state = engine.state
        self.logger.info(
            "Epoch: %d/%d, Iter: %d -- %s",
            state.epoch, state.max_epochs, state.iteration, " ".join(f"{self.tag}/{k}: {v:.4f}" for k, v in means.items()),
        )
        if self.summary_writer is not None:
            for name, value in means.items():
                self.summary_writer.add_scalar(f"{self.tag}/{name}", value, state.iteration)
        bad = {k: v for k, v in means.items() if not math.isfinite(v)}
        if self.check_finite and bad:
            raise FloatingPointError(
                f"non-finite loss at epoch {state.epoch}, around iteration {state.iteration}: {bad}; "
                "the last good state is that of the previous epoch (last.pt or the best checkpoint); "
                "lower the learning rate or check the data"
            )


def _atomic_save_func(self, checkpoint, path, func) -> None:
    from mammoshare.atomic import atomic_write

    with atomic_write(path) as f:
        func(checkpoint, f, **self.kwargs)


class AtomicCheckpointSaver:
    """MONAI's ``CheckpointSaver`` whose files (``model.pt``, ``model_final.pt``, interval
    checkpoints) are written kill-safely (:mod:`mammoshare.atomic`): MONAI's own saver writes in
    place (``atomic=False``), so a run killed while saving would leave a truncated ``model.pt``.
    Takes the same arguments as ``monai.handlers.CheckpointSaver``."""

    def __new__(cls, *args, **kwargs):
        import types

        from monai.handlers import CheckpointSaver

        saver = CheckpointSaver(*args, **kwargs)
        for checkpoint in (saver._final_checkpoint, saver._key_metric_checkpoint, saver._interval_checkpoint):
            if checkpoint is not None:
                checkpoint.save_handler._save_func = types.MethodType(_atomic_save_func, checkpoint.save_handler)
        return saver


def plain_weights(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A network's ``state_dict`` as detached CPU copies (what a shared ``model.pt`` holds)."""
    return {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}


def epoch_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch)) % (2**31 - 1)


class EpochSeeder:
    """Reseed torch, numpy, ``random``, the data loader's generator and the dataset's random
    transforms at every ``EPOCH_STARTED`` from (seed, epoch), and move the loader's batch sampler
    to the epoch (see :class:`~mammoshare.gan.data.StreamBatchSampler`)."""

    def __init__(self, seed: int, data_loader: Any = None):
        self.seed = int(seed)
        self.data_loader = data_loader

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        value = epoch_seed(self.seed, engine.state.epoch)
        torch.manual_seed(value)
        np.random.seed(value)
        random.seed(value)
        loader = self.data_loader if self.data_loader is not None else engine.data_loader
        batch_sampler = getattr(loader, "batch_sampler", None)
        if hasattr(batch_sampler, "set_epoch"):
            batch_sampler.set_epoch(engine.state.epoch)
        generator = getattr(loader, "generator", None)
        if generator is not None:
            generator.manual_seed(value)
        transform = getattr(getattr(loader, "dataset", None), "transform", None)
        if hasattr(transform, "set_random_state"):
            transform.set_random_state(seed=value)


class TrainingCheckpointer:
    """Base of a generative bundle's checkpointer: everything a run keeps, under ``output_dir``.

    - ``last.pt`` at every ``EPOCH_COMPLETED``: :meth:`training_state` (networks, optimizers, with
      :meth:`progress`: epoch, iteration, max_epochs, seed, AMP loss scalers). For resuming only;
      never shared.
    - ``model.pt`` at ``COMPLETED``: :meth:`model_weights` only, plain tensors (what is shared).

    Every file is written kill-safely (:func:`mammoshare.atomic.atomic_torch_save`). With ``resume``,
    ``last.pt`` is restored at ``STARTED``: a run of another seed is refused, :meth:`restore` loads
    the rest, then the engine's epoch and iteration are set. Subclasses write :meth:`training_state`,
    :meth:`restore` and :meth:`model_weights`, and name what ``model.pt`` holds in ``MODEL_DESCRIPTION``.
    """

    MODEL_DESCRIPTION = "model weights"
    #: the engine's AMP loss scalers (``torch.amp.GradScaler``) whose state ``last.pt`` keeps
    SCALERS: tuple[str, ...] = ("scaler",)

    def __init__(self, output_dir: str | os.PathLike, resume: bool = False, seed: int | None = None):
        self.output_dir = Path(output_dir)
        self.resume = bool(resume)
        self.seed = seed

    @property
    def last_path(self) -> Path:
        return self.output_dir / "last.pt"

    @property
    def model_path(self) -> Path:
        return self.output_dir / "model.pt"

    def attach(self, engine: Engine) -> None:
        if self.resume:
            engine.add_event_handler(Events.STARTED, self.load_last)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.save_epoch)
        engine.add_event_handler(Events.COMPLETED, self.save_model)

    def progress(self, engine: Engine) -> dict[str, Any]:
        """Where the run stands: ``{"epoch", "iteration", "max_epochs", "seed", "scalers"}`` (the
        state of each enabled AMP loss scaler of :data:`SCALERS`, so that a resumed fp16 run goes on
        with the scale it had)."""
        state = engine.state
        return {"epoch": state.epoch, "iteration": state.iteration, "max_epochs": state.max_epochs, "seed": self.seed,
                "scalers": {name: scaler.state_dict() for name, scaler in self._scalers(engine).items()}}

    def _scalers(self, engine: Engine) -> dict[str, Any]:
        scalers = {name: getattr(engine, name, None) for name in self.SCALERS}
        return {name: s for name, s in scalers.items() if s is not None and s.is_enabled()}

    def restore_scalers(self, state: dict[str, Any], engine: Engine) -> None:
        saved, current = state.get("scalers") or {}, self._scalers(engine)
        if set(saved) != set(current):
            raise ValueError(
                f"{self.last_path} was written by a run {'with' if saved else 'without'} float16 loss scaling, this run is "
                f"{'with' if current else 'without'}: resume with the same --amp"
            )
        for name, scaler in current.items():
            scaler.load_state_dict(saved[name])

    def training_state(self, engine: Engine) -> dict[str, Any]:
        """The content of ``last.pt``."""
        raise NotImplementedError

    def restore(self, state: dict[str, Any], engine: Engine) -> None:
        """Load the networks, optimizers and counters of a ``last.pt`` (seed already checked);
        raise ValueError naming the option to fix when the file does not suit this run."""
        raise NotImplementedError

    def model_weights(self) -> dict[str, torch.Tensor]:
        """The content of ``model.pt``."""
        raise NotImplementedError

    def save_epoch(self, engine: Engine) -> None:
        atomic_torch_save(self.training_state(engine), self.last_path)

    def run_length(self, engine: Engine) -> dict[str, int]:
        """How long the run trained, for its training record: ``{"epochs", "iterations"}`` (and
        the subclass's update counters)."""
        return {"epochs": int(engine.state.epoch), "iterations": int(engine.state.iteration)}

    def model_facts(self) -> dict[str, Any]:
        """What the weights cannot tell of themselves and a receiver needs (e.g. a diffusion
        model's noise schedule), added to the training record; none by default."""
        return {}

    def save_model(self, engine: Engine) -> None:
        atomic_torch_save(self.model_weights(), self.model_path)
        # the training record names the weights it describes: pack refuses a record of other weights
        write_training_counts(self.output_dir, {**self.run_length(engine), **self.model_facts(), "weights_file": self.model_path.name,
                                                "weights_sha256": sha256_file(self.model_path)}, update=True)
        logger.info("%s: %s (epoch %d)", self.MODEL_DESCRIPTION, self.model_path.resolve(), engine.state.epoch)

    def load_last(self, engine: Engine) -> None:
        if not self.last_path.is_file():
            raise FileNotFoundError(
                f"{self.last_path}: no training state to resume from; run without --resume True to start anew"
            )
        state = torch.load(self.last_path, map_location="cpu", weights_only=True)
        if self.seed is not None and state.get("seed") not in (None, self.seed):
            raise ValueError(
                f"{self.last_path} was written by a run with seed {state.get('seed')}, not {self.seed}: "
                "resume with the same --seed"
            )
        self.restore(state, engine)
        self.restore_scalers(state, engine)
        engine.state.epoch = int(state["epoch"])
        engine.state.iteration = int(state["iteration"])
        logger.info("resumed from %s at epoch %d of %d", self.last_path, engine.state.epoch, engine.state.max_epochs)


def image_grid(images: np.ndarray, columns: int | None = None, padding: int = 2) -> np.ndarray:
    """``(N, H, W)`` uint8 images -> one uint8 grid picture (white padding; ``columns`` default:
    about the square root of N)."""
    count, height, width = images.shape
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    grid = np.full((rows * (height + padding) + padding, columns * (width + padding) + padding), 255, np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        y, x = padding + r * (height + padding), padding + c * (width + padding)
        grid[y : y + height, x : x + width] = image
    return grid


class GridPreviewer:
    """Base of a generative bundle's preview: every ``every`` epochs (and at the last; never when
    ``every`` is 0 or less) a PNG grid of :meth:`sample` (``(N, H, W)`` uint8, ``columns`` per row),
    ``output_dir/previews/epoch_XXXX.png``, also sent to TensorBoard as ``samples`` (and
    ``rows_text`` as ``samples/rows`` when set). Subclasses draw from fixed inputs, without disturbing
    training."""

    def __init__(
        self,
        output_dir: str | os.PathLike,
        every: int,
        columns: int | None = None,
        summary_writer: Any = None,
        rows_text: str | None = None,
    ):
        self.output_dir = Path(output_dir) / "previews"
        self.every = int(every)
        self.columns = columns
        self.summary_writer = summary_writer
        self.rows_text = rows_text

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def sample(self) -> np.ndarray:
        """The pictures of the grid, ``(N, H, W)`` uint8."""
        raise NotImplementedError

    def __call__(self, engine: Engine) -> None:
        epoch = engine.state.epoch
        if self.every <= 0 or (epoch % self.every and epoch != engine.state.max_epochs):
            return
        grid = image_grid(self.sample(), columns=self.columns)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(grid).save(self.output_dir / f"epoch_{epoch:04d}.png")
        if self.summary_writer is not None:
            self.summary_writer.add_image("samples", grid[None], epoch)
            if self.rows_text is not None:
                self.summary_writer.add_text("samples/rows", self.rows_text, epoch)

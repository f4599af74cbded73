"""Ignite handlers shared by the bundles."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import torch
from ignite.engine import Engine, Events

__all__ = ["EpochProgressBar", "AveragedLossLogger", "AtomicCheckpointSaver"]


class EpochProgressBar:
    """A tqdm bar over the epochs of a run (with ETA), showing ``output_transform(engine.state.output)``
    of the last iteration (e.g. the losses)."""

    def __init__(self, output_transform: Callable | None = None, desc: str = "epochs"):
        self.output_transform = output_transform
        self.desc = desc

    def attach(self, engine: Engine) -> None:
        from ignite.handlers import ProgressBar

        ProgressBar(persist=True, desc=self.desc).attach(
            engine,
            output_transform=self.output_transform,
            event_name=Events.EPOCH_COMPLETED,
            closing_event_name=Events.COMPLETED,
        )


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

"""Ignite handlers shared by the bundles."""

from __future__ import annotations

from collections.abc import Callable

from ignite.engine import Engine, Events

__all__ = ["EpochProgressBar", "AtomicCheckpointSaver"]


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

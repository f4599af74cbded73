"""Ignite handlers shared by the bundles."""

from __future__ import annotations

from collections.abc import Callable

from ignite.engine import Engine, Events

__all__ = ["EpochProgressBar"]


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

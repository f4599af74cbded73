"""The generator-weights error, torch-free so that command-line parsers can name it without torch."""

from __future__ import annotations

__all__ = ["WeightsError"]


class WeightsError(ValueError):
    """Weights or a generator description that cannot be used; names the file and what was expected."""

"""The audit's errors (torch-free; imported by every audit module)."""

from __future__ import annotations


class AuditError(ValueError):
    """An audit that cannot be used (missing, unreadable, of another generator); names the file and the fix."""


class AuditGateError(AuditError):
    """The gate refuses a generator: memorisation or membership failed and no risk was accepted."""

    def __init__(self, message: str, failed: list[str]):
        super().__init__(message)
        self.failed = failed

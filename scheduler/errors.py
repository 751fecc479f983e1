"""The scheduler's exceptions: one root, and rule errors that are also ValueErrors."""

from __future__ import annotations

from datetime import time


class SchedulerError(Exception):
    """Root of every error the scheduler package raises on purpose."""


class RuleError(SchedulerError, ValueError):
    """A schedule rule staff cannot have; the message names the field and is shown to them."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.reason = message


class QuietHoursError(RuleError):
    """A routine broadcast would play during the commune's quiet hours."""

    def __init__(self, message: str, *, field: str | None, local_time: time) -> None:
        super().__init__(message, field=field)
        self.local_time = local_time

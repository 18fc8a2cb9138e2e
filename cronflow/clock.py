"""The one place that reads the time; tests swap in a VirtualClock."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta


class Clock:
    """Wall time (aware, UTC) and monotonic seconds, as the real system reports them."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


class VirtualClock(Clock):
    """A clock that moves only when told to: days of scheduling in milliseconds."""

    def __init__(self, start: datetime) -> None:
        self._now = start.astimezone(UTC)
        self._mono = 0.0

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
        self._mono += seconds

    def jump_wall(self, seconds: float) -> None:
        """Move wall time only, as a suspend or an NTP step looks to the process."""
        self._now += timedelta(seconds=seconds)

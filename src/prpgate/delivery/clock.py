"""The worker's clock: the system one, and a manual one for tests (the Sleeper port's fake)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

__all__ = ["ManualClock", "SystemClock"]


class SystemClock:
    """Wall-clock time (UTC) and ``asyncio.sleep``."""

    def now(self) -> datetime:
        """The current time, UTC."""
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` on the event loop."""
        await asyncio.sleep(max(0.0, seconds))


class ManualClock:
    """A clock that moves only when told to or slept on: sleeping advances it at once.

    ``slept`` records every requested sleep, so tests can assert the waits a worker
    chose without waiting for them.
    """

    def __init__(self, start: datetime) -> None:
        self._now = start
        self.slept: list[float] = []

    def now(self) -> datetime:
        """The clock's current time."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self._now += timedelta(seconds=seconds)

    async def sleep(self, seconds: float) -> None:
        """Advance by ``seconds`` and yield to the loop once (no real wait)."""
        self.slept.append(seconds)
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)

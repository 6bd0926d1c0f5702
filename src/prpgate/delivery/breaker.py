"""A circuit breaker for the clinic server, so a server that is down is not hammered. Pure.

Closed: writes flow. After ``threshold`` failures in a row that say "server not
able" (no answer, timeout, 5xx, 429) it opens for ``cooldown`` seconds — or for as
long as the server's ``Retry-After`` asks, if longer. Then half-open: one trial
write; success closes it, failure opens it again for twice as long (up to
``max_cooldown``). Time comes in as values; nothing here reads a clock.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import Enum

__all__ = ["BreakerState", "CircuitBreaker"]


class BreakerState(Enum):
    """Where the breaker is."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class CircuitBreaker:
    """Counts consecutive server failures and says how many writes may start now."""

    def __init__(
        self, *, threshold: int = 5, cooldown: float = 2.0, max_cooldown: float = 120.0
    ) -> None:
        self.threshold = max(1, threshold)
        self.cooldown = cooldown
        self.max_cooldown = max_cooldown
        self.failures = 0
        self.opened = 0  # times opened since last closed
        self.open_until: datetime | None = None
        self._trial = False

    def state(self, now: datetime) -> BreakerState:
        """CLOSED, OPEN (until ``open_until``) or HALF_OPEN (one trial allowed)."""
        if self.open_until is None:
            return BreakerState.CLOSED
        if now < self.open_until:
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    def allowance(self, now: datetime, wanted: int) -> int:
        """How many of ``wanted`` writes may start now (0 while open, 1 trial when half-open)."""
        state = self.state(now)
        if state is BreakerState.CLOSED:
            return wanted
        if state is BreakerState.OPEN or self._trial:
            return 0
        return min(1, wanted)

    def started(self, now: datetime) -> None:
        """A write started (marks the half-open trial as taken)."""
        if self.state(now) is BreakerState.HALF_OPEN:
            self._trial = True

    def record_success(self) -> None:
        """The server answered (with a success or a final 4xx): close."""
        self.failures = 0
        self.opened = 0
        self.open_until = None
        self._trial = False

    def record_failure(self, now: datetime, retry_after: float | None = None) -> bool:
        """The server could not take a write. Returns True when this opened the breaker."""
        self.failures += 1
        state = self.state(now)
        was_open = state is not BreakerState.CLOSED
        if state is BreakerState.OPEN:
            # a write started before the breaker opened: only a longer Retry-After counts
            if retry_after is not None and self.open_until is not None:
                self.open_until = max(self.open_until, now + timedelta(seconds=retry_after))
            return False
        if state is BreakerState.CLOSED and self.failures < self.threshold and retry_after is None:
            return False
        pause = min(self.max_cooldown, self.cooldown * (2 ** min(self.opened, 30)))
        if retry_after is not None:
            pause = max(pause, retry_after)
        self.opened += 1
        self.open_until = now + timedelta(seconds=pause)
        self._trial = False
        return not was_open

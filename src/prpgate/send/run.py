"""What every ``prpgate send`` run shares, over MLLP or FHIR: the options common to both
(connections, timeouts, retries, rate, stopping) and the run's progress (results in input
order, pacing at ``rate``, stopping after the first negative answer when asked)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from prpgate.errors import ConfigError
from prpgate.send.outcome import Result, Status

__all__ = ["OnResult", "RunOptions", "RunProgress"]

OnResult = Callable[[Result], None]


@dataclass(frozen=True, slots=True)
class RunOptions:
    """``connections`` at once; ``timeout`` bounds each wait for an answer and
    ``connect_timeout`` each connection attempt, in seconds; ``retries`` after a timeout
    or a broken connection; ``rate`` per second over all connections (None: unpaced);
    ``stop_on_error``: take nothing more after the first negative answer."""

    connections: int = 1
    timeout: float = 10.0
    connect_timeout: float = 10.0
    retries: int = 0
    rate: float | None = None
    stop_on_error: bool = False

    def check(self) -> None:
        """Raises ConfigError for a value that cannot work."""
        if self.connections < 1:
            raise ConfigError("connections must be at least 1")
        if self.timeout <= 0 or self.connect_timeout <= 0:
            raise ConfigError("timeouts must be positive")
        if self.retries < 0:
            raise ConfigError("retries cannot be negative")
        if self.rate is not None and self.rate <= 0:
            raise ConfigError("rate must be positive")


class RunProgress:
    """The results of a run's ``count`` inputs as they settle, its pacing and stopping."""

    def __init__(self, count: int, opts: RunOptions, on_result: OnResult | None) -> None:
        self.results: list[Result | None] = [None] * count
        self.stopped = False
        self._rate = opts.rate
        self._stop_on_error = opts.stop_on_error
        self._on_result = on_result
        self._next_send = 0.0

    async def pace(self) -> None:
        """Wait for the next send slot at ``rate`` per second over all connections."""
        rate = self._rate
        if rate is None:
            return
        now = asyncio.get_running_loop().time()
        at = max(now, self._next_send)
        self._next_send = at + 1.0 / rate
        if at > now:
            await asyncio.sleep(at - now)

    def finish(self, result: Result) -> None:
        """Record a settled input (once), stop the run if asked to, report it."""
        self.results[result.index] = result
        if self._stop_on_error and result.status is not Status.NOT_SENT and not result.positive:
            self.stopped = True
        if self._on_result is not None:
            self._on_result(result)

"""OutboxWorker: takes due outbox rows, sends them through a Sink, and records what happened.

The loop: claim due rows (the store hands out at most one per patient, oldest
first, so order is kept per patient and a patient's writes are never in flight in
parallel), send up to ``parallel`` at once, then mark each one delivered, waiting
for a retry (exponential backoff with jitter, or the server's ``Retry-After`` if
longer) or dead (a final 4xx, or too many attempts, or too old). A circuit breaker
stops claiming while the server is down. One warning is logged when a backlog
starts and one when it clears — not one per attempt — and never patient data.

Three ways to run: ``run_once`` (one pass over what is due now), ``drain`` (until
nothing undelivered is left, waiting for retries, or a timeout) and ``run`` (until
a stop event is set).
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any, ParamSpec, TypeVar

import structlog

from prpgate.delivery.breaker import BreakerState, CircuitBreaker
from prpgate.delivery.fhir_sink import WriteFailedError
from prpgate.delivery.policy import backoff_delay
from prpgate.errors import DeliveryError, StoreError
from prpgate.ports import Delivery, OutboxStats, OutboxStore, Receipt, Sink, Sleeper

__all__ = ["DeliveryStats", "OutboxWorker", "WorkerPolicy", "outbox_metrics"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class WorkerPolicy:
    """How the worker paces itself.

    ``parallel`` writes in flight at most (each for a different patient); ``lease``
    how long a claimed row stays ours; ``max_attempts`` HTTP attempts and
    ``max_age`` since the message arrived before a row that keeps failing becomes a
    dead letter; ``backoff_base``/``backoff_cap`` seconds shape the delay between
    attempts; ``idle_poll`` seconds between looks at an empty outbox.
    """

    parallel: int = 4
    lease: timedelta = timedelta(minutes=5)
    max_attempts: int = 50
    max_age: timedelta = timedelta(days=7)
    backoff_base: float = 1.0
    backoff_cap: float = 600.0
    idle_poll: float = 1.0


@dataclass(slots=True)
class DeliveryStats:
    """What one run of the worker did."""

    claimed: int = 0
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    requests: int = 0
    dead_ids: list[int] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """True when every row claimed was delivered."""
        return self.retried == 0 and self.dead == 0


class _Mode(Enum):
    ONCE = "once"
    DRAIN = "drain"
    FOREVER = "forever"


def _when(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def outbox_metrics(stats: OutboxStats, now: datetime) -> dict[str, float]:
    """Gauges for a metrics endpoint: rows per state and the oldest undelivered row's age."""
    gauges: dict[str, float] = {f"outbox_rows{{state={s!r}}}": n for s, n in stats.counts.items()}
    gauges["outbox_undelivered"] = stats.undelivered
    oldest = _when(stats.oldest_undelivered) if stats.oldest_undelivered else None
    gauges["outbox_oldest_undelivered_age_seconds"] = (
        max(0.0, (now - oldest).total_seconds()) if oldest else 0.0
    )
    return gauges


def _cause(reason: str) -> str:
    """The kind of a failure without what the server said (which may quote patient data)."""
    return reason.split(":", 1)[0][:60]


class OutboxWorker:
    """Delivers the outbox through a Sink (see the module docstring)."""

    def __init__(
        self,
        store: OutboxStore,
        sink: Sink,
        clock: Sleeper,
        *,
        policy: WorkerPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        rng: random.Random | None = None,
        log: Any = None,
    ) -> None:
        self.store = store
        self.sink = sink
        self.clock = clock
        self.policy = policy or WorkerPolicy()
        self.breaker = breaker or CircuitBreaker()
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self._log = log or structlog.get_logger("prpgate.delivery")
        self.in_backlog = False
        self._backlog_since: datetime | None = None
        self._pool: ThreadPoolExecutor | None = None

    async def run_once(self) -> DeliveryStats:
        """Deliver every row that is due now (and rows that become due as earlier rows of
        the same patient are delivered); rows rescheduled for later are left waiting."""
        return await self._run(_Mode.ONCE, None, None)

    async def drain(self, *, timeout: float | None = None) -> DeliveryStats:
        """Deliver until nothing undelivered is left (waiting out retries) or ``timeout``."""
        deadline = self.clock.now() + timedelta(seconds=timeout) if timeout is not None else None
        return await self._run(_Mode.DRAIN, None, deadline)

    async def run(self, stop: asyncio.Event) -> DeliveryStats:
        """Deliver until ``stop`` is set; writes in flight then finish before it returns."""
        return await self._run(_Mode.FOREVER, stop, None)

    async def _run(
        self, mode: _Mode, stop: asyncio.Event | None, deadline: datetime | None
    ) -> DeliveryStats:
        stats = DeliveryStats()
        tasks: dict[asyncio.Task[Receipt], Delivery] = {}
        # store calls (each a durable commit) run on one thread off the event loop, so
        # writes in flight progress during an fsync; one thread keeps them serial
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prpgate-outbox")
        try:
            while True:
                now = self.clock.now()
                ending = (stop is not None and stop.is_set()) or (
                    deadline is not None and now >= deadline
                )
                if not ending:
                    await self._start(now, tasks, stats)
                if tasks:
                    done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        await self._settle(tasks.pop(task), task, stats)
                    continue
                if ending or mode is _Mode.ONCE:
                    break
                outbox = await self._db(self.store.outbox_stats, include_done=False)
                self._check_cleared(outbox)
                if mode is _Mode.DRAIN and outbox.undelivered == 0:
                    break
                await self._pause(self._idle_wait(now, outbox, mode, deadline), stop)
            if mode is not _Mode.FOREVER and self.in_backlog:
                self._check_cleared(await self._db(self.store.outbox_stats, include_done=False))
        finally:
            self._pool.shutdown(wait=True)
            for task, delivery in tasks.items():
                task.cancel()
                self.store.release(delivery)
        return stats

    async def _db(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        assert self._pool is not None, "store calls happen inside a run"
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    async def _start(
        self, now: datetime, tasks: dict[asyncio.Task[Receipt], Delivery], stats: DeliveryStats
    ) -> None:
        room = self.breaker.allowance(now, self.policy.parallel - len(tasks))
        if room <= 0:
            return
        claimed = await self._db(
            self.store.claim_due,
            now,
            limit=room,
            lease=self.policy.lease,
            skip_patients={d.patient_key for d in tasks.values()},
        )
        for delivery in claimed:
            self.breaker.started(now)
            tasks[asyncio.ensure_future(self.sink.send(delivery))] = delivery
            stats.claimed += 1

    def _idle_wait(
        self, now: datetime, outbox: OutboxStats, mode: _Mode, deadline: datetime | None
    ) -> float:
        wait = self.policy.idle_poll
        if mode is _Mode.DRAIN:
            # nothing could be claimed: wait for the next retry time and a closed breaker
            nxt = _when(outbox.next_attempt_at) if outbox.next_attempt_at else None
            until = [nxt] if nxt else []
            if self.breaker.state(now) is BreakerState.OPEN and self.breaker.open_until:
                until.append(self.breaker.open_until)
            wait = max((u - now).total_seconds() for u in until) if until else wait
        if deadline is not None:
            wait = min(wait, max(0.0, (deadline - now).total_seconds()))
        return max(wait, 0.001)

    async def _pause(self, seconds: float, stop: asyncio.Event | None) -> None:
        if stop is None:
            await self.clock.sleep(seconds)
            return
        sleeper = asyncio.ensure_future(self.clock.sleep(seconds))
        stopper = asyncio.ensure_future(stop.wait())
        _, pending = await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()

    async def _settle(
        self, delivery: Delivery, task: asyncio.Task[Receipt], stats: DeliveryStats
    ) -> None:
        now = self.clock.now()
        exc = task.exception()
        try:
            if exc is None:
                receipt = task.result()
                stats.requests += receipt.attempts
                await self._db(
                    self.store.mark_delivered,
                    delivery,
                    now=now,
                    attempts=receipt.attempts,
                    status=receipt.status,
                    server_id=receipt.server_id,
                    server_version=receipt.server_version,
                )
                stats.delivered += 1
                self.breaker.record_success()
                return
            if isinstance(exc, DeliveryError):
                await self._failed(delivery, exc, now, stats)
                return
            self._log.error(
                "delivery failed unexpectedly",
                outbox_id=delivery.id,
                error=type(exc).__name__,
                exc_info=exc,
            )
            await self._failed(
                delivery,
                DeliveryError(f"internal: {type(exc).__name__}", retryable=True),
                now,
                stats,
            )
        except StoreError as store_exc:
            # the lease will lapse and the row will be tried again: log and go on
            self._log.error("cannot record a delivery", outbox_id=delivery.id, error=str(store_exc))

    async def _failed(
        self, delivery: Delivery, exc: DeliveryError, now: datetime, stats: DeliveryStats
    ) -> None:
        failed = exc if isinstance(exc, WriteFailedError) else None
        attempts = failed.attempts if failed else 1
        status = failed.status if failed else None
        outcome = failed.outcome if failed else ""
        retry_after = failed.retry_after if failed else None
        reason = str(exc)
        stats.requests += attempts
        if not exc.retryable:
            if status is not None:
                self.breaker.record_success()  # the server is up; it refused this one
            await self._dead(delivery, now, attempts, status, reason, outcome, stats)
            return
        opened = self.breaker.record_failure(now, retry_after)
        total = delivery.attempts + attempts
        arrived = _when(delivery.received_at)
        age = now - arrived if arrived else timedelta(0)
        if total >= self.policy.max_attempts or age >= self.policy.max_age:
            why = f"gave up after {total} attempts in {int(age.total_seconds())} s: {reason}"
            await self._dead(delivery, now, attempts, status, why, outcome, stats)
            return
        delay = backoff_delay(
            total,
            base=self.policy.backoff_base,
            cap=self.policy.backoff_cap,
            jitter=self._rng.random(),
        )
        if retry_after is not None:
            delay = max(delay, retry_after)
        await self._db(
            self.store.mark_retry,
            delivery,
            now=now,
            next_attempt_at=now + timedelta(seconds=delay),
            attempts=attempts,
            status=status,
            error=reason,
            outcome=outcome,
        )
        stats.retried += 1
        if not self.in_backlog:
            waiting = await self._db(self.store.outbox_stats, include_done=False)
            self.in_backlog = True
            self._backlog_since = now
            self._log.warning(
                "delivery backlog started",
                cause=_cause(reason),
                status=status,
                undelivered=waiting.undelivered,
                breaker_open=opened,
            )

    async def _dead(
        self,
        delivery: Delivery,
        now: datetime,
        attempts: int,
        status: int | None,
        reason: str,
        outcome: str,
        stats: DeliveryStats,
    ) -> None:
        await self._db(
            self.store.mark_dead,
            delivery,
            now=now,
            attempts=attempts,
            status=status,
            error=reason,
            outcome=outcome,
        )
        stats.dead += 1
        stats.dead_ids.append(delivery.id)
        self._log.warning(
            "dead letter",
            outbox_id=delivery.id,
            kind=delivery.kind,
            status=status,
            cause=_cause(reason),
        )

    def _check_cleared(self, outbox: OutboxStats) -> None:
        if not self.in_backlog:
            return
        waiting = outbox.counts.get("retry", 0) + outbox.counts.get("inflight", 0)
        if waiting or self.breaker.open_until is not None:
            return
        since = self._backlog_since
        self.in_backlog = False
        self._backlog_since = None
        self._log.warning(
            "delivery backlog cleared",
            seconds=round((self.clock.now() - since).total_seconds(), 3) if since else None,
        )

"""Posting FHIR resources and Bundles to a FHIR endpoint (httpx), each answer judged.

``connections`` workers share one httpx client (at most that many connections) and
take resources in file order. A timeout or a connection that breaks before the answer
is retried ``retries`` times with the same body (tenacity: exponential backoff); an
HTTP answer of any status is never retried, it is the result.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import httpx
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from prpgate.errors import ConfigError
from prpgate.send.fhir_input import FhirOutgoing, read_answer
from prpgate.send.outcome import Result, Status

__all__ = ["FhirOptions", "send_fhir"]

FHIR_JSON = "application/fhir+json"


@dataclass(frozen=True, slots=True)
class FhirOptions:
    """How to post: concurrency, per-request ``timeout`` (seconds), retries on timeout
    or a broken connection, ``rate`` (requests/s over all workers, None: unpaced), a
    bearer token, TLS verification (a context or True for the system store) and
    whether to stop after the first negative answer."""

    connections: int = 1
    timeout: float = 10.0
    connect_timeout: float = 10.0
    retries: int = 0
    rate: float | None = None
    stop_on_error: bool = False
    bearer_token: str | None = None
    verify: ssl.SSLContext | bool = True

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


OnResult = Callable[[Result], None]


class _Run:
    def __init__(
        self,
        base: str,
        client: httpx.AsyncClient,
        items: Sequence[FhirOutgoing],
        opts: FhirOptions,
        on_result: OnResult | None,
    ) -> None:
        self.base = base
        self.client = client
        self.opts = opts
        self.on_result = on_result
        self.results: list[Result | None] = [None] * len(items)
        self.queue: deque[tuple[int, FhirOutgoing]] = deque()
        self.stopped = False
        self.next_send = 0.0
        for i, item in enumerate(items):
            if item.problem:
                self.finish(_result(i, item, Status.NOT_SENT, text=item.problem))
            else:
                self.queue.append((i, item))

    def finish(self, result: Result) -> None:
        self.results[result.index] = result
        if self.opts.stop_on_error and result.status is not Status.NOT_SENT and not result.positive:
            self.stopped = True
        if self.on_result is not None:
            self.on_result(result)

    async def pace(self) -> None:
        if self.opts.rate is None:
            return
        now = asyncio.get_running_loop().time()
        at = max(now, self.next_send)
        self.next_send = at + 1.0 / self.opts.rate
        if at > now:
            await asyncio.sleep(at - now)

    async def worker(self, number: int) -> None:
        while self.queue and not self.stopped:
            index, item = self.queue.popleft()
            await self.pace()
            self.finish(await self.post(index, item, number))

    async def post(self, index: int, item: FhirOutgoing, number: int) -> Result:
        loop = asyncio.get_running_loop()
        attempts = 0
        started = loop.time()
        url = f"{self.base}/{item.path}" if item.path else self.base
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self.opts.retries + 1),
                retry=retry_if_exception_type((httpx.TimeoutException, httpx.NetworkError)),
                wait=wait_exponential(multiplier=0.2, max=2.0),
                reraise=True,
            ):
                with attempt:
                    attempts += 1
                    started = loop.time()
                    response = await self.client.post(url, content=item.body)
        except httpx.TimeoutException as exc:
            return _result(
                index, item, Status.TIMEOUT, text=_failed(exc, attempts), attempts=attempts
            )
        except httpx.ConnectError as exc:
            return _result(
                index,
                item,
                Status.NOT_SENT,
                text=f"not sent: cannot connect: {exc}",
                attempts=attempts,
            )
        except httpx.HTTPError as exc:
            return _result(
                index, item, Status.CLOSED, text=_failed(exc, attempts), attempts=attempts
            )
        answer = read_answer(response.status_code, response.content)
        result = _result(index, item, Status.ANSWERED, text=answer.text, attempts=attempts)
        result.code = str(response.status_code)
        result.positive = answer.positive
        result.latency = loop.time() - started
        result.connection = number
        result.acks = [result.code]
        return result


def _failed(exc: httpx.HTTPError, attempts: int) -> str:
    kind = "no answer within the timeout" if isinstance(exc, httpx.TimeoutException) else ""
    text = kind or f"the connection failed before the answer: {type(exc).__name__}: {exc}"
    return text + (f", {attempts} attempts" if attempts > 1 else "")


def _result(
    index: int, item: FhirOutgoing, status: Status, *, text: str = "", attempts: int = 0
) -> Result:
    return Result(
        index=index,
        file=item.file,
        number=item.number,
        source=item.source,
        control_id=item.label,
        status=status,
        text=text,
        attempts=attempts,
    )


async def send_fhir(
    base_url: str,
    items: Sequence[FhirOutgoing],
    options: FhirOptions | None = None,
    *,
    on_result: OnResult | None = None,
) -> list[Result]:
    """Post every resource to ``base_url``; one Result per resource, in input order.

    Never raises for what the server does (refusals, timeouts, errors are results).
    Raises ConfigError for options that cannot work.
    """
    opts = options or FhirOptions()
    opts.check()
    headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
    if opts.bearer_token:
        headers["Authorization"] = f"Bearer {opts.bearer_token}"
    timeout = httpx.Timeout(opts.timeout, connect=opts.connect_timeout)
    limits = httpx.Limits(max_connections=opts.connections)
    async with httpx.AsyncClient(
        headers=headers,
        timeout=timeout,
        limits=limits,
        verify=opts.verify,
    ) as client:
        # absolute URLs: httpx's base_url would add a slash to the base itself
        run = _Run(base_url.rstrip("/"), client, items, opts, on_result)
        await asyncio.gather(*(run.worker(n) for n in range(1, opts.connections + 1)))
    for i, item in enumerate(items):
        if run.results[i] is None:
            text = "not sent: the run stopped at a resource that was not accepted"
            run.finish(_result(i, item, Status.NOT_SENT, text=text))
    return [r for r in run.results if r is not None]

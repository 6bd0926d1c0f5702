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
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from prpgate.send.fhir_input import FhirOutgoing, read_answer
from prpgate.send.outcome import Result, Status
from prpgate.send.run import OnResult, RunOptions, RunProgress

__all__ = ["FhirOptions", "send_fhir"]

FHIR_JSON = "application/fhir+json"


@dataclass(frozen=True, slots=True)
class FhirOptions(RunOptions):
    """How to post: the options of every run (``RunOptions``; ``rate`` in requests per
    second, ``timeout`` per request), a bearer token and TLS verification (a context, or
    True for the system store)."""

    bearer_token: str | None = None
    verify: ssl.SSLContext | bool = True


class _Run(RunProgress):
    def __init__(
        self,
        base: str,
        client: httpx.AsyncClient,
        items: Sequence[FhirOutgoing],
        opts: FhirOptions,
        on_result: OnResult | None,
    ) -> None:
        super().__init__(len(items), opts, on_result)
        self.base = base
        self.client = client
        self.opts = opts
        self.queue: deque[tuple[int, FhirOutgoing]] = deque()
        for i, item in enumerate(items):
            if item.problem:
                self.finish(_result(i, item, Status.NOT_SENT, text=item.problem))
            else:
                self.queue.append((i, item))

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

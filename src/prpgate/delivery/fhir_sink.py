"""HttpSink: writes outbox rows to the clinic's FHIR R4 server with httpx and tenacity.

One ``send`` is one write, tried a few times in place (tenacity: exponential backoff
with jitter, ``Retry-After`` honoured when it is short) before the worker takes over
and reschedules the row. Foreign errors become ``WriteFailedError`` (a DeliveryError)
here, at the edge: ``retryable`` is False for answers that will never succeed (400,
401 after the token refresh, 403, 404, 422, several resources matching), and the
server's OperationOutcome travels with it to the dead letter.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import replace
from typing import Any

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from prpgate.delivery.patients import PatientResolver
from prpgate.delivery.policy import (
    Verdict,
    backoff_delay,
    classify,
    outcome_text,
    parse_retry_after,
)
from prpgate.delivery.write import (
    Write,
    WriteMode,
    plan_reapply,
    plan_search,
    plan_write,
)
from prpgate.errors import DeliveryError
from prpgate.ports import Delivery, Receipt, Sleeper

__all__ = ["HttpSink", "WriteFailedError"]

_ETAG = re.compile(r'^(?:W/)?"?([^"]*)"?$')
_HISTORY = re.compile(r"/([A-Za-z]+)/([A-Za-z0-9\-.]{1,64})/_history/([^/]+)/?$")
_PLAIN = re.compile(r"/([A-Za-z]+)/([A-Za-z0-9\-.]{1,64})/?$")


class WriteFailedError(DeliveryError):
    """A write the server did not take: the HTTP status (None when no answer came),
    the server's OperationOutcome (JSON text, or ''), how long it asked us to wait,
    and how many HTTP attempts were made."""

    def __init__(
        self,
        reason: str,
        *,
        retryable: bool,
        status: int | None = None,
        outcome: str = "",
        retry_after: float | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(reason, retryable=retryable)
        self.reason = reason
        self.status = status
        self.outcome = outcome
        self.retry_after = retry_after
        self.attempts = attempts


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, DeliveryError) and exc.retryable


def _json(resp: httpx.Response) -> dict[str, Any]:
    try:
        data = resp.json()
    except (ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


class HttpSink:
    """The Sink port over httpx: one FHIR base URL, one write mode.

    ``client`` carries the base URL, timeouts and auth; ``clock`` is where in-place
    retries wait. ``tries`` HTTP attempts per send at most; a ``Retry-After`` longer
    than ``max_inline_wait`` seconds ends the send at once so the worker reschedules.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        mode: WriteMode,
        clock: Sleeper,
        tries: int = 3,
        backoff_base: float = 0.5,
        backoff_cap: float = 5.0,
        max_inline_wait: float = 5.0,
        conflict_rounds: int = 3,
        patients: PatientResolver | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._client = client
        self._mode = mode
        self._clock = clock
        self._tries = max(1, tries)
        self._base = backoff_base
        self._cap = backoff_cap
        self._max_inline_wait = max_inline_wait
        self._conflict_rounds = conflict_rounds
        self._patients = patients
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security

    async def send(self, delivery: Delivery) -> Receipt:
        """Write one resource version; returns the server's receipt.

        Raises WriteFailedError: ``retryable`` True when a later attempt may succeed.
        """
        attempts = 0
        retrying = AsyncRetrying(
            stop=self._stop,
            wait=self._wait,
            retry=retry_if_exception(_is_retryable),
            sleep=self._clock.sleep,
            reraise=True,
        )
        receipt: Receipt | None = None
        try:
            async for attempt in retrying:
                with attempt:
                    attempts += 1
                    receipt = await self._write(delivery)
        except WriteFailedError as exc:
            exc.attempts = attempts
            raise
        except DeliveryError as exc:
            raise WriteFailedError(str(exc), retryable=exc.retryable, attempts=attempts) from exc
        assert receipt is not None
        return replace(receipt, attempts=attempts)

    def _stop(self, state: RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome else None
        wait = exc.retry_after if isinstance(exc, WriteFailedError) else None
        return state.attempt_number >= self._tries or (
            wait is not None and wait > self._max_inline_wait
        )

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, WriteFailedError) and exc.retry_after is not None:
            return exc.retry_after
        return backoff_delay(
            state.attempt_number, base=self._base, cap=self._cap, jitter=self._rng.random()
        )

    async def _request(self, write: Write) -> httpx.Response:
        try:
            return await self._client.request(
                write.method,
                write.path,
                params=write.params or None,
                headers=write.headers,
                content=write.body,
            )
        except httpx.TimeoutException as exc:
            raise WriteFailedError(f"timeout: {type(exc).__name__}", retryable=True) from exc
        except httpx.TransportError as exc:
            raise WriteFailedError(
                f"connection: {type(exc).__name__}: {exc}", retryable=True
            ) from exc
        except httpx.HTTPError as exc:
            raise WriteFailedError(
                f"request: {type(exc).__name__}: {exc}", retryable=False
            ) from exc

    async def _write(self, delivery: Delivery) -> Receipt:
        resource = delivery.resource
        if self._patients is not None:
            resource = await self._patients.resolve_in(resource, self._request)
        write, token = plan_write(
            delivery.kind, delivery.identifier, delivery.version, resource, self._mode
        )
        resp = await self._request(write)
        for round_ in range(self._conflict_rounds + 1):
            verdict = classify(resp.status_code)
            if verdict is Verdict.DELIVERED:
                return self._receipt(resp, delivery.kind)
            if verdict is not Verdict.CONFLICT:
                raise self._failure(resp, verdict)
            if round_ == self._conflict_rounds:
                break
            found = await self._matches(delivery.kind, token)
            if len(found) > 1:
                raise WriteFailedError(
                    f"HTTP {resp.status_code}: {len(found)} resources on the server match"
                    " the output's identifier; not guessing which",
                    retryable=False,
                    status=resp.status_code,
                    outcome=self._outcome(resp),
                )
            if found:
                server_id, version_id = found[0]
                resp = await self._request(
                    plan_reapply(delivery.kind, resource, server_id, version_id)
                )
            else:
                resp = await self._request(write)
        raise self._failure(resp, Verdict.RETRY, note="version conflict persisted")

    async def _matches(self, kind: str, token: str) -> list[tuple[str, str | None]]:
        resp = await self._request(plan_search(kind, token))
        if resp.status_code != 200:
            raise self._failure(resp, classify(resp.status_code), note="re-read after conflict")
        found: list[tuple[str, str | None]] = []
        for entry in _json(resp).get("entry") or []:
            res = entry.get("resource") if isinstance(entry, dict) else None
            if isinstance(res, dict) and res.get("resourceType") == kind and res.get("id"):
                meta = res.get("meta") if isinstance(res.get("meta"), dict) else {}
                vid = meta.get("versionId") if meta else None
                found.append((str(res["id"]), str(vid) if vid else None))
        return found

    @staticmethod
    def _outcome(resp: httpx.Response) -> str:
        data = _json(resp)
        if data.get("resourceType") == "OperationOutcome":
            return json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        return ""

    def _failure(self, resp: httpx.Response, verdict: Verdict, note: str = "") -> WriteFailedError:
        summary = outcome_text(resp.content) or resp.reason_phrase
        reason = f"HTTP {resp.status_code}" + (f" ({note})" if note else "") + f": {summary}"
        retry_after = parse_retry_after(resp.headers.get("Retry-After"), self._clock.now())
        return WriteFailedError(
            reason,
            retryable=verdict in (Verdict.RETRY, Verdict.CONFLICT),
            status=resp.status_code,
            outcome=self._outcome(resp),
            retry_after=retry_after,
        )

    @staticmethod
    def _receipt(resp: httpx.Response, kind: str) -> Receipt:
        server_id, version = "", ""
        location = resp.headers.get("Location") or resp.headers.get("Content-Location") or ""
        m = _HISTORY.search(location)
        if m and m.group(1) == kind:
            server_id, version = m.group(2), m.group(3)
        elif (m2 := _PLAIN.search(location)) and m2.group(1) == kind:
            server_id = m2.group(2)
        body = _json(resp)
        if body.get("resourceType") == kind:
            server_id = server_id or str(body.get("id") or "")
            meta = body.get("meta")
            if isinstance(meta, dict) and meta.get("versionId"):
                version = version or str(meta["versionId"])
        etag = resp.headers.get("ETag")
        if etag and not version and (e := _ETAG.match(etag.strip())):
            version = e.group(1)
        return Receipt(resp.status_code, server_id, version, 1)

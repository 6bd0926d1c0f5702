"""Settings -> a ready OutboxWorker (httpx client, auth, sink, breaker, policy).

Used by ``prpgate deliver`` and ``prpgate serve``. The worker owns its store
connection: given none, it opens the configured store (``store.factory``) for itself —
a second connection to the SQLite file (WAL lets it claim and mark rows while the
listener commits messages) or its own PostgreSQL pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta

import httpx

from prpgate.config import Settings
from prpgate.delivery.auth import BearerAuth, SmartBackendAuth
from prpgate.delivery.breaker import CircuitBreaker
from prpgate.delivery.clock import SystemClock
from prpgate.delivery.fhir_sink import HttpSink
from prpgate.delivery.outbox import OutboxWorker, WorkerPolicy
from prpgate.delivery.patients import PatientResolver
from prpgate.delivery.write import WriteMode
from prpgate.errors import ConfigError
from prpgate.ports import OutboxStore, Sleeper
from prpgate.store.factory import open_store

__all__ = ["build_auth", "open_worker", "worker_policy"]


def build_auth(settings: Settings, clock: Sleeper) -> httpx.Auth | None:
    """The auth flow the settings ask for; raises ConfigError when a part is missing."""
    if settings.fhir_auth == "none":
        return None
    if settings.fhir_auth == "bearer":
        if settings.fhir_bearer_token is None:
            raise ConfigError("fhir_auth = bearer needs fhir_bearer_token")
        return BearerAuth(settings.fhir_bearer_token.get_secret_value())
    missing = [
        name
        for name in ("fhir_smart_token_url", "fhir_smart_client_id", "fhir_smart_private_key")
        if getattr(settings, name) is None
    ]
    if missing:
        raise ConfigError(f"fhir_auth = smart needs {', '.join(missing)}")
    assert settings.fhir_smart_private_key is not None
    assert settings.fhir_smart_token_url is not None
    assert settings.fhir_smart_client_id is not None
    try:
        key = settings.fhir_smart_private_key.read_text()
    except OSError as exc:
        raise ConfigError(f"fhir_smart_private_key: {exc}") from exc
    return SmartBackendAuth(
        token_url=settings.fhir_smart_token_url,
        client_id=settings.fhir_smart_client_id,
        private_key=key,
        clock=clock,
        algorithm=settings.fhir_smart_algorithm,
        key_id=settings.fhir_smart_key_id,
        scope=settings.fhir_smart_scope,
    )


def worker_policy(settings: Settings) -> WorkerPolicy:
    """The worker's pacing from settings."""
    return WorkerPolicy(
        parallel=settings.delivery_parallel,
        lease=timedelta(seconds=settings.delivery_lease),
        max_attempts=settings.delivery_max_attempts,
        max_age=timedelta(seconds=settings.delivery_max_age),
        backoff_base=settings.delivery_backoff_base,
        backoff_cap=settings.delivery_backoff_cap,
        idle_poll=settings.delivery_idle_poll,
    )


@asynccontextmanager
async def open_worker(
    settings: Settings,
    store: OutboxStore | None = None,
    *,
    clock: Sleeper | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> AsyncIterator[OutboxWorker]:
    """A worker delivering ``store``'s outbox (default: the configured store, opened
    here and closed after) to ``settings.fhir_base_url``; the HTTP client closes when
    the block ends. Raises ConfigError on incomplete settings, StoreError when the
    store cannot be opened."""
    if not settings.fhir_base_url:
        raise ConfigError("no fhir_base_url: set PRPGATE_FHIR_BASE_URL or --fhir-base-url")
    clock = clock or SystemClock()
    auth = build_auth(settings, clock)
    async with AsyncExitStack() as stack:
        if store is None:
            own = await asyncio.to_thread(open_store, settings)
            stack.callback(own.close)
            store = own
        async with _worker(settings, settings.fhir_base_url, store, clock, auth, transport) as w:
            yield w


@asynccontextmanager
async def _worker(
    settings: Settings,
    base_url: str,
    store: OutboxStore,
    clock: Sleeper,
    auth: httpx.Auth | None,
    transport: httpx.AsyncBaseTransport | None,
) -> AsyncIterator[OutboxWorker]:
    timeout = httpx.Timeout(settings.fhir_timeout, connect=settings.fhir_connect_timeout)
    limits = httpx.Limits(max_connections=settings.delivery_parallel * 2)
    async with httpx.AsyncClient(
        base_url=base_url.rstrip("/") + "/",
        timeout=timeout,
        limits=limits,
        auth=auth,
        transport=transport,
        follow_redirects=False,
    ) as client:
        sink = HttpSink(
            client,
            mode=WriteMode(settings.fhir_write_mode),
            clock=clock,
            tries=settings.delivery_tries,
            backoff_base=min(settings.delivery_backoff_base, settings.delivery_max_inline_wait),
            backoff_cap=max(settings.delivery_max_inline_wait, 0.001),
            max_inline_wait=settings.delivery_max_inline_wait,
            patients=PatientResolver() if settings.fhir_resolve_patients else None,
        )
        breaker = CircuitBreaker(
            threshold=settings.delivery_breaker_threshold,
            cooldown=settings.delivery_breaker_cooldown,
            max_cooldown=settings.delivery_breaker_max_cooldown,
        )
        yield OutboxWorker(store, sink, clock, policy=worker_policy(settings), breaker=breaker)

"""Auth to the clinic's FHIR server as httpx auth flows: a static bearer token, or SMART
Backend Services (client-credentials grant with a ``private_key_jwt`` assertion).

SMART Backend Services (hl7.org/fhir/smart-app-launch/backend-services.html): the
client signs a short-lived JWT (iss = sub = client id, aud = token URL, exp within
five minutes, a fresh jti) with its private key (RS384 or ES384, PyJWT does the
signing), posts it to the token endpoint and gets an access token. The token is
cached until ``refresh_margin`` seconds before it expires; a 401 from the FHIR server
makes the flow fetch a new token and resend once — a second 401 is final.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator, Generator
from datetime import datetime, timedelta
from typing import Literal

import httpx
import jwt

from prpgate.errors import DeliveryError
from prpgate.ports import Clock

__all__ = ["ASSERTION_TYPE", "BearerAuth", "SmartBackendAuth"]

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class BearerAuth(httpx.Auth):
    """A static ``Authorization: Bearer <token>``."""

    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Add the header and send."""
        request.headers["Authorization"] = self._header
        yield request


class SmartBackendAuth(httpx.Auth):
    """SMART Backend Services client: signed assertion -> cached access token."""

    requires_response_body = True

    def __init__(
        self,
        *,
        token_url: str,
        client_id: str,
        private_key: str,
        clock: Clock,
        algorithm: Literal["RS384", "ES384"] = "RS384",
        key_id: str | None = None,
        scope: str = "system/DetectedIssue.write system/Flag.write",
        refresh_margin: float = 30.0,
        assertion_lifetime: float = 300.0,
    ) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self._key = private_key
        self._clock = clock
        self.algorithm = algorithm
        self.key_id = key_id
        self.scope = scope
        self._margin = timedelta(seconds=refresh_margin)
        self._lifetime = timedelta(seconds=assertion_lifetime)
        self._token: str | None = None
        self._expires: datetime | None = None
        self.tokens_fetched = 0
        self._lock: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None

    def _loop_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock[0] is not loop:
            self._lock = (loop, asyncio.Lock())
        return self._lock[1]

    def assertion(self) -> str:
        """A fresh signed client assertion (JWT) for the token endpoint."""
        now = self._clock.now()
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self.token_url,
            "iat": int(now.timestamp()),
            "exp": int((now + self._lifetime).timestamp()),
            "jti": uuid.uuid4().hex,
        }
        headers = {"typ": "JWT"}
        if self.key_id:
            headers["kid"] = self.key_id
        try:
            return jwt.encode(claims, self._key, algorithm=self.algorithm, headers=headers)
        except (ValueError, TypeError, jwt.PyJWTError) as exc:
            reason = f"cannot sign the client assertion: {exc}"
            raise DeliveryError(reason, retryable=False) from exc

    def _token_request(self) -> httpx.Request:
        return httpx.Request(
            "POST",
            self.token_url,
            data={
                "grant_type": "client_credentials",
                "scope": self.scope,
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": self.assertion(),
            },
            headers={"Accept": "application/json"},
        )

    def _take(self, response: httpx.Response) -> None:
        if response.status_code != 200:
            retryable = response.status_code >= 500 or response.status_code == 429
            raise DeliveryError(
                f"token endpoint answered HTTP {response.status_code}", retryable=retryable
            )
        try:
            body = response.json()
            token = str(body["access_token"])
            expires_in = float(body.get("expires_in", 300))
        except (ValueError, KeyError, TypeError) as exc:
            raise DeliveryError(f"token endpoint answer unreadable: {exc}", retryable=True) from exc
        self._token = token
        self._expires = self._clock.now() + timedelta(seconds=expires_in)
        self.tokens_fetched += 1

    def _valid(self) -> bool:
        return (
            self._token is not None
            and self._expires is not None
            and self._clock.now() < self._expires - self._margin
        )

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Get (or reuse) a token, send; on 401 get a new token and send once more."""
        if not self._valid():
            self._take((yield self._token_request()))
        request.headers["Authorization"] = f"Bearer {self._token}"
        response = yield request
        if response.status_code == 401:
            self._take((yield self._token_request()))
            request.headers["Authorization"] = f"Bearer {self._token}"
            yield request

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """As ``auth_flow``, but concurrent requests wait for one token fetch instead of
        each fetching their own."""
        async with self._loop_lock():
            if not self._valid():
                response = yield self._token_request()
                await response.aread()
                self._take(response)
        flow = super().async_auth_flow(request)
        outgoing = await flow.__anext__()
        while True:
            response = yield outgoing
            try:
                outgoing = await flow.asend(response)
            except StopAsyncIteration:
                break

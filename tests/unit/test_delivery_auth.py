"""Auth flows: static bearer, and SMART Backend Services (signed assertion, cached token,
one refresh on 401) against a token endpoint in a MockTransport."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import parse_qs

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from prpgate.delivery.auth import ASSERTION_TYPE, BearerAuth, SmartBackendAuth
from prpgate.delivery.clock import ManualClock
from prpgate.errors import DeliveryError
from tests.conftest import FIXED_NOW

TOKEN_URL = "https://auth.clinic.example/token"  # noqa: S105 - a URL, not a secret


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


class TokenServer:
    def __init__(self, public_key: object, algorithm: str) -> None:
        self.public_key = public_key
        self.algorithm = algorithm
        self.claims: list[dict[str, object]] = []
        self.issued = 0
        self.rejects_next = 0
        self.seen_auth: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if str(request.url) == TOKEN_URL:
            form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
            assert form["grant_type"] == "client_credentials"
            assert form["client_assertion_type"] == ASSERTION_TYPE
            claims = jwt.decode(
                form["client_assertion"],
                self.public_key,  # type: ignore[arg-type]
                algorithms=[self.algorithm],
                audience=TOKEN_URL,
                # the assertion is made on the test's manual clock, not the wall clock
                options={"require": ["exp", "iss", "sub", "aud", "jti"], "verify_exp": False},
            )
            assert int(claims["exp"]) > int(claims["iat"])
            self.claims.append(claims)
            self.issued += 1
            return httpx.Response(
                200,
                json={
                    "access_token": f"tok{self.issued}",
                    "token_type": "bearer",
                    "expires_in": 300,
                },
            )
        auth = request.headers.get("Authorization", "")
        self.seen_auth.append(auth)
        if self.rejects_next:
            self.rejects_next -= 1
            return httpx.Response(401)
        return httpx.Response(200, json={"resourceType": "Flag", "id": "x"})


def _get(auth: httpx.Auth, server: TokenServer, n: int = 1) -> list[int]:
    async def go() -> list[int]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(server), auth=auth) as c:
            return [
                (await c.get("https://fhir.clinic.example/Flag/x")).status_code for _ in range(n)
            ]

    return asyncio.run(asyncio.wait_for(go(), timeout=10))


@pytest.mark.parametrize("algorithm", ["RS384", "ES384"])
def test_smart_auth_signs_an_assertion_and_caches_the_token(algorithm: str) -> None:
    key = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if algorithm == "RS384"
        else ec.generate_private_key(ec.SECP384R1())
    )
    server = TokenServer(key.public_key(), algorithm)
    clock = ManualClock(FIXED_NOW)
    auth = SmartBackendAuth(
        token_url=TOKEN_URL,
        client_id="prpgate",
        private_key=_pem(key),
        clock=clock,
        algorithm=algorithm,  # type: ignore[arg-type]
        key_id="k1",
    )
    assert _get(auth, server, 3) == [200, 200, 200]
    assert server.issued == 1
    assert server.seen_auth == ["Bearer tok1"] * 3
    claims = server.claims[0]
    assert claims["iss"] == claims["sub"] == "prpgate"
    assert int(str(claims["exp"])) - int(FIXED_NOW.timestamp()) <= 300
    clock.advance(280)  # inside the refresh margin: a new token
    assert _get(auth, server) == [200]
    assert server.issued == 2


def test_smart_auth_refreshes_once_on_401_then_gives_up() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    server = TokenServer(key.public_key(), "RS384")
    auth = SmartBackendAuth(
        token_url=TOKEN_URL, client_id="c", private_key=_pem(key), clock=ManualClock(FIXED_NOW)
    )
    server.rejects_next = 1
    assert _get(auth, server) == [200]
    assert server.issued == 2
    assert server.seen_auth == ["Bearer tok1", "Bearer tok2"]
    server.rejects_next = 2
    assert _get(auth, server) == [401]
    assert server.issued == 3


def test_smart_auth_token_endpoint_refusal_is_not_retryable() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error": "invalid_client"})

    auth = SmartBackendAuth(
        token_url=TOKEN_URL, client_id="c", private_key=_pem(key), clock=ManualClock(FIXED_NOW)
    )

    async def go() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(refuse), auth=auth) as c:
            await c.get("https://fhir.clinic.example/Flag/x")

    with pytest.raises(DeliveryError) as err:
        asyncio.run(go())
    assert err.value.retryable is False


def test_bearer_auth_sets_the_header() -> None:
    server = TokenServer(None, "RS384")
    assert _get(BearerAuth("s3cret"), server) == [200]
    assert server.seen_auth == ["Bearer s3cret"]


def test_smart_assertion_is_a_jwt_with_kid() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    auth = SmartBackendAuth(
        token_url=TOKEN_URL,
        client_id="c",
        private_key=_pem(key),
        clock=ManualClock(FIXED_NOW),
        key_id="kid-1",
    )
    header = jwt.get_unverified_header(auth.assertion())
    assert header == {"alg": "RS384", "kid": "kid-1", "typ": "JWT"}
    assert json.dumps(header)


def test_smart_auth_concurrent_requests_share_one_token_fetch() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    server = TokenServer(key.public_key(), "RS384")
    auth = SmartBackendAuth(
        token_url=TOKEN_URL, client_id="c", private_key=_pem(key), clock=ManualClock(FIXED_NOW)
    )

    async def go() -> list[int]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(server), auth=auth) as c:
            got = await asyncio.gather(
                *(c.get("https://fhir.clinic.example/Flag/x") for _ in range(6))
            )
            return [r.status_code for r in got]

    assert asyncio.run(asyncio.wait_for(go(), timeout=10)) == [200] * 6
    assert server.issued == 1

"""MLLP over TLS and mutual TLS, with certificates the tests generate (trustme)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from pathlib import Path

import pytest
import trustme

from prpgate.config import Settings
from prpgate.core.mllp import frame
from prpgate.core.pipeline import Engine
from prpgate.errors import ConfigError
from prpgate.serve import tls_context
from tests.integration.test_mllp import harness, message, msa, read_frames, run


def write_pems(tmp_path: Path, ca: trustme.CA, name: str) -> tuple[Path, Path]:
    """Issue a certificate for 127.0.0.1/localhost; write (chain, key) PEM files."""
    cert = ca.issue_cert("127.0.0.1", "localhost", common_name=name)
    chain = tmp_path / f"{name}.chain.pem"
    key = tmp_path / f"{name}.key.pem"
    chain.write_bytes(b"".join(p.bytes() for p in cert.cert_chain_pems))
    key.write_bytes(cert.private_key_pem.bytes())
    return chain, key


def server_settings(tmp_path: Path, *, client_ca: trustme.CA | None = None) -> Settings:
    ca = trustme.CA()
    chain, key = write_pems(tmp_path, ca, "server")
    (tmp_path / "server-ca.pem").write_bytes(ca.cert_pem.bytes())
    ca_file = None
    if client_ca is not None:
        ca_file = tmp_path / "client-ca.pem"
        ca_file.write_bytes(client_ca.cert_pem.bytes())
    return Settings(mllp_tls_cert=chain, mllp_tls_key=key, mllp_tls_client_ca=ca_file)


def client_context(tmp_path: Path, client_cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(tmp_path / "server-ca.pem"))
    if client_cert is not None:
        ctx.load_cert_chain(*client_cert)
    return ctx


async def exchange(port: int, ctx: ssl.SSLContext | None, control: str) -> list[bytes]:
    """Send one message; return the ACK frames (empty when the server refused us)."""
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx, server_hostname="localhost" if ctx else None
        )
    except (ssl.SSLError, ConnectionError):
        return []
    try:
        writer.write(frame(message(control)))
        await writer.drain()
        return await read_frames(reader, 1)
    except (ssl.SSLError, ConnectionError, AssertionError):
        return []  # the handshake failed late (TLS 1.3) or the server closed
    finally:
        writer.close()
        with contextlib.suppress(ssl.SSLError, ConnectionError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 2.0)


def test_mllp_tls_message_acknowledged(tmp_path: Path, engine: Engine) -> None:
    settings = server_settings(tmp_path)

    async def scenario() -> None:
        async with harness(tmp_path, engine, ssl=tls_context(settings)) as h:
            [ack] = await exchange(h.listener.port, client_context(tmp_path), "TLS1")
            assert msa(ack)[1:3] == ["AA", "TLS1"]

    run(scenario())


def test_mllp_tls_plaintext_client_refused_others_served(tmp_path: Path, engine: Engine) -> None:
    settings = server_settings(tmp_path)

    async def scenario() -> None:
        async with harness(tmp_path, engine, ssl=tls_context(settings)) as h:
            assert await exchange(h.listener.port, None, "PLAIN1") == []
            [ack] = await exchange(h.listener.port, client_context(tmp_path), "TLS2")
            assert msa(ack)[2] == "TLS2"
        assert [r["control_id"] for r in h.rows()] == ["TLS2"]

    run(scenario())


def test_mllp_mutual_tls_requires_a_client_certificate(tmp_path: Path, engine: Engine) -> None:
    client_ca = trustme.CA()
    settings = server_settings(tmp_path, client_ca=client_ca)
    good = write_pems(tmp_path, client_ca, "lab")
    stranger = write_pems(tmp_path, trustme.CA(), "stranger")

    async def scenario() -> None:
        async with harness(tmp_path, engine, ssl=tls_context(settings)) as h:
            port = h.listener.port
            assert await exchange(port, client_context(tmp_path), "NOCERT") == []
            assert await exchange(port, client_context(tmp_path, stranger), "OTHERCA") == []
            [ack] = await exchange(port, client_context(tmp_path, good), "MTLS1")
            assert msa(ack)[1:3] == ["AA", "MTLS1"]
        assert [r["control_id"] for r in h.rows()] == ["MTLS1"]

    run(scenario())


def test_tls_context_needs_cert_and_key_together(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="together"):
        tls_context(Settings(mllp_tls_cert=tmp_path / "c.pem"))
    with pytest.raises(ConfigError, match="needs"):
        tls_context(Settings(mllp_tls_client_ca=tmp_path / "ca.pem"))
    assert tls_context(Settings()) is None


def test_tls_context_unreadable_files_are_config_errors(tmp_path: Path) -> None:
    (tmp_path / "c.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match="cannot be loaded"):
        tls_context(Settings(mllp_tls_cert=tmp_path / "c.pem", mllp_tls_key=tmp_path / "k.pem"))

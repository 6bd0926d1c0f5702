"""Run the test FHIR server: ``python -m tests.fhirserver --port N [--state FILE] [auth]``."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from tests.fhirserver.app import ServerConfig, create_app


class TransportInState(H11Protocol):
    """uvicorn's h11 protocol, with each request's ``scope["state"]`` holding the
    connection's transport (so a fault can reset the connection)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self.app_state = {**self.app_state, "transport": transport}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--state", type=Path)
    p.add_argument("--auth", choices=["none", "bearer", "smart"], default="none")
    p.add_argument("--bearer", default="")
    p.add_argument("--client-id", default="")
    p.add_argument("--client-public-key", type=Path)
    p.add_argument("--token-lifetime", type=int, default=300)
    a = p.parse_args()
    config = ServerConfig(
        state_file=a.state,
        auth=a.auth,
        bearer=a.bearer,
        client_id=a.client_id,
        client_public_key=a.client_public_key.read_text() if a.client_public_key else "",
        token_lifetime=a.token_lifetime,
    )
    uvicorn.run(
        create_app(config),
        host="127.0.0.1",
        port=a.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=1,
        http=TransportInState,
    )


if __name__ == "__main__":
    main()

"""Run the test FHIR server: ``python -m tests.fhirserver --port N [--state FILE] [auth]``."""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn

from tests.fhirserver.app import ServerConfig, create_app


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
    )


if __name__ == "__main__":
    main()

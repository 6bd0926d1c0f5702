"""The test FHIR server as a real uvicorn process on a free 127.0.0.1 port.

``stop()`` is an outage (connections are refused); ``start()`` brings it back on the
same port with what it held (its state file). Admin calls switch faults and read
what the server holds and every write it received.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FhirServer:
    """One test server process (see the module docstring)."""

    def __init__(self, workdir: Path, *extra: str, persist: bool = True) -> None:
        self.port = free_port()
        self.state = workdir / f"fhirserver-{self.port}.json"
        self.extra = extra
        self.persist = persist
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"fhirserver-{self.port}.log"

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base(self) -> str:
        """The FHIR base URL."""
        return f"{self.origin}/fhir"

    def start(self, timeout: float = 20.0) -> None:
        """Start the process and wait until it answers."""
        assert self.proc is None
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.fhirserver",
                "--port",
                str(self.port),
                *(("--state", str(self.state)) if self.persist else ()),
                *self.extra,
            ],
            cwd=ROOT,
            stdout=log,
            stderr=log,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"test FHIR server exited: {self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.base}/metadata", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("test FHIR server did not start in time")

    def stop(self) -> None:
        """Stop the process (an outage: connections are refused from now on)."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.proc = None

    def fault(self, kind: str, count: int = -1, **kw: Any) -> None:
        """Switch a fault on for the next ``count`` requests (-1: until switched off)."""
        r = httpx.post(
            f"{self.origin}/_admin/fault", json={"kind": kind, "count": count, **kw}, timeout=5
        )
        r.raise_for_status()

    def snapshot(self) -> dict[str, Any]:
        """Resources (every version), the write log and token requests."""
        r = httpx.get(f"{self.origin}/_admin/state", timeout=5)
        r.raise_for_status()
        data: dict[str, Any] = r.json()
        return data

    def seed(self, resource: dict[str, Any]) -> str:
        """Put a resource on the server directly (e.g. a second match for an identifier)."""
        r = httpx.post(f"{self.origin}/_admin/seed", json=resource, timeout=5)
        r.raise_for_status()
        return str(r.json()["id"])

    def revoke_tokens(self) -> None:
        """Forget every access token issued (the next request gets 401)."""
        httpx.post(f"{self.origin}/_admin/revoke", timeout=5).raise_for_status()

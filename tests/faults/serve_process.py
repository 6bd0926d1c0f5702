"""``prpgate serve`` as a process that can be killed and started again on the same store
and the same ports (a sender reconnects where it was connected before).

Every start writes its own log file (JSON lines, debug level) into the fault suite's log
folder, so the suite can grep them all for patient data afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.conftest import MAPPINGS
from tests.fhirserver.process import free_port

BIN = Path(sys.executable).parent
START_TIMEOUT = 60.0  # a loaded 2-core machine: imports and the UCUM registry take a while


class ServeProcess:
    """One ``prpgate serve`` on fixed 127.0.0.1 ports: MLLP, health/metrics, FHIR."""

    def __init__(self, workdir: Path, logs: Path, *, store: Path | None = None, **env: str) -> None:
        self.workdir = workdir
        self.logs = logs
        self.store = store or workdir / "store.sqlite"
        self.mllp_port = free_port()
        self.http_port = free_port()
        self.fhir_port = free_port()
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.log: Path | None = None

    @property
    def fhir_base(self) -> str:
        """The FHIR listener's base URL."""
        return f"http://127.0.0.1:{self.fhir_port}/fhir"

    def _environ(self) -> dict[str, str]:
        return {
            **os.environ,
            "PRPGATE_MAPPINGS": str(MAPPINGS),
            "PRPGATE_LOG_FORMAT": "json",
            "PRPGATE_LOG_LEVEL": "debug",
            "PRPGATE_MLLP_PORT": str(self.mllp_port),
            "PRPGATE_HTTP_PORT": str(self.http_port),
            "PRPGATE_FHIR_HTTP_ENABLED": "true",
            "PRPGATE_FHIR_HTTP_PORT": str(self.fhir_port),
            **self.env,
        }

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start the process without waiting for it (see ``start``)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        self.log = self.logs / f"{self.workdir.name}-serve-{self.starts:02d}.log"
        ready = self.workdir / "serve.ready.json"
        ready.unlink(missing_ok=True)
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    str(BIN / "prpgate"),
                    "serve",
                    "--store",
                    str(self.store),
                    "--ready-file",
                    str(ready),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self._environ(),
            )
        return self.proc

    def start(self) -> None:
        """Start and wait until every listener is bound (the ready file is written)."""
        proc = self.spawn()
        ready = self.workdir / "serve.ready.json"
        deadline = time.monotonic() + START_TIMEOUT
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                assert self.log is not None
                raise AssertionError(f"prpgate serve did not start:\n{self.log.read_text()}")
            time.sleep(0.02)
        ports = json.loads(ready.read_text())
        assert ports["mllp_port"] == self.mllp_port
        assert ports["fhir_http_port"] == self.fhir_port

    def kill(self) -> None:
        """SIGKILL, and wait for the process to be gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=START_TIMEOUT)

    def stop(self) -> int:
        """SIGTERM (a clean stop); the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=START_TIMEOUT)

    def ready(self) -> tuple[int, dict[str, object]]:
        """``GET /readyz``: status and JSON body."""
        url = f"http://127.0.0.1:{self.http_port}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def metrics(self) -> str:
        """``GET /metrics`` as text."""
        url = f"http://127.0.0.1:{self.http_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as resp:
            return str(resp.read().decode())

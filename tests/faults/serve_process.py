"""``prpgate serve`` as a process: started on a store with a ready file and a log of its
own (JSON lines, debug level), waited for until every listener is bound.

``ServeProcess`` can be killed and started again on the same store and the same ports (a
sender reconnects where it was connected before); every start writes its own log file
into the fault suite's log folder, so the suite can grep them all for patient data
afterwards. ``spawn_serve`` and ``wait_ready`` start one for the integration tests too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.conftest import MAPPINGS, PRPGATE
from tests.fhirserver.process import free_port

START_TIMEOUT = 60.0  # a loaded 2-core machine: imports and the UCUM registry take a while


def serve_environ(**env: str) -> dict[str, str]:
    """The environment of a test ``prpgate serve``: this one, the repository's mappings,
    JSON logs at debug level (what the suite greps), then ``env``."""
    return {
        **os.environ,
        "PRPGATE_MAPPINGS": str(MAPPINGS),
        "PRPGATE_LOG_FORMAT": "json",
        "PRPGATE_LOG_LEVEL": "debug",
        **env,
    }


def spawn_serve(
    store: Path, ready: Path, log: Path, env: dict[str, str], *options: str
) -> subprocess.Popen[bytes]:
    """Start ``prpgate serve`` on ``store`` (output to ``log``), not waiting for it: it
    writes ``ready`` (its ports, as JSON) once every listener is bound."""
    ready.unlink(missing_ok=True)
    with log.open("wb") as out:
        return subprocess.Popen(
            [PRPGATE, "serve", "--store", str(store), *options, "--ready-file", str(ready)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )


def wait_ready(proc: subprocess.Popen[bytes], ready: Path, log: Path) -> dict[str, int]:
    """The ports ``ready`` names once the process wrote it; kills the process and fails
    with its log when it exits or ``START_TIMEOUT`` passes first."""
    deadline = time.monotonic() + START_TIMEOUT
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=START_TIMEOUT)
            raise AssertionError(f"prpgate serve did not start:\n{log.read_text()}")
        time.sleep(0.02)
    ports: dict[str, int] = json.loads(ready.read_text())
    return ports


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
        self._ready = workdir / "serve.ready.json"
        self._bound = False  # started once: its ports are the ones senders know

    @property
    def fhir_base(self) -> str:
        """The FHIR listener's base URL."""
        return f"http://127.0.0.1:{self.fhir_port}/fhir"

    def _environ(self) -> dict[str, str]:
        return serve_environ(
            PRPGATE_MLLP_PORT=str(self.mllp_port),
            PRPGATE_HTTP_PORT=str(self.http_port),
            PRPGATE_FHIR_HTTP_ENABLED="true",
            PRPGATE_FHIR_HTTP_PORT=str(self.fhir_port),
            **self.env,
        )

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start the process without waiting for it (see ``start``)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        self.log = self.logs / f"{self.workdir.name}-serve-{self.starts:02d}.log"
        self.proc = spawn_serve(self.store, self._ready, self.log, self._environ())
        return self.proc

    def start(self) -> None:
        """Start and wait until every listener is bound (the ready file is written).

        A first start whose port another process took after ``free_port`` chose it (an
        outgoing connection's ephemeral port, say) is tried again on fresh ports.
        """
        for _ in range(3):
            proc = self.spawn()
            assert self.log is not None
            try:
                ports = wait_ready(proc, self._ready, self.log)
            except AssertionError:
                in_use = "Address already in use" in self.log.read_text()
                if self._bound or not in_use or proc.returncode != 2:
                    raise  # a restart keeps its ports: a sender reconnects there
                self.mllp_port, self.http_port, self.fhir_port = (free_port() for _ in "abc")
                continue
            self._bound = True
            break
        else:
            raise AssertionError("prpgate serve found its ports taken three times")
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

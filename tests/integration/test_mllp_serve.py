"""``prpgate serve`` as a process: python-hl7's ``mllp_send`` and ``MLLPClient`` against it,
the health and metrics endpoints, SIGTERM, and SIGKILL in the middle of a stream.

Every process wait, socket read and HTTP request has a timeout.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import hl7
import pytest
from hl7.client import MLLPClient

from prpgate.core import er7
from prpgate.core.ack import read_context
from prpgate.core.mllp import Deframer, Frame, frame
from tests.conftest import FIXTURES, MAPPINGS, load, run_prpgate
from tests.faults.serve_process import serve_environ, spawn_serve, wait_ready

START_TIMEOUT = 30.0
IO_TIMEOUT = 10.0
BIN = Path(sys.executable).parent  # python-hl7's mllp_send is installed beside prpgate


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    mllp_port: int
    http_port: int
    store: Path
    log: Path

    def http(self, path: str) -> tuple[int, str, str]:
        url = f"http://127.0.0.1:{self.http_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=IO_TIMEOUT) as resp:
                return resp.status, resp.headers["Content-Type"], resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers["Content-Type"], exc.read().decode()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=START_TIMEOUT)


def start_server(
    tmp_path: Path, name: str = "serve", *, options: tuple[str, ...] = (), **env: str
) -> Server:
    store = tmp_path / "store.sqlite"
    ready = tmp_path / f"{name}.ready.json"
    log = tmp_path / f"{name}.log"
    options = ("--port", "0", "--http-port", "0", *options)
    proc = spawn_serve(store, ready, log, serve_environ(**env), *options)
    ports = wait_ready(proc, ready, log)
    return Server(proc, ports["mllp_port"], ports["http_port"], store, log)


@contextlib.contextmanager
def serving(tmp_path: Path, *, options: tuple[str, ...] = (), **env: str) -> Iterator[Server]:
    server = start_server(tmp_path, options=options, **env)
    try:
        yield server
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(timeout=START_TIMEOUT)


def messages_of(name: str) -> list[bytes]:
    return [p.data for p in er7.split_messages(load(name))]


def ack_fields(ack: bytes) -> tuple[str, str]:
    """(MSA-1, MSA-2) of an ACK, read with python-hl7."""
    text = ack.strip(b"\x0b\x1c\r\n").decode()
    msg = hl7.parse(text)
    msa = msg.segment("MSA")
    return str(msa[1]), str(msa[2])


def rows(store: Path) -> list[sqlite3.Row]:
    db = sqlite3.connect(store)
    db.row_factory = sqlite3.Row
    try:
        return list(db.execute("SELECT id, control_id, status, ack_code FROM messages ORDER BY id"))
    finally:
        db.close()


# ------------------------------------------------------------------ interop


def test_serve_mllp_send_tool_gets_an_ack_per_message(tmp_path: Path) -> None:
    with serving(tmp_path) as server:
        out = subprocess.run(
            [
                str(BIN / "mllp_send"),
                "-p",
                str(server.mllp_port),
                "--loose",
                "-f",
                str(FIXTURES / "units_wbc_spellings.hl7"),
                "127.0.0.1",
            ],
            capture_output=True,
            timeout=START_TIMEOUT,
            check=True,
        )
        acks = [a for a in out.stdout.split(b"\n") if a.strip()]
        expected = [f"PRPFX{n:04d}" for n in range(6, 20)]
        # MSH-15/16 AL/NE: enhanced mode, one commit accept per message
        assert [ack_fields(a) for a in acks] == [("CA", c) for c in expected]
        assert server.stop() == 0
    assert [r["status"] for r in rows(server.store)] == ["accepted"] * 14


def test_serve_mllp_client_every_fixture_answered(tmp_path: Path) -> None:
    good = sorted(p.name for p in FIXTURES.glob("*.hl7"))
    # enhanced mode (AL/NE): stored but not processable is still a commit accept (CA)
    bad = {
        "bad/adt_a01.hl7": "CR",
        "bad/bad_version.hl7": "CR",
        "bad/missing_pid.hl7": "CA",
        "bad/no_msh.hl7": "AR",  # no MSH to ask for enhanced mode
        "bad/not_a_number.hl7": "CA",
        "bad/truncated.hl7": "CA",
    }
    with serving(tmp_path) as server, MLLPClient("127.0.0.1", server.mllp_port) as client:
        client.socket.settimeout(IO_TIMEOUT)
        answers: Counter[str] = Counter()
        for name in [*good, *bad]:
            for raw in messages_of(name):
                code, acked = ack_fields(client.send_message(raw))
                assert acked == (read_context(raw).control_id or '""'), name
                answers[code] += 1
                assert code == bad.get(name, "AA" if name == "v23_cbc.hl7" else "CA"), name
        assert server.stop() == 0
    assert answers["AA"] == 1  # v23_cbc.hl7: no MSH-15/16, original mode
    assert sum(answers.values()) == len(rows(server.store))


def test_serve_health_ready_and_metrics(tmp_path: Path) -> None:
    with serving(tmp_path) as server:
        assert server.http("/healthz")[0] == 200
        status, ctype, body = server.http("/readyz")
        assert (status, ctype) == (200, "application/json")
        assert json.loads(body) == {"status": "ready", "mllp": True, "store": True}
        with MLLPClient("127.0.0.1", server.mllp_port) as client:
            client.socket.settimeout(IO_TIMEOUT)
            raw = messages_of("cbc_high_wbc.hl7")[0]
            client.send_message(raw)
            client.send_message(raw)  # a retransmit
            client.send_message(load("bad/adt_a01.hl7"))
        status, ctype, text = server.http("/metrics")
        assert status == 200
        assert ctype.startswith("text/plain")
        assert 'prpgate_messages_total{disposition="accepted",type="ORU^R01"} 1.0' in text
        assert 'prpgate_messages_total{disposition="duplicate",type="ORU^R01"} 1.0' in text
        assert 'prpgate_messages_total{disposition="rejected",type="ADT^A01"} 1.0' in text
        assert 'prpgate_acks_total{code="CA"} 2.0' in text
        assert 'prpgate_acks_total{code="CR"} 1.0' in text
        assert "prpgate_duplicates_total 1.0" in text
        assert "prpgate_ack_latency_seconds_count 3.0" in text
        assert "prpgate_store_commit_seconds_count" in text
        assert "prpgate_outbox_depth 2.0" in text  # a DetectedIssue and a Flag
        assert "prpgate_mllp_connections_open " in text
        assert server.http("/nope")[0] == 404
        assert server.stop() == 0
    log = server.log.read_text()
    for phi in ("ZQ70002", "Blaxandrine", "Cassius", "19480725"):
        assert phi not in log


def test_serve_config_error_exits_2(tmp_path: Path) -> None:
    proc = run_prpgate(
        *("serve", "--store", str(tmp_path / "s.sqlite"), "--port", "0"),
        env={"PRPGATE_MAPPINGS": str(MAPPINGS), "PRPGATE_MLLP_TLS_CERT": "x.pem"},
        timeout=START_TIMEOUT,
    )
    assert proc.returncode == 2
    assert "mllp_tls_key" in proc.stderr


# ---------------------------------------------------------- stop and crash


def original(control: str, n: int) -> bytes:
    """A CBC in original mode (no MSH-15/16) with its own control id and patient."""
    tpl = load("v24_cbc.hl7").replace(b"|AL|NE", b"")
    return tpl.replace(b"PRPFX0036", control.encode()).replace(b"ZQ70036", f"ZK{n:05d}".encode())


class Client:
    """A pipelining MLLP client: a sender thread with a window, the caller reads ACKs."""

    def __init__(self, port: int, messages: list[tuple[str, bytes]], window: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
        self.messages = messages
        self.sent: list[str] = []
        self.acked: list[tuple[str, str]] = []
        self._slots = threading.Semaphore(window)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._send, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _send(self) -> None:
        for control, raw in self.messages:
            while not self._slots.acquire(timeout=0.1):
                if self._done.is_set():
                    return
            try:
                self.sock.sendall(frame(raw))
            except OSError:
                return
            self.sent.append(control)

    def read_until_closed(self, on_ack: object = None) -> None:
        """Record ACKs until the server closes (or resets) the connection."""
        d = Deframer(1 << 20)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                for e in d.feed(data):
                    assert isinstance(e, Frame)
                    self.acked.append(ack_fields(e.data)[::-1])
                    self._slots.release()
                    if callable(on_ack):
                        on_ack(len(self.acked))
                if len(self.acked) == len(self.messages):
                    break
        except OSError:
            pass
        finally:
            self._done.set()
            self._thread.join(timeout=IO_TIMEOUT)
            self.sock.close()


def test_serve_sigterm_answers_in_flight_then_exits(tmp_path: Path) -> None:
    msgs = [(f"TERM{i:04d}", original(f"TERM{i:04d}", i)) for i in range(400)]
    with serving(tmp_path) as server:
        client = Client(server.mllp_port, msgs, window=24)
        client.start()

        def term_once(n: int) -> None:
            if n == 20:
                server.proc.send_signal(signal.SIGTERM)

        client.read_until_closed(term_once)
        assert server.proc.wait(timeout=START_TIMEOUT) == 0
    acked = [c for c, _ in client.acked]
    assert acked == client.sent[: len(acked)]  # in order
    assert {code for _, code in client.acked} == {"AA"}
    stored = rows(server.store)
    # every message the server took in was answered, and every answer is stored
    assert [r["control_id"] for r in stored] == acked
    assert len(acked) < len(msgs)  # it did stop mid-stream
    assert '"event": "stopped"' in server.log.read_text()


@pytest.mark.slow
def test_serve_sigkill_mid_stream_loses_no_acked_message(tmp_path: Path) -> None:
    n = 600
    msgs = [(f"KILL{i:04d}", original(f"KILL{i:04d}", i)) for i in range(n)]
    with serving(tmp_path) as server:
        client = Client(server.mllp_port, msgs, window=32)
        client.start()

        def kill_once(count: int) -> None:
            if count == 150:
                server.proc.send_signal(signal.SIGKILL)

        client.read_until_closed(kill_once)
        assert server.proc.wait(timeout=START_TIMEOUT) == -signal.SIGKILL
    first_acked = {c for c, code in client.acked if code == "AA"}
    assert len(first_acked) >= 150
    sent_before_kill = len(client.sent)

    # restart on the same store; the sender retransmits everything not acknowledged,
    # and some acknowledged messages again (a sender that lost its ACK state)
    again = [m for m in msgs if m[0] not in first_acked]
    again += [m for m in msgs if m[0] in sorted(first_acked)[:25]]
    with serving(tmp_path) as server2:
        retry = Client(server2.mllp_port, again, window=32)
        retry.start()
        retry.read_until_closed()
        assert server2.stop() == 0
    assert len(retry.acked) == len(again)
    assert {code for _, code in retry.acked} == {"AA"}

    stored = rows(server2.store)
    accepted = Counter(r["control_id"] for r in stored if r["status"] == "accepted")
    duplicates = Counter(r["control_id"] for r in stored if r["status"] == "duplicate")
    assert all(accepted[c] == 1 for c in first_acked)  # every AA'd message, exactly once
    assert set(accepted) == {c for c, _ in msgs}  # and every message, once
    assert sum(accepted.values()) == n
    resent_acked = set(sorted(first_acked)[:25])
    assert resent_acked <= set(duplicates)  # retransmits deduplicated, not reprocessed
    committed_unacked = len(set(duplicates) - resent_acked)
    report = {
        "sent_before_kill": sent_before_kill,
        "acked_before_kill": len(first_acked),
        "committed_not_acked_at_kill": committed_unacked,
        "stored_accepted_after_restart": sum(accepted.values()),
        "duplicates_recorded": sum(duplicates.values()),
    }
    (tmp_path / "sigkill-report.json").write_text(json.dumps(report))
    print("SIGKILL report:", json.dumps(report))

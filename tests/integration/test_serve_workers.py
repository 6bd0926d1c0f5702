"""``prpgate serve`` with two MLLP workers (``mllp_workers=2``), as real processes: serve
deals connections out to itself and its worker, both commit to one SQLite store, and
the workers follow serve when it stops, dies, or loses a worker.

Which process answered is told by the ACK's MSH-10: each listener prefixes its ACK
control ids with a random tag of its own. Every wait has a timeout.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import threading
from collections import Counter
from pathlib import Path

import hl7
import psycopg
import pytest
import trustme

from prpgate.core.mllp import Deframer, Frame, frame
from prpgate.store.sqlite_writer_lock import lock_path
from tests.conftest import MAPPINGS, run_prpgate, wait_for
from tests.integration.test_mllp_serve import (
    IO_TIMEOUT,
    START_TIMEOUT,
    Client,
    original,
    rows,
    serving,
)
from tests.integration.test_mllp_tls import write_pems

WORKERS = {"PRPGATE_MLLP_WORKERS": "2"}


def workers_of(pid: int) -> list[int]:
    """Running ``prpgate.serve_worker`` processes whose parent is ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if int(stat[1]) == pid and b"prpgate.serve_worker" in cmdline and stat[0] != "Z":
            found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def exchange(sock: socket.socket, raw: bytes) -> tuple[str, str]:
    """Send one message on ``sock``; (MSA-1, tag of the answering process)."""
    sock.sendall(frame(raw))
    d = Deframer(1 << 20)
    while True:
        data = sock.recv(65536)
        assert data, "the server closed the connection without an ACK"
        for e in d.feed(data):
            assert isinstance(e, Frame)
            ack = hl7.parse(e.data.strip(b"\r\n").decode())
            control = str(ack.segment("MSH")[10])
            return str(ack.segment("MSA")[1]), control[:-10]  # tag + 10-digit counter


def send_on_new_connection(port: int, raw: bytes) -> tuple[str, str]:
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as sock:
        return exchange(sock, raw)


def two_streams(
    port: int, msgs: list[tuple[str, bytes]], *, window: int, until: int
) -> tuple[list[Client], list[threading.Thread]]:
    """Two pipelining connections (dealt one to serve, one to its worker) sharing
    ``msgs``, each reading its ACKs on a thread; returns once ``until`` ACKs came back."""
    clients = [Client(port, msgs[k::2], window=window) for k in range(2)]
    readers = [threading.Thread(target=c.read_until_closed, daemon=True) for c in clients]
    for c, r in zip(clients, readers, strict=True):
        c.start()
        r.start()
    wait_for(f"{until} ACKs", lambda: sum(len(c.acked) for c in clients) >= until, START_TIMEOUT)
    return clients, readers


def metric(text: str, name: str) -> float:
    """The value of one sample line (``name`` with its labels) in an exposition."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in the metrics")


def test_connections_are_dealt_out_and_every_process_commits_to_one_store(
    tmp_path: Path,
) -> None:
    with serving(tmp_path, options=("--workers", "2")) as server:
        assert len(workers_of(server.proc.pid)) == 1
        answers = [
            send_on_new_connection(server.mllp_port, original(f"WK{i:04d}", i)) for i in range(8)
        ]
        status, _, body = server.http("/readyz")
        _, _, metrics = server.http("/metrics")
        assert server.stop() == 0
    assert {code for code, _ in answers} == {"AA"}
    tags = Counter(tag for _, tag in answers)
    assert len(tags) == 2  # two processes answered, in turn: four connections each
    assert sorted(tags.values()) == [4, 4]
    assert status == 200
    assert json.loads(body)["mllp_workers"] == {"expected": 1, "running": 1}
    # /metrics adds up both processes' registries
    assert metric(metrics, 'prpgate_acks_total{code="AA"}') == 8
    assert metric(metrics, "prpgate_mllp_frames_received_total") == 8
    assert metric(metrics, 'prpgate_ack_latency_seconds_bucket{le="+Inf"}') == 8
    stored = rows(server.store)
    assert sorted(r["control_id"] for r in stored) == [f"WK{i:04d}" for i in range(8)]
    assert {r["status"] for r in stored} == {"accepted"}


def test_a_retransmit_answered_by_the_other_process_is_not_processed_again(
    tmp_path: Path,
) -> None:
    raw = original("RETX0001", 1)
    with serving(tmp_path, **WORKERS) as server:
        with (
            socket.create_connection(("127.0.0.1", server.mllp_port), timeout=IO_TIMEOUT) as a,
            socket.create_connection(("127.0.0.1", server.mllp_port), timeout=IO_TIMEOUT) as b,
        ):
            first = exchange(a, raw)
            again = exchange(b, raw)
        assert server.stop() == 0
    assert first[1] != again[1]  # consecutive connections went to different processes
    assert first[0] == again[0] == "AA"  # the original ACK again
    stored = rows(server.store)
    assert [(r["control_id"], r["status"]) for r in stored] == [
        ("RETX0001", "accepted"),
        ("RETX0001", "duplicate"),
    ]


def test_sigterm_stops_the_worker_too_after_it_answered_what_it_had(tmp_path: Path) -> None:
    msgs = [(f"WTRM{i:04d}", original(f"WTRM{i:04d}", i)) for i in range(300)]
    with serving(tmp_path, **WORKERS) as server:
        (worker,) = workers_of(server.proc.pid)
        clients, readers = two_streams(server.mllp_port, msgs, window=16, until=40)
        server.proc.send_signal(signal.SIGTERM)
        for r in readers:
            r.join(timeout=START_TIMEOUT)
        assert server.proc.wait(timeout=START_TIMEOUT) == 0
        wait_for("the worker to exit", lambda: not alive(worker), START_TIMEOUT)
    assert all(len(c.acked) < len(c.messages) for c in clients)  # stopped mid-stream
    acked = [code for c in clients for code in c.acked]
    assert {code for _, code in acked} == {"AA"}
    stored = Counter(r["control_id"] for r in rows(server.store))
    # every answer is stored, once; nothing stored was left unanswered
    assert sorted(stored) == sorted(control for control, _ in acked)
    assert set(stored.values()) == {1}
    log = server.log.read_text()
    assert log.count('"event": "stopped"') == 2  # serve and its worker


def test_a_worker_that_dies_is_started_again(tmp_path: Path) -> None:
    with serving(tmp_path, **WORKERS) as server:
        (worker,) = workers_of(server.proc.pid)
        os.kill(worker, signal.SIGKILL)
        wait_for(
            "a new worker",
            lambda: [p for p in workers_of(server.proc.pid) if p != worker],
            START_TIMEOUT,
        )
        wait_for("ready again", lambda: server.http("/readyz")[0] == 200, START_TIMEOUT)
        answers = [
            send_on_new_connection(server.mllp_port, original(f"WRST{i:04d}", i)) for i in range(4)
        ]
        assert server.stop() == 0
    assert {code for code, _ in answers} == {"AA"}
    assert len({tag for _, tag in answers}) == 2
    log = server.log.read_text()
    assert '"event": "mllp worker exited"' in log
    assert '"event": "mllp worker restarted"' in log


@pytest.mark.slow
def test_when_serve_is_killed_its_worker_answers_what_it_has_then_stops(
    tmp_path: Path,
) -> None:
    msgs = [(f"WKIL{i:04d}", original(f"WKIL{i:04d}", i)) for i in range(600)]
    with serving(tmp_path, **WORKERS) as server:
        (worker,) = workers_of(server.proc.pid)
        clients, readers = two_streams(server.mllp_port, msgs, window=32, until=100)
        server.proc.send_signal(signal.SIGKILL)
        assert server.proc.wait(timeout=START_TIMEOUT) == -signal.SIGKILL
        # the worker sees serve's sockets close: it stops as on SIGTERM, by itself
        wait_for("the worker to exit", lambda: not alive(worker), START_TIMEOUT)
        for r in readers:
            r.join(timeout=START_TIMEOUT)
    acked = {control for c in clients for control, code in c.acked if code == "AA"}
    assert len(acked) >= 100
    stored = Counter(r["control_id"] for r in rows(server.store) if r["status"] == "accepted")
    assert acked <= set(stored)  # every AA'd message is in the store
    assert set(stored.values()) == {1}  # and none twice
    assert all(len(c.acked) < len(c.messages) for c in clients)  # both stopped mid-stream


def test_tls_connections_handed_to_the_worker_complete_their_handshake_there(
    tmp_path: Path,
) -> None:
    ca = trustme.CA()
    chain, key = write_pems(tmp_path, ca, "server")
    ctx = ssl.create_default_context(cadata=ca.cert_pem.bytes().decode())
    tls = {"PRPGATE_MLLP_TLS_CERT": str(chain), "PRPGATE_MLLP_TLS_KEY": str(key)}
    with serving(tmp_path, **WORKERS, **tls) as server:
        answers = []
        for i in range(4):
            raw = socket.create_connection(("127.0.0.1", server.mllp_port), timeout=IO_TIMEOUT)
            with ctx.wrap_socket(raw, server_hostname="localhost") as sock:
                answers.append(exchange(sock, original(f"WTLS{i:04d}", i)))
        assert server.stop() == 0
    assert {code for code, _ in answers} == {"AA"}
    assert len({tag for _, tag in answers}) == 2


def test_fewer_than_one_worker_is_a_configuration_error(tmp_path: Path) -> None:
    proc = run_prpgate(
        *("serve", "--store", str(tmp_path / "s.sqlite"), "--port", "0", "--workers", "0"),
        env={"PRPGATE_MAPPINGS": str(MAPPINGS)},
        timeout=START_TIMEOUT,
    )
    assert proc.returncode == 2
    assert "mllp_workers" in proc.stderr


@pytest.mark.pg
def test_workers_on_a_postgresql_store_store_each_message_once(tmp_path: Path, pg_url: str) -> None:
    raw = original("WPGRETX1", 99)
    with serving(tmp_path, PRPGATE_STORE_URL=pg_url, **WORKERS) as server:
        answers = [
            send_on_new_connection(server.mllp_port, original(f"WPG{i:05d}", i)) for i in range(6)
        ]
        with (
            socket.create_connection(("127.0.0.1", server.mllp_port), timeout=IO_TIMEOUT) as a,
            socket.create_connection(("127.0.0.1", server.mllp_port), timeout=IO_TIMEOUT) as b,
        ):
            first, again = exchange(a, raw), exchange(b, raw)
        assert server.stop() == 0
    assert {code for code, _ in answers} == {"AA"}
    assert len({tag for _, tag in answers}) == 2
    assert first[1] != again[1]
    assert first[0] == again[0] == "AA"
    with psycopg.connect(pg_url, connect_timeout=10) as conn:
        stored = Counter(
            (r[0], r[1]) for r in conn.execute("SELECT control_id, status FROM messages")
        )
    assert stored == Counter(
        [(f"WPG{i:05d}", "accepted") for i in range(6)]
        + [("WPGRETX1", "accepted"), ("WPGRETX1", "duplicate")]
    )
    assert not lock_path(tmp_path / "store.sqlite").exists()  # no SQLite writer lock

"""WorkerPool's side of the control socket: metrics requests and connection hand-over,
against a stand-in worker on a real socket pair."""

from __future__ import annotations

import asyncio
import socket
from types import SimpleNamespace
from typing import Any

import pytest

from prpgate import serve_workers
from prpgate.config import Settings
from prpgate.serve_workers import WorkerPool, _Worker


async def pool_with_worker(
    answer: Any,
) -> tuple[WorkerPool, _Worker, socket.socket, asyncio.Task[None]]:
    """A pool with one stand-in worker whose control requests ``answer`` handles."""
    ours, theirs = socket.socketpair()
    conns, their_conns = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    reader, writer = await asyncio.open_connection(sock=ours)
    proc: Any = SimpleNamespace(returncode=None, pid=0)
    worker = _Worker(1, proc, reader, writer, conns)
    pool = WorkerPool(Settings(mllp_workers=2))
    pool._workers[1] = worker
    w_reader, w_writer = await asyncio.open_connection(sock=theirs)
    task = asyncio.create_task(answer(w_reader, w_writer))
    return pool, worker, their_conns, task


def test_a_late_answer_does_not_become_the_next_requests_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(serve_workers, "_METRICS_TIMEOUT", 0.2)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        n = 0
        while await reader.readline():
            n += 1
            if n == 1:
                await asyncio.sleep(0.5)  # the first answer comes after the timeout
            body = f"answer {n}\n".encode()
            writer.write(b"%d\n" % len(body) + body)
            await writer.drain()
        writer.close()

    async def scenario() -> tuple[list[bytes], list[bytes]]:
        pool, worker, their_conns, task = await pool_with_worker(answer)
        first = await pool.metrics()
        await asyncio.sleep(0.6)  # the late answer arrives meanwhile, and is read
        second = await pool.metrics()
        worker.close_control()
        their_conns.close()
        await asyncio.wait_for(task, 5)
        return first, second

    first, second = asyncio.run(scenario())
    assert first == []  # left out, not waited for
    assert second == [b"answer 2\n"]


def test_connections_are_dealt_in_turn_and_handed_over_as_sockets() -> None:
    async def idle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    async def scenario() -> tuple[list[bool], list[bytes]]:
        pool, worker, their_conns, task = await pool_with_worker(idle)
        server = socket.create_server(("127.0.0.1", 0))
        port = server.getsockname()[1]
        taken, got = [], []
        for i in range(4):
            client = socket.create_connection(("127.0.0.1", port))
            conn, _ = server.accept()
            taken.append(pool.dispatch(conn))
            if taken[-1]:
                _, fds, _, _ = socket.recv_fds(their_conns, 1, 1)
                with socket.socket(fileno=fds[0]) as passed:
                    client.sendall(f"hello {i}".encode())
                    got.append(passed.recv(64))
            else:
                conn.close()
            client.close()
        server.close()
        worker.close_control()
        their_conns.close()
        await asyncio.wait_for(task, 5)
        return taken, got

    taken, got = asyncio.run(scenario())
    assert taken == [True, False, True, False]  # the worker, serve, the worker, serve
    assert got == [b"hello 0", b"hello 2"]  # the worker reads the client's own connection

"""``serve``'s MLLP worker processes, seen from the serve process that starts them.

One Python process evaluates and commits on one core at a time (the GIL), so with
``mllp_workers`` = N, serve starts N - 1 more processes (``python -m
prpgate.serve_worker``). Serve's listener accepts every connection and deals them out
in turn to itself and the workers, passing a worker the connected socket itself
(SCM_RIGHTS over a Unix socket): connections spread evenly, whichever process would
have won the race to ``accept``. A worker serves its connections (the TLS handshake
included), runs its own store writer with group commit, and acknowledges exactly as
serve does. On SQLite, the writers hand the write lock on through the store's writer
lock (``sqlite_writer_lock``); retransmit detection and patient state stay exact,
since every transaction reads what the previous one committed.

Each worker has a control socket to serve: it says ``ready`` once it can serve,
answers ``metrics`` with its Prometheus exposition, and stops, like serve on SIGTERM
(stop accepting, answer what is in flight, close the store), when serve closes the
socket or dies. A worker that exits while serve runs is logged and started again.
"""

from __future__ import annotations

import asyncio
import pickle
import socket
import sys

import structlog

from prpgate.config import Settings
from prpgate.errors import ConfigError

__all__ = ["WorkerPool"]

_log = structlog.get_logger("prpgate.serve")

_START_TIMEOUT = 120.0  # a worker imports, builds its engine and warms up
_METRICS_TIMEOUT = 2.0
_RESTART_DELAY = 1.0


class _Worker:
    """One worker process and serve's end of its control socket."""

    def __init__(
        self,
        index: int,
        proc: asyncio.subprocess.Process,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        conns: socket.socket,
    ) -> None:
        self.index = index
        self.proc = proc
        self.reader = reader
        self.writer = writer
        self.conns = conns  # connected sockets go to the worker through this one
        self.lock = asyncio.Lock()  # one control request at a time

    async def metrics(self) -> bytes:
        async with self.lock:
            self.writer.write(b"metrics\n")
            await self.writer.drain()
            size = int(await self.reader.readline())
            return await self.reader.readexactly(size)

    def hand_over(self, conn: socket.socket) -> bool:
        """Pass ``conn`` to the worker (and close it here); False when that failed."""
        if self.proc.returncode is not None:
            return False
        try:
            socket.send_fds(self.conns, [b"c"], [conn.fileno()])
        except OSError:  # the worker is gone, or not reading: serve the connection here
            return False
        conn.close()
        return True

    def close_control(self) -> None:
        self.writer.close()
        self.conns.close()


class WorkerPool:
    """The ``mllp_workers - 1`` worker processes beside serve's own listener."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.expected = settings.mllp_workers - 1
        self._workers: dict[int, _Worker] = {}
        self._supervisors: set[asyncio.Task[None]] = set()
        self._requests: set[asyncio.Task[bytes]] = set()  # metrics requests in flight
        self._turn = 0
        self._stopping = False

    @property
    def running(self) -> int:
        """Workers running and accepting."""
        return sum(1 for w in self._workers.values() if w.proc.returncode is None)

    @property
    def pids(self) -> list[int]:
        """Process ids of the running workers."""
        return [w.proc.pid for w in self._workers.values() if w.proc.returncode is None]

    async def start(self) -> None:
        """Start the workers; returns when all can serve.

        Raises ConfigError when one cannot start (its own log says why).
        """
        if not self.expected:
            return
        started = await asyncio.gather(
            *(self._spawn(i) for i in range(1, self.expected + 1)), return_exceptions=True
        )
        failed = [exc for exc in started if isinstance(exc, BaseException)]
        for w in started:
            if isinstance(w, _Worker):
                self._watch(w)
        if failed:
            await self.stop(grace=1.0)
            raise ConfigError(f"an MLLP worker did not start: {failed[0]}")
        _log.info("mllp workers started", workers=self.expected, pids=self.pids)

    def dispatch(self, conn: socket.socket) -> bool:
        """The listener's ``Dispatch``: connections go in turn to serve (False: serve it
        here) and to each worker; a worker that cannot take one leaves it to serve."""
        self._turn = (self._turn + 1) % (self.expected + 1)
        worker = self._workers.get(self._turn)
        return worker is not None and worker.hand_over(conn)

    async def metrics(self) -> list[bytes]:
        """Each running worker's metrics (Prometheus text); one that does not answer
        within two seconds is left out."""
        out: list[bytes] = []
        for w in list(self._workers.values()):
            if w.proc.returncode is not None:
                continue
            # a late answer is still read to its end (shielded), so the next request and
            # its answer stay paired on the control socket
            task = asyncio.ensure_future(w.metrics())
            self._requests.add(task)
            task.add_done_callback(self._request_done)
            try:
                out.append(await asyncio.wait_for(asyncio.shield(task), _METRICS_TIMEOUT))
            except (TimeoutError, OSError, ValueError, asyncio.IncompleteReadError) as exc:
                _log.warning("mllp worker metrics unavailable", worker=w.index, error=repr(exc))
        return out

    def _request_done(self, task: asyncio.Task[bytes]) -> None:
        self._requests.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a failure after the timeout was already reported

    async def stop(self, grace: float) -> None:
        """Stop every worker as serve stops: each answers what it has in flight within
        ``grace`` seconds; one still running a few seconds later is killed."""
        self._stopping = True
        for w in self._workers.values():
            w.close_control()
        waits = [w.proc.wait() for w in self._workers.values()]
        if waits:
            _, late = await asyncio.wait(
                [asyncio.ensure_future(x) for x in waits], timeout=grace + 5.0
            )
            for w in self._workers.values():
                if w.proc.returncode is None:
                    _log.warning("mllp worker killed", worker=w.index)
                    w.proc.kill()
            if late:
                await asyncio.wait(late, timeout=5.0)
        for task in (*self._supervisors, *self._requests):
            task.cancel()
        self._workers.clear()

    async def _spawn(self, index: int) -> _Worker:
        ours, theirs = socket.socketpair()
        conns, their_conns = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        conns.setblocking(False)
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "prpgate.serve_worker",
                str(index),
                str(theirs.fileno()),
                str(their_conns.fileno()),
                stdin=asyncio.subprocess.PIPE,
                pass_fds=(theirs.fileno(), their_conns.fileno()),
            )
        except OSError:
            ours.close()
            conns.close()
            raise
        finally:
            theirs.close()
            their_conns.close()
        assert proc.stdin is not None
        proc.stdin.write(pickle.dumps(self._settings))
        await proc.stdin.drain()
        proc.stdin.close()
        reader, writer = await asyncio.open_connection(sock=ours)
        try:
            line = await asyncio.wait_for(reader.readline(), _START_TIMEOUT)
        except TimeoutError:
            line = b""
        if line != b"ready\n":
            writer.close()
            conns.close()
            if proc.returncode is None:
                proc.kill()
            code = await proc.wait()
            raise ConfigError(f"MLLP worker {index} exited with code {code} before it was ready")
        worker = _Worker(index, proc, reader, writer, conns)
        self._workers[index] = worker
        return worker

    def _watch(self, worker: _Worker) -> None:
        task = asyncio.create_task(self._supervise(worker), name=f"prpgate-worker-{worker.index}")
        self._supervisors.add(task)
        task.add_done_callback(self._supervisors.discard)

    async def _supervise(self, worker: _Worker) -> None:
        """Start a worker again when it exits while serve runs."""
        code = await worker.proc.wait()
        worker.close_control()
        if self._stopping:
            return
        _log.error("mllp worker exited", worker=worker.index, code=code)
        delay = _RESTART_DELAY
        while not self._stopping:
            await asyncio.sleep(delay)
            if self._stopping:
                return
            try:
                new = await self._spawn(worker.index)
            except (ConfigError, OSError) as exc:
                delay = min(delay * 2, 30.0)
                _log.error("mllp worker restart failed", worker=worker.index, error=str(exc))
                continue
            if self._stopping:  # serve began to stop while the worker started
                new.close_control()
                await new.proc.wait()
                return
            _log.info("mllp worker restarted", worker=new.index, pid=new.proc.pid)
            self._watch(new)
            return

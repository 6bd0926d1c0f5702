"""Server processes for the benchmarks: `prpgate serve` or a baseline server, each started
as its own process, waited for through the ready file it writes, and stopped with SIGTERM.

A baseline server run from a benchmark script writes its ready file itself (a JSON object
with its port) and waits for ``until_terminated``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

PRPGATE = str(Path(sys.executable).parent / "prpgate")


def serve_command(ready: Path, *options: str) -> list[str]:
    """`prpgate serve` on free ports (MLLP, health), writing ``ready`` once it listens."""
    return [
        PRPGATE,
        "serve",
        *options,
        "--port",
        "0",
        "--http-port",
        "0",
        "--ready-file",
        str(ready),
    ]


def start(
    cmd: list[str], ready: Path, env: dict[str, str], *, port: str = "mllp_port"
) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``cmd`` and wait (60 s at most) for its ready file; the process and the
    ``port`` the file names."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"server did not start: {' '.join(cmd)}")
        time.sleep(0.05)
    return proc, int(json.loads(ready.read_text())[port])


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 60 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def settle_disk(*files: Path) -> None:
    """Remove ``files`` (a stopped server's store) and flush the page cache, so the next
    measurement does not run while the kernel writes back, or discards, what the last
    one left behind (on a disk mounted with ``discard``, removing a WAL of gigabytes can
    be felt by the next server's first commits)."""
    for f in files:
        f.unlink(missing_ok=True)
    os.sync()


async def until_terminated() -> None:
    """Wait for the SIGTERM ``stop`` sends (in a baseline server's own process)."""
    terminated = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, terminated.set)
    await terminated.wait()


async def listen_until_terminated(
    answer: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    ready_file: Path,
) -> None:
    """A baseline TCP server on a free loopback port, ``answer`` for each connection: its
    ready file written once it listens, closed at SIGTERM."""
    server = await asyncio.start_server(answer, "127.0.0.1", 0, limit=1 << 22)
    port = server.sockets[0].getsockname()[1]
    ready_file.write_text(json.dumps({"mllp_port": port, "pid": os.getpid()}))
    await until_terminated()
    server.close()

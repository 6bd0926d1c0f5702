"""MLLP round trips: messages/s and ACK latency of `prpgate serve` with durable ACKs, beside a
bare asyncio MLLP echo server measured in the same run on the same messages.

Both servers run as their own process; the client (this process) pipelines CBC ORU^R01
messages over 1 and over 8 connections, each with a window of messages in flight, and
records every message's send-to-ACK time. A second phase offers fixed rates (250, 500
and 1 000 msgs/s over 8 connections) to read the latency a sender sees at that load.
Serve runs six times: durable with one process (the default), each rate three times in
a row (``--repeats``: a p99 of one 6 s run moves by several ms from run to run on a
small shared machine, so the median is reported with each run's figure); the same
without disk reserved past the WAL's end (``sqlite_wal_reserve_mb=0``, the reserve's
baseline); the top rate alone, three times, on a fresh store (the p99 grows with the
store); the same with the messages with findings spread one in ten instead of in runs of
ten (a diagnostic: a message with findings is more than twice the work of one without,
so a run of them queues the messages behind it); durable with two MLLP workers
(``mllp_workers=2``); and with fsync off (throughput only). A second baseline, a bare
durable server (``durable_echo``: each frame stored in SQLite and acknowledged after its
commit, group commit, nothing else), runs the same phases as the first: what a durable
ACK costs on this machine, so what remains between it and serve is prpgate's work per
message. Each server starts on a quiet disk: the one before's store is removed and the
page cache flushed first (``settle_disk``).

A last phase holds the top rate without a pause (``--long-seconds``, 120 by default) on
a store that has just taken the unpaced phase, with ``/metrics`` scraped every second
(a Prometheus scrape refreshes the outbox gauges, and no delivery is configured, so the
undelivered backlog only grows): the figure an interface engine sees in a busy hour.
Beside the sender's figures it reports the share of ACKs over 10 ms by serve's own ACK
latency histogram (from a frame's arrival to its ACK's write): the rest of the sender's
share is time a frame waited to be read or an ACK to be taken in, on the shared cores.
The bare durable server then holds the same load (nothing to scrape).

The client shares the machine's cores with the server: on a small machine the
figures are a floor, and the echo baseline shows what the client alone can drive.

`prpgate send`'s client (prpgate.send.mllp_client: it parses every ACK and checks its
MSA-2) is the load generator for `prpgate serve` (``--serve-client bare`` puts back the
minimal client below). Its own ceiling is measured against an echo server that answers
each frame with its MSH-10 in MSA-2, beside the minimal client on the same server.

Run: python bench/bench_mllp.py [--quick] [--messages N] [--json] [--serve-client send|bare]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from prometheus_client.parser import text_string_to_metric_families

from bench_replay import ABNORMAL, NORMAL, templates  # same folder: the same message mix
from durable_echo import durable_echo_server
from processes import listen_until_terminated, serve_command, settle_disk, start, stop
from prpgate.config import Settings
from prpgate.core.mllp import Deframer, Frame, frame
from prpgate.engine import build_engine
from prpgate.ingest import ingest
from prpgate.send.mllp_client import MllpTarget, SendOptions, Spread, send_mllp
from prpgate.send.outgoing import outgoing
from prpgate.store.sqlite import SqliteStore

ROOT = Path(__file__).resolve().parent.parent
WINDOW = 32  # messages in flight per connection (a pipelining interface engine)
ABNORMAL_SHARE = 10  # per hundred messages, as bench_replay's mix
GOAL_S = 0.010  # the p99 goal at 1 000 msgs/s: ACKs slower than this are counted
ACK_LATENCY = "prpgate_ack_latency_seconds"  # serve's own ACK latency histogram
Driver = Callable[[int, list[bytes], int, float | None], Awaitable[dict[str, float]]]
ECHO_ACK = frame(
    b"MSH|^~\\&|PRPGATE|CLINIC|PRPLAB|NORTHLAB|20260101000000||ACK^R01^ACK|E1|P|2.5.1\rMSA|AA|X\r"
)


class ServeRun(NamedTuple):
    """One configuration of `prpgate serve` the benchmark measures (``measure``)."""

    name: str  # its figures' prefix in the results
    env: dict[str, str]  # settings, over the benchmark's environment
    tag: str  # its messages' control-id prefix (``messages``)
    rates: list[float]  # offered rates, each ``repeats`` times in a row
    repeats: int = 1
    unpaced: bool = True  # 1 and 8 connections as fast as answered, before the rates
    spread: bool = False  # findings one in ten instead of in runs (``messages``)


def messages(n: int, tag: str, *, spread: bool = False) -> list[bytes]:
    """n CBC messages (10% with findings) with fresh control ids, MRNs and order numbers.

    The messages with findings come in runs: the first ``ABNORMAL_SHARE`` of every
    hundred. With ``spread``, the same messages come one in every ``100 // ABNORMAL_SHARE``
    instead (a diagnostic: what the runs cost at a fixed rate).
    """
    normal, abnormal = templates(NORMAL), templates(ABNORMAL)
    out = []
    every = 100 // ABNORMAL_SHARE
    for i in range(n):
        with_findings = i % every == 0 if spread else i % 100 < ABNORMAL_SHARE
        pool = abnormal if with_findings else normal
        src = pool[(i + i // 100) % len(pool)]
        msh10 = src.split(b"|", 10)[9]
        m = src.replace(msh10, f"{tag}{i:08d}".encode(), 1)
        m = m.replace(b"ZQ700", f"{tag[:2]}{i:07d}".encode())
        out.append(m.replace(b"NF4", f"{tag[:2]}{i:07d}-".encode()))
    return out


def ingest_only(msgs: list[bytes], folder: Path, batch: int = 256) -> float:
    """msgs/s of the store writer's work alone: ingest in durable batches, no sockets."""
    engine = build_engine(Settings(mappings=ROOT / "mappings"))
    store = SqliteStore(folder / "ingest-only.sqlite", durable=True)
    now = datetime.now(UTC)
    t0 = time.perf_counter()
    for first in range(0, len(msgs), batch):
        with store.session() as session:
            for raw in msgs[first : first + batch]:
                ingest(session, engine, raw, source="bench", received_at=now)
    seconds = time.perf_counter() - t0
    store.close()
    return len(msgs) / seconds


# ------------------------------------------------------------- echo server


def fixed_ack(frame_bytes: bytes) -> bytes:
    """The same ACK for every frame."""
    return ECHO_ACK


_ACK_HEAD, _ACK_TAIL = ECHO_ACK.split(b"MSA|AA|X")


def mirrored_ack(frame_bytes: bytes) -> bytes:
    """The ACK with the frame's MSH-10 in MSA-2 (what prpgate send checks)."""
    return _ACK_HEAD + b"MSA|AA|" + frame_bytes.split(b"|", 10)[9] + _ACK_TAIL


async def echo_server(ready_file: Path, ack: Callable[[bytes], bytes] = fixed_ack) -> None:
    """A bare asyncio MLLP server answering every frame with ``ack`` of it, storing
    nothing, until SIGTERM."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                writer.write(ack(await reader.readuntil(b"\x1c\r")))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    await listen_until_terminated(answer, ready_file)


# ------------------------------------------------------------------ client


async def _connection(
    port: int, batch: list[bytes], latencies: list[float], rate: float | None, offset: float
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
    sent: list[float] = []
    slots = asyncio.Semaphore(WINDOW)

    async def send() -> None:
        start = time.perf_counter() + offset  # connections interleave, not in bursts
        for i, m in enumerate(batch):
            if rate is not None:
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            await slots.acquire()
            sent.append(time.perf_counter())
            writer.write(frame(m))
            await writer.drain()

    sender = asyncio.create_task(send())
    d = Deframer(1 << 20)
    got = 0
    while got < len(batch):
        data = await asyncio.wait_for(reader.read(1 << 16), 60)
        if not data:
            raise RuntimeError("server closed the connection")
        now = time.perf_counter()
        for e in d.feed(data):
            assert isinstance(e, Frame)
            latencies.append(now - sent[got])
            got += 1
            slots.release()
    await sender
    writer.close()


async def drive(port: int, msgs: list[bytes], conns: int, rate: float | None) -> dict[str, float]:
    """Send msgs over conns connections; msgs/s and latency percentiles (ms)."""
    share = [msgs[i::conns] for i in range(conns)]
    latencies: list[float] = []
    per_conn_rate = rate / conns if rate else None
    t0 = time.perf_counter()
    await asyncio.gather(
        *(
            _connection(port, s, latencies, per_conn_rate, k / rate if rate else 0.0)
            for k, s in enumerate(share)
        )
    )
    return figures(len(msgs), time.perf_counter() - t0, latencies)


def figures(n: int, seconds: float, latencies: list[float]) -> dict[str, float]:
    """Messages per second, latency percentiles (ms), the share of ACKs slower than the
    10 ms goal, and the count, of one run."""
    q = statistics.quantiles(latencies, n=100)
    over = sum(1 for x in latencies if x > GOAL_S) / len(latencies)
    return {
        "msgs_per_s": n / seconds,
        "p50_ms": q[49] * 1000,
        "p99_ms": q[98] * 1000,
        "over_goal": over,
        "n": n,
    }


# ------------------------------------------- prpgate send as the load generator


async def send_drive(
    port: int, msgs: list[bytes], conns: int, rate: float | None
) -> dict[str, float]:
    """Like drive(), with prpgate send's client: msgs/s, latency percentiles (ms), and
    how many messages were not positively acknowledged (0 in a sound run)."""
    out = [outgoing(m, file="bench", number=i, source="bench") for i, m in enumerate(msgs, 1)]
    options = SendOptions(
        connections=conns, window=WINDOW, timeout=60.0, rate=rate, spread=Spread.MESSAGE
    )
    t0 = time.perf_counter()
    results, _ = await send_mllp(MllpTarget("127.0.0.1", port), out, options)
    latencies = [r.latency for r in results if r.latency is not None]
    out = figures(len(msgs), time.perf_counter() - t0, latencies)
    out["not_positive"] = sum(1 for r in results if not r.positive)
    return out


def send_ceiling(base: Path, n: int, env: dict[str, str]) -> dict[str, dict[str, float]]:
    """prpgate send's client and the minimal client above, each against the mirroring
    echo server (started here), over 1 and 8 connections."""
    ready = base / "mirror.json"
    proc, port = start([sys.executable, __file__, "--mirror-echo-server", str(ready)], ready, env)
    try:
        out = {}
        for conns in (1, 8):
            out[f"bare_c{conns}"] = asyncio.run(drive(port, messages(n, f"B{conns}"), conns, None))
            out[f"send_c{conns}"] = asyncio.run(
                send_drive(port, messages(n, f"S{conns}"), conns, None)
            )
    finally:
        stop(proc)
    return out


def print_send_figures(ceiling: dict[str, dict[str, float]], serve_c8: float, client: str) -> None:
    print(f"  prpgate send's client as a load generator (window {WINDOW}), mirroring echo server:")
    for c in ("c1", "c8"):
        bare, sent = ceiling[f"bare_{c}"], ceiling[f"send_{c}"]
        print(
            f"    {c[1:]} connection(s): prpgate send {sent['msgs_per_s']:>8,.0f} msgs/s"
            f" (p50 {sent['p50_ms']:.2f} ms, p99 {sent['p99_ms']:.2f} ms,"
            f" {sent['not_positive']:.0f} not positive);"
            f" minimal client {bare['msgs_per_s']:>8,.0f} msgs/s;"
            f" send/minimal {sent['msgs_per_s'] / bare['msgs_per_s']:.2f}"
        )
    headroom = ceiling["send_c8"]["msgs_per_s"] / serve_c8
    print(
        f"    serve rows above driven by the {client} client; prpgate send's ceiling is"
        f" {headroom:.1f}x what serve sustained over 8 connections"
        + ("" if headroom >= 3 else "  (under 3x: the serve figures may be client-bound)")
    )


def measure(
    port: int,
    n: int,
    tag: str,
    rates: list[float],
    seconds: float,
    driver: Driver = drive,
    *,
    repeats: int = 1,
    unpaced: bool = True,
    spread: bool = False,
) -> dict[str, dict[str, float]]:
    """n messages over 1 and over 8 connections as fast as they are answered (unless
    ``unpaced`` is False), then each offered rate for ``seconds`` over 8 connections,
    ``repeats`` times in a row, sent by ``driver`` (the minimal client, or prpgate send's
    with ``send_drive``). A rate's figures are the medians of its repeats, with each
    repeat's p99 beside them (``p99_ms_1``...). ``spread``: the rate phases' messages with
    findings come one in ten, not in runs (``messages``)."""
    out = {}
    if unpaced:
        for conns in (1, 8):
            out[f"c{conns}"] = asyncio.run(driver(port, messages(n, f"{tag}{conns}"), conns, None))
    for rate in rates:
        runs = []
        for k in range(repeats):
            offered = messages(int(rate * seconds), f"{tag}R{int(rate)}-{k}", spread=spread)
            runs.append(asyncio.run(driver(port, offered, 8, rate)))
        out[f"r{int(rate)}"] = median_runs(runs)
    return out


@contextlib.contextmanager
def serving(
    base: Path, name: str, env: dict[str, str], *, baseline: bool = False
) -> Iterator[tuple[int, int | None]]:
    """`prpgate serve` on the store ``store-<name>.sqlite`` in ``base`` (with ``baseline``,
    the bare durable server of ``durable_echo`` on that file instead), started on a quiet
    disk (nothing of the measurements before is still being written): its MLLP port, and
    its HTTP port (None for the baseline). Stopped at the end, its store removed and the
    disk settled again."""
    store = base / f"store-{name}.sqlite"
    ready = base / "serve.json"
    if baseline:
        cmd = [sys.executable, __file__, "--durable-echo-server", str(ready), str(store)]
    else:
        cmd = serve_command(ready, "--store", str(store))
    settle_disk()
    serve, port = start(cmd, ready, env)
    try:
        yield port, json.loads(ready.read_text()).get("http_port")
    finally:
        stop(serve)
        sidecars = (store.with_name(store.name + end) for end in ("-wal", "-shm"))
        settle_disk(store, *sidecars, ready)


def unbroken(
    port: int, http_port: int | None, n: int, rate: float, seconds: float, driver: Driver
) -> dict[str, float]:
    """n messages over 1 and over 8 connections unpaced, then ``rate`` msgs/s over 8
    connections for ``seconds`` without a pause, while a thread GETs ``/metrics`` every
    second (none without ``http_port``): that run's figures, with how many scrapes
    answered and their slowest (ms), and the share of ACKs over the goal by serve's own
    ACK latency histogram between the first scrape and the last (``serve_over_goal``:
    from a frame's arrival to its ACK's write, so without the time a frame waits to be
    read and an ACK to reach the sender)."""
    measure(port, n, "U", [], 0.0, driver)  # the unpaced phase only
    done = threading.Event()
    scrapes: list[float] = []
    counts: list[tuple[float, float]] = []  # per scrape: (ACKs within the goal, all ACKs)

    def scrape() -> None:
        url = f"http://127.0.0.1:{http_port}/metrics"
        while http_port is not None and not done.wait(1.0):
            t0 = time.perf_counter()
            with urllib.request.urlopen(url, timeout=30) as resp:
                text = resp.read().decode()
            scrapes.append(time.perf_counter() - t0)
            counts.append(ack_counts(text, GOAL_S))

    scraper = threading.Thread(target=scrape, name="bench-scraper")
    scraper.start()
    try:
        out = asyncio.run(driver(port, messages(int(rate * seconds), "UL"), 8, rate))
    finally:
        done.set()
        scraper.join()
    out["scrapes"] = len(scrapes)
    out["scrape_max_ms"] = max(scrapes, default=0.0) * 1000
    if len(counts) > 1 and counts[-1][1] > counts[0][1]:
        within, total = (last - first for last, first in zip(counts[-1], counts[0], strict=True))
        out["serve_over_goal"] = 1 - within / total
    return out


def ack_counts(metrics: str, within: float) -> tuple[float, float]:
    """How many ACKs serve's ACK latency histogram counts at or under ``within`` seconds,
    and in all."""
    buckets = {
        float(sample.labels["le"]): sample.value
        for family in text_string_to_metric_families(metrics)
        if family.name == ACK_LATENCY
        for sample in family.samples
        if sample.name == f"{ACK_LATENCY}_bucket"
    }
    return buckets[within], buckets[float("inf")]


def median_runs(runs: list[dict[str, float]]) -> dict[str, float]:
    """The median of each figure over repeated runs of one phase, and every run's p99."""
    out = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    out["repeats"] = len(runs)
    for k, run in enumerate(runs, 1):
        out[f"p99_ms_{k}"] = run["p99_ms"]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument(
        "--rates", default="250,500,1000", help="offered msgs/s for phase 2, comma-separated"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="runs of each offered rate in a row for one durable process (the median is "
        "reported, and each run's p99)",
    )
    parser.add_argument(
        "--long-seconds",
        type=float,
        default=120.0,
        help="seconds of the top rate without a pause, /metrics scraped every second "
        "(0: no such phase; 20 with --quick)",
    )
    parser.add_argument("--quick", action="store_true", help="5 000 messages per phase")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--serve-client",
        choices=["send", "bare"],
        default="send",
        help="load generator for prpgate serve: prpgate send's client or the minimal one",
    )
    parser.add_argument("--echo-server", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--mirror-echo-server", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--durable-echo-server", type=Path, nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo_server:
        asyncio.run(echo_server(args.echo_server))
        return 0
    if args.mirror_echo_server:
        asyncio.run(echo_server(args.mirror_echo_server, mirrored_ack))
        return 0
    if args.durable_echo_server:
        asyncio.run(durable_echo_server(*args.durable_echo_server, mirrored_ack))
        return 0
    n = 5_000 if args.quick else args.messages
    rates = [float(r) for r in args.rates.split(",") if r]
    seconds = 3.0 if args.quick else 6.0
    env = {**os.environ, "PRPGATE_LOG_LEVEL": "error", "PRPGATE_MAPPINGS": str(ROOT / "mappings")}
    with tempfile.TemporaryDirectory(prefix="prpgate-bench-mllp-") as tmp:
        base = Path(tmp)
        echo, port = start(
            [sys.executable, __file__, "--echo-server", str(base / "echo.json")],
            base / "echo.json",
            env,
        )
        try:
            bare = measure(port, n, "E", rates, seconds)
        finally:
            stop(echo)
        ceiling = send_ceiling(base, n, env)
        results: dict[str, dict[str, dict[str, float]]] = {}
        # durable with one process after the unpaced phase and the lower rates (by default
        # its store holds 53 500 to 71 500 messages during the top rate's runs), the same
        # without the disk reserved past the WAL's end (the reserve's baseline), durable on
        # a fresh store at the top rate alone, the same with the messages with findings
        # spread one in ten instead of in runs (the runs' share of the tail), two MLLP
        # workers, and fsync off for throughput only (what durability costs)
        durable_env = {"PRPGATE_DURABLE": "true"}
        top = [max(rates)] if rates else []
        no_reserve = {"PRPGATE_SQLITE_WAL_RESERVE_MB": "0"}
        workers = {**durable_env, "PRPGATE_MLLP_WORKERS": "2"}
        configs = (
            ServeRun("serve", durable_env, "P", rates, args.repeats),
            ServeRun("serve_noreserve", {**no_reserve, **durable_env}, "R", rates, args.repeats),
            ServeRun("serve_fresh", durable_env, "N", top, args.repeats, unpaced=False),
            ServeRun(
                "serve_spread", durable_env, "S", top, args.repeats, unpaced=False, spread=True
            ),
            ServeRun("serve_w2", workers, "W", rates),
            ServeRun("serve_nofsync", {"PRPGATE_DURABLE": "false"}, "Q", []),
        )
        driver = send_drive if args.serve_client == "send" else drive
        for run in configs:
            with serving(base, run.name, {**env, **run.env}) as (port, _):
                results[run.name] = measure(
                    port,
                    n,
                    run.tag,
                    run.rates,
                    seconds,
                    driver,
                    repeats=run.repeats,
                    unpaced=run.unpaced,
                    spread=run.spread,
                )
        # the bare durable server (durable_echo), driven as serve is: what a durable ACK
        # costs on this machine without prpgate's work per message
        with serving(base, "durable", env, baseline=True) as (port, _):
            results["durable"] = measure(port, n, "D", rates, seconds, driver, repeats=args.repeats)
        long_seconds = min(args.long_seconds, 20.0) if args.quick else args.long_seconds
        if rates and long_seconds > 0:
            for name, baseline in (("serve_long", False), ("durable_long", True)):
                with serving(base, name, {**env, **durable_env}, baseline=baseline) as ports:
                    results[name] = {
                        f"r{int(max(rates))}": unbroken(*ports, n, max(rates), long_seconds, driver)
                    }
        durable, two, no_fsync = results["serve"], results["serve_w2"], results["serve_nofsync"]
        writer_alone = ingest_only(messages(n, "I"), base)
    figures: dict[str, Any] = {
        "long_seconds": long_seconds if "serve_long" in results else 0,
        "messages": n,
        "window": WINDOW,
        "rates": rates,
        "ingest_only_msgs_per_s": writer_alone,
        "serve_client": args.serve_client,
    }
    for key, vals in ceiling.items():
        for k, v in vals.items():
            figures[f"mirror_{key}_{k}"] = v
    for name, res in (("echo", bare), *results.items()):
        for key, vals in res.items():
            for k, v in vals.items():
                figures[f"{name}_{key}_{k}"] = v
    for c in ("c1", "c8"):
        figures[f"ratio_{c}_echo_over_serve"] = bare[c]["msgs_per_s"] / durable[c]["msgs_per_s"]
        figures[f"ratio_{c}_serve_over_ingest_only"] = durable[c]["msgs_per_s"] / writer_alone
        figures[f"ratio_{c}_w2_over_serve"] = two[c]["msgs_per_s"] / durable[c]["msgs_per_s"]
    if args.json:
        print(json.dumps(figures))
        return 0
    print(f"MLLP round trips, CBC ORU^R01, {n:,} messages per run, window {WINDOW} per connection")
    print(f"  {'server':<34}{'conns':>6}{'msgs/s':>10}{'p50 ms':>9}{'p99 ms':>9}")
    for label, res in (
        ("bare asyncio echo (baseline)", bare),
        ("bare durable server (baseline)", results["durable"]),
        ("prpgate serve, durable ACK", durable),
        ("serve, durable, 2 MLLP workers", two),
        ("prpgate serve, fsync off", no_fsync),
    ):
        for c in ("c1", "c8"):
            r = res[c]
            print(
                f"  {label:<34}{c[1:]:>6}{r['msgs_per_s']:>10,.0f}"
                f"{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}"
            )
    print(
        f"  {'ingest alone, no sockets (ceiling)':<34}{'-':>6}{writer_alone:>10,.0f}"
        "   (the store writer's work in durable batches of 256, in one process)"
    )
    for c in ("c1", "c8"):
        print(
            f"  {c[1:]} connection(s): echo/serve {figures[f'ratio_{c}_echo_over_serve']:.1f}x, "
            f"serve/ingest-alone {figures[f'ratio_{c}_serve_over_ingest_only']:.2f}, "
            f"2 workers/1 {figures[f'ratio_{c}_w2_over_serve']:.2f}x"
        )
    for rate in rates:
        for label, res in (
            ("bare asyncio echo", bare),
            ("bare durable server", results["durable"]),
            ("prpgate serve, durable", durable),
            ("serve, durable, no WAL reserve", results["serve_noreserve"]),
            ("serve, durable, fresh store", results["serve_fresh"]),
            ("fresh store, findings 1 in 10", results["serve_spread"]),
            ("serve, 2 MLLP workers", two),
        ):
            r = res.get(f"r{int(rate)}")
            if r is None:
                continue
            runs = int(r["repeats"])
            each = ", ".join(f"{r[f'p99_ms_{k}']:.2f}" for k in range(1, runs + 1))
            print(
                f"  offered {rate:>6,.0f} msgs/s over 8 connections, {label:<31}"
                f"achieved {r['msgs_per_s']:>6,.0f}/s  p50 {r['p50_ms']:8.2f} ms"
                f"  p99 {r['p99_ms']:8.2f} ms"
                + (f" (median of {runs} runs: {each})" if runs > 1 else "")
            )
    for key, r in results.get("serve_long", {}).items():
        print(
            f"  offered {float(key[1:]):>6,.0f} msgs/s for {long_seconds:.0f} s without a pause "
            f"after {2 * n:,} messages, /metrics scraped every second ({r['scrapes']:.0f}, "
            f"slowest {r['scrape_max_ms']:.1f} ms): achieved {r['msgs_per_s']:,.0f}/s  "
            f"p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms; over 10 ms: "
            f"{r['over_goal']:.2%} as sent, "
            f"{r.get('serve_over_goal', float('nan')):.2%} inside serve"
        )
    for r in results.get("durable_long", {}).values():
        print(
            f"  the same on the bare durable server (baseline, nothing scraped): achieved "
            f"{r['msgs_per_s']:,.0f}/s  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms"
        )
    print("  targets: >= 3 000 msgs/s over 8 connections durable; p99 <= 10 ms at 1 000 msgs/s")
    print_send_figures(ceiling, durable["c8"]["msgs_per_s"], args.serve_client)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Run every benchmark in bench/ and write bench/results.md and bench/results.json.

Each benchmark measures its baselines in the same run (python-hl7 and hl7apy for the
pipeline, a bare echo server for MLLP, a bare ASGI endpoint for HTTP, bare httpx PUTs
for delivery, SQLite beside PostgreSQL); this script runs them one after the other
with ``--json``, records the machine they ran on, and writes one table: every figure
beside its baseline and the ratio. Run: ``bench/run [--quick]`` (which calls this).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent

Row = tuple[str, str, str, str]  # figure, value, baseline, ratio


def machine() -> dict[str, Any]:
    """CPU model, cores, memory, the disk the benchmarks write to, and its fsync time."""
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    tmp = Path(tempfile.gettempdir())
    df = subprocess.run(
        ["df", "-T", "-h", str(tmp)], capture_output=True, text=True, check=False
    ).stdout.splitlines()
    disk = " ".join(df[-1].split()[:3]) if len(df) > 1 else ""
    # what one small durable write costs on that disk (the floor under a durable ACK)
    with tempfile.NamedTemporaryFile(dir=tmp) as probe:
        samples = []
        for _ in range(50):
            probe.write(b"x" * 4096)
            t0 = time.perf_counter()
            os.fsync(probe.fileno())
            samples.append(time.perf_counter() - t0)
    samples.sort()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "disk": disk,
        "fsync_4k_median_ms": round(samples[len(samples) // 2] * 1000, 3),
        "python": platform.python_version(),
        "load_average_at_start": os.getloadavg(),
    }


def run(script: str, *args: str) -> dict[str, Any]:
    """One benchmark's JSON figures (its last stdout line that parses as JSON)."""
    cmd = [sys.executable, str(BENCH / script), *args, "--json"]
    print("$", " ".join(cmd[1:]), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
        return {"error": f"exit {proc.returncode}", "seconds": took}
    text = proc.stdout.strip()
    try:
        data: dict[str, Any] = json.loads(text)
    except json.JSONDecodeError:
        data = json.loads(text.splitlines()[-1])
    data["bench_seconds"] = round(took, 1)
    return data


def _n(v: float, digits: int = 0) -> str:
    return f"{v:,.{digits}f}"


def _pipeline(f: dict[str, Any]) -> list[Row]:
    us = f["prpgate_pipeline_us"]
    rows: list[Row] = [
        (
            "pipeline: parse+map+evaluate+build, µs per fixture CBC (goal ≤ 100)",
            _n(us, 1),
            f"python-hl7 hl7.parse {_n(f['python_hl7_parse_us'], 1)}",
            f"{f['python_hl7_parse_us'] / us:.1f}× faster",
        ),
        (
            "",
            "",
            f"hl7apy parse_message {_n(f['hl7apy_parse_us'], 0)}",
            f"{f['hl7apy_parse_us'] / us:.0f}× faster",
        ),
        ("  CBCs without a finding, µs", _n(f["prpgate_pipeline_normal_us"], 1), "", ""),
        (
            "  CBCs with a finding (2 resources built, validated), µs",
            _n(f["prpgate_pipeline_finding_us"], 1),
            "",
            "",
        ),
        ("  tokenizer alone, µs", _n(f["prpgate_tokenizer_us"], 1), "", ""),
    ]
    for count in (5, 50, 500):
        ours, base = f[f"obx{count}_pipeline_us"], f[f"obx{count}_python_hl7_us"]
        rows.append(
            (
                f"pipeline, one message of {count} OBX, µs (µs per OBX)",
                f"{_n(ours, 1)} ({ours / count:.1f})",
                f"python-hl7 parse {_n(base, 1)} ({base / count:.1f})",
                f"{base / ours:.1f}× faster",
            )
        )
    return rows


def _replay(f: dict[str, Any]) -> list[Row]:
    rows: list[Row] = [
        (
            f"replay {f['messages']:,} CBCs ({f['abnormal_share']:.0%} abnormal) into SQLite, "
            "fsync on, s (goal 100k < 60 s)",
            f"{f['replay_s']:.1f} ({_n(f['replay_msgs_per_s'])} msgs/s, "
            f"peak RSS {f['replay_peak_rss_mb']:.0f} MB)",
            f"bare SQLite insert {f['bare_sqlite_s']:.1f} s; python-hl7 parse "
            f"{f['python_hl7_parse_s']:.1f} s",
            f"{f['ratio_replay_over_bare_sqlite']:.1f}× bare; "
            f"{f['ratio_replay_over_python_hl7']:.2f}× python-hl7",
        ),
        (
            f"replay {f['worst_messages']:,} CBCs, all abnormal (worst case), s",
            f"{f['worst_s']:.1f} ({_n(f['worst_msgs_per_s'])} msgs/s)",
            "",
            "",
        ),
    ]
    for row in f.get("scale", []):
        rows.append(
            (
                f"replay {row['messages']:,} CBCs alone, s",
                f"{row['seconds']:.1f} ({_n(row['msgs_per_s'])} msgs/s, "
                f"peak RSS {row['peak_rss_mb']:.0f} MB)",
                "",
                "",
            )
        )
    return rows


def _mllp(f: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for c, label in (("c1", "1 connection"), ("c8", "8 connections")):
        rows.append(
            (
                f"MLLP, prpgate serve, durable ACK, {label}, msgs/s (p50 / p99 ms)",
                f"{_n(f[f'serve_{c}_msgs_per_s'])} ({f[f'serve_{c}_p50_ms']:.1f} / "
                f"{f[f'serve_{c}_p99_ms']:.1f})",
                f"bare asyncio echo {_n(f[f'echo_{c}_msgs_per_s'])}",
                f"{f[f'echo_{c}_msgs_per_s'] / f[f'serve_{c}_msgs_per_s']:.1f}× slower",
            )
        )
        if f"durable_{c}_msgs_per_s" in f:
            rows.append(
                (
                    f"MLLP, bare durable server (baseline: SQLite, group commit), {label}, "
                    "msgs/s (p50 / p99 ms)",
                    f"{_n(f[f'durable_{c}_msgs_per_s'])} ({f[f'durable_{c}_p50_ms']:.1f} / "
                    f"{f[f'durable_{c}_p99_ms']:.1f})",
                    f"prpgate serve {_n(f[f'serve_{c}_msgs_per_s'])}",
                    f"{f[f'durable_{c}_msgs_per_s'] / f[f'serve_{c}_msgs_per_s']:.1f}× serve",
                )
            )
        rows.append(
            (
                f"MLLP, prpgate serve, fsync off, {label}, msgs/s",
                _n(f[f"serve_nofsync_{c}_msgs_per_s"]),
                f"durable {_n(f[f'serve_{c}_msgs_per_s'])}",
                f"{f[f'serve_nofsync_{c}_msgs_per_s'] / f[f'serve_{c}_msgs_per_s']:.2f}×",
            )
        )
        if f"serve_w2_{c}_msgs_per_s" in f:
            rows.append(
                (
                    f"MLLP, serve with 2 MLLP workers, durable ACK, {label}, msgs/s (p50 / p99 ms)",
                    f"{_n(f[f'serve_w2_{c}_msgs_per_s'])} ({f[f'serve_w2_{c}_p50_ms']:.1f} / "
                    f"{f[f'serve_w2_{c}_p99_ms']:.1f})",
                    f"one process {_n(f[f'serve_{c}_msgs_per_s'])}",
                    f"{f[f'serve_w2_{c}_msgs_per_s'] / f[f'serve_{c}_msgs_per_s']:.2f}×",
                )
            )
    rates = f.get("rates", [])
    for rate in rates:
        for key, who in (
            (f"serve_r{int(rate)}", ""),
            (f"durable_r{int(rate)}", ", bare durable server (baseline)"),
            (f"serve_noreserve_r{int(rate)}", ", no disk reserved past the WAL (baseline)"),
            (f"serve_fresh_r{int(rate)}", ", fresh store"),
            (
                f"serve_spread_r{int(rate)}",
                ", fresh store, findings spread one in ten (diagnostic)",
            ),
            (f"serve_w2_r{int(rate)}", ", 2 workers"),
        ):
            if f"{key}_p99_ms" in f:
                runs = int(f.get(f"{key}_repeats", 1))
                each = ", ".join(f"{f[f'{key}_p99_ms_{k}']:.1f}" for k in range(1, runs + 1))
                rows.append(
                    (
                        f"MLLP ACK latency at {int(rate):,} msgs/s offered, 8 connections"
                        f"{who}, p50 / p99 ms (goal p99 ≤ 10 ms at 1 000)",
                        f"{f[f'{key}_p50_ms']:.1f} / {f[f'{key}_p99_ms']:.1f} "
                        f"({_n(f[f'{key}_msgs_per_s'])} msgs/s done)",
                        f"median of {runs} runs, p99 {each}" if runs > 1 else "",
                        "",
                    )
                )
    key = f"serve_long_r{int(max(rates))}" if rates else ""
    if f"{key}_p99_ms" in f:
        top = int(max(rates))
        rows.append(
            (
                f"MLLP ACK latency at {top:,} msgs/s for {f['long_seconds']:.0f} s without a "
                f"pause, after {2 * f['messages']:,} messages unpaced, /metrics scraped every "
                f"second ({f[f'{key}_scrapes']:.0f}, slowest {f[f'{key}_scrape_max_ms']:.0f} ms),"
                " p50 / p99 ms (goal p99 ≤ 10 ms at 1 000)",
                f"{f[f'{key}_p50_ms']:.1f} / {f[f'{key}_p99_ms']:.1f} "
                f"({_n(f[f'{key}_msgs_per_s'])} msgs/s done)",
                f"echo at {top:,} msgs/s p99 {f[f'echo_r{top}_p99_ms']:.1f}; fresh store, "
                f"6 s runs, p99 {f[f'serve_fresh_r{top}_p99_ms']:.1f}",
                "",
            )
        )
        if f"{key}_serve_over_goal" in f:
            rows.append(
                (
                    "MLLP ACKs over 10 ms in that run: as the sender measured / inside serve "
                    "(its ACK latency histogram, from a frame's arrival to its ACK's write)",
                    f"{f[f'{key}_over_goal']:.2%} / {f[f'{key}_serve_over_goal']:.2%}",
                    "",
                    "",
                )
            )
    key = f"durable_long_r{int(max(rates))}" if rates else ""
    if f"{key}_p99_ms" in f:
        rows.append(
            (
                f"MLLP ACK latency, the same {f['long_seconds']:.0f} s on the bare durable server "
                "(baseline, nothing scraped), p50 / p99 ms",
                f"{f[f'{key}_p50_ms']:.1f} / {f[f'{key}_p99_ms']:.1f} "
                f"({_n(f[f'{key}_msgs_per_s'])} msgs/s done)",
                "",
                "",
            )
        )
    rows.append(
        (
            "MLLP, the store writer alone (ingest, no sockets), msgs/s",
            _n(f["ingest_only_msgs_per_s"]),
            "",
            "",
        )
    )
    for c in ("c1", "c8"):
        if f"mirror_send_{c}_msgs_per_s" in f:
            send, bare = f[f"mirror_send_{c}_msgs_per_s"], f[f"mirror_bare_{c}_msgs_per_s"]
            rows.append(
                (
                    f"prpgate send (the load generator) against an echo server, {c[1:]} conn., "
                    "msgs/s",
                    _n(send),
                    f"minimal client {_n(bare)}",
                    f"{send / bare:.2f}×",
                )
            )
    return rows


def _fhir(f: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for c in ("1", "8"):
        p, e = f["prpgate"][c], f["echo"][c]
        rows.append(
            (
                f"HTTP POST /fhir/Observation, {c} client(s), req/s (p50 / p99 ms)",
                f"{_n(p['requests_per_s'])} ({p['p50_ms']:.1f} / {p['p99_ms']:.1f})",
                f"bare ASGI echo {_n(e['requests_per_s'])}",
                f"{e['requests_per_s'] / p['requests_per_s']:.1f}× slower",
            )
        )
    return rows


def _delivery(f: dict[str, Any]) -> list[Row]:
    return [
        (
            f"delivery to the test FHIR server, {p} parallel, outputs/s",
            _n(f[f"p{p}_worker_per_s"]),
            f"bare httpx PUTs {_n(f[f'p{p}_bare_httpx_per_s'])}",
            f"{f[f'p{p}_worker_per_s'] / f[f'p{p}_bare_httpx_per_s']:.2f}×",
        )
        for p in (1, 8)
    ]


def _store_pg(f: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for key in ("sqlite_1x_c8", "pg_1x_c8", "pg_2x_c8"):
        if f"{key}_msgs_per_s" in f:
            rows.append(
                (
                    f"MLLP durable, {key.replace('_', ' ')}, msgs/s",
                    _n(f[f"{key}_msgs_per_s"]),
                    "SQLite, one instance" if key != "sqlite_1x_c8" else "",
                    f"{f[f'{key}_msgs_per_s'] / f['sqlite_1x_c8_msgs_per_s']:.2f}×"
                    if key != "sqlite_1x_c8"
                    else "",
                )
            )
    return rows


BENCHES: list[
    tuple[str, str, Callable[[bool], list[str]], Callable[[dict[str, Any]], list[Row]]]
] = [
    ("pipeline", "bench_pipeline.py", lambda q: ["--quick"] if q else [], _pipeline),
    (
        "replay",
        "bench_replay.py",
        lambda q: (
            ["--messages", "10000"] if q else ["--messages", "100000", "--scale", "10000,1000000"]
        ),
        _replay,
    ),
    ("mllp", "bench_mllp.py", lambda q: ["--quick"] if q else [], _mllp),
    ("fhir_http", "bench_fhir_http.py", lambda q: ["--quick"] if q else [], _fhir),
    ("delivery", "bench_delivery.py", lambda q: ["--quick"] if q else [], _delivery),
    ("store_pg", "bench_store_pg.py", lambda q: ["--quick"] if q else [], _store_pg),
]


def render(results: dict[str, Any]) -> str:
    """The Markdown report: the machine, then one table of every figure."""
    m = results["machine"]
    lines = [
        "# prpgate benchmarks",
        "",
        f"Run {results['started']} ({'quick' if results['quick'] else 'full'} run, "
        f"{results['seconds']:.0f} s). Machine: {m['cpu']}, {m['cores']} cores, "
        f"{m['memory_gb']} GB, disk {m['disk']}, fsync of 4 KiB {m['fsync_4k_median_ms']} ms "
        f"(median), Python {m['python']}, load average at start "
        f"{', '.join(f'{x:.2f}' for x in m['load_average_at_start'])}. Client and server "
        "share these cores; every baseline ran in the same run.",
        "",
        *(
            [
                "Re-run since, alone (with their own baselines): "
                + "; ".join(f"{k} {v}" for k, v in sorted(results["rerun"].items()))
                + ".",
                "",
            ]
            if results.get("rerun")
            else []
        ),
        "| figure | prpgate | baseline (same run) | ratio |",
        "|---|---|---|---|",
    ]
    for name, _, _, fmt in BENCHES:
        figures = results["benchmarks"].get(name, {})
        if "error" in figures or not figures:
            lines.append(f"| {name} | not measured: {figures.get('error', 'skipped')} | | |")
            continue
        try:
            rows = fmt(figures)
        except KeyError as exc:
            rows = [(name, f"figure missing: {exc}", "", "")]
        lines.extend(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows)
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter runs of every benchmark")
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument(
        "--render", action="store_true", help="rewrite results.md from results.json, run nothing"
    )
    args = parser.parse_args()
    if args.render:
        results = json.loads((BENCH / "results.json").read_text())
        (BENCH / "results.md").write_text(render(results))
        return 0
    only = {x for x in args.only.split(",") if x}
    t0 = time.time()
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    previous = BENCH / "results.json"
    if only and previous.exists():
        # --only re-runs those benchmarks in the last full results; the others stay, and
        # the report says which figures are from which run
        results: dict[str, Any] = json.loads(previous.read_text())
        results.setdefault("rerun", {})
    else:
        results = {"started": started, "quick": args.quick, "machine": machine()}
        results["benchmarks"] = {}
    for name, script, extra, _ in BENCHES:
        if only and name not in only:
            continue
        results["benchmarks"][name] = run(script, *extra(args.quick))
        if "rerun" in results:
            results["rerun"][name] = f"{started}{' (quick)' if args.quick else ''}"
    if "rerun" not in results:
        results["seconds"] = time.time() - t0
    (BENCH / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    report = render(results)
    (BENCH / "results.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Replay throughput into SQLite: N generated CBC messages through `prpgate replay`.

Messages are generated from the CBC fixtures with fresh control ids, MRNs and
order numbers; a tenth of patients get a second message, so stored state is read
and updated. ``--abnormal-share`` is the share of messages with a finding (each
finding emits a DetectedIssue and a Flag, validated with fhir.resources before
they reach the outbox): 0.1 by default, a population screened for an elective
procedure. The run also replays a tenth as many messages that are all abnormal,
the worst case.

Baselines, measured in the same run on the same files: storing the raw messages
alone in SQLite with the same batch size and fsync setting, and python-hl7
parsing them. Peak RSS of the replay process is reported (memory must stay flat
as the input grows).

Run: python bench/bench_replay.py [--messages 100000] [--abnormal-share 0.1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import hl7

from prpgate.core import er7

ROOT = Path(__file__).resolve().parent.parent
NORMAL = ["cbc_normal.hl7", "v26_cbc.hl7", "v25_cbc.hl7", "v28_cbc.hl7"]
ABNORMAL = ["cbc_high_wbc.hl7", "cbc_low_wbc.hl7", "v24_cbc.hl7", "crp_inr.hl7"]
PER_FILE = 1000


def templates(names: list[str]) -> list[bytes]:
    """One message per fixture, CR segment ends, no BOM."""
    out = []
    for name in names:
        for piece in er7.split_messages((ROOT / "fixtures" / name).read_bytes()):
            out.append(piece.data.replace(b"\r\n", b"\r").replace(b"\n", b"\r"))
    return out


def generate(n: int, folder: Path, abnormal_share: float) -> int:
    """Write n messages into folder, PER_FILE per file; returns bytes written."""
    normal, abnormal = templates(NORMAL), templates(ABNORMAL)
    per_hundred = round(abnormal_share * 100)
    total = 0
    for start in range(0, n, PER_FILE):
        chunk = []
        for i in range(start, min(n, start + PER_FILE)):
            pool = abnormal if i % 100 < per_hundred else normal
            src = pool[(i + i // 100) % len(pool)]
            msh10 = src.split(b"|", 10)[9]
            patient = i if i % 10 else i - 5  # some patients get a second message
            m = src.replace(msh10, f"BENCH{i:08d}".encode(), 1)
            m = m.replace(b"ZQ700", f"BM{patient:07d}".encode())
            m = m.replace(b"NF4", f"B{i:07d}-".encode())
            chunk.append(m)
        data = b"".join(chunk)
        (folder / f"bench_{start // PER_FILE:05d}.hl7").write_bytes(data)
        total += len(data)
    return total


def bare_sqlite(folder: Path, db: Path, batch: int) -> float:
    """Seconds to store every raw message (no parsing) with the same durability and batching."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE m (id INTEGER PRIMARY KEY, raw BLOB)")
    t0 = time.perf_counter()
    pending: list[bytes] = []

    def flush() -> None:
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO m (raw) VALUES (?)", [(p,) for p in pending])
        conn.execute("COMMIT")
        pending.clear()

    for f in sorted(folder.glob("*.hl7")):
        for piece in er7.split_messages(f.read_bytes()):
            pending.append(piece.data)
            if len(pending) >= batch:
                flush()
    if pending:
        flush()
    conn.close()
    return time.perf_counter() - t0


def python_hl7(folder: Path) -> float:
    """Seconds for python-hl7 to parse every message."""
    t0 = time.perf_counter()
    for f in sorted(folder.glob("*.hl7")):
        for piece in er7.split_messages(f.read_bytes()):
            hl7.parse(piece.data.decode("utf-8"))
    return time.perf_counter() - t0


def run_replay(folder: Path, store: Path, batch: int) -> dict[str, Any]:
    """Replay a folder with the installed CLI in a child process; time, peak RSS of that
    child (from its own rusage), summary."""
    prpgate = Path(sys.executable).parent / "prpgate"
    env = {**os.environ, "PRPGATE_REPLAY_BATCH": str(batch), "PRPGATE_LOG_LEVEL": "error"}
    with tempfile.TemporaryFile() as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [
                str(prpgate),
                "replay",
                "--store",
                str(store),
                "--mappings",
                str(ROOT / "mappings"),
                "--json",
                str(folder),
            ],
            stdout=out,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        last = b""
        for line in out:  # the summary is the last line; the file can be large
            last = line
    summary = json.loads(last) if last.strip() else {}
    return {
        "seconds": seconds,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "exit": proc.returncode,
        "outputs": sum(summary.get("outputs", {}).values()),
        "messages": summary.get("messages", 0),
    }


def scale_runs(sizes: list[int], base: Path, batch: int, share: float) -> list[dict[str, Any]]:
    """Replay alone at each size (fresh files and store each time): seconds, msgs/s and
    peak RSS, to show that time grows linearly and memory stays flat."""
    rows = []
    for n in sizes:
        folder = base / f"scale{n}"
        folder.mkdir()
        generate(n, folder, share)
        run = run_replay(folder, base / f"scale{n}.sqlite", batch)
        rows.append(
            {
                "messages": n,
                "seconds": run["seconds"],
                "msgs_per_s": n / run["seconds"],
                "peak_rss_mb": run["peak_rss_mb"],
                "exit": run["exit"],
            }
        )
        shutil.rmtree(folder)
        for f in base.glob(f"scale{n}.sqlite*"):
            f.unlink()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--abnormal-share", type=float, default=0.1)
    parser.add_argument(
        "--scale",
        default="",
        help="more sizes to replay alone (comma-separated, e.g. 10000,1000000): time and RSS",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    worst_n = max(1000, args.messages // 10)
    with tempfile.TemporaryDirectory(prefix="prpgate-bench-") as tmp:
        base = Path(tmp)
        (base / "mix").mkdir()
        (base / "worst").mkdir()
        size = generate(args.messages, base / "mix", args.abnormal_share)
        generate(worst_n, base / "worst", 1.0)
        mix = run_replay(base / "mix", base / "mix.sqlite", args.batch)
        worst = run_replay(base / "worst", base / "worst.sqlite", args.batch)
        bare_s = bare_sqlite(base / "mix", base / "bare.sqlite", args.batch)
        hl7_s = python_hl7(base / "mix")
        shutil.rmtree(base / "mix")
        sizes = [int(x) for x in args.scale.split(",") if x]
        scale = scale_runs(sizes, base, args.batch, args.abnormal_share)
    figures = {
        "messages": args.messages,
        "abnormal_share": args.abnormal_share,
        "input_mb": size / 1e6,
        "replay_s": mix["seconds"],
        "replay_msgs_per_s": args.messages / mix["seconds"],
        "replay_peak_rss_mb": mix["peak_rss_mb"],
        "replay_outputs": mix["outputs"],
        "replay_exit": mix["exit"],
        "worst_messages": worst_n,
        "worst_s": worst["seconds"],
        "worst_msgs_per_s": worst_n / worst["seconds"],
        "worst_outputs": worst["outputs"],
        "bare_sqlite_s": bare_s,
        "python_hl7_parse_s": hl7_s,
        "ratio_replay_over_bare_sqlite": mix["seconds"] / bare_s,
        "ratio_replay_over_python_hl7": mix["seconds"] / hl7_s,
        "scale": scale,
    }
    if args.json:
        print(json.dumps(figures))
        return 0
    print(f"replay into SQLite (fsync on, batch {args.batch}), same run:")
    print(
        f"  prpgate replay, {args.messages:,} msgs ({size / 1e6:.0f} MB), "
        f"{args.abnormal_share:.0%} abnormal  {mix['seconds']:8.2f} s "
        f"{figures['replay_msgs_per_s']:8,.0f} msgs/s  peak RSS {mix['peak_rss_mb']:.0f} MB  "
        f"outputs {mix['outputs']:,}  (target 100k < 60 s)"
    )
    print(
        f"  prpgate replay, {worst_n:,} msgs, all abnormal (worst case)   "
        f"{worst['seconds']:8.2f} s "
        f"{figures['worst_msgs_per_s']:8,.0f} msgs/s  outputs {worst['outputs']:,}"
    )
    print(
        f"  bare SQLite insert of the raw messages (baseline)     {bare_s:8.2f} s   "
        f"replay/bare {figures['ratio_replay_over_bare_sqlite']:.1f}x"
    )
    print(
        f"  python-hl7 parse of the same messages (baseline)      {hl7_s:8.2f} s   "
        f"replay/python-hl7 {figures['ratio_replay_over_python_hl7']:.2f}x"
    )
    for row in scale:
        print(
            f"  prpgate replay, {row['messages']:>9,} msgs alone               "
            f"{row['seconds']:8.2f} s {row['msgs_per_s']:8,.0f} msgs/s  "
            f"peak RSS {row['peak_rss_mb']:.0f} MB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

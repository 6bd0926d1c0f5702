"""Replay throughput into SQLite: N generated CBC messages through `prpgate replay`.

Messages are generated from the CBC fixtures with fresh control ids, MRNs and
order numbers (a tenth of patients get a second result, so state is read and
updated). Baselines measured in the same run on the same files: storing the
raw messages alone in SQLite with the same batch size and fsync setting, and
python-hl7 parsing them. Peak RSS of the replay process is reported.

Run: python bench/bench_replay.py [--messages 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import hl7

from prpgate.core import er7

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = [
    "cbc_normal.hl7",
    "cbc_high_wbc.hl7",
    "cbc_low_wbc.hl7",
    "v24_cbc.hl7",
    "v26_cbc.hl7",
    "crp_inr.hl7",
]
PER_FILE = 1000


def templates() -> list[bytes]:
    out = []
    for name in TEMPLATES:
        for piece in er7.split_messages((ROOT / "fixtures" / name).read_bytes()):
            out.append(piece.data.replace(b"\r\n", b"\r").replace(b"\n", b"\r"))
    return out


def generate(n: int, folder: Path) -> int:
    """Write n messages into folder, PER_FILE per file; returns bytes written."""
    tpl = templates()
    total = 0
    for start in range(0, n, PER_FILE):
        chunk = []
        for i in range(start, min(n, start + PER_FILE)):
            src = tpl[i % len(tpl)]
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
    for f in sorted(folder.glob("*.hl7")):
        for piece in er7.split_messages(f.read_bytes()):
            pending.append(piece.data)
            if len(pending) >= batch:
                conn.execute("BEGIN")
                conn.executemany("INSERT INTO m (raw) VALUES (?)", [(p,) for p in pending])
                conn.execute("COMMIT")
                pending.clear()
    if pending:
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO m (raw) VALUES (?)", [(p,) for p in pending])
        conn.execute("COMMIT")
    conn.close()
    return time.perf_counter() - t0


def python_hl7(folder: Path) -> float:
    """Seconds for python-hl7 to parse every message."""
    t0 = time.perf_counter()
    for f in sorted(folder.glob("*.hl7")):
        for piece in er7.split_messages(f.read_bytes()):
            hl7.parse(piece.data.decode("utf-8"))
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="prpgate-bench-") as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        size = generate(args.messages, folder)
        store = Path(tmp) / "replay.sqlite"
        prpgate = Path(sys.executable).parent / "prpgate"
        env = {**os.environ, "PRPGATE_REPLAY_BATCH": str(args.batch), "PRPGATE_LOG_LEVEL": "error"}
        t0 = time.perf_counter()
        proc = subprocess.run(
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
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            check=False,
        )
        replay_s = time.perf_counter() - t0
        peak_rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        lines = proc.stdout.decode().splitlines()
        summary = json.loads(lines[-1]) if lines else {}
        bare_s = bare_sqlite(folder, Path(tmp) / "bare.sqlite", args.batch)
        hl7_s = python_hl7(folder)
    figures = {
        "messages": args.messages,
        "input_mb": size / 1e6,
        "replay_s": replay_s,
        "replay_msgs_per_s": args.messages / replay_s,
        "replay_peak_rss_mb": peak_rss_mb,
        "replay_outputs": sum(summary.get("outputs", {}).values()),
        "replay_exit": proc.returncode,
        "bare_sqlite_s": bare_s,
        "python_hl7_parse_s": hl7_s,
        "ratio_replay_over_bare_sqlite": replay_s / bare_s,
        "ratio_replay_over_python_hl7": replay_s / hl7_s,
    }
    if args.json:
        print(json.dumps(figures))
        return 0
    print(
        f"replay of {args.messages:,} generated CBC messages ({size / 1e6:.1f} MB) into SQLite,"
        f" batch {args.batch}, fsync on"
    )
    print(
        f"  prpgate replay (CLI, whole pipeline)  {replay_s:8.2f} s  "
        f"{figures['replay_msgs_per_s']:9,.0f} msgs/s  peak RSS {peak_rss_mb:.0f} MB"
        f"  (target < 60 s)  outputs {figures['replay_outputs']:,} exit {proc.returncode}"
    )
    print(
        f"  bare SQLite insert of raw (baseline)  {bare_s:8.2f} s   ratio "
        f"{figures['ratio_replay_over_bare_sqlite']:.1f}x"
    )
    print(
        f"  python-hl7 parse only (baseline)      {hl7_s:8.2f} s   ratio "
        f"{figures['ratio_replay_over_python_hl7']:.1f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

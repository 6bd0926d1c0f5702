"""Run the atheris harness ``fuzz/fuzz_er7.py`` for a set time, then say what it found.

``fuzz/run --minutes 10`` (the wrapper) runs this. The working corpus and what libFuzzer
finds live in ``fuzz/work/`` (not versioned): ``corpus/`` starts from every message of
the team's fixtures and grows with inputs that reach new code; the published corpus
(``../shared/corpus/hl7v2``, or ``$PRPGATE_CORPUS/hl7v2``) is read as extra seeds where
present, never copied. ``artifacts/`` gets ``crash-*`` (an exception other than
ParseError, or a broken ACK), ``timeout-*`` (one input over ``--timeout`` seconds) and
``slow-unit-*`` (over ``--slow`` seconds) inputs; ``er7.log`` the whole libFuzzer output.

libFuzzer stops at the first crash: reproduce it with
``python fuzz/fuzz_er7.py fuzz/work/artifacts/crash-…``, fix it, run again.
Exit code 0 when nothing was found, 1 when something was, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "fuzz" / "fuzz_er7.py"
_STATUS = re.compile(r"^#(\d+)\s+(?:pulse|DONE|NEW|REDUCE|INITED).*?cov: (\d+) ft: (\d+)")
_STAT = re.compile(r"^stat::(\w+):\s+(\d+)")


def seed(corpus: Path) -> int:
    """Write every message of every fixture file into ``corpus`` (one file each)."""
    sys.path.insert(0, str(ROOT / "src"))
    from prpgate.core import er7

    n = 0
    for path in sorted((ROOT / "fixtures").rglob("*")):
        if not path.is_file() or path.suffix not in (".hl7", ".bin"):
            continue
        data = path.read_bytes()
        for i, piece in enumerate([r.data for r in er7.split_messages(data)] or [data]):
            (corpus / f"seed-{path.parent.name}-{path.stem}-{i}").write_bytes(piece)
            n += 1
    return n


def published_corpus() -> Path | None:
    base = Path(os.environ.get("PRPGATE_CORPUS", ROOT.parent / "shared" / "corpus"))
    folder = base / "hl7v2"
    return folder if folder.is_dir() else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to fuzz")
    parser.add_argument("--timeout", type=int, default=10, help="seconds one input may take")
    parser.add_argument("--slow", type=int, default=1, help="report inputs slower than this")
    parser.add_argument("--max-len", type=int, default=16384, help="largest input, in bytes")
    parser.add_argument("--work", type=Path, default=ROOT / "fuzz" / "work")
    args = parser.parse_args()
    if args.minutes <= 0:
        parser.error("--minutes must be positive")
    try:
        import atheris  # noqa: F401
    except ImportError:
        print("atheris is not installed: pip install -e '.[test]' (Linux x86_64)", file=sys.stderr)
        return 2
    corpus, artifacts = args.work / "corpus", args.work / "artifacts"
    corpus.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    before = {p.name for p in artifacts.iterdir()}
    seeds = seed(corpus)
    extra = published_corpus()
    command = [
        sys.executable,
        str(HARNESS),
        f"-max_total_time={round(args.minutes * 60)}",
        f"-timeout={args.timeout}",
        f"-report_slow_units={args.slow}",
        f"-max_len={args.max_len}",
        "-rss_limit_mb=2048",
        "-print_final_stats=1",
        f"-artifact_prefix={artifacts}/",
        str(corpus),
        *([str(extra)] if extra else []),
    ]
    print(f"fuzzing er7 for {args.minutes:g} min: {seeds} fixture seeds", end="")
    print(f", extra seeds from {extra}" if extra else "", flush=True)
    log = args.work / "er7.log"
    started = time.monotonic()
    stats: dict[str, int] = {}
    last = ""
    with log.open("w") as out:
        proc = subprocess.Popen(
            command, stderr=subprocess.STDOUT, stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            if m := _STAT.match(line):
                stats[m.group(1)] = int(m.group(2))
            if _STATUS.match(line):
                last = line.strip()
                if "pulse" in line or "INITED" in line:
                    print(f"  {time.monotonic() - started:6.0f}s {last}", flush=True)
            elif "Traceback" in line or "ERROR: libFuzzer" in line or "Slowest unit" in line:
                print(f"  {line.rstrip()}", flush=True)
        code = proc.wait()
    found = sorted(p.name for p in artifacts.iterdir() if p.name not in before)
    print(f"\nlibFuzzer exit code {code}; log: {log}")
    print(f"last status: {last}")
    for key in ("number_of_executed_units", "average_exec_per_sec", "new_units_added"):
        if key in stats:
            print(f"{key.replace('_', ' ')}: {stats[key]}")
    if "peak_rss_mb" in stats:
        print(f"peak RSS: {stats['peak_rss_mb']} MB")
    print(f"corpus: {sum(1 for _ in corpus.iterdir())} inputs in {corpus}")
    if found:
        print("found:")
        for name in found:
            print(f"  {artifacts / name}")
        return 1
    print("found: nothing (no crash, no timeout, no input slower than the limit)")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

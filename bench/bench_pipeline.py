"""Per-message cost of parse+map+evaluate+build for CBC ORUs, against python-hl7 and hl7apy.

All three read the same messages in the same run. prpgate's figure includes the
whole pure pipeline (tokenize, ORU walk, mapping with unit conversion, rule
evaluation, and FHIR resource building/validation where a finding is made);
the baselines only parse. Run: python bench/bench_pipeline.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import hl7
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from prpgate.config import Settings
from prpgate.core import er7
from prpgate.core.pipeline import Engine, evaluate, read
from prpgate.engine import build_engine

ROOT = Path(__file__).resolve().parent.parent
CBC_FILES = [
    "cbc_normal.hl7",
    "cbc_high_wbc.hl7",
    "cbc_low_wbc.hl7",
    "v25_cbc.hl7",
    "v24_cbc.hl7",
    "v26_cbc.hl7",
]


def cbc_messages() -> list[bytes]:
    """The CBC fixtures, one message each, with CR segment ends."""
    out = []
    for name in CBC_FILES:
        for piece in er7.split_messages((ROOT / "fixtures" / name).read_bytes()):
            out.append(piece.data.replace(b"\r\n", b"\r").replace(b"\n", b"\r"))
    return out


def sized_message(obx_count: int) -> bytes:
    """A CBC ORU with ``obx_count`` OBX: the normal CBC's results repeated under new
    sub-ids (OBX-4), so every OBX is a distinct result of the one order."""
    lines = (ROOT / "fixtures" / "cbc_normal.hl7").read_bytes().replace(b"\r\n", b"\r")
    segs = [s for s in lines.replace(b"\n", b"\r").split(b"\r") if s]
    head = segs[:4]  # MSH PID ORC OBR of the CBC order
    obx = [s for s in segs[4:11] if s.startswith(b"OBX|")]
    out = list(head)
    for i in range(obx_count):
        f = obx[i % len(obx)].split(b"|")
        f[1] = str(i + 1).encode()
        f[4] = str(i // len(obx) + 1).encode()
        out.append(b"|".join(f))
    return b"\r".join(out) + b"\r"


def _has_finding(engine: Engine, raw: bytes) -> bool:
    return bool(evaluate(read(raw, engine), {}, engine, seq=1).emitted)


def per_message_us(fn: Callable[[bytes], object], msgs: list[bytes], *, seconds: float) -> float:
    """Median over rounds of the mean µs per message; each round runs every message."""
    for m in msgs:  # warm-up
        fn(m)
    rounds: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(rounds) < 3:
        t0 = time.perf_counter()
        for m in msgs:
            fn(m)
        rounds.append((time.perf_counter() - t0) / len(msgs) * 1e6)
    return statistics.median(rounds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--json", action="store_true", help="print JSON figures")
    args = parser.parse_args()
    seconds = 0.5 if args.quick else 2.0
    engine = build_engine(Settings(mappings=ROOT / "mappings"))
    msgs = cbc_messages()
    texts = [m.decode("utf-8").lstrip("\ufeff") for m in msgs]

    def ours(raw: bytes) -> object:
        reading = read(raw, engine)
        return evaluate(reading, {}, engine, seq=1)

    def tokenizer_only(raw: bytes) -> object:
        return er7.parse(raw)

    text_of = dict(zip(msgs, texts, strict=True))

    def python_hl7(raw: bytes) -> object:
        return hl7.parse(text_of[raw])

    def hl7apy_parse(raw: bytes) -> object:
        return parse_message(
            text_of[raw], find_groups=False, validation_level=VALIDATION_LEVEL.TOLERANT
        )

    segs = statistics.mean(t.count("\r") + 1 for t in texts)
    figures = {
        "prpgate_pipeline_us": per_message_us(ours, msgs, seconds=seconds),
        "prpgate_tokenizer_us": per_message_us(tokenizer_only, msgs, seconds=seconds),
        "python_hl7_parse_us": per_message_us(python_hl7, msgs, seconds=seconds),
        "hl7apy_parse_us": per_message_us(hl7apy_parse, msgs, seconds=seconds / 2),
        # the same pipeline on the CBCs without a finding, and on those with one (each
        # finding builds a DetectedIssue and a Flag and validates both with R4B models)
        "prpgate_pipeline_normal_us": per_message_us(
            ours, [m for m in msgs if not _has_finding(engine, m)], seconds=seconds
        ),
        "prpgate_pipeline_finding_us": per_message_us(
            ours, [m for m in msgs if _has_finding(engine, m)], seconds=seconds
        ),
    }
    # how the cost grows with the work: one message of 5, 50 and 500 OBX
    for count in (5, 50, 500):
        sized = [sized_message(count)]
        text = sized[0].decode()
        figures[f"obx{count}_pipeline_us"] = per_message_us(ours, sized, seconds=seconds / 2)
        figures[f"obx{count}_python_hl7_us"] = per_message_us(
            lambda _m, text=text: hl7.parse(text), sized, seconds=seconds / 2
        )
    figures["ratio_python_hl7_over_pipeline"] = (
        figures["python_hl7_parse_us"] / figures["prpgate_pipeline_us"]
    )
    figures["ratio_hl7apy_over_pipeline"] = (
        figures["hl7apy_parse_us"] / figures["prpgate_pipeline_us"]
    )
    if args.json:
        print(json.dumps({"messages": len(msgs), "mean_segments": segs, **figures}))
        return 0
    print(f"CBC ORU messages: {len(msgs)} (mean {segs:.1f} segments), same run, µs per message")
    print(
        f"  prpgate parse+map+evaluate+build  {figures['prpgate_pipeline_us']:9.1f} µs"
        "   (target <= 100 µs)"
    )
    print(f"    of which CBCs with no finding   {figures['prpgate_pipeline_normal_us']:9.1f} µs")
    print(f"    of which CBCs with a finding    {figures['prpgate_pipeline_finding_us']:9.1f} µs")
    print(f"  prpgate tokenizer alone           {figures['prpgate_tokenizer_us']:9.1f} µs")
    print(
        f"  python-hl7 hl7.parse (baseline)   {figures['python_hl7_parse_us']:9.1f} µs"
        f"   ratio {figures['ratio_python_hl7_over_pipeline']:.1f}x (target >= 10x)"
    )
    print(
        f"  hl7apy parse_message (baseline)   {figures['hl7apy_parse_us']:9.1f} µs"
        f"   ratio {figures['ratio_hl7apy_over_pipeline']:.1f}x"
    )
    print("  cost as the message grows (µs per message; per OBX):")
    for count in (5, 50, 500):
        ours_us = figures[f"obx{count}_pipeline_us"]
        base_us = figures[f"obx{count}_python_hl7_us"]
        print(
            f"    {count:3d} OBX  prpgate {ours_us:9.1f} ({ours_us / count:5.1f})"
            f"   python-hl7 parse {base_us:9.1f} ({base_us / count:5.1f})"
            f"   ratio {base_us / ours_us:.1f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The summary of a send run: percentiles, counts, the exit verdict, the JSON shape."""

from __future__ import annotations

from io import StringIO

from rich.console import Console

from prpgate.send.outcome import Result, Status
from prpgate.send.report import percentile, render_problems, render_summary, summarise


def _r(i: int, status: Status, code: str = "", *, positive: bool = False, **kw: object) -> Result:
    r = Result(i, "f.hl7", i + 1, f"f.hl7#{i + 1}", f"C{i}", status, code, positive)
    for k, v in kw.items():
        setattr(r, k, v)
    return r


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 95) == 95.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None


def test_summarise_counts_each_message_once() -> None:
    results = [
        _r(0, Status.ANSWERED, "AA", positive=True, latency=0.002, attempts=1),
        _r(1, Status.ANSWERED, "AE", latency=0.004, attempts=1),
        _r(2, Status.TIMEOUT, attempts=2, late_acks=["AA"]),
        _r(3, Status.MISMATCH, attempts=1),
        _r(4, Status.NOT_SENT),
    ]
    s = summarise("mllp://h:1", results, seconds=2.0, unmatched_acks=1)
    assert (s.messages, s.sent, s.positive) == (5, 4, 1)
    assert dict(s.codes) == {"AA": 1, "AE": 1}
    assert s.statuses["timeout"] == s.statuses["mismatch"] == s.statuses["not-sent"] == 1
    assert (s.late_acks, s.unmatched_acks, s.retried) == (1, 1, 1)
    assert s.latency_ms["p50"] == 2.0
    assert s.latency_ms["max"] == 4.0
    assert s.answered_per_s == 1.0
    assert not s.ok
    j = s.as_json()
    assert (j["exit_code"], j["timeouts"], j["mismatches"]) == (1, 1, 1)


def test_summary_ok_only_when_every_message_is_positive() -> None:
    good = [_r(i, Status.ANSWERED, "CA", positive=True, latency=0.001) for i in range(3)]
    assert summarise("t", good, seconds=1.0).ok
    assert summarise("t", good, seconds=1.0).as_json()["exit_code"] == 0
    assert not summarise("t", [], seconds=1.0).ok


def test_render_lists_problems_and_verdict() -> None:
    buf = StringIO()
    out = Console(file=buf, width=200)
    results = [
        _r(0, Status.ANSWERED, "AA", positive=True, latency=0.001),
        _r(1, Status.ANSWERED, "AR", text="MSH-12: unsupported HL7 version 9.9"),
    ]
    render_problems(out, results)
    render_summary(out, summarise("mllp://h:1", results, seconds=1.0), code_order=("AA", "AR"))
    text = buf.getvalue()
    assert "MSH-12: unsupported HL7 version 9.9" in text
    assert "f.hl7#1 " not in text  # the positive message is not listed as a problem
    assert "1 of 2 not positively acknowledged" in text


def test_render_summary_for_fhir_leaves_out_mllp_rows() -> None:
    buf = StringIO()
    results = [_r(0, Status.ANSWERED, "201", positive=True, latency=0.001)]
    render_summary(
        Console(file=buf, width=200),
        summarise("https://h/fhir", results, seconds=1.0),
        code_order=(),
        mllp=False,
    )
    text = buf.getvalue()
    assert "201" in text
    assert "mismatch" not in text
    assert "late ACKs" not in text

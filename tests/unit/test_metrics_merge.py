"""merge_expositions: several processes' metrics, one exposition of their sums."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from prpgate.metrics_merge import merge_expositions
from prpgate.serve import ServeMetrics


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_counters_histograms_and_gauges_add_up() -> None:
    a, b = ServeMetrics(), ServeMetrics()
    for _ in range(3):
        a.acked("AA", 0.003)
    b.acked("AA", 0.0004)
    b.acked("AE", 0.2)
    a.connection_opened()
    a.connection_opened()
    b.connection_opened()
    merged = samples(merge_expositions([a.render(), b.render()]))
    assert merged[("prpgate_acks_total", (("code", "AA"),))] == 4
    assert merged[("prpgate_acks_total", (("code", "AE"),))] == 1
    assert merged[("prpgate_ack_latency_seconds_count", ())] == 5
    assert merged[("prpgate_ack_latency_seconds_sum", ())] == pytest.approx(0.009 + 0.2004)
    assert merged[("prpgate_ack_latency_seconds_bucket", (("le", "0.0005"),))] == 1
    assert merged[("prpgate_ack_latency_seconds_bucket", (("le", "0.005"),))] == 4
    assert merged[("prpgate_ack_latency_seconds_bucket", (("le", "+Inf"),))] == 5
    assert merged[("prpgate_mllp_connections_open", ())] == 3


def test_created_is_the_earliest_and_a_family_of_one_process_is_kept() -> None:
    ra, rb = CollectorRegistry(), CollectorRegistry()
    ca = Counter("jobs", "Jobs.", registry=ra)
    cb = Counter("jobs", "Jobs.", registry=rb)
    Gauge("only_here", "One process has it.", registry=rb).set(7)
    Histogram("lat", "Latency.", buckets=(1.0,), registry=ra).observe(0.5)
    ca.inc(2)
    cb.inc(3)
    text_a, text_b = generate_latest(ra), generate_latest(rb)
    created = [samples(t)[("jobs_created", ())] for t in (text_a, text_b)]
    merged = samples(merge_expositions([text_a, text_b]))
    assert merged[("jobs_total", ())] == 5
    assert merged[("jobs_created", ())] == min(created)
    assert merged[("only_here", ())] == 7
    assert merged[("lat_bucket", (("le", "1.0"),))] == 1


def test_one_exposition_comes_back_with_the_same_samples() -> None:
    m = ServeMetrics()
    m.acked("AA", 0.001)
    m.fault("oversize")
    assert samples(merge_expositions([m.render()])) == samples(m.render())


def test_text_that_is_not_an_exposition_is_refused() -> None:
    with pytest.raises(ValueError, match="could not convert"):
        merge_expositions([b"this is { not metrics\n"])

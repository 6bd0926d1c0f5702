"""Pure delivery rules: status verdicts, Retry-After, backoff, OperationOutcome text, breaker."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from prpgate.cli_outbox import parse_age
from prpgate.delivery.breaker import BreakerState, CircuitBreaker
from prpgate.delivery.policy import (
    Verdict,
    backoff_delay,
    classify,
    outcome_text,
    parse_retry_after,
)
from prpgate.delivery.write import WriteMode, plan_reapply, plan_write
from prpgate.errors import ConfigError, DeliveryError
from tests.conftest import FIXED_NOW
from tests.fhirserver.support import flag_json


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, Verdict.DELIVERED),
        (201, Verdict.DELIVERED),
        (409, Verdict.CONFLICT),
        (412, Verdict.CONFLICT),
        (408, Verdict.RETRY),
        (429, Verdict.RETRY),
        (500, Verdict.RETRY),
        (502, Verdict.RETRY),
        (503, Verdict.RETRY),
        (504, Verdict.RETRY),
        (400, Verdict.DEAD),
        (401, Verdict.DEAD),
        (403, Verdict.DEAD),
        (404, Verdict.DEAD),
        (410, Verdict.DEAD),
        (422, Verdict.DEAD),
    ],
)
def test_classify_status(status: int, verdict: Verdict) -> None:
    assert classify(status) is verdict


def test_parse_retry_after_seconds_and_http_date() -> None:
    assert parse_retry_after("120", FIXED_NOW) == 120.0
    date = "Thu, 15 Jan 2026 09:31:30 GMT"  # FIXED_NOW is 09:30:00 UTC
    assert parse_retry_after(date, FIXED_NOW) == 90.0
    assert parse_retry_after("Thu, 15 Jan 2026 09:00:00 GMT", FIXED_NOW) == 0.0
    assert parse_retry_after("soon", FIXED_NOW) is None
    assert parse_retry_after(None, FIXED_NOW) is None


def test_backoff_delay_grows_is_capped_and_jittered() -> None:
    assert backoff_delay(1, base=1.0, cap=60.0, jitter=0.0) == 0.5
    assert backoff_delay(1, base=1.0, cap=60.0, jitter=0.999) < 1.0
    assert backoff_delay(4, base=1.0, cap=60.0, jitter=0.0) == 4.0
    assert backoff_delay(30, base=1.0, cap=60.0, jitter=0.0) == 30.0
    assert backoff_delay(30, base=1.0, cap=60.0, jitter=0.5) == 45.0


def test_outcome_text_summarises_issues() -> None:
    body = json.dumps(
        {
            "resourceType": "OperationOutcome",
            "issue": [
                {"severity": "error", "code": "required", "diagnostics": "Flag.code missing"},
                {"severity": "warning", "code": "informational", "details": {"text": "note"}},
            ],
        }
    ).encode()
    assert outcome_text(body) == "error/required: Flag.code missing; warning/informational: note"
    assert outcome_text(b"<html>") == ""
    assert outcome_text(b'{"resourceType":"Flag"}') == ""


def test_plan_write_client_id_puts_to_the_deterministic_id() -> None:
    write, search = plan_write("Flag", "abc", 2, flag_json("abc"), WriteMode.CLIENT_ID)
    assert (write.method, write.path) == ("PUT", "Flag/prp-flag-abc")
    assert search == "https://prpgate.example/fhir/sid/flag|abc"
    assert not write.is_conditional


def test_plan_write_conditional_strips_the_id() -> None:
    create, _ = plan_write("Flag", "abc", 1, flag_json("abc"), WriteMode.CONDITIONAL)
    update, _ = plan_write("Flag", "abc", 2, flag_json("abc"), WriteMode.CONDITIONAL)
    assert create.is_conditional
    assert update.is_conditional
    assert create.body is not None
    assert "id" not in json.loads(create.body)
    assert update.params == {"identifier": "https://prpgate.example/fhir/sid/flag|abc"}


def test_plan_write_refuses_a_resource_without_identifier() -> None:
    with pytest.raises(DeliveryError) as err:
        plan_write("Flag", "x", 1, '{"resourceType":"Flag"}', WriteMode.CONDITIONAL)
    assert err.value.retryable is False


def test_plan_reapply_guards_with_if_match() -> None:
    write = plan_reapply("Flag", flag_json("abc"), "srv1", "7")
    assert (write.method, write.path, write.headers["If-Match"]) == ("PUT", "Flag/srv1", 'W/"7"')


def test_breaker_opens_after_threshold_and_half_opens_after_cooldown() -> None:
    b = CircuitBreaker(threshold=2, cooldown=10.0, max_cooldown=100.0)
    assert not b.record_failure(FIXED_NOW)
    assert b.state(FIXED_NOW) is BreakerState.CLOSED
    assert b.record_failure(FIXED_NOW)
    assert b.allowance(FIXED_NOW + timedelta(seconds=9), 8) == 0
    later = FIXED_NOW + timedelta(seconds=10)
    assert b.state(later) is BreakerState.HALF_OPEN
    assert b.allowance(later, 8) == 1
    b.started(later)
    assert b.allowance(later, 8) == 0  # one trial at a time
    b.record_failure(later)  # the trial failed: open twice as long
    assert b.open_until == later + timedelta(seconds=20)
    b.record_success()
    assert b.allowance(later, 8) == 8


def test_breaker_honours_a_retry_after_at_once() -> None:
    b = CircuitBreaker(threshold=5, cooldown=1.0)
    assert b.record_failure(FIXED_NOW, retry_after=30.0)
    assert b.open_until == FIXED_NOW + timedelta(seconds=30)


def test_breaker_failures_of_writes_started_before_opening_do_not_extend_it() -> None:
    b = CircuitBreaker(threshold=1, cooldown=5.0)
    b.record_failure(FIXED_NOW)
    until = b.open_until
    b.record_failure(FIXED_NOW + timedelta(seconds=1))
    assert b.open_until == until


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30d", 30 * 86400), ("12h", 43200), ("90m", 5400), ("3600s", 3600), ("2", 172800)],
)
def test_parse_age_reads_units(text: str, seconds: int) -> None:
    assert parse_age(text) == timedelta(seconds=seconds)


def test_parse_age_refuses_other_text() -> None:
    with pytest.raises(ConfigError):
        parse_age("last tuesday")

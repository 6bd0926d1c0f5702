"""PHI redaction in logs, and how settings are layered."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest
import structlog

from prpgate.config import load_settings
from prpgate.errors import ConfigError
from prpgate.logs import configure_logging, redact_phi


def test_redact_phi_masks_patient_keys_and_pid_segments() -> None:
    event = {
        "event": "bad message",
        "patient_name": "Corvellan^Brunhilde",
        "mrn": "ZQ70003",
        "birth_date": "19660712",
        "detail": "near PID|1||ZQ70003^^^H^MR||Corvellan^Brunhilde||19660712|F",
        "control_id": "PRPFX0003",
    }
    out = redact_phi(None, "info", dict(event))
    text = json.dumps(out)
    for secret in ("ZQ70003", "Corvellan", "Brunhilde", "19660712"):
        assert secret not in text
    assert out["control_id"] == "PRPFX0003"


def _log_once(log_phi: bool) -> str:
    stream = io.StringIO()
    configure_logging(fmt="json", level="info", log_phi=log_phi, stream=stream)
    structlog.get_logger("t").info("message", mrn="ZQ70003", control_id="C1")
    return stream.getvalue()


def test_logging_redacts_by_default_and_only_when_not_enabled() -> None:
    assert "ZQ70003" not in _log_once(log_phi=False)
    assert "ZQ70003" in _log_once(log_phi=True)


def test_settings_flags_beat_environment_which_beats_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "prpgate.toml"
    cfg.write_text('[prpgate]\nstore = "from-file.sqlite"\nreplay_batch = 7\nlog_level = "debug"\n')
    monkeypatch.setenv("PRPGATE_REPLAY_BATCH", "9")
    monkeypatch.setenv("PRPGATE_LOG_LEVEL", "warning")
    s = load_settings(cfg, log_level="error", store=None)
    assert s.store == Path("from-file.sqlite")  # file (no env, flag unset)
    assert s.replay_batch == 9  # env beats file
    assert s.log_level == "error"  # flag beats env


def test_settings_errors_name_the_problem(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("replay_batch = 0\n")
    with pytest.raises(ConfigError, match="replay_batch"):
        load_settings(cfg)
    cfg.write_text("no_such_setting = 1\n")
    with pytest.raises(ConfigError, match="no_such_setting"):
        load_settings(cfg)


def test_stdlib_library_warnings_are_json_and_redacted_info_stays_out() -> None:
    stream = io.StringIO()
    configure_logging(fmt="json", level="debug", stream=stream)
    try:
        pool = logging.getLogger("psycopg.pool")
        pool.warning("error connecting in %r: %s", "prpgate-store", "connection refused")
        logging.getLogger("uvicorn.error").error("bad input near PID|1||ZQ70003^^^H^MR||X^Y")
        # httpx names each request URL at info: a patient search would name an MRN
        logging.getLogger("httpx").info("HTTP Request: GET /Patient?identifier=x|ZQ70003")
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        structlog.reset_defaults()
        root = logging.getLogger()
        for handler in [h for h in root.handlers if h.get_name() == "prpgate"]:
            root.removeHandler(handler)
    assert [(e["logger"], e["level"]) for e in lines] == [
        ("psycopg.pool", "warning"),
        ("uvicorn.error", "error"),
    ]
    assert lines[0]["event"] == "error connecting in 'prpgate-store': connection refused"
    assert "timestamp" in lines[0]
    assert "ZQ70003" not in stream.getvalue()

"""Targets, rates and the client TLS context of ``prpgate send``."""

from __future__ import annotations

from pathlib import Path

import pytest

from prpgate.errors import ConfigError
from prpgate.send.target import Target, client_tls_context, parse_rate, parse_target


def test_parse_target_mllp_and_fhir() -> None:
    assert parse_target("mllp://127.0.0.1:2575") == Target("mllp", False, "127.0.0.1", 2575)
    assert parse_target("mllps://lab.example") == Target("mllp", True, "lab.example", 2575)
    assert parse_target("MLLP://[::1]:7000") == Target("mllp", False, "::1", 7000)
    assert str(parse_target("mllp://[::1]:7000")) == "mllp://[::1]:7000"
    fhir = parse_target("https://clinic.example/r4/")
    assert (fhir.kind, fhir.tls, fhir.url) == ("fhir", True, "https://clinic.example/r4")


@pytest.mark.parametrize(
    "text",
    ["127.0.0.1:2575", "ftp://h", "mllp://", "mllp://h:99999", "mllp://h:1/path", "https://h/?q=1"],
)
def test_parse_target_refuses_what_it_cannot_send_to(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_target(text)


def test_parse_rate() -> None:
    assert parse_rate(None) is None
    assert parse_rate("max") is None
    assert parse_rate("50") == 50.0
    assert parse_rate("2.5/s") == 2.5
    for bad in ("0", "-1", "fast", "10/m"):
        with pytest.raises(ConfigError):
            parse_rate(bad)


def test_client_tls_context_checks_its_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--key needs --cert"):
        client_tls_context(key=tmp_path / "k.pem")
    with pytest.raises(ConfigError, match="cannot be loaded"):
        client_tls_context(ca=tmp_path / "missing.pem")
    assert client_tls_context().check_hostname

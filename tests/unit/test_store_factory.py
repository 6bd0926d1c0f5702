"""Which store the settings name: store_url (sqlite:/// or postgresql://) or the store file."""

from __future__ import annotations

from pathlib import Path

import pytest

from prpgate.config import Settings
from prpgate.errors import ConfigError
from prpgate.store.factory import Backend, store_location


def test_store_location_defaults_to_the_sqlite_store_file() -> None:
    where = store_location(Settings(store=Path("data/s.sqlite")))
    assert (where.backend, where.path, where.display) == (
        Backend.SQLITE,
        Path("data/s.sqlite"),
        "data/s.sqlite",
    )


def test_store_location_reads_relative_and_absolute_sqlite_urls() -> None:
    relative = store_location(Settings(store_url="sqlite:///data/s.sqlite"))
    absolute = store_location(Settings(store_url="sqlite:////var/lib/prpgate/s.sqlite"))
    assert relative.path == Path("data/s.sqlite")
    assert absolute.path == Path("/var/lib/prpgate/s.sqlite")
    assert absolute.backend is Backend.SQLITE


def test_store_location_keeps_the_postgres_password_out_of_what_it_shows() -> None:
    url = "postgresql://prp:s3cret@db.example:6432/prpgate?sslmode=require"
    where = store_location(Settings(store_url=url, store="ignored.sqlite"))
    assert where.backend is Backend.POSTGRESQL
    assert where.dsn == url
    assert where.display == "postgresql://prp@db.example:6432/prpgate"
    assert "s3cret" not in repr(Settings(store_url=url))


@pytest.mark.parametrize("url", ["mysql://db/x", "sqlite:/x", "sqlite:///", "s.sqlite"])
def test_store_location_refuses_a_url_it_cannot_open(url: str) -> None:
    with pytest.raises(ConfigError, match="store_url"):
        store_location(Settings(store_url=url))

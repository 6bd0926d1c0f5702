"""Every setting is documented in the README (the serve issue asks for all options there)."""

from __future__ import annotations

import re
from pathlib import Path

from prpgate.config import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_setting_is_named_in_the_readme() -> None:
    text = README.read_text(encoding="utf-8")
    missing = [
        name
        for name in Settings.model_fields
        if not re.search(rf"`{re.escape(name)}(`| =| \|)", text)
    ]
    assert missing == []

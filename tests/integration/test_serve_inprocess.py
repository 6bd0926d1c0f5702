"""``serve`` called in-process: what it sets for the process while it runs, and undoes."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from prpgate.config import Settings
from prpgate.core.pipeline import Engine
from prpgate.serve import serve
from tests.conftest import MAPPINGS


def test_serve_sets_the_thread_switch_interval_while_serving_and_restores_it(
    tmp_path: Path, engine: Engine
) -> None:
    settings = Settings(
        store=tmp_path / "s.sqlite",
        mappings=MAPPINGS,
        mllp_port=0,
        http_enabled=False,
        gil_switch_interval_ms=0.25,
    )
    before = sys.getswitchinterval()
    assert before != 0.00025
    seen: list[float] = []
    ports: list[dict[str, int]] = []

    async def main() -> None:
        stop = asyncio.Event()

        def ready(bound: dict[str, int]) -> None:
            seen.append(sys.getswitchinterval())
            ports.append(bound)
            stop.set()

        await asyncio.wait_for(
            serve(settings, engine=engine, stop=stop, on_ready=ready, handle_signals=False),
            timeout=30,
        )

    asyncio.run(main())
    assert len(ports) == 1
    assert ports[0]["mllp_port"] > 0
    assert seen == [0.00025]
    assert sys.getswitchinterval() == before

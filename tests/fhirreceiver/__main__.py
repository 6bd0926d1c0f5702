"""Run the receiver: ``python -m tests.fhirreceiver --port N [--bearer T] [--slow S]``."""

from __future__ import annotations

import argparse

import uvicorn

from tests.fhirreceiver.app import Config, create_app


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--bearer", default="")
    p.add_argument("--slow", type=float, default=3.0)
    a = p.parse_args()
    app = create_app(Config(bearer=a.bearer, slow=a.slow))
    uvicorn.run(app, host="127.0.0.1", port=a.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()

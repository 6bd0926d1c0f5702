"""Sending HL7 v2 messages over MLLP and settling each one: ``send_mllp``.

Messages go out over ``connections`` persistent connections (``mllp_lane.Lane``), each
with at most ``window`` messages in flight, in order per connection; every ACK is
credited to the message its MSA-2 names, or reported for what it is (late, mismatched,
not an ACK, not framed). ``mllp_lane`` says how; ``mllp_options`` holds the knobs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from prpgate.send.mllp_lane import Lane
from prpgate.send.mllp_options import MllpTarget, SendOptions, Spread
from prpgate.send.mllp_run import OnResult, RunState, result_for
from prpgate.send.outcome import Result, Status
from prpgate.send.outgoing import Outgoing

__all__ = ["MllpTarget", "SendOptions", "Spread", "send_mllp"]


async def send_mllp(
    target: MllpTarget,
    messages: Sequence[Outgoing],
    options: SendOptions | None = None,
    *,
    on_result: OnResult | None = None,
) -> tuple[list[Result], int]:
    """Send ``messages`` to ``target`` and settle each one; never raises for what the
    receiver does (refused connections, silence, wrong or unframed answers: each is a
    result).

    Returns (one Result per message, in input order; the number of ACKs that matched
    no message). ``on_result`` is called as each message is settled. Raises
    ConfigError for options that cannot work.
    """
    opts = options or SendOptions()
    opts.check()
    run = RunState(messages, opts, on_result)
    lanes = [Lane(run, n, target) for n in range(1, opts.connections + 1)]
    await asyncio.gather(*(lane.run_lane() for lane in lanes))
    if run.stopped:
        reason = "not sent: the run stopped at a message that was not positively acknowledged"
    else:
        reason = f"not sent: {run.connect_error or 'no connection could be made'}"
    for i, msg in enumerate(messages):
        if run.results[i] is None:
            run.finish(result_for(i, msg, Status.NOT_SENT, text=reason))
    results = [r for r in run.results if r is not None]
    assert len(results) == len(messages)  # every message settled exactly once
    return results, run.unmatched

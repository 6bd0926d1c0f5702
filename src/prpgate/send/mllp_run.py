"""What the connections of one ``send_mllp`` run share: the messages still to take,
the results, pacing (``rate``) and stopping (``stop_on_error``)."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from prpgate.send.ack_reading import POSITIVE_CODES, AckReading
from prpgate.send.mllp_options import SendOptions, Spread
from prpgate.send.outcome import Result, Status
from prpgate.send.outgoing import Outgoing
from prpgate.send.run import OnResult, RunProgress

__all__ = ["OnResult", "RunState", "result_for"]


class RunState(RunProgress):
    """What the lanes share: the messages still to take, results, pacing, stopping.

    Messages with a problem are settled ``NOT_SENT`` at once; the others are queued
    in groups (a file, or one message) for the lanes to take.
    """

    def __init__(
        self, messages: Sequence[Outgoing], options: SendOptions, on_result: OnResult | None
    ) -> None:
        super().__init__(len(messages), options, on_result)
        self.opts = options
        self.queue: deque[list[tuple[int, Outgoing]]] = deque()
        self.connect_error = ""
        self.unmatched = 0
        by_file: dict[str, list[tuple[int, Outgoing]]] = {}
        for i, msg in enumerate(messages):
            if msg.problem:
                self.finish(result_for(i, msg, Status.NOT_SENT, text=msg.problem))
            elif options.spread is Spread.FILE:
                group = by_file.get(msg.file)
                if group is None:
                    group = by_file[msg.file] = []
                    self.queue.append(group)
                group.append((i, msg))
            else:
                self.queue.append([(i, msg)])

    def take_group(self) -> list[tuple[int, Outgoing]] | None:
        """The next group of (input position, message), or None when none is left or
        the run stopped."""
        return self.queue.popleft() if self.queue and not self.stopped else None

    def late(self, index: int, ack: AckReading) -> None:
        """Record an ACK that came after its message was settled; a negative one makes
        the message negative."""
        result = self.results[index]
        assert result is not None  # only settled messages are remembered
        result.late_acks.append(ack.code)
        if ack.code not in POSITIVE_CODES and result.positive:
            result.positive = False
            note = f"a late {ack.code} followed" + (f": {ack.text}" if ack.text else "")
            result.text = f"{result.text}; {note}" if result.text else note


def result_for(index: int, msg: Outgoing, status: Status, *, text: str = "") -> Result:
    """A Result for ``msg`` (input position ``index``) with ``status``."""
    return Result(
        index=index,
        file=msg.file,
        number=msg.number,
        source=msg.source,
        control_id=msg.control_id,
        status=status,
        text=text,
    )

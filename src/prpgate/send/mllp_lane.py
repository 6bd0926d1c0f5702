"""One MLLP connection of a ``send_mllp`` run (a "lane"): sending, reading, matching
every acknowledgment to the message it names, timing out.

Messages go out over ``connections`` persistent connections ("lanes"), each with at
most ``window`` messages in flight, in order per lane (``Spread.FILE``: a file's
messages stay together on one lane; ``Spread.MESSAGE``: each lane takes the next
message). Bytes from the receiver go through ``core.mllp.Deframer`` (an ACK split over
many TCP writes is read whole), and each ACK is matched by its MSA-2:

* MSA-2 is a message in flight (or waiting for its retry) on this lane: that message's
  answer. A commit accept (CA) for a message that asked for an application ACK
  (MSH-16 AL/SU) starts a second wait for it.
* MSA-2 is a message this lane already settled (timed out, or answered): a late ACK,
  recorded on that message, never credited to another; a negative late ACK turns it
  negative.
* Anything else settles the oldest message in flight as a ``MISMATCH``; an answer that
  is not an ACK settles it as ``INVALID``. Bytes outside MLLP framing are never read
  as an ACK: the message they arrived for ends ``INVALID`` saying so.

Every wait has a timeout (a timer per message). On timeout, or when the receiver
closes the connection before answering, a message is sent again up to ``retries``
times with the same MSH-10 (a deduplicating receiver is safe), on a new connection if
the old one closed; after a commit accept it is never resent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict, deque

from prpgate.core.mllp import Deframer, Fault, FaultKind, Frame
from prpgate.errors import ParseError
from prpgate.send.ack_reading import POSITIVE_CODES, AckReading, read_ack
from prpgate.send.mllp_options import MllpTarget
from prpgate.send.mllp_run import RunState, result_for
from prpgate.send.outcome import Status
from prpgate.send.outgoing import Outgoing

__all__ = ["Lane"]

_READ_SIZE = 1 << 16
_REMEMBERED = 8192  # settled control ids per lane kept to recognise late ACKs
_SHOWN = 48  # bytes of unframed data quoted in a result


class _Pending:
    """A message on a lane: in flight, or waiting to be sent again."""

    __slots__ = ("acks", "app_stage", "attempts", "failure", "index", "msg", "sent_at", "timer")

    def __init__(self, index: int, msg: Outgoing) -> None:
        self.index = index
        self.msg = msg
        self.attempts = 0
        self.sent_at = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.acks: list[str] = []
        self.app_stage = False  # a CA came; the application ACK is awaited
        self.failure: tuple[Status, str] = (Status.TIMEOUT, "")  # why it waits for a retry


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if str(exc) else text


def _fault_note(faults: list[Fault]) -> tuple[bool, str]:
    """(stray data among them, what they were), for a result's text."""
    notes: list[str] = []
    stray = False
    for f in faults:
        shown = f.data[:_SHOWN].decode("latin-1")  # quoted with repr(): control bytes escaped
        if f.kind is FaultKind.STRAY:
            stray = True
            notes.append(f"{f.size} bytes arrived without MLLP framing (starting {shown!r})")
        elif f.kind is FaultKind.OVERSIZE:
            notes.append(f"an answer of {f.size} bytes, over the limit, was dropped")
        else:
            notes.append(f"an MLLP frame was cut short after {f.size} bytes")
    return stray, "; ".join(notes)


class Lane:
    """One persistent connection and the messages it carries."""

    def __init__(self, run: RunState, number: int, target: MllpTarget) -> None:
        self.run = run
        self.number = number
        self.target = target
        self.opts = run.opts
        self.loop = asyncio.get_running_loop()
        self.inflight: list[_Pending] = []
        self.retry: deque[_Pending] = deque()
        self.group: deque[tuple[int, Outgoing]] = deque()
        self.settled: OrderedDict[str, int] = OrderedDict()
        self.faults: list[Fault] = []
        self.wake = asyncio.Event()
        self.held = 0  # messages taken and not yet settled (in flight or awaiting a retry)
        self.serial = 0
        self.writer: asyncio.StreamWriter | None = None
        self.reader_task: asyncio.Task[None] | None = None
        self.deframer: Deframer | None = None

    # ------------------------------------------------------------- sending

    async def run_lane(self) -> None:
        """Send until nothing is left to take and everything held is settled."""
        try:
            await self._loop()
        finally:
            await self._close()

    async def _loop(self) -> None:
        window = self.opts.window
        while True:
            if self.retry:
                if not await self._connect():
                    self._give_up()
                    return
                await self.run.pace()
                if self.retry:
                    self._transmit(self.retry.popleft())
                    await self._drain()
                continue
            if not self.run.stopped and self.held < window:
                item = self._take()
                if item is not None:
                    self.held += 1
                    pending = _Pending(*item)
                    if not await self._connect():
                        self.retry.append(pending)
                        self._give_up()
                        return
                    await self.run.pace()
                    self._transmit(pending)
                    await self._drain()
                    continue
                if self.held == 0:
                    return
            elif self.held == 0:
                return
            self.wake.clear()
            await self.wake.wait()

    def _take(self) -> tuple[int, Outgoing] | None:
        if not self.group:
            group = self.run.take_group()
            if group is None:
                return None
            self.group.extend(group)
        return self.group.popleft()

    def _transmit(self, p: _Pending) -> None:
        writer = self.writer
        if writer is None or writer.is_closing():
            self.retry.appendleft(p)  # not sent: the loop reconnects first
            return
        p.attempts += 1
        p.sent_at = self.loop.time()
        self.inflight.append(p)
        writer.write(p.msg.framed)
        if p.msg.wait.expects_answer:
            self._arm(p)
        else:
            self._finish(
                p,
                Status.UNCONFIRMED,
                text="MSH-15/MSH-16 ask for no acknowledgment: delivery is not confirmed",
            )

    async def _drain(self) -> None:
        writer = self.writer
        if writer is None:
            return
        # on an error the reader sees the connection end and settles what was in flight
        with contextlib.suppress(OSError):
            await writer.drain()

    async def _connect(self) -> bool:
        if (
            self.writer is not None
            and not self.writer.is_closing()
            and self.reader_task is not None
            and not self.reader_task.done()
        ):
            return True
        if self.inflight:  # the connection ended before its reader said so
            self._on_closed("the connection ended before the answer")
        await self._close()
        t = self.target
        attempts = self.opts.retries + 1
        for attempt in range(attempts):
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(
                        t.host, t.port, ssl=t.tls, server_hostname=t.server_hostname
                    ),
                    self.opts.connect_timeout,
                )
            except (OSError, TimeoutError) as exc:
                reason = "timed out" if isinstance(exc, TimeoutError) else _describe(exc)
                self.run.connect_error = f"cannot connect to {t}: {reason}"
                if attempt + 1 < attempts:
                    await asyncio.sleep(min(0.2 * 2**attempt, 2.0))
                continue
            self.serial += 1
            self.writer = writer
            self.deframer = Deframer(self.opts.max_ack_bytes)
            self.faults = []
            self.reader_task = asyncio.create_task(self._read(reader, self.serial))
            return True
        return False

    def _give_up(self) -> None:
        """No connection could be made: settle what this lane holds."""
        reason = self.run.connect_error
        for p in list(self.inflight):
            self._finish(p, Status.CLOSED, text=f"the connection ended before the answer; {reason}")
        for p in list(self.retry):
            if p.attempts:
                status, text = p.failure
                self._finish(p, status, text=f"{text}; the retry could not be sent: {reason}")
            else:
                self._finish(p, Status.NOT_SENT, text=f"not sent: {reason}")
        while self.group:
            index, msg = self.group.popleft()
            self.run.finish(result_for(index, msg, Status.NOT_SENT, text=f"not sent: {reason}"))

    async def _close(self) -> None:
        self.serial += 1  # whatever the old reader still sees belongs to no one
        task, writer = self.reader_task, self.writer
        self.reader_task = self.writer = None
        if task is not None:
            task.cancel()
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 2.0)

    # ------------------------------------------------------------- receiving

    async def _read(self, reader: asyncio.StreamReader, serial: int) -> None:
        reason = "the receiver closed the connection before answering"
        deframer = self.deframer
        assert deframer is not None  # set with the connection
        try:
            while True:
                data = await reader.read(_READ_SIZE)
                if not data or serial != self.serial:
                    break
                for event in deframer.feed(data):
                    self._on_event(event)
        except OSError as exc:
            reason = f"connection lost before the answer ({_describe(exc)})"
        if serial != self.serial:
            return
        for event in deframer.finish():
            self._on_event(event)
        self._on_closed(reason)

    def _on_event(self, event: Frame | Fault) -> None:
        if isinstance(event, Fault):
            p = self._oldest()
            if event.kind is FaultKind.OVERSIZE and p is not None:
                limit = self.opts.max_ack_bytes
                text = f"an answer of {event.size} bytes, over the {limit}-byte limit"
                self._finish(p, Status.INVALID, text=text)
            else:
                self.faults.append(event)
            return
        try:
            ack = read_ack(event.data)
        except ParseError as exc:
            p = self._oldest()
            if p is None:
                self.run.unmatched += 1
            else:
                self._finish(
                    p, Status.INVALID, text=f"the answer is not an HL7 acknowledgment: {exc}"
                )
            return
        self._on_ack(ack)

    def _on_ack(self, ack: AckReading) -> None:
        p = self._match(ack.control_id)
        if p is not None:
            self._credit(p, ack)
            return
        settled = self.settled.get(ack.control_id)
        if settled is not None:
            self.run.late(settled, ack)
            return
        p = self._oldest()
        if p is None:
            self.run.unmatched += 1
            return
        got = ack.control_id or "an empty MSA-2"
        text = f"an ACK ({ack.code}) for {got!r} came instead of one for {p.msg.control_id!r}"
        self._finish(p, Status.MISMATCH, text=text)

    def _match(self, control_id: str) -> _Pending | None:
        for p in self.inflight:
            if p.msg.control_id == control_id:
                return p
        for p in self.retry:
            if p.msg.control_id == control_id:
                return p
        return None

    def _oldest(self) -> _Pending | None:
        return self.inflight[0] if self.inflight else None

    def _credit(self, p: _Pending, ack: AckReading) -> None:
        p.acks.append(ack.code)
        wait = p.msg.wait
        if ack.code == "CA" and not wait.original and wait.application and not p.app_stage:
            p.app_stage = True
            if p in self.retry:  # answered after all: wait for its application ACK in flight
                self.retry.remove(p)
                self.inflight.append(p)
            self._arm(p)
            return
        text = ack.text
        if not ack.is_known:
            text = f"unknown acknowledgment code {ack.code!r}" + (f": {text}" if text else "")
        self._finish(
            p,
            Status.ANSWERED,
            code=ack.code,
            positive=ack.is_known and ack.code in POSITIVE_CODES,
            text=text,
            error_codes=ack.error_codes,
        )

    # ------------------------------------------------------------- timing out

    def _arm(self, p: _Pending) -> None:
        if p.timer is not None:
            p.timer.cancel()
        p.timer = self.loop.call_later(self.opts.timeout, self._expire, p)

    def _take_faults(self) -> tuple[bool, str]:
        d = self.deframer
        faults = self.faults
        if d is not None and not d.in_frame and d.buffered:
            # stray bytes waiting for a <VT> that may never come
            faults += [e for e in d.finish() if isinstance(e, Fault)]
        self.faults = []
        stray, note = _fault_note(faults)
        if d is not None and d.in_frame and d.buffered:
            part = f"an answer began ({d.buffered} bytes) but its MLLP frame did not end"
            note = f"{note}; {part}" if note else part
        return stray, note

    def _expire(self, p: _Pending) -> None:
        p.timer = None
        if p not in self.inflight:
            return
        stray, note = self._take_faults()
        t = f"{self.opts.timeout:g} s"
        if stray:
            self._finish(p, Status.INVALID, text=f"no MLLP-framed answer within {t}: {note}")
            return
        if p.app_stage:
            text = f"commit accept (CA) received; no application ACK within {t}"
        else:
            text = f"no ACK within {t}"
        if note:
            text = f"{text} ({note})"
        if not p.app_stage and p.attempts <= self.opts.retries:
            self.inflight.remove(p)
            p.failure = (Status.TIMEOUT, text)
            self.retry.append(p)
            self.wake.set()
            return
        if p.attempts > 1:
            text = f"{text}, {p.attempts} attempts"
        self._finish(p, Status.TIMEOUT, text=text)

    def _on_closed(self, reason: str) -> None:
        writer = self.writer
        self.writer = None  # the reader task ends by itself; _close() reaps it
        if writer is not None:
            writer.close()
        stray, note = self._take_faults()
        pending, self.inflight = self.inflight, []
        for n, p in enumerate(pending):
            if p.timer is not None:
                p.timer.cancel()
                p.timer = None
            if n == 0 and stray:
                self._finish(p, Status.INVALID, text=f"{note}; then {reason}")
                continue
            text = reason if n or not note else f"{reason} ({note})"
            if p.app_stage:
                self._finish(p, Status.CLOSED, text=f"commit accept (CA) received; {text}")
            elif p.attempts <= self.opts.retries:
                p.failure = (Status.CLOSED, text)
                self.retry.append(p)
            else:
                self._finish(p, Status.CLOSED, text=text)
        self.wake.set()

    # ------------------------------------------------------------- settling

    def _finish(
        self,
        p: _Pending,
        status: Status,
        *,
        code: str = "",
        positive: bool = False,
        text: str = "",
        error_codes: tuple[str, ...] = (),
    ) -> None:
        if p in self.inflight:
            self.inflight.remove(p)
        elif p in self.retry:
            self.retry.remove(p)
        if p.timer is not None:
            p.timer.cancel()
            p.timer = None
        answered = status is Status.ANSWERED
        result = result_for(p.index, p.msg, status, text=text)
        result.code = code
        result.positive = positive
        result.latency = self.loop.time() - p.sent_at if answered else None
        result.attempts = p.attempts
        result.connection = self.number
        result.acks = p.acks
        result.error_codes = list(error_codes)
        settled = self.settled
        settled[p.msg.control_id] = p.index
        settled.move_to_end(p.msg.control_id)
        if len(settled) > _REMEMBERED:
            settled.popitem(last=False)
        self.held -= 1
        self.wake.set()
        self.run.finish(result)

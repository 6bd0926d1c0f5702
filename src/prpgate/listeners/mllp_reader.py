"""The reading side of an MLLP connection: bytes in, frames out, each frame submitted to
the committer in arrival order with its answer queued (``Pending``) for the responder.

The queue is bounded by ``in_flight``: when the store falls behind, the reader waits for
room and stops reading (TCP backpressure) instead of buffering without bound. A framing
fault is recorded (``mllp_records``) and answered only when oversize; a frame holding no
HL7 v2 is recorded and answered AR/CR unprocessed (``mllp_not_hl7``).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass

import structlog

from prpgate.core.ack import AckContext, plan, read_context
from prpgate.core.mllp import Deframer, Fault, FaultKind, Frame
from prpgate.core.pipeline import AckCode, ErrorInfo
from prpgate.ingest import Ingested
from prpgate.listeners.mllp_not_hl7 import not_hl7, not_hl7_record
from prpgate.listeners.mllp_ports import Committer, ListenerEvents, MllpConfig
from prpgate.listeners.mllp_records import fault_record
from prpgate.ports import Clock

__all__ = ["END", "Connection", "MllpReader", "Pending"]

_log = structlog.get_logger("prpgate.mllp")


@dataclass(slots=True)
class Pending:
    """One answer owed to the sender, in arrival order."""

    ctx: AckContext
    raw: bytes
    arrived: float
    refusal: ErrorInfo | None = None  # answered AR/CR unprocessed: oversize, not HL7
    future: asyncio.Future[Ingested] | asyncio.Future[int] | None = None


@dataclass(slots=True, eq=False)  # identity: connections live in a set
class Connection:
    """One open connection: its peer, writer and reader task, and what is in flight."""

    peer: str
    source: str
    writer: asyncio.StreamWriter
    reader_task: asyncio.Task[None] | None = None
    reading: bool = False
    outstanding: int = 0
    broken: bool = False
    messages: int = 0


END = object()  # put on a connection's queue after its last answer


class MllpReader:
    """The listener's reading side (``MllpListener`` inherits it)."""

    _cfg: MllpConfig
    _committer: Committer
    _clock: Clock
    _events: ListenerEvents
    _closing: bool

    async def _read(
        self,
        conn: Connection,
        reader: asyncio.StreamReader,
        pending: asyncio.Queue[Pending | object],
    ) -> None:
        cfg = self._cfg
        deframer = Deframer(cfg.max_message_bytes, keep_bytes=cfg.keep_bytes)
        while not conn.broken and not self._closing:
            conn.reading = True  # only a reader waiting for bytes is cancelled by stop()
            try:
                # asyncio.timeout, not wait_for: in 3.11 wait_for can swallow the
                # cancellation stop() sends when a read completes at the same moment
                async with asyncio.timeout(cfg.idle_timeout):
                    data = await reader.read(cfg.read_size)
            except TimeoutError:
                if conn.outstanding == 0:
                    _log.info("mllp idle timeout", peer=conn.peer, seconds=cfg.idle_timeout)
                    data = b""
                else:
                    continue
            except (ConnectionError, ssl.SSLError) as exc:
                _log.info("mllp read failed", peer=conn.peer, error=type(exc).__name__)
                data = b""
            finally:
                conn.reading = False
            if not data:  # end of stream, idle or broken: a frame cut short is a fault
                await self._dispatch(conn, deframer.finish(), pending)
                break
            # frames already received are answered, even when stopping
            await self._dispatch(conn, deframer.feed(data), pending)

    async def _dispatch(
        self,
        conn: Connection,
        events: list[Frame | Fault],
        pending: asyncio.Queue[Pending | object],
    ) -> None:
        for event in events:
            now = self._clock.now()
            arrived = time.perf_counter()
            if isinstance(event, Frame):
                self._events.frame_received()
                conn.messages += 1
                ctx = read_context(
                    event.data,
                    charset_overrides=self._cfg.charset_overrides,
                    enhanced=self._cfg.enhanced_acks,
                )
                refusal = not_hl7(event.data)
                if refusal is not None:  # FHIR JSON over MLLP: refused, never processed
                    self._events.fault("not-hl7")
                    _log.warning("mllp frame is not HL7 v2", peer=conn.peer, bytes=len(event.data))
                    answer = plan(ctx, AckCode.AR, committed=True)
                    record = not_hl7_record(
                        event.data,
                        refusal,
                        source=conn.source,
                        received_at=now,
                        answered=answer[0].value if answer else "",
                    )
                    item = Pending(ctx, event.data, arrived, refusal=refusal)
                    await pending.put(item)
                    item.future = self._committer.submit_record(record)
                    conn.outstanding += 1
                    continue
                item = Pending(ctx, event.data, arrived)
                # queue the answer first, then submit: a reader stopped while waiting
                # for room has submitted nothing it will not answer
                await pending.put(item)
                item.future = self._committer.submit(
                    event.data, source=conn.source, received_at=now
                )
                conn.outstanding += 1
                continue
            self._events.fault(event.kind.value)
            _log.warning(
                "mllp framing fault",
                peer=conn.peer,
                fault=event.kind.value,
                bytes=event.size,
            )
            if event.kind is FaultKind.OVERSIZE:
                ctx = read_context(
                    event.data,
                    charset_overrides=self._cfg.charset_overrides,
                    enhanced=self._cfg.enhanced_acks,
                )
                answer = plan(ctx, AckCode.AR, committed=True)
                record = fault_record(
                    event,
                    source=conn.source,
                    received_at=now,
                    answered=answer[0].value if answer else "",
                )
                limit = self._cfg.max_message_bytes
                item = Pending(
                    ctx,
                    event.data,
                    arrived,
                    refusal=ErrorInfo(
                        207, "message", f"message is {event.size} bytes; the limit is {limit} bytes"
                    ),
                )
                await pending.put(item)
                item.future = self._committer.submit_record(record)
                conn.outstanding += 1
            else:
                rec = fault_record(event, source=conn.source, received_at=now)
                self._committer.submit_record(rec).add_done_callback(_log_record_failure)


def _log_record_failure(fut: asyncio.Future[int]) -> None:
    if fut.cancelled():
        return
    exc = fut.exception()
    if exc is not None:
        _log.error("could not record a framing fault", error=str(exc))

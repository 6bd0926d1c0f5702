"""The answering side of an MLLP connection: waits for each commit in arrival order and
writes the acknowledgments the sender asked for (``core.ack.plan``), so pipelined messages
are answered in the order they came. A committer failure is answered AR (original mode)
or CE (enhanced mode), HL7 error 207, so the sender retries.
"""

from __future__ import annotations

import asyncio
import itertools
import ssl
import time
from datetime import datetime

import structlog

from prpgate.core.ack import AcceptCode, Ack, build_ack, plan
from prpgate.core.mllp import frame
from prpgate.core.pipeline import AckCode, ErrorInfo
from prpgate.errors import StoreError
from prpgate.ingest import Ingested
from prpgate.listeners.mllp_ports import ListenerEvents, MllpConfig
from prpgate.listeners.mllp_reader import END, Connection, Pending
from prpgate.ports import Clock

__all__ = ["MllpResponder"]

_log = structlog.get_logger("prpgate.mllp")
_POSITIVE = frozenset({AckCode.AA, AcceptCode.CA})


class MllpResponder:
    """The listener's answering side (``MllpListener`` inherits it)."""

    _cfg: MllpConfig
    _clock: Clock
    _events: ListenerEvents
    _ack_prefix: str
    _ack_seq: itertools.count[int]

    async def _respond(self, conn: Connection, pending: asyncio.Queue[Pending | object]) -> None:
        while True:
            item = await pending.get()
            if item is END:
                return
            assert isinstance(item, Pending)
            try:
                acks = await self._answer(item)
            except Exception:  # a worker iteration: log, drop the connection, keep draining
                _log.exception("mllp could not answer a message", peer=conn.peer)
                acks = []
                conn.broken = True
                if conn.reader_task is not None:
                    conn.reader_task.cancel()
            finally:
                conn.outstanding -= 1
            if conn.broken or not acks:
                continue
            try:
                conn.writer.write(b"".join(frame(a.data) for a in acks))
                async with asyncio.timeout(self._cfg.write_timeout):
                    await conn.writer.drain()
            except (ConnectionError, TimeoutError, ssl.SSLError) as exc:
                _log.info("mllp write failed", peer=conn.peer, error=type(exc).__name__)
                conn.broken = True
                if conn.reader_task is not None:
                    conn.reader_task.cancel()
                continue
            elapsed = time.perf_counter() - item.arrived
            for a in acks:
                self._events.acked(a.code.value, elapsed)

    async def _answer(self, item: Pending) -> list[Ack]:
        """Wait for the commit, then build the acknowledgments the sender asked for."""
        assert item.future is not None
        if item.refusal is not None:
            committed = True
            try:
                await item.future
            except StoreError:
                committed = False
                self._events.fault("store")
            now = self._clock.now()  # MSH-7 of the ACK: after the commit
            errors: tuple[ErrorInfo, ...] = (item.refusal,)
            codes = plan(item.ctx, AckCode.AR, committed=committed)
            return [self._build(item, c, errors, now) for c in codes]
        try:
            result = await item.future
        except StoreError as exc:
            now = self._clock.now()
            self._events.fault("store")
            _log.error("store failed; answering so the sender retries", error=exc.args[0])
            errors = (ErrorInfo(207, "message", "the message could not be stored; send again"),)
            codes = plan(item.ctx, AckCode.AR, committed=False)
            return [self._build(item, c, errors, now) for c in codes]
        assert isinstance(result, Ingested)
        now = self._clock.now()
        self._events.processed(result)
        self._log_result(result)
        codes = plan(item.ctx, result.ack, committed=True)
        return [self._build(item, c, () if c in _POSITIVE else result.errors, now) for c in codes]

    def _build(
        self,
        item: Pending,
        code: AckCode | AcceptCode,
        errors: tuple[ErrorInfo, ...],
        now: datetime,
    ) -> Ack:
        control = f"{self._ack_prefix}{next(self._ack_seq):010d}"
        return build_ack(item.ctx, code, errors, raw=item.raw, control_id=control, now=now)

    @staticmethod
    def _log_result(result: Ingested) -> None:
        h = result.reading.header
        fields = {
            "control_id": h.control_id if h else "",
            "facility": h.sending_facility if h else "",
            "disposition": result.disposition.value,
            "ack": result.ack.value,
        }
        if result.reuse_of is not None:
            fields["reuse_of"] = str(result.reuse_of)
        if result.disposition.value in ("accepted", "duplicate"):
            _log.debug("message", **fields)
        else:
            codes = ",".join(str(e.code) for e in result.errors)
            _log.info("message not accepted", errors=codes, **fields)

"""``send_mllp`` against small misbehaving MLLP servers on 127.0.0.1: every answer is
credited to the message its MSA-2 names, or reported for what it is; nothing is
counted twice or credited to another message.

The servers read frames with ``StreamReader.readuntil`` (not prpgate's deframer) and
write answers by hand.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from prpgate.send.mllp_client import MllpTarget, SendOptions, send_mllp
from prpgate.send.outcome import Result, Status
from prpgate.send.outgoing import Outgoing, outgoing

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
VT, FS_CR = b"\x0b", b"\x1c\r"
RUN_LIMIT = 60.0


def message(n: int, msh15: str = "", msh16: str = "", *, file: str = "t.hl7") -> Outgoing:
    raw = (
        "MSH|^~\\&|LAB|NORTH|PRP|CLINIC|20260101120000||ORU^R01^ORU_R01|"
        f"T{n:04d}|P|2.5.1|||{msh15}|{msh16}\rPID|1\rOBR|1\r"
    ).encode()
    return outgoing(raw, file=file, number=n, source=f"{file}#{n}")


def ack(control: bytes | str, code: str = "AA", text: str = "") -> bytes:
    """An ACK as another engine would write it (framing not included)."""
    cid = control.decode() if isinstance(control, bytes) else control
    err = f"ERR|||207^Application internal error^HL70357|E||||{text}\r" if text else ""
    body = f"MSH|^~\\&|SRV|X|LAB|NORTH|20260101120001||ACK^R01^ACK|A-{cid}|P|2.5.1\r"
    return f"{body}MSA|{code}|{cid}\r{err}".encode()


def framed(data: bytes) -> bytes:
    return VT + data + FS_CR


def control_of(frame: bytes) -> bytes:
    return frame.lstrip(VT).split(b"|")[9]


async def read_frame(reader: asyncio.StreamReader) -> bytes | None:
    try:
        return (await reader.readuntil(FS_CR))[:-2]
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


@dataclass
class Seen:
    """What a test server received: (connection number, frame) in arrival order."""

    frames: list[tuple[int, bytes]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    connections: int = 0

    def add(self, conn: int, frame: bytes) -> None:
        self.frames.append((conn, frame))
        self.times.append(time.monotonic())

    def controls(self) -> list[str]:
        return [control_of(f).decode() for _, f in self.frames]


def exchange(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]],
    messages: list[Outgoing],
    options: SendOptions,
) -> tuple[list[Result], int]:
    """Start the server, send, return (results, unmatched ACKs); everything bounded."""

    async def run() -> tuple[list[Result], int]:
        count = 0

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal count
            count += 1
            try:
                await handler(reader, writer, count)
            finally:
                writer.close()

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            target = MllpTarget("127.0.0.1", port)
            return await asyncio.wait_for(send_mllp(target, messages, options), RUN_LIMIT)
        finally:
            server.close()

    return asyncio.run(run())


def statuses(results: list[Result]) -> list[tuple[str, str, str, bool]]:
    return [(r.control_id, r.status.value, r.code, r.positive) for r in results]


# ------------------------------------------------------------------ the wire


def test_send_reads_an_ack_split_over_many_tcp_writes() -> None:
    seen = Seen()

    async def dribble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while (frame := await read_frame(reader)) is not None:
            seen.add(n, frame)
            for byte in framed(ack(control_of(frame))):
                writer.write(bytes([byte]))  # one byte per write, each flushed
                await writer.drain()
                await asyncio.sleep(0.0005)

    results, unmatched = exchange(dribble, [message(i) for i in (1, 2, 3)], SendOptions())
    assert statuses(results) == [(f"T000{i}", "answered", "AA", True) for i in (1, 2, 3)]
    assert all(r.acks == ["AA"] and r.latency is not None for r in results)
    assert unmatched == 0
    assert seen.controls() == ["T0001", "T0002", "T0003"]


def test_send_reports_acks_with_the_wrong_msa2_as_mismatches() -> None:
    async def wrong(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while (frame := await read_frame(reader)) is not None:
            writer.write(framed(ack(b"OTHER-" + control_of(frame))))

    results, unmatched = exchange(wrong, [message(1), message(2)], SendOptions(timeout=5))
    assert statuses(results) == [("T0001", "mismatch", "", False), ("T0002", "mismatch", "", False)]
    assert "for 'OTHER-T0001' came instead of one for 'T0001'" in results[0].text
    assert all(r.acks == [] and r.late_acks == [] for r in results)  # nothing credited
    assert unmatched == 0


def test_send_a_late_ack_is_recorded_on_its_message_never_credited_to_the_next() -> None:
    # The server keeps T0001's ACK until T0002 arrives (sent only once T0001 timed out),
    # then writes T0001's ACK and right after it T0002's: the late one must not count
    # for T0002.
    held: list[bytes] = []

    async def late(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while (frame := await read_frame(reader)) is not None:
            cid = control_of(frame)
            if cid == b"T0001":
                held.append(cid)
                continue
            for old in held:
                writer.write(framed(ack(old)))
            held.clear()
            writer.write(framed(ack(cid, "AE", "second is wrong") if cid == b"T0002" else ack(cid)))

    msgs = [message(1), message(2), message(3)]
    results, unmatched = exchange(late, msgs, SendOptions(timeout=1.0))
    assert statuses(results) == [
        ("T0001", "timeout", "", False),
        ("T0002", "answered", "AE", False),
        ("T0003", "answered", "AA", True),
    ]
    assert results[0].late_acks == ["AA"]
    assert results[0].text == "no ACK within 1 s"
    assert results[1].acks == ["AE"]
    assert results[1].text == "second is wrong"
    assert results[1].late_acks == []
    assert unmatched == 0


def test_send_no_ack_and_connection_closed() -> None:
    seen = Seen()

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        seen.connections += 1
        frame = await read_frame(reader)
        if frame is not None:
            seen.add(n, frame)  # ...and close without an answer

    results, _ = exchange(hang_up, [message(1), message(2)], SendOptions(timeout=5))
    assert statuses(results) == [("T0001", "closed", "", False), ("T0002", "closed", "", False)]
    assert results[0].text == "the receiver closed the connection before answering"
    assert seen.controls() == ["T0001", "T0002"]
    assert seen.connections == 2  # a new connection for the second message


def test_send_retries_on_a_closed_connection_with_the_same_bytes() -> None:
    seen = Seen()

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        frame = await read_frame(reader)
        if frame is not None:
            seen.add(n, frame)

    results, _ = exchange(hang_up, [message(1), message(2)], SendOptions(timeout=5, retries=1))
    assert [(r.status, r.attempts) for r in results] == [(Status.CLOSED, 2)] * 2
    frames = [f for _, f in seen.frames]
    assert seen.controls() == ["T0001", "T0001", "T0002", "T0002"]
    assert frames[0] == frames[1]
    assert frames[2] == frames[3]


def test_send_retry_after_timeout_resends_the_same_msh10() -> None:
    # A deduplicating receiver that drops the first copy of every message.
    seen = Seen()

    async def second_copy(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int
    ) -> None:
        copies: dict[bytes, int] = {}
        while (frame := await read_frame(reader)) is not None:
            seen.add(n, frame)
            cid = control_of(frame)
            copies[cid] = copies.get(cid, 0) + 1
            if copies[cid] == 2:
                writer.write(framed(ack(cid)))

    results, _ = exchange(
        second_copy, [message(1), message(2)], SendOptions(timeout=1.0, retries=2)
    )
    assert statuses(results) == [
        ("T0001", "answered", "AA", True),
        ("T0002", "answered", "AA", True),
    ]
    assert [r.attempts for r in results] == [2, 2]
    assert seen.controls() == ["T0001", "T0001", "T0002", "T0002"]
    assert seen.frames[0][1] == seen.frames[1][1]


def test_send_an_ack_without_mllp_framing_is_not_read_as_an_ack() -> None:
    async def bare(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while (frame := await read_frame(reader)) is not None:
            writer.write(ack(control_of(frame)))  # no <VT> ... <FS><CR>

    results, unmatched = exchange(bare, [message(1), message(2)], SendOptions(timeout=0.5))
    assert statuses(results) == [("T0001", "invalid", "", False), ("T0002", "invalid", "", False)]
    for r in results:
        assert "bytes arrived without MLLP framing (starting 'MSH|^~\\\\&|SRV" in r.text
        assert r.acks == []
    assert unmatched == 0


def test_send_a_framed_answer_that_is_not_an_ack_is_invalid() -> None:
    async def chatter(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while await read_frame(reader) is not None:
            writer.write(framed(b"thank you"))

    results, _ = exchange(chatter, [message(1)], SendOptions(timeout=5))
    assert statuses(results) == [("T0001", "invalid", "", False)]
    assert results[0].text.startswith("the answer is not an HL7 acknowledgment")


def test_send_a_frame_cut_short_by_the_close_is_reported() -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        frame = await read_frame(reader)
        if frame is not None:
            writer.write(framed(ack(control_of(frame)))[:30])
            await writer.drain()

    results, _ = exchange(cut, [message(1)], SendOptions(timeout=5))
    assert statuses(results) == [("T0001", "closed", "", False)]
    assert "an MLLP frame was cut short after 29 bytes" in results[0].text


def test_send_credits_out_of_order_acks_in_a_window_by_msa2() -> None:
    answers = {b"T0001": ("AA", ""), b"T0002": ("AE", "two"), b"T0003": ("AR", "three")}
    answers[b"T0004"] = ("AA", "")

    async def reverse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        batch: list[bytes] = []
        while (frame := await read_frame(reader)) is not None:
            batch.append(control_of(frame))
            if len(batch) == 4:
                writer.write(b"".join(framed(ack(c, *answers[c])) for c in reversed(batch)))
                batch.clear()

    msgs = [message(i) for i in (1, 2, 3, 4)]
    results, unmatched = exchange(reverse, msgs, SendOptions(window=4, timeout=5))
    assert [(r.control_id, r.code, r.text) for r in results] == [
        ("T0001", "AA", ""),
        ("T0002", "AE", "two"),
        ("T0003", "AR", "three"),
        ("T0004", "AA", ""),
    ]
    assert unmatched == 0


# ------------------------------------------------------------- enhanced mode


def test_send_waits_for_the_application_ack_msh16_asks_for() -> None:
    async def enhanced(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while (frame := await read_frame(reader)) is not None:
            cid = control_of(frame)
            writer.write(framed(ack(cid, "CA")))
            await writer.drain()
            if cid == b"T0001":
                writer.write(framed(ack(cid, "AA")))
            elif cid == b"T0002":
                writer.write(framed(ack(cid, "AE", "OBX[1]-5: not a number")))
            # T0003: no application ACK ever; T0004 asked for none

    msgs = [message(1, "AL", "AL"), message(2, "AL", "AL"), message(3, "AL", "AL")]
    msgs.append(message(4, "AL", "NE"))
    results, _ = exchange(enhanced, msgs, SendOptions(timeout=1.0))
    assert statuses(results) == [
        ("T0001", "answered", "AA", True),
        ("T0002", "answered", "AE", False),
        ("T0003", "timeout", "", False),
        ("T0004", "answered", "CA", True),
    ]
    assert [r.acks for r in results] == [["CA", "AA"], ["CA", "AE"], ["CA"], ["CA"]]
    assert results[1].text == "OBX[1]-5: not a number"
    assert results[2].text == "commit accept (CA) received; no application ACK within 1 s"


def test_send_a_message_asking_for_no_ack_is_unconfirmed() -> None:
    seen = Seen()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while (frame := await read_frame(reader)) is not None:
            seen.add(n, frame)

    results, _ = exchange(silent, [message(1, "NE", "NE")], SendOptions(timeout=5))
    assert statuses(results) == [("T0001", "unconfirmed", "", False)]
    assert seen.controls() == ["T0001"]


# ------------------------------------------------------- connections, pacing


def test_send_connection_refused_sends_nothing_and_says_why() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        results, _ = asyncio.run(
            send_mllp(MllpTarget("127.0.0.1", port), [message(1), message(2)], SendOptions())
        )
    assert [r.status for r in results] == [Status.NOT_SENT, Status.NOT_SENT]
    assert all(f"cannot connect to mllp://127.0.0.1:{port}" in r.text for r in results)


def test_send_stop_on_error_sends_nothing_after_the_first_negative_ack() -> None:
    seen = Seen()

    async def second_fails(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int
    ) -> None:
        while (frame := await read_frame(reader)) is not None:
            seen.add(n, frame)
            cid = control_of(frame)
            writer.write(framed(ack(cid, "AR", "no") if cid == b"T0002" else ack(cid)))

    msgs = [message(i) for i in (1, 2, 3, 4)]
    results, _ = exchange(second_fails, msgs, SendOptions(stop_on_error=True))
    assert [r.status.value for r in results] == ["answered", "answered", "not-sent", "not-sent"]
    assert "the run stopped" in results[2].text
    assert seen.controls() == ["T0001", "T0002"]


def test_send_keeps_a_files_messages_on_one_connection_in_order() -> None:
    seen = Seen()

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while (frame := await read_frame(reader)) is not None:
            seen.add(n, frame)
            writer.write(framed(ack(control_of(frame))))

    msgs = [message(f * 10 + i, file=f"f{f}.hl7") for f in (1, 2, 3) for i in (1, 2, 3, 4)]
    results, _ = exchange(echo, msgs, SendOptions(connections=3))
    assert all(r.positive for r in results)
    by_file: dict[str, set[int]] = {}
    order: dict[str, list[str]] = {}
    for conn, frame in seen.frames:
        cid = control_of(frame).decode()
        by_file.setdefault(cid[:4], set()).add(conn)
        order.setdefault(cid[:4], []).append(cid)
    assert all(len(conns) == 1 for conns in by_file.values())
    assert len(set().union(*by_file.values())) == 3
    assert order == {f"T00{f}": [f"T00{f}{i}" for i in (1, 2, 3, 4)] for f in (1, 2, 3)}


def test_send_rate_spaces_the_messages() -> None:
    seen = Seen()

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while (frame := await read_frame(reader)) is not None:
            seen.add(n, frame)
            writer.write(framed(ack(control_of(frame))))

    msgs = [message(i) for i in range(1, 7)]
    results, _ = exchange(echo, msgs, SendOptions(connections=2, window=4, rate=20))
    assert all(r.positive for r in results)
    # six sends at 20/s span at least five 50 ms intervals (load can only stretch them)
    assert seen.times[-1] - seen.times[0] >= 5 / 20 * 0.9

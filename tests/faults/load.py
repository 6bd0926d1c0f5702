"""Senders that keep a server under load through crashes: an MLLP sender (one persistent
connection, a window of messages in flight) and a FHIR sender (POSTs with an
``X-Request-Id``), each on its own thread.

Each keeps a ledger of its inputs: how often each was sent and the answer that settled
it. An input not positively answered (no answer before the connection broke, a store
failure: ``AR`` with HL7 error 207, HTTP 503, a timeout) is sent again, the same bytes
with the same key, after reconnecting, until it is answered; a deduplicating receiver
stores it once.
"""

from __future__ import annotations

import collections
import socket
import threading
import time
from collections.abc import Callable

import hl7
import httpx

from prpgate.core.mllp import Deframer, Frame, frame
from tests.faults.inputs import Input

__all__ = ["FhirSender", "MllpSender", "Sender", "answered"]

IO_TIMEOUT = 15.0
RECONNECT_PAUSE = 0.05


def ack_of(data: bytes) -> tuple[str, str, str]:
    """(MSA-1, MSA-2, the HL7 error code) of an ACK, read with python-hl7: ERR-3 from
    v2.5 on, ERR-1's fourth component before."""
    msg = hl7.parse(data.decode())
    msa = msg.segment("MSA")
    code = ""
    for path in ((3, 1, 1, 1), (1, 1, 4, 1)):
        try:
            code = str(msg.extract_field("ERR", 1, *path)) or code
        except (KeyError, IndexError):
            continue
    return str(msa[1]), str(msa[2]), code


class Sender(threading.Thread):
    """What both senders share: the ledger, new inputs on demand, inputs to send again."""

    def __init__(self, name: str, make: Callable[[int], Input], rate: float = 0.0) -> None:
        super().__init__(name=name, daemon=True)
        self.make = make
        self.interval = 1.0 / rate if rate else 0.0  # between new inputs (0: no pacing)
        self._next_new = 0.0
        self.inputs: list[Input] = []
        self.again: collections.deque[Input] = collections.deque()
        self.lock = threading.Lock()
        self.no_new = threading.Event()  # stop taking new inputs; finish the others
        self.halt = threading.Event()  # give up at once
        self.failures = 0  # connections or requests that broke
        self.store_failures = 0  # answered "not stored, send again": AR 207, HTTP 503
        self.problems: list[str] = []  # answers that make no sense (asserted empty)

    def next_input(self) -> Input | None:
        """An input to send again, else a new one, else None (no new inputs wanted)."""
        with self.lock:
            if self.again:
                return self.again.popleft()
        if self.interval:  # paced: new inputs at most ``rate`` per second
            wait = self._next_new - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self._next_new = max(self._next_new, time.monotonic()) + self.interval
        with self.lock:
            if self.no_new.is_set():
                return None
            item = self.make(len(self.inputs))
            self.inputs.append(item)
            return item

    def run(self) -> None:
        try:
            self._run()
        except Exception as exc:  # the thread's top: fail the test with it, not a warning
            self.problems.append(f"{type(exc).__name__}: {exc}")
            self.halt.set()

    def _run(self) -> None:
        raise NotImplementedError

    def unsettled(self) -> int:
        """Inputs taken but not yet answered for good."""
        with self.lock:
            return sum(1 for i in self.inputs if not i.answer)

    def acked(self) -> int:
        """Inputs positively answered."""
        with self.lock:
            return sum(1 for i in self.inputs if i.acked)

    def finish(self, timeout: float) -> None:
        """Stop taking new inputs; wait until every input taken is answered."""
        self.no_new.set()
        self.join(timeout)
        if self.is_alive():
            self.halt.set()
            self.join(IO_TIMEOUT)
            raise AssertionError(f"{self.name}: {self.unsettled()} inputs still unanswered")


class MllpSender(Sender):
    """One MLLP connection at a time, ``window`` messages in flight, answered in order."""

    def __init__(
        self, name: str, port: int, make: Callable[[int], Input], window: int, rate: float = 0.0
    ) -> None:
        super().__init__(name, make, rate)
        self.port = port
        self.window = window
        self.connections = 0

    def _run(self) -> None:
        while not self.halt.is_set():
            if self.no_new.is_set() and self.unsettled() == 0:
                return
            try:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=IO_TIMEOUT)
            except OSError:
                time.sleep(RECONNECT_PAUSE)
                continue
            self.connections += 1
            in_flight: collections.deque[Input] = collections.deque()
            try:
                self._stream(sock, in_flight)
            except (OSError, ValueError):
                self.failures += 1
            finally:
                sock.close()
                with self.lock:  # no answer: send again
                    self.again.extend(i for i in in_flight if not i.answer)

    def _stream(self, sock: socket.socket, in_flight: collections.deque[Input]) -> None:
        deframer = Deframer(1 << 20)
        while not self.halt.is_set():
            while len(in_flight) < self.window:
                item = self.next_input()
                if item is None:
                    break
                in_flight.append(item)  # first: a send that fails leaves it to send again
                sock.sendall(frame(item.raw))
                item.sends += 1
            if not in_flight:
                return
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("the server closed the connection")
            for event in deframer.feed(data):
                if not isinstance(event, Frame):
                    self.problems.append(f"framing fault in an answer: {event}")
                    continue
                code, control, err = ack_of(event.data)
                item = in_flight.popleft()
                if control != item.key:
                    self.problems.append(f"ACK for {control} where {item.key} was due")
                if code == "AR" and err == "207":  # the store failed: send again
                    self.store_failures += 1
                    with self.lock:
                        self.again.append(item)
                    continue
                item.answer = code
                item.acked = code == "AA"


class FhirSender(Sender):
    """POSTs each Observation to ``[base]/Observation`` with its key as X-Request-Id."""

    def __init__(
        self, name: str, base: str, make: Callable[[int], Input], rate: float = 0.0
    ) -> None:
        super().__init__(name, make, rate)
        self.base = base

    def _run(self) -> None:
        headers = {"Content-Type": "application/fhir+json"}
        with httpx.Client(timeout=IO_TIMEOUT) as client:
            while not self.halt.is_set():
                item = self.next_input()
                if item is None:
                    if self.unsettled() == 0:
                        return
                    time.sleep(RECONNECT_PAUSE)
                    continue
                item.sends += 1
                try:
                    resp = client.post(
                        f"{self.base}/Observation",
                        content=item.raw,
                        headers={**headers, "X-Request-Id": item.key},
                    )
                except httpx.HTTPError as exc:
                    if isinstance(exc, httpx.ConnectError):
                        item.sends -= 1  # nothing was sent: the server is down
                    self.failures += 1
                    with self.lock:
                        self.again.append(item)
                    time.sleep(RECONNECT_PAUSE)
                    continue
                if resp.status_code == 503:  # not committed: send again
                    self.store_failures += 1
                    with self.lock:
                        self.again.append(item)
                    continue
                item.answer = str(resp.status_code)
                item.acked = resp.status_code in (200, 201)


def answered(senders: list[Sender]) -> int:
    """Inputs the senders have had positively answered so far, together."""
    return sum(s.acked() for s in senders)

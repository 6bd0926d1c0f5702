"""How ``prpgate send`` sends over MLLP: the target, and the options of a run."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from enum import Enum

from prpgate.errors import ConfigError
from prpgate.send.run import RunOptions

__all__ = ["MllpTarget", "SendOptions", "Spread"]


class Spread(Enum):
    """How messages are dealt to connections."""

    FILE = "file"  # a file's messages in order on one connection
    MESSAGE = "message"  # each connection takes the next message


@dataclass(frozen=True, slots=True)
class MllpTarget:
    """Where to send: host and port, and a TLS context for ``mllps://``."""

    host: str
    port: int
    tls: ssl.SSLContext | None = None
    server_hostname: str | None = None

    def __str__(self) -> str:
        return f"{'mllps' if self.tls else 'mllp'}://{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class SendOptions(RunOptions):
    """How to send over MLLP: the options of every run (``RunOptions``; ``rate`` in
    messages per second, ``timeout`` bounding each wait for an ACK), ``window`` messages
    in flight per connection, how messages are dealt to connections, and the largest ACK
    read."""

    window: int = 1
    spread: Spread = Spread.FILE
    max_ack_bytes: int = 1 << 20

    def check(self) -> None:
        """Raises ConfigError for a value that cannot work."""
        if self.connections < 1 or self.window < 1:
            raise ConfigError("connections and window must be at least 1")
        RunOptions.check(self)
        if self.max_ack_bytes < 1:
            raise ConfigError("max_ack_bytes must be positive")

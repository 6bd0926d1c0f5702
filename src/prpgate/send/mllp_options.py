"""How ``prpgate send`` sends over MLLP: the target, and the options of a run."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from enum import Enum

from prpgate.errors import ConfigError

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
class SendOptions:
    """How to send. ``rate`` is messages per second over all connections (None: as
    fast as acknowledgments allow); ``timeout`` bounds each wait for an ACK and
    ``connect_timeout`` each connection attempt, in seconds."""

    connections: int = 1
    window: int = 1
    timeout: float = 10.0
    connect_timeout: float = 10.0
    retries: int = 0
    rate: float | None = None
    stop_on_error: bool = False
    spread: Spread = Spread.FILE
    max_ack_bytes: int = 1 << 20

    def check(self) -> None:
        """Raises ConfigError for a value that cannot work."""
        if self.connections < 1 or self.window < 1:
            raise ConfigError("connections and window must be at least 1")
        if self.timeout <= 0 or self.connect_timeout <= 0:
            raise ConfigError("timeouts must be positive")
        if self.retries < 0:
            raise ConfigError("retries cannot be negative")
        if self.rate is not None and self.rate <= 0:
            raise ConfigError("rate must be positive")
        if self.max_ack_bytes < 1:
            raise ConfigError("max_ack_bytes must be positive")

"""Settings: defaults < a config file (TOML) < environment variables (PRPGATE_*) < CLI flags.

Parsed once at start-up by the CLI and passed down; nothing reads the environment
on import.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from prpgate.errors import ConfigError

__all__ = ["Settings", "load_settings"]


class Settings(BaseSettings):
    """All of prpgate's settings. Environment variables are ``PRPGATE_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="PRPGATE_", extra="forbid")

    store: Path = Field(
        default=Path("prpgate.sqlite"), description="SQLite store file (embedded default)."
    )
    store_url: SecretStr | None = Field(
        default=None,
        description="The store as a URL: sqlite:///relative/path, sqlite:////absolute/path or "
        "postgresql://user:password@host:port/database (libpq URL, query parameters allowed); "
        "when set it names the store instead of `store` (secret: it may hold a password).",
    )
    store_migrate: bool = Field(
        default=True,
        description="Apply pending schema migrations when the store opens; false refuses a "
        "store on an older schema until `prpgate store migrate` has run.",
    )
    store_pool_size: int = Field(
        default=4, gt=0, le=100, description="PostgreSQL: connections at most per store pool."
    )
    store_connect_timeout: float = Field(
        default=5.0,
        gt=0,
        description="PostgreSQL: seconds to wait for a connection (at start, after a loss).",
    )
    mappings: Path = Field(
        default=Path("mappings"),
        description="Folder holding analytes.yaml, units.yaml, senders.yaml, rules.yaml.",
    )
    durable: bool = Field(default=True, description="fsync every commit (SQLite synchronous=FULL).")
    sqlite_wal_reserve_mb: int = Field(
        default=256,
        ge=0,
        le=65536,
        description="serve, SQLite: MiB of disk kept reserved past the end of the WAL file "
        "(Linux, fallocate without changing its size), so commits under sustained load "
        "append into blocks the file already has. 0: none.",
    )
    sqlite_wal_restart_mb: int = Field(
        default=1024,
        ge=0,
        le=1048576,
        description="serve, SQLite: under a load that never pauses, once the WAL holds this "
        "many MiB of frames the checkpoint thread starts it afresh, so the file stops "
        "growing. 0: never (the WAL then grows until the load pauses).",
    )
    max_message_bytes: int = Field(
        default=4 * 1024 * 1024, gt=0, description="Larger inbound messages are rejected."
    )
    max_bundle_entries: int = Field(
        default=5000,
        gt=0,
        description="FHIR Bundles with more entries are rejected whole, unread (HTTP 400): "
        "one input holds the store writer for the time its entries take to read.",
    )
    replay_batch: int = Field(
        default=500, gt=0, description="Messages per store transaction during replay."
    )
    log_format: Literal["auto", "console", "json"] = Field(
        default="auto", description="console for people, json for production; auto picks by TTY."
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_phi: bool = Field(
        default=False,
        description="Allow patient names, birth dates and MRNs in logs (off by default).",
    )
    # --- prpgate serve -------------------------------------------------------
    mllp_host: str = Field(default="127.0.0.1", description="MLLP listener address.")
    mllp_port: int = Field(
        default=2575, ge=0, le=65535, description="MLLP listener port (0: any free port)."
    )
    mllp_idle_timeout: float = Field(
        default=900.0, gt=0, description="Close an MLLP connection idle this many seconds."
    )
    mllp_in_flight: int = Field(
        default=32,
        gt=0,
        description="Messages per connection read but not yet acknowledged; at the limit "
        "the listener stops reading (backpressure).",
    )
    mllp_workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="serve: processes accepting MLLP connections on the one port, each "
        "with its own store writer (the first is serve's own process). More than one uses "
        "more than one core; connection limits apply per process.",
    )
    mllp_max_connections: int = Field(
        default=200, gt=0, description="Open MLLP connections at most; more are refused."
    )
    mllp_max_connections_per_peer: int = Field(
        default=20,
        gt=0,
        description="Open MLLP connections at most from one IP address; more are refused "
        "and logged (raise it for senders behind one NAT or load balancer).",
    )
    mllp_keepalive_idle: int = Field(
        default=60, gt=0, description="TCP keep-alive: seconds idle before the first probe."
    )
    mllp_write_timeout: float = Field(
        default=30.0, gt=0, description="Give up on a peer that takes longer to take an ACK."
    )
    mllp_enhanced_acks: bool = Field(
        default=True,
        description="Honour MSH-15/MSH-16 (enhanced mode: CA/CE/CR, then AA/AE/AR); "
        "false answers every message in original mode.",
    )
    mllp_tls_cert: Path | None = Field(
        default=None, description="TLS: server certificate chain (PEM); enables TLS."
    )
    mllp_tls_key: Path | None = Field(default=None, description="TLS: server private key (PEM).")
    mllp_tls_client_ca: Path | None = Field(
        default=None,
        description="Mutual TLS: CA bundle (PEM) that client certificates must chain to; "
        "when set, a client certificate is required.",
    )
    http_enabled: bool = Field(default=True, description="Serve /healthz, /readyz, /metrics.")
    http_host: str = Field(default="127.0.0.1", description="Health and metrics HTTP address.")
    http_port: int = Field(
        default=8080, ge=0, le=65535, description="Health and metrics HTTP port (0: any)."
    )
    commit_batch: int = Field(
        default=256,
        gt=0,
        description="Messages at most in one group commit (messages arriving together on "
        "any connection share one transaction and one fsync).",
    )
    gil_switch_interval_ms: float = Field(
        default=0.5,
        gt=0,
        le=100,
        description="serve: how long a Python thread runs before another may take over "
        "(sys.setswitchinterval, in ms). The listener waits this long at most for the "
        "store writer's thread (PostgreSQL: whole batches; SQLite: waits and commits) "
        "before it can write an ACK; CPython's default is 5 ms.",
    )
    shutdown_grace: float = Field(
        default=10.0,
        ge=0,
        description="On SIGTERM, seconds to finish and acknowledge messages in flight.",
    )
    # --- FHIR R4 HTTP listener (prpgate serve) --------------------------------
    fhir_http_enabled: bool = Field(
        default=False, description="Serve the FHIR R4 HTTP listener beside MLLP."
    )
    fhir_http_host: str = Field(default="127.0.0.1", description="FHIR listener address.")
    fhir_http_port: int = Field(
        default=8081, ge=0, le=65535, description="FHIR listener port (0: any free port)."
    )
    fhir_http_base_path: str = Field(
        default="/fhir", description="Path of the FHIR base ([base]/Observation, [base]/metadata)."
    )
    fhir_http_token: SecretStr | None = Field(
        default=None,
        description="Static bearer token the FHIR listener requires (every route but metadata).",
    )
    fhir_http_tls_cert: Path | None = Field(
        default=None, description="TLS for the FHIR listener: certificate chain (PEM)."
    )
    fhir_http_tls_key: Path | None = Field(
        default=None, description="TLS for the FHIR listener: private key (PEM)."
    )
    fhir_http_max_concurrency: int = Field(
        default=256, gt=0, description="Requests and connections at once; more are answered 503."
    )
    # --- delivery to the clinic's FHIR server (prpgate deliver, serve) -------
    fhir_base_url: str | None = Field(
        default=None, description="The clinic's FHIR R4 base URL; no delivery without it."
    )
    fhir_write_mode: Literal["client-id", "conditional"] = Field(
        default="client-id",
        description="client-id: PUT [type]/[deterministic id]; conditional: conditional "
        "create (If-None-Exist) for a new output, conditional update (PUT ?identifier=) "
        "for a state change.",
    )
    fhir_auth: Literal["none", "bearer", "smart"] = Field(
        default="none", description="Auth to the FHIR server: none, bearer, smart."
    )
    fhir_bearer_token: SecretStr | None = Field(
        default=None, description="Static bearer token (fhir_auth = bearer)."
    )
    fhir_smart_token_url: str | None = Field(
        default=None, description="SMART Backend Services token endpoint."
    )
    fhir_smart_client_id: str | None = Field(default=None, description="SMART client id.")
    fhir_smart_private_key: Path | None = Field(
        default=None, description="SMART client private key (PEM file)."
    )
    fhir_smart_key_id: str | None = Field(
        default=None, description="kid of the SMART key in the client's registered JWKS."
    )
    fhir_smart_algorithm: Literal["RS384", "ES384"] = Field(
        default="RS384", description="Signing algorithm of the client assertion."
    )
    fhir_smart_scope: str = Field(
        default="system/DetectedIssue.write system/Flag.write system/Patient.read",
        description="Scopes asked of the token endpoint.",
    )
    fhir_connect_timeout: float = Field(default=5.0, gt=0, description="Connect timeout (s).")
    fhir_timeout: float = Field(
        default=15.0, gt=0, description="Read, write and pool timeout per request (s)."
    )
    fhir_resolve_patients: bool = Field(
        default=False,
        description="Look the patient up by identifier and add a literal reference when "
        "exactly one Patient matches.",
    )
    delivery_parallel: int = Field(
        default=4, gt=0, le=64, description="Writes in flight at once (each a different patient)."
    )
    delivery_tries: int = Field(
        default=3, gt=0, description="HTTP attempts per delivery before the row is rescheduled."
    )
    delivery_max_attempts: int = Field(
        default=50, gt=0, description="HTTP attempts in all before a row becomes a dead letter."
    )
    delivery_max_age: float = Field(
        default=7 * 86400.0,
        gt=0,
        description="Seconds since the message arrived before a failing row becomes dead.",
    )
    delivery_backoff_base: float = Field(
        default=1.0, gt=0, description="First retry delay (s); doubles per attempt, jittered."
    )
    delivery_backoff_cap: float = Field(
        default=600.0, gt=0, description="Longest delay between attempts (s)."
    )
    delivery_max_inline_wait: float = Field(
        default=5.0,
        ge=0,
        description="A Retry-After up to this many seconds is waited out in place; a longer "
        "one reschedules the row.",
    )
    delivery_breaker_threshold: int = Field(
        default=5, gt=0, description="Server failures in a row that open the circuit breaker."
    )
    delivery_breaker_cooldown: float = Field(
        default=2.0, gt=0, description="Seconds the breaker stays open first (doubles, capped)."
    )
    delivery_breaker_max_cooldown: float = Field(
        default=120.0, gt=0, description="Longest time the breaker stays open (s)."
    )
    delivery_idle_poll: float = Field(
        default=1.0, gt=0, description="Seconds between looks at an empty outbox."
    )
    delivery_lease: float = Field(
        default=300.0, gt=0, description="Seconds a claimed row stays with its worker."
    )


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from an optional TOML file, the environment and explicit overrides.

    ``overrides`` with value None are ignored (unset CLI flags). Raises ConfigError
    naming the file or setting that is wrong.
    """
    values: dict[str, Any] = {}
    if config_file is not None:
        try:
            with config_file.open("rb") as fh:
                data = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{config_file}: {exc}") from exc
        values.update(data.get("prpgate", data))
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        # init values beat the environment in pydantic-settings; keep file < env < flags
        env_only = Settings()
        merged = {**values}
        for name in env_only.model_fields_set:
            if name not in overrides or overrides[name] is None:
                merged[name] = getattr(env_only, name)
        return Settings(**merged)
    except ValidationError as exc:
        raise ConfigError(f"invalid setting: {exc}") from exc

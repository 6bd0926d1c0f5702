"""The SQLite store's schema, one script per version (applied by ``store.migrations``).

A script is a list of statements separated by ``;`` at a line end. Version 1 is the
schema as first shipped (``IF NOT EXISTS`` throughout, so it also adopts a store made by
a build that created its tables on open); later versions only add to it.
"""

from __future__ import annotations

__all__ = ["SQLITE_SCRIPTS"]

_V1 = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    received_at TEXT NOT NULL,
    source TEXT NOT NULL,
    sending_application TEXT NOT NULL,
    sending_facility TEXT NOT NULL,
    control_id TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    message_type TEXT NOT NULL,
    version TEXT NOT NULL,
    status TEXT NOT NULL,
    ack_code TEXT NOT NULL,
    errors TEXT NOT NULL,
    summary TEXT NOT NULL,
    duplicate_of INTEGER REFERENCES messages(id),
    reuse_of INTEGER REFERENCES messages(id),
    raw BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_key
    ON messages (sending_application, sending_facility, control_id);
CREATE INDEX IF NOT EXISTS messages_control ON messages (control_id);
CREATE INDEX IF NOT EXISTS messages_status ON messages (status, id);
CREATE INDEX IF NOT EXISTS messages_received ON messages (received_at);
CREATE TABLE IF NOT EXISTS message_keys (
    message_id INTEGER NOT NULL REFERENCES messages(id),
    kind TEXT NOT NULL,
    value TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS message_keys_value ON message_keys (kind, value);
CREATE TABLE IF NOT EXISTS results (
    result_key TEXT PRIMARY KEY,
    patient_key TEXT NOT NULL,
    analyte TEXT NOT NULL,
    value TEXT NOT NULL,
    comparator TEXT,
    effective TEXT NOT NULL,
    effective_sort TEXT NOT NULL,
    seq INTEGER NOT NULL,
    status TEXT NOT NULL,
    source TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS results_patient ON results (patient_key, analyte);
CREATE TABLE IF NOT EXISTS outputs (
    identifier TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    patient_key TEXT NOT NULL,
    rule TEXT NOT NULL,
    result_key TEXT NOT NULL,
    status TEXT NOT NULL,
    version INTEGER NOT NULL,
    message_id INTEGER NOT NULL REFERENCES messages(id),
    resource TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS outputs_patient ON outputs (patient_key, kind);
CREATE INDEX IF NOT EXISTS outputs_result ON outputs (result_key);
CREATE INDEX IF NOT EXISTS outputs_message ON outputs (message_id);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    identifier TEXT NOT NULL,
    kind TEXT NOT NULL,
    patient_key TEXT NOT NULL,
    version INTEGER NOT NULL,
    message_id INTEGER NOT NULL REFERENCES messages(id),
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    resource TEXT NOT NULL,
    next_attempt_at TEXT NOT NULL DEFAULT '',
    claim INTEGER NOT NULL DEFAULT 0,
    last_attempt_at TEXT NOT NULL DEFAULT '',
    delivered_at TEXT NOT NULL DEFAULT '',
    last_status INTEGER,
    last_error TEXT NOT NULL DEFAULT '',
    outcome TEXT NOT NULL DEFAULT '',
    server_id TEXT NOT NULL DEFAULT '',
    server_version TEXT NOT NULL DEFAULT '',
    UNIQUE (identifier, version)
);
CREATE INDEX IF NOT EXISTS outbox_state ON outbox (state, id);
CREATE INDEX IF NOT EXISTS outbox_active ON outbox (patient_key, id)
    WHERE state IN ('pending', 'retry', 'inflight');
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (id)
    WHERE state IN ('pending', 'retry', 'inflight');
CREATE INDEX IF NOT EXISTS outbox_delivered ON outbox (delivered_at) WHERE state = 'delivered';
CREATE INDEX IF NOT EXISTS outbox_message ON outbox (message_id);
CREATE TABLE IF NOT EXISTS explanations (
    message_id INTEGER PRIMARY KEY REFERENCES messages(id),
    records TEXT NOT NULL
);
"""

# Retransmit dedup by a unique key: at most one first arrival per (MSH-3, MSH-4, MSH-10,
# content). Duplicates, messages without a control id (framing faults, no MSH) and
# ``prpgate messages reprocess`` records (a deliberate second run) are not arrivals.
_V2 = """
CREATE UNIQUE INDEX IF NOT EXISTS messages_arrival
    ON messages (sending_application, sending_facility, control_id, content_hash)
    WHERE status <> 'duplicate' AND control_id <> '' AND substr(source, 1, 10) <> 'reprocess:';
"""

SQLITE_SCRIPTS: dict[int, str] = {1: _V1, 2: _V2}

"""The state database's tables, and the version number that names this layout.

Bump SCHEMA_VERSION with every change to the tables and add a migration from the previous
version; a server refuses a database whose version is newer than its own, since it cannot
know what a newer server stored there or which of its invariants it would break.
"""

from __future__ import annotations

SCHEMA_VERSION = 1

TABLES = (
    """
    CREATE TABLE schema_version (
        version INTEGER NOT NULL
    )
    """,
    """
    CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        config_digest TEXT NOT NULL,
        created_at REAL NOT NULL,
        status TEXT NOT NULL,
        reason TEXT NOT NULL,
        last_round INTEGER NOT NULL,
        updated_at REAL NOT NULL
    )
    """,
    # metrics and history are JSON text (see _encoding.py); a round's row and its tensors'
    # rows are written in one transaction.
    """
    CREATE TABLE rounds (
        run_id TEXT NOT NULL REFERENCES runs (run_id),
        round INTEGER NOT NULL,
        metrics TEXT NOT NULL,
        history TEXT NOT NULL,
        committed_at REAL NOT NULL,
        PRIMARY KEY (run_id, round)
    )
    """,
    # slot is "parameters" (key empty, position = index) or "strategy_state" (key = state
    # name, position = order in the mapping); shape is the sizes joined by commas.
    """
    CREATE TABLE round_tensors (
        run_id TEXT NOT NULL,
        round INTEGER NOT NULL,
        slot TEXT NOT NULL,
        position INTEGER NOT NULL,
        key TEXT NOT NULL,
        name TEXT NOT NULL,
        dtype INTEGER NOT NULL,
        shape TEXT NOT NULL,
        codec TEXT NOT NULL,
        sha256 BLOB NOT NULL,
        size INTEGER NOT NULL,
        PRIMARY KEY (run_id, round, slot, position),
        FOREIGN KEY (run_id, round) REFERENCES rounds (run_id, round)
    )
    """,
)

"""The recorder's database as an outbox: what a stream has not acknowledged
yet, and the cursor that says what it has (table ``outbox``, one row per
stream).  Stdlib only.

Events are read by id, lifetimes by revision (``procs.rev``, raised each
time the recorder rewrites a row: a lifetime is shipped again when it
execs or ends), sessions from the last one shipped on (so a session's end
follows).  One read is one snapshot; the cursor only moves forward.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import quote

from ..store.schema import PROC_COLUMNS, StoreError, check_file, describe_error, store_id
from .messages import SESSION_COLUMNS, SHIPPED_EVENT_COLUMNS, Message, encode

__all__ = ["SESSION_COLUMNS", "SHIPPED_EVENT_COLUMNS", "Cursor", "Outbox", "Round", "ship_secret"]

#: Rows of each table read per round.
ROUND_ROWS: Final = 5000


@dataclass
class Cursor:
    events: int = 0
    procs: int = 0
    sessions: int = 0


@dataclass
class Round:
    """What one read found to ship, and where the cursor goes once it is acknowledged."""

    messages: list[Message] = field(default_factory=list)
    cursor: Cursor = field(default_factory=Cursor)
    events: int = 0
    procs: int = 0

    @property
    def shipping(self) -> bool:
        """Anything beyond the session rows (sent along with every round)?"""
        return bool(self.events or self.procs)


class Outbox:
    """Reads and advances one stream's cursor in a recorder's database."""

    def __init__(self, path: str, stream: str, prefix: str, host: str) -> None:
        self.path = path
        self.stream = stream
        self.prefix = prefix
        self.host = host
        check_file(path)
        try:
            self.conn = sqlite3.connect(
                f"file:{quote(path)}?mode=rw", uri=True, isolation_level=None, timeout=10.0, check_same_thread=False
            )
            self.conn.execute("PRAGMA busy_timeout=10000")
            self.conn.execute("BEGIN IMMEDIATE")
            self.store = store_id(self.conn)
            self.secret = ship_secret(self.conn)
            self.conn.execute(
                "INSERT OR IGNORE INTO outbox (stream, events, procs, sessions) VALUES (?, 0, 0, 0)", (stream,)
            )
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: {describe_error(exc)}") from None
        self.cursor = self.read_cursor()

    def read_cursor(self) -> Cursor:
        row = self.conn.execute(
            "SELECT events, procs, sessions FROM outbox WHERE stream = ?", (self.stream,)
        ).fetchone()
        return Cursor(*row) if row else Cursor()

    def waiting(self) -> int:
        """Events not acknowledged yet."""
        row = self.conn.execute("SELECT count(*) FROM events WHERE id > ?", (self.cursor.events,)).fetchone()
        return int(row[0])

    def read(self, limit: int = ROUND_ROWS) -> Round:
        """The next rows past the cursor, as messages (one snapshot)."""
        cursor = self.cursor
        conn = self.conn
        conn.execute("BEGIN")
        try:
            sessions = conn.execute(
                f"SELECT {', '.join(SESSION_COLUMNS)} FROM sessions WHERE id >= ? ORDER BY id", (cursor.sessions,)
            ).fetchall()
            procs = conn.execute(
                f"SELECT {', '.join(PROC_COLUMNS)} FROM procs WHERE rev > ? ORDER BY rev LIMIT ?",
                (cursor.procs, limit),
            ).fetchall()
            events = conn.execute(
                f"SELECT {', '.join(SHIPPED_EVENT_COLUMNS)} FROM events WHERE id > ? ORDER BY id LIMIT ?",
                (cursor.events, limit),
            ).fetchall()
        finally:
            conn.execute("COMMIT")
        found = Round(cursor=Cursor(cursor.events, cursor.procs, cursor.sessions), events=len(events), procs=len(procs))
        rev = PROC_COLUMNS.index("rev")
        for kind, columns, rows, order in (
            ("sessions", SESSION_COLUMNS, sessions, 0),
            ("procs", PROC_COLUMNS, procs, rev),
            ("events", SHIPPED_EVENT_COLUMNS, events, 0),
        ):
            found.messages.extend(
                encode(self.prefix, self.host, self.store, kind, columns, rows, order, secret=self.secret)
            )
        if sessions:
            found.cursor.sessions = sessions[-1][0]
        if procs:
            found.cursor.procs = procs[-1][rev]
        if events:
            found.cursor.events = events[-1][0]
        return found

    def advance(self, cursor: Cursor) -> None:
        """The stream has acknowledged everything up to ``cursor``."""
        self.conn.execute(
            "UPDATE outbox SET events = max(events, ?), procs = max(procs, ?), sessions = max(sessions, ?) "
            "WHERE stream = ?",
            (cursor.events, cursor.procs, cursor.sessions, self.stream),
        )
        self.cursor = self.read_cursor()

    def sent_ids(self) -> list[str]:
        """The message ids the last shipper of this stream kept (:meth:`keep_sent`)."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (f"sent:{self.stream}",)).fetchone()
        try:
            ids = json.loads(row[0]) if row else []
        except (TypeError, ValueError):
            return []
        return [i for i in ids if isinstance(i, str)] if isinstance(ids, list) else []

    def keep_sent(self, ids: list[str]) -> None:
        """Ids a shipper sent, for the next one: a duplicate acknowledgement
        for one of them is its own message, stored before (its
        acknowledgement came too late to move the cursor)."""
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (f"sent:{self.stream}", json.dumps(ids)),
        )

    def close(self) -> None:
        self.conn.close()


def ship_secret(conn: sqlite3.Connection) -> bytes:
    """This store's secret, the key of its message ids' MAC (messages.py),
    made when first asked for (in the caller's transaction).  It never
    leaves the file: the ids of messages not sent yet cannot be guessed,
    so nobody can publish them first for JetStream to drop ours."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'ship_secret'").fetchone()
    if row is not None:
        return bytes.fromhex(str(row[0]))
    made = os.urandom(32)
    conn.execute("INSERT INTO meta (key, value) VALUES ('ship_secret', ?)", (made.hex(),))
    return made

"""The central store (fleet/collector.py's CentralStore) without a server: batches
from a recorder's outbox written twice and out of order, rows kept exactly."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from helpers import (
    db_rows,
)

from procevents.fleet.collector import CentralStore
from procevents.fleet.messages import decode
from procevents.fleet.outbox import Outbox


def test_the_outbox_and_the_central_store_without_a_server(tmp_path: Path) -> None:
    """The codec and the writer's checks, rows written twice and out of order."""
    from procevents.store import StoreWriter
    from procevents.store.schema import EVENT_COLUMNS

    db = tmp_path / "local.db"
    writer = StoreWriter(str(db), host="solo")
    for i in range(3):
        writer.add_event((None, i, i, "lost", -1, i, 0, 0, 1, None, None, None, b"r\xff",
                          None, None, None, b"a\x00\xfe\x00", None, None, "solo", None))
    writer.close()
    outbox = Outbox(str(db), "S", "procevents", "solo")
    found = outbox.read()
    events = [m for m in found.messages if m.kind == "events"]
    assert [m.subject for m in events] == ["procevents.solo.events"] and found.cursor.events == 3
    batch = decode(events[0].payload)
    assert batch.columns == ["id", *EVENT_COLUMNS] and batch.rows[0][13] == b"r\xff"  # bytes survive
    central = CentralStore(str(tmp_path / "central.db"))
    sessions = [decode(m.payload) for m in found.messages if m.kind == "sessions"]
    central.write([batch])  # events before their session: a placeholder, filled in later
    central.write([batch, *sessions])
    assert (central.events, central.duplicates) == (3, 3)
    central.close()
    rows = db_rows(tmp_path / "central.db", "SELECT remote_id, data, argv, host FROM events ORDER BY remote_id")
    assert rows == [(i, b"r\xff", b"a\x00\xfe\x00", "solo") for i in (1, 2, 3)]
    assert db_rows(tmp_path / "central.db", "SELECT hostname FROM sessions WHERE source IS NOT NULL") == [("solo",)]
    outbox.advance(found.cursor)
    assert outbox.read().events == 0 and outbox.waiting() == 0
    outbox.close()
    assert sqlite3.connect(db).execute("SELECT events FROM outbox WHERE stream = 'S'").fetchone() == (3,)

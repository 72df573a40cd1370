"""The central store (fleet/collector.py's CentralStore) without a server: batches
from a recorder's outbox written twice and out of order, rows kept exactly, a
lifetime rewritten only by a newer revision of it, a batch written all or
nothing.  With a real nats-server, end to end: test_fleet.py."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from helpers import (
    db_rows,
)

from procevents.events import Exit, Fork
from procevents.fleet.collector import CentralStore
from procevents.fleet.messages import BadMessage, Batch, decode
from procevents.fleet.outbox import Outbox
from procevents.proctable import Proc
from procevents.store import StoreSink, StoreWriter


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


def _rounds(tmp_path: Path) -> tuple[list[Batch], list[Batch]]:
    """A recorder's process as the outbox reads it twice: forked, then ended (exit status 3)."""
    path = str(tmp_path / "local.db")
    writer = StoreWriter(path, host="solo")
    sink = StoreSink(writer)
    proc = Proc(pid=700, ppid=1, start_ns=1_000, comm="worker")
    outbox = Outbox(path, "S", "procevents", "solo")
    sink.emit(Fork(0, 1, 1_000, 1, 1, 700, 700), proc, {"comm": "worker"})
    writer.commit()
    forked = [decode(m.payload) for m in outbox.read().messages]
    sink.emit(Exit(0, 2, 2_000, 700, 700, 3 << 8, 17, 1, 1), proc, {"comm": "worker", "duration": 1.0})
    writer.commit()
    ended = [decode(m.payload) for m in outbox.read().messages]
    outbox.close()
    writer.close()
    return forked, ended


def test_a_lifetime_is_rewritten_only_by_a_newer_revision(tmp_path: Path) -> None:
    forked, ended = _rounds(tmp_path)
    db = tmp_path / "central.db"
    central = CentralStore(str(db))
    central.write(ended)
    central.write(forked)  # the older revision, late: changes nothing
    assert central.lifetimes == 1
    central.close()
    assert db_rows(db, "SELECT pid, exit_code FROM procs WHERE source IS NOT NULL") == [(700, 3 << 8)]
    again = CentralStore(str(tmp_path / "in-order.db"))
    again.write(forked)
    again.write(ended)  # in order: the newer one replaces it
    assert again.lifetimes == 2
    again.close()
    assert db_rows(tmp_path / "in-order.db", "SELECT pid, exit_code FROM procs WHERE source IS NOT NULL") == [
        (700, 3 << 8)]


def test_a_bad_batch_is_written_not_at_all(tmp_path: Path) -> None:
    forked, ended = _rounds(tmp_path)
    events = next(b for b in ended if b.kind == "events")
    broken = Batch(host=events.host, store=events.store, kind="events", columns=events.columns[:-1], rows=events.rows)
    db = tmp_path / "central.db"
    central = CentralStore(str(db))
    with pytest.raises(BadMessage, match="events without"):
        central.write([*forked, broken])
    assert (central.events, central.lifetimes) == (0, 0)
    assert db_rows(db, "SELECT count(*) FROM procs WHERE source IS NOT NULL") == [(0,)]
    central.write(forked)
    assert (central.events, central.lifetimes) == (1, 1)
    central.close()
    joined = "SELECT e.pid, p.pid FROM events e JOIN procs p ON p.id = e.proc WHERE e.source IS NOT NULL"
    assert db_rows(db, joined) == [(700, 700)]

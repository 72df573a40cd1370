"""The central store (fleet/collector.py's CentralStore) without a server: batches
from a recorder's outbox written twice and out of order, rows kept exactly, a
lifetime rewritten only by a newer revision of it, a batch written all or
nothing.  The collector against a real nats-server: what another publisher
sends (a value that does not fit its column, another host's name or store)
is refused in one line and terminated, and the good messages fetched with
it are committed.  Recorders and collector end to end: test_fleet.py."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    Cli,
    NatsServer,
    cli_processes,
    db_rows,
    nats,
    wait_until,
)

from procevents.events import Exit, Fork
from procevents.fleet.collector import CentralStore
from procevents.fleet.messages import BadMessage, Batch, decode
from procevents.fleet.outbox import Outbox
from procevents.proctable import Proc
from procevents.store import StoreSink, StoreWriter

__all__ = ["nats"]  # the fixture, imported to be used here


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


# -- against a real nats-server ---------------------------------------------------------------------


@pytest.fixture
def collect() -> Iterator[Callable[..., Cli]]:
    """``procevents collect ...`` processes (no kernel needed), stopped at the end."""
    yield from cli_processes()


def _host_store(tmp_path: Path, host: str) -> tuple[Path, list[Any]]:
    """A recorder's store of ``host`` (a process forked and ended, so a
    session, a lifetime and two events) and its outbox's messages."""
    path = tmp_path / f"{host}.db"
    writer = StoreWriter(str(path), host=host)
    sink = StoreSink(writer)
    proc = Proc(pid=700, ppid=1, start_ns=1_000, comm="worker")
    sink.emit(Fork(0, 1, 1_000, 1, 1, 700, 700), proc, {"comm": "worker"})
    sink.emit(Exit(0, 2, 2_000, 700, 700, 3 << 8, 17, 1, 1), proc, {"comm": "worker", "duration": 1.0})
    writer.commit()
    writer.close()
    outbox = Outbox(str(path), "PROCEVENTS", "procevents", host)
    messages = outbox.read().messages
    outbox.close()
    return path, messages


def _forged(message: Any, change: Callable[[dict[str, Any]], None]) -> bytes:
    """``message``'s payload, its JSON changed as another publisher can."""
    data = json.loads(message.payload)
    change(data)
    return json.dumps(data).encode()


def _set(kind_row: int, column: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        data["rows"][kind_row][data["columns"].index(column)] = value
    return change


def _events_of(central: Path, host: str) -> list[tuple[Any, ...]]:
    return db_rows(central, "SELECT e.remote_id, e.event, e.pid FROM events e JOIN sources s ON s.id = e.source "
                   "WHERE s.host = ? ORDER BY e.remote_id", (host,))


def _refusals(c: Cli) -> list[str]:
    return [line for line in c.err.text.splitlines() if line.startswith("procevents: refusing a message on ")]


def test_a_value_that_does_not_fit_its_column_costs_one_line(
    collect: Callable[..., Cli], nats: NatsServer, tmp_path: Path,
) -> None:
    """Issue 23: a list, a dict or 2**64 where an integer belongs, a null
    pid, a sessions row without its id made collect exit 1 or print a
    traceback, and the message came back for ever; the two good messages
    fetched with it were never written.  Now each is refused in one line
    and terminated (nothing left pending), and the good ones committed."""
    _, messages = _host_store(tmp_path, "web-7")
    by_kind = {m.kind: m for m in messages}
    events, procs, sessions = by_kind["events"], by_kind["procs"], by_kind["sessions"]

    def no_id(data: dict[str, Any]) -> None:
        at = data["columns"].index("id")
        data["columns"].pop(at)
        for row in data["rows"]:
            row.pop(at)

    poison = [
        (events.subject, _forged(events, _set(0, "a", [1])), None),
        (events.subject, _forged(events, _set(1, "proc", {"x": 1})), None),
        (events.subject, _forged(events, _set(0, "b", 2**64)), None),
        (procs.subject, _forged(procs, _set(0, "pid", None)), None),
        (sessions.subject, _forged(sessions, no_id), None),
    ]
    good = [(m.subject, m.payload, m.msg_id) for m in messages]
    acks = nats.publish([*poison[:3], *good, *poison[3:]])  # all of them in the collector's first fetch
    assert not [a for a in acks if isinstance(a, Exception)], acks
    central = tmp_path / "central.db"
    c = collect("collect", "--nats", nats.url, "--db", str(central))
    wait_until(lambda: len(_events_of(central, "web-7")) == 2, "the good messages committed")
    wait_until(lambda: len(_refusals(c)) == 5, "five refusals", timeout=30)
    wait_until(lambda: nats.consumer("procevents-collect")[:2] == (0, 0), "nothing pending: refused ones terminated")
    assert c.stop() == 0, c.err.text
    assert _refusals(c) == [
        "procevents: refusing a message on procevents.web-7.events: row 1: a is [1], not INTEGER",
        "procevents: refusing a message on procevents.web-7.events: row 2: proc is {'x': 1}, not INTEGER",
        "procevents: refusing a message on procevents.web-7.events: row 1: b is 18446744073709551616, not INTEGER",
        "procevents: refusing a message on procevents.web-7.procs: row 1: pid is null",
        "procevents: refusing a message on procevents.web-7.sessions: sessions without id",
    ], c.err.text
    assert "Traceback" not in c.err.text
    assert c.err.text.endswith(", 5 messages refused\n"), c.err.text
    assert [row[1:] for row in _events_of(central, "web-7")] == [("fork", 700), ("exit", 700)]
    assert db_rows(central, "SELECT pid, exit_code FROM procs WHERE source IS NOT NULL") == [(700, 3 << 8)]

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

#: A bound for shipping and collecting on a loaded machine, not a pace.
SLOW = 60.0


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
    wait_until(lambda: len(_events_of(central, "web-7")) == 2, "the good messages committed", timeout=SLOW)
    wait_until(lambda: len(_refusals(c)) == 5, "five refusals", timeout=SLOW)
    wait_until(lambda: nats.consumer("procevents-collect")[:2] == (0, 0), "nothing pending: refused ones terminated",
               timeout=SLOW)
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


def _rehost(host: str, store: str | None = None, **values: Any) -> Callable[[dict[str, Any]], None]:
    """The payload says ``host`` (its rows too), and ``store``, and ``values`` in every row."""
    def change(data: dict[str, Any]) -> None:
        data["host"] = host
        if store is not None:
            data["store"] = store
        for row in data["rows"]:
            for column, value in {"host": host, **values}.items():
                if column in data["columns"]:
                    row[data["columns"].index(column)] = value
    return change


def test_the_subject_names_the_host(collect: Callable[..., Cli], nats: NatsServer, tmp_path: Path) -> None:
    """Issue 23: a message on procevents.web-2.procs whose payload said
    host web-1 was shown as web-1's, and with web-1's store id (in every
    message id) another publisher rewrote web-1's lifetimes (a newer rev)
    and its session.  Now each is refused in one line and terminated; web-1's
    rows stay as web-1 shipped them, and web-2's own messages go in."""
    web1_db, web1 = _host_store(tmp_path, "web-1")
    _, web2 = _host_store(tmp_path, "web-2")
    store1 = json.loads(web1[0].payload)["store"]
    assert not [a for a in nats.publish([(m.subject, m.payload, m.msg_id) for m in web1]) if isinstance(a, Exception)]
    central = tmp_path / "central.db"
    c = collect("collect", "--nats", nats.url, "--db", str(central))
    wait_until(lambda: len(_events_of(central, "web-1")) == 2, "web-1's events collected", timeout=SLOW)
    lifetimes = ("SELECT p.pid, p.exit_code, p.rev, p.end_ns FROM procs p JOIN sources s ON s.id = p.source "
                 "WHERE s.host = ?")
    sessions = ("SELECT x.ended, x.boot_id, x.hostname FROM sessions x JOIN sources s ON s.id = x.source "
                "WHERE s.host = ?")
    before = (db_rows(central, lifetimes, ("web-1",)), db_rows(central, sessions, ("web-1",)))
    procs = next(m for m in web1 if m.kind == "procs")
    session = next(m for m in web1 if m.kind == "sessions")
    forged = [
        # web-1's own message, on web-2's subject
        ("procevents.web-2.procs", procs.payload, None),
        # web-2's name, web-1's store: a newer revision of web-1's lifetime, an end for its session
        ("procevents.web-2.procs", _forged(procs, _rehost("web-2", store1, rev=10**9, exit_code=0)), None),
        ("procevents.web-2.sessions", _forged(session, _rehost("web-2", store1, ended="clean", boot_id="x")), None),
        # web-2's name and store, a row of web-1
        ("procevents.web-2.procs", _forged(procs, _rehost("web-2", "web-2-store")), None),
    ]
    row_host = json.loads(forged[3][1])
    row_host["rows"][0][row_host["columns"].index("host")] = "web-1"
    forged[3] = (forged[3][0], json.dumps(row_host).encode(), None)
    acks = nats.publish([*forged, *((m.subject, m.payload, m.msg_id) for m in web2)])
    assert not [a for a in acks if isinstance(a, Exception)], acks
    wait_until(lambda: len(_events_of(central, "web-2")) == 2, "web-2's own events collected", timeout=SLOW)
    wait_until(lambda: len(_refusals(c)) == 4, "four refusals", timeout=SLOW)
    wait_until(lambda: nats.consumer("procevents-collect")[:2] == (0, 0), "nothing pending: refused ones terminated",
               timeout=SLOW)
    assert c.stop() == 0, c.err.text
    # In the order of the fetches they came in (in one, those the payload refuses come first).
    assert sorted(_refusals(c)) == sorted([
        "procevents: refusing a message on procevents.web-2.procs: its payload says host 'web-1'",
        "procevents: refusing a message on procevents.web-2.procs: row 1: host 'web-1' in a message of host 'web-2'",
        f"procevents: refusing a message on procevents.web-2.procs: store '{store1}' belongs to host 'web-1', not "
        "'web-2'",
        f"procevents: refusing a message on procevents.web-2.sessions: store '{store1}' belongs to host 'web-1', not "
        "'web-2'",
    ]), c.err.text
    assert c.err.text.endswith("collected from 2 hosts into " + str(central) + ", 4 messages refused\n"), c.err.text
    assert (db_rows(central, lifetimes, ("web-1",)), db_rows(central, sessions, ("web-1",))) == before
    assert db_rows(central, "SELECT count(*) FROM procs WHERE host = 'web-1'") == [(1,)]
    assert db_rows(central, "SELECT host, store FROM sources WHERE host IS NOT NULL ORDER BY host")[0] == (
        "web-1", store1)
    assert db_rows(web1_db, "SELECT pid, exit_code FROM procs") == [(700, 3 << 8)]


def test_what_another_host_names_is_escaped_and_each_refusal_is_named(
    collect: Callable[..., Cli], nats: NatsServer, tmp_path: Path,
) -> None:
    """Issue 23 (12): a subject was printed raw (an ESC reached the
    terminal), and only the first message that was not procevents rows was
    named.  Now each is named, escaped, up to MAX_NAMED; the rest counted."""
    evil = "procevents.\x1b[31mevil.events"
    junk = [(evil, b"\x1b[2J not json", None), *((f"procevents.junk-{i}.events", b"[%d]" % i, None) for i in range(11))]
    assert not [a for a in nats.publish(junk) if isinstance(a, Exception)]
    central = tmp_path / "central.db"
    c = collect("collect", "--nats", nats.url, "--db", str(central))
    c.err.wait_for(lambda line: b"collecting from" in line, timeout=SLOW)
    wait_until(lambda: nats.consumer("procevents-collect")[:2] == (0, 0), "every message terminated", timeout=SLOW)
    assert c.stop() == 0, c.err.text
    assert "\x1b" not in c.err.text, c.err.text
    named = _refusals(c)
    assert named[0].startswith("procevents: refusing a message on procevents.\\x1b[31mevil.events: not JSON"), named
    assert named[1:] == [
        f"procevents: refusing a message on procevents.junk-{i}.events: not a procevents message (version 1)"
        + (" (the next ones are only counted)" if i == 8 else "") for i in range(9)
    ], named
    assert c.err.text.endswith(", 12 messages refused\n"), c.err.text

"""The recorder's database as an outbox (fleet/outbox.py), on real stores
written by the real writer: what a stream has not acknowledged is read in
rounds past its cursor, the cursor moves only when told and only forward,
each stream has its own, and a lifetime is read again each time it is
rewritten."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import lost_rows_db

from procevents.events import Exit, Fork
from procevents.fleet.messages import decode
from procevents.fleet.outbox import Cursor, Outbox, Round
from procevents.proctable import Proc
from procevents.store import PROC_COLUMNS, StoreError, StoreSink, StoreWriter


def _ids(found: Round, kind: str) -> list[int]:
    """The first column (the local id) of every row of that kind, in order."""
    return [row[0] for m in found.messages if m.kind == kind for row in decode(m.payload).rows]


def test_a_new_stream_reads_everything_in_rounds(tmp_path: Path) -> None:
    db = lost_rows_db(tmp_path / "events.db")  # 2000 events, ids 1 to 2000
    outbox = Outbox(str(db), "S", "pre", "solo")
    assert outbox.cursor == Cursor() and outbox.waiting() == 2000
    first = outbox.read(limit=1500)
    assert (first.events, first.cursor.events, first.shipping) == (1500, 1500, True)
    assert _ids(first, "events") == list(range(1, 1501))
    assert {m.subject for m in first.messages} == {"pre.solo.events", "pre.solo.sessions"}
    # Read, not acknowledged: the same round again.
    assert outbox.cursor.events == 0 and _ids(outbox.read(limit=1500), "events") == list(range(1, 1501))
    outbox.advance(first.cursor)
    assert outbox.waiting() == 500
    second = outbox.read(limit=1500)
    assert _ids(second, "events") == list(range(1501, 2001)) and second.cursor.events == 2000
    outbox.advance(second.cursor)
    last = outbox.read()
    assert (last.events, last.shipping, outbox.waiting()) == (0, False, 0)
    assert [m.kind for m in last.messages] == ["sessions"]  # sent with every round, so a session's end follows
    outbox.close()


def test_the_cursor_only_moves_forward_and_each_stream_has_its_own(tmp_path: Path) -> None:
    db = str(lost_rows_db(tmp_path / "events.db"))
    outbox = Outbox(db, "S", "pre", "solo")
    outbox.advance(Cursor(events=10, procs=0, sessions=1))
    outbox.advance(Cursor(events=5, procs=0, sessions=1))  # an older acknowledgement, late
    assert outbox.cursor == Cursor(10, 0, 1)
    outbox.close()
    again = Outbox(db, "S", "pre", "solo")
    assert again.cursor == Cursor(10, 0, 1) and again.waiting() == 1990
    other = Outbox(db, "T", "pre", "solo")
    assert other.cursor == Cursor() and other.waiting() == 2000
    again.close()
    other.close()


def test_a_lifetime_is_read_again_each_time_it_is_rewritten(tmp_path: Path) -> None:
    path = str(tmp_path / "events.db")
    writer = StoreWriter(path, host="solo")  # the recorder's --host, which the outbox ships as
    sink = StoreSink(writer)
    proc = Proc(pid=700, ppid=1, start_ns=1_000, comm="worker")
    sink.emit(Fork(0, 1, 1_000, 1, 1, 700, 700), proc, {"comm": "worker"})
    writer.commit()
    outbox = Outbox(path, "S", "pre", "solo")
    forked = outbox.read()
    assert forked.procs == 1 and forked.cursor.procs > 0
    outbox.advance(forked.cursor)
    assert outbox.read().procs == 0
    sink.emit(Exit(0, 2, 2_000, 700, 700, 3 << 8, 17, 1, 1), proc, {"comm": "worker", "duration": 1.0})
    writer.commit()
    ended = outbox.read()
    assert ended.procs == 1 and ended.cursor.procs > forked.cursor.procs
    (row,) = [r for m in ended.messages if m.kind == "procs" for r in decode(m.payload).rows]
    assert row[PROC_COLUMNS.index("pid")] == 700 and row[PROC_COLUMNS.index("exit_code")] == 3 << 8
    outbox.close()
    writer.close()


def test_a_file_that_is_not_a_store_is_refused(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n")
    with pytest.raises(StoreError, match="not an SQLite file"):
        Outbox(str(text), "S", "pre", "solo")

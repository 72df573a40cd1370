"""The store's writing end (procevents.store.writer): StoreWriter's file and lock,
retention, and StoreSink's lifetimes, from synthetic events read back through
the reader."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import REPO, TRUE, Cli, record_synthetic

from procevents.events import Exit, wall_clock_ns
from procevents.proctable import Proc
from procevents.store import (
    APPLICATION_ID,
    COMMIT_INTERVAL,
    MAX_LAG,
    RECORD_LINGER,
    SCHEMA_VERSION,
    LifetimeQuery,
    StoreError,
    StoreReader,
    StoreSink,
    StoreWriter,
)


def test_new_database_is_private(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = tmp_path / "deep" / "er" / "events.db"
        writer = StoreWriter(str(path))
        writer.add_event((None, 1, 2, "lost", -1, 0, 0, 0, 5, None, None, None, "drops",
                          None, None, None, None, None, None, None, None))
        writer.commit()
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in path.parent.iterdir()}
        writer.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert modes["events.db"] == 0o600
    assert modes.get("events.db-wal", 0o600) == 0o600
    assert modes.get("events.db-shm", 0o600) == 0o600
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_one_writer_at_a_time(tmp_path: Path) -> None:
    path = str(tmp_path / "events.db")
    first = StoreWriter(path)
    try:
        with pytest.raises(StoreError, match="another procevents record"):
            StoreWriter(path)
    finally:
        first.close()
    StoreWriter(path).close()  # free again
    with StoreReader(path) as reader:  # sessions are rows
        _, rows = reader.sql("SELECT count(*) FROM sessions")
        assert list(rows) == [(2,)]


def test_a_core_dump_is_kept_in_lifetimes_and_the_view(tmp_path: Path) -> None:
    """Bug caught: core_dumped always false in stored lifetimes and in the lifetimes view."""
    from procevents.events import Fork

    proc = Proc(pid=4242, ppid=1, start_ns=1_000, comm="crash")
    aborted = 0x80 | signal.SIGABRT  # killed by SIGABRT, core dumped
    writer = record_synthetic(tmp_path, [
        (Fork(0, 1, 1_000, 1, 1, 4242, 4242), proc),
        (Exit(0, 2, 2_000, 4242, 4242, aborted, 17, 1, 1), proc),
    ])
    writer.close()
    with StoreReader(writer.path) as reader:
        (life,) = reader.lifetimes(LifetimeQuery())
        assert (life.signal, life.core_dumped, life.status) == (signal.SIGABRT, True, None)
        _, rows = reader.sql("SELECT signal, core_dumped, status FROM lifetimes")
        assert list(rows) == [(signal.SIGABRT, 1, None)]


def test_retention_goes_by_the_end_of_a_lifetime(tmp_path: Path) -> None:
    """Bug caught: retention deleting lifetimes by their start time (a long
    life that ended recently must stay)."""
    from procevents.events import Fork

    day = 86_400 * 10**9
    t0 = time.monotonic_ns()
    short, long = Proc(pid=501, ppid=1, start_ns=t0, comm="short"), Proc(pid=502, ppid=1, start_ns=t0, comm="long")
    writer = record_synthetic(tmp_path, [
        (Fork(0, 1, t0, 1, 1, 501, 501), short),
        (Fork(0, 2, t0, 1, 1, 502, 502), long),
        (Exit(0, 3, t0 + 10**9, 501, 501, 0, 17, 1, 1), short),
        (Exit(0, 4, t0 + 3 * day, 502, 502, 0, 17, 1, 1), long),
    ], retain_ns=day)
    writer.prune(now_ns=wall_clock_ns(t0) + 2 * day + 3_600 * 10**9)  # cutoff: t0 + 1 day + 1 h
    writer.close()
    with StoreReader(writer.path) as reader:
        assert [life.comm for life in reader.lifetimes(LifetimeQuery())] == ["long"]
        _, rows = reader.sql("SELECT event, pid FROM events ORDER BY id")
        assert list(rows) == [("exit", 502)]  # events go by their own time


def test_the_sink_keeps_a_lifetime_until_its_last_events_then_forgets_it(tmp_path: Path) -> None:
    from procevents.events import Exec, Fork, Lost
    from procevents.store.writer import SWEEP_EVENTS

    writer = StoreWriter(str(tmp_path / "s.db"))
    sink = StoreSink(writer)
    proc = Proc(pid=700, ppid=1, start_ns=1_000, comm="worker", argv=["worker"])
    sink.emit(Fork(0, 1, 1_000, 1, 1, 700, 700), proc, {})
    sink.emit(Exec(0, 2, 2_000, 700, 700), proc, {})
    sink.emit(Exit(0, 3, 3_000, 700, 700, 0, 17, 1, 1), proc, {"duration": 0.1})
    # A thread's exit may come after its process's: still the same lifetime.
    sink.emit(Exit(1, 4, 3_100, 701, 700, 0, -1, 700, 700), proc, {})
    # The same lifetime as the table may hand it again: same pid, same start.
    again = Proc(pid=700, ppid=1, start_ns=1_000, comm="worker")
    sink.emit(Exit(1, 5, 3_200, 702, 700, 0, -1, 700, 700), again, {})
    ended = sink.lives[700][1]
    # The pid reused at once by another process is another lifetime.
    reused = Proc(pid=700, ppid=1, start_ns=9_000, comm="other")
    sink.emit(Fork(0, 6, 9_000, 1, 1, 700, 700), reused, {})
    assert sink.lives[700][1] is not ended
    ended_elsewhere = Proc(pid=800, ppid=1, start_ns=1_500, comm="short")
    sink.emit(Exit(0, 7, 3_500, 800, 800, 0, 17, 1, 1), ended_elsewhere, {})
    for seq in range(2 * SWEEP_EVENTS):  # two sweeps: ended before the first, forgotten at the second
        sink.emit(Lost(-1, 0, 10_000 + seq, 1, "drops"), None, {})
    assert [proc for proc, _life in sink.lives.values()] == [reused]  # the live one stays
    writer.close()
    conn = sqlite3.connect(tmp_path / "s.db")
    try:
        rows = conn.execute("SELECT pid, start_ns, end_ns FROM procs ORDER BY id").fetchall()
        per_life = conn.execute("SELECT proc, count(*) FROM events WHERE proc IS NOT NULL GROUP BY proc").fetchall()
    finally:
        conn.close()
    assert rows == [(700, 1_000, 3_000), (700, 9_000, None), (800, 1_500, 3_500)]
    assert sorted(count for _life, count in per_life) == [1, 1, 5]


def test_an_idle_recorder_needs_no_wakeup(tmp_path: Path) -> None:
    writer = StoreWriter(str(tmp_path / "a.db"))
    try:
        assert writer.flush_due_in is None  # nothing waiting: sleep until an event
        writer.touch(writer.new_life(4242, 1, 0, True))
        assert writer.flush_due_in == 0.0  # a changed lifetime: commit now
        writer.flush()
        assert writer.flush_due_in is None
    finally:
        writer.close()
    pruning = StoreWriter(str(tmp_path / "b.db"), retain_ns=3600 * 10**9)
    try:
        pruning.prune()  # the first prune is due at once; the next in PRUNE_INTERVAL
        due = pruning.flush_due_in
        assert due is not None and 0 < due <= 60.0
    finally:
        pruning.close()


@pytest.mark.parametrize("how", ["moved", "replaced"])
def test_a_store_moved_or_replaced_while_recording_is_said_once_and_stops(
    how: str, tmp_path: Path, cli: Callable[..., Cli]
) -> None:
    """SQLite finds its -wal by the path: committing on after the file was
    moved (or another put in its place) left the rows in an orphaned -wal
    at the old path.  The recorder checkpoints what it has into the file
    where it is now, says so once and stops; the file holds every event."""
    db, moved = tmp_path / "events.db", tmp_path / "moved.db"
    rec = cli("record", "--db", str(db))
    rec.wait_listening()
    db.rename(moved)
    if how == "replaced":
        db.write_bytes(b"")
        db.chmod(0o600)
    assert subprocess.run([TRUE]).returncode == 0  # something to commit
    assert rec.wait() == 1
    said = (
        f"procevents: error: writing output: {db} was moved to {moved} while recording: stopped; "
        "everything recorded is there\n"
    )
    assert [line for line in rec.err.lines if b"error" in line] == [said.encode()], rec.err.text
    recorded = int(re.search(rb"(\d+) events recorded to " + re.escape(str(moved).encode()), rec.err.data)[1])
    with sqlite3.connect(moved) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == recorded > 0
        assert conn.execute("SELECT ended FROM sessions").fetchall() == [("error",)]
    if how == "replaced":
        assert db.read_bytes() == b""  # the file put in its place is not written


def test_the_lag_bound_is_the_one_the_docs_state() -> None:
    """One bound on how far a query lags a running recorder: the read's
    linger and the commit interval fit in it with room for the batch's
    work, and README.md and record --help state that same number."""
    from procevents.cli.record import RECORD_EPILOG

    assert RECORD_LINGER + COMMIT_INTERVAL < MAX_LAG
    said = f"a query sees an event at most {MAX_LAG:g} s after it happened"
    assert said in " ".join(RECORD_EPILOG.split())
    assert said in " ".join((REPO / "README.md").read_text().split())

"""The SQLite store as a library: what goes in comes back out.

Events come from the real kernel through the same Pipeline as the live view,
with a tee sink that renders JSON (or text, or the tree) and records at the
same time, so the replay can be compared with the live output byte for byte.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import signal
import sqlite3
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers import TIMEOUT, Gated, skip_unless_connector
from hypothesis import given
from hypothesis import strategies as st

import procevents
from procevents.cli.replay import replay_clock, replay_lineage
from procevents.cli.runner import ancestor_lineage
from procevents.enrich import Enricher
from procevents.events import Event, Exit, wall_clock_ns
from procevents.pipeline import JsonSink, Output, Pipeline, TextSink, TreeSink
from procevents.proctable import Proc
from procevents.store import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    LifetimeQuery,
    StoreError,
    StoreReader,
    StoreSink,
    StoreWriter,
    decode_argv,
    decode_text,
    encode_argv,
    encode_text,
)

SH = os.path.realpath(shutil.which("sh") or "/bin/sh")

# -- values -------------------------------------------------------------------------------

# Text as procevents holds it: str with surrogate escapes for undecodable bytes.
raw_bytes = st.binary(max_size=40)
fs_text = raw_bytes.map(lambda b: b.decode("utf-8", "surrogateescape"))


@given(fs_text)
def test_text_round_trip(text: str) -> None:
    stored = encode_text(text)
    if isinstance(stored, str):
        stored.encode("utf-8")  # what SQLite accepts as TEXT
    assert decode_text(stored) == text


@given(st.lists(raw_bytes.filter(lambda b: b"\0" not in b).map(lambda b: b.decode("utf-8", "surrogateescape"))))
def test_argv_round_trip(argv: list[str]) -> None:
    assert decode_argv(encode_argv(argv)) == argv


def test_argv_edges() -> None:
    assert encode_argv(None) is None and decode_argv(None) is None
    assert encode_argv([]) == b"" and decode_argv(b"") == []
    assert encode_argv([""]) == b"\0" and decode_argv(b"\0") == [""]
    assert encode_argv(["a", "b c"]) == b"a\0b c\0"


# -- recording in-process --------------------------------------------------------------------


class Tee:
    """Renders like the live view and records, from the same pipeline."""

    def __init__(self, *sinks: Any) -> None:
        self.sinks = sinks

    def emit(self, event: Event, proc: Proc | None, info: Mapping[str, Any]) -> bool:
        for sink in self.sinks:
            sink.emit(event, proc, info)
        return True


@dataclass
class Session:
    db: Path
    enricher: Enricher
    writer: StoreWriter
    pipeline: Pipeline
    outputs: dict[str, tuple[Output, io.BytesIO]]
    events: list[Event] = field(default_factory=list)

    def pump_until(self, done: Callable[[], bool], what: str) -> None:
        import time

        deadline = time.monotonic() + TIMEOUT
        while not done():
            assert time.monotonic() < deadline, f"no {what} within {TIMEOUT} s"
            batch = self.pipeline.connector.read_batch(0.1)
            if batch:
                self.events.extend(batch)
                self.pipeline.process(batch)
                for out, _ in self.outputs.values():
                    out.flush()
                self.writer.flush()

    def exited(self, *pids: int) -> Callable[[], bool]:
        def done() -> bool:
            gone = {ev.pid for ev in self.events if isinstance(ev, Exit) and ev.pid == ev.tgid}
            return set(pids) <= gone

        return done

    def execed(self, *pids: int) -> Callable[[], bool]:
        def done() -> bool:
            return set(pids) <= {ev.tgid for ev in self.events if ev.name == "exec"}

        return done

    def text(self, kind: str) -> list[bytes]:
        return self.outputs[kind][1].getvalue().splitlines(keepends=True)


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    skip_unless_connector()
    db = tmp_path / "events.db"
    with procevents.listen() as conn:
        enricher = Enricher()
        writer = StoreWriter(str(db))
        outputs = {}
        sinks: list[Any] = [StoreSink(writer, enricher.table.get)]
        for kind in ("json", "text", "tree"):
            buf = io.BytesIO()
            out = Output(buf)
            outputs[kind] = (out, buf)
            if kind == "json":
                sinks.append(JsonSink(out))
            elif kind == "text":
                sinks.append(TextSink(out))
            else:
                sinks.append(TreeSink(out, ancestor_lineage(enricher, None)))
        pipeline = Pipeline(conn, Tee(*sinks), enricher=enricher)
        s = Session(db, enricher, writer, pipeline, outputs)
        try:
            yield s
        finally:
            writer.close()


def _workload(s: Session, cwd: Path) -> dict[str, Gated]:
    """Children with known argv, cwd and ends; each released once its exec was seen."""
    kids = {
        "fail": Gated([SH, "-c", "read _; exit 3", "odd\udcffarg"], cwd=cwd),
        "ok": Gated([SH, "-c", 'read _; sh -c "exit 4"; printf renamed > /proc/$$/comm; exit 0'], cwd=cwd),
        "killed": Gated(["sleep", "1000"], cwd=cwd),
    }
    try:
        s.pump_until(s.execed(*(k.pid for k in kids.values())), "execs of the workload")
        assert kids["fail"].release() == 3
        assert kids["ok"].release() == 0
        assert kids["killed"].kill() == -signal.SIGKILL
        s.pump_until(s.exited(*(k.pid for k in kids.values())), "exits of the workload")
    finally:
        for kid in kids.values():
            kid.cleanup()
    return kids


def test_replay_equals_live_output(session: Session, tmp_path: Path) -> None:
    s = session
    kids = _workload(s, tmp_path)
    s.writer.close()
    pids = {k.pid for k in kids.values()}
    with StoreReader(str(s.db)) as reader:
        clock = replay_clock()
        offset = wall_clock_ns(0)
        replayed: dict[str, io.BytesIO] = {kind: io.BytesIO() for kind in ("json", "text", "tree")}
        outs = {kind: Output(buf) for kind, buf in replayed.items()}
        json_sink = JsonSink(outs["json"])
        json_sink.clock = clock
        text_sink = TextSink(outs["text"])
        text_sink.renderer.clock = clock
        tree_sink = TreeSink(outs["tree"], replay_lineage(reader, None))
        count = 0
        for rec in reader.events():
            clock.shift = rec.wall - rec.event.timestamp_ns - offset
            assert clock.shift == 0  # same process, same wall-clock offset
            for sink in (json_sink, text_sink, tree_sink):
                sink.emit(rec.event, rec.proc, rec.info)
            count += 1
        for out in outs.values():
            out.flush()
    assert count == len(s.events)  # every event, lost ones included
    for kind in ("json", "text"):
        assert replayed[kind].getvalue().splitlines(keepends=True) == s.text(kind), kind
    # The tree: indentation comes from recorded parent links instead of the
    # live table; the workload's lines are the same.
    mine = [str(pid).encode() for pid in pids]

    def ours(lines: list[bytes]) -> list[bytes]:  # (time, pid, ...)
        return [line for line in lines if line.split()[1:2] and line.split()[1] in mine]

    live_tree = ours(s.text("tree"))
    assert live_tree, s.text("tree")
    assert ours(replayed["tree"].getvalue().splitlines(keepends=True)) == live_tree


def test_lifetimes_hold_what_happened(session: Session, tmp_path: Path) -> None:
    s = session
    kids = _workload(s, tmp_path)
    s.writer.close()
    with StoreReader(str(s.db)) as reader:
        lives = {life.pid: life for life in reader.lifetimes(LifetimeQuery(pids=frozenset({os.getpid()})))}
        fail, ok, killed = lives[kids["fail"].pid], lives[kids["ok"].pid], lives[kids["killed"].pid]
        for life in (fail, ok, killed):
            assert life.ppid == os.getpid()
            assert life.forked
            assert life.cwd == str(tmp_path)
            assert life.uid == 0 and life.user == "root"
            assert life.execs == 1
            assert life.start_ns is not None and life.end_ns is not None and life.start_ns < life.end_ns
            assert life.start_wall == wall_clock_ns(life.start_ns)
            assert life.end_wall == wall_clock_ns(life.end_ns)
            assert life.duration == (life.end_ns - life.start_ns) / 1e9
            parent = reader.lifetimes_by_id([life.parent or -1]).get(life.parent or -1)
            assert parent is not None and parent.pid == os.getpid()
        assert fail.argv == [SH, "-c", "read _; exit 3", "odd\udcffarg"]
        assert fail.exe == SH and fail.comm == os.path.basename(SH)[:15]
        assert (fail.exit_code, fail.status, fail.signal, fail.core_dumped) == (768, 3, None, False)
        assert ok.comm == "renamed"  # the COMM event reached the lifetime
        assert (ok.status, ok.signal) == (0, None) and not ok.failed
        assert killed.argv == ["sleep", "1000"] and killed.comm == "sleep"
        assert (killed.status, killed.signal, killed.core_dumped) == (None, 9, False)
        # the grandchild, under "ok"
        inner = [life for life in lives.values() if life.parent == ok.id]
        assert [(life.status, life.ppid) for life in inner] == [(4, ok.pid)]
        failed = {life.pid for life in reader.lifetimes(LifetimeQuery(pids=frozenset({os.getpid()}), failed=True))}
        assert failed >= {fail.pid, killed.pid, inner[0].pid} and ok.pid not in failed
        import re

        by_command = reader.lifetimes(LifetimeQuery(command=re.compile("^sleep$"), pids=frozenset({killed.pid})))
        assert [life.pid for life in by_command] == [killed.pid]
        assert not reader.lifetimes(LifetimeQuery(user="nobody", pids=frozenset({fail.pid})))
        assert [life.pid for life in reader.lifetimes(LifetimeQuery(user="0", pids=frozenset({fail.pid})))] == [
            fail.pid
        ]
        # Time ranges: alive at some moment in [since, until].
        assert fail.start_wall is not None and fail.end_wall is not None
        q = LifetimeQuery(since=fail.end_wall + 1, pids=frozenset({fail.pid}))
        assert not reader.lifetimes(q)
        q = LifetimeQuery(since=fail.end_wall, until=fail.end_wall, pids=frozenset({fail.pid}))
        assert [life.pid for life in reader.lifetimes(q)] == [fail.pid]
        q = LifetimeQuery(until=fail.start_wall - 1, pids=frozenset({fail.pid}))
        assert not reader.lifetimes(q)


def test_every_event_is_a_row(session: Session, tmp_path: Path) -> None:
    s = session
    _workload(s, tmp_path)
    s.writer.close()
    with StoreReader(str(s.db)) as reader:
        rebuilt = [rec.event for rec in reader.events()]
    assert rebuilt == s.events  # exactly the kernel's events, in arrival order
    with StoreReader(str(s.db)) as reader:
        assert reader.integrity() == "ok"


def test_retention_deletes_what_is_older(session: Session, tmp_path: Path) -> None:
    s = session
    first = _workload(s, tmp_path)
    s.writer.commit()
    boundary = max(wall for (wall,) in s.writer.conn.execute("SELECT wall FROM events")) + 1
    second = _workload(s, tmp_path)
    s.writer.commit()
    retain = 3600 * 10**9
    s.writer.retain_ns = retain
    deleted = s.writer.prune(now_ns=boundary + retain)
    assert deleted > 0
    conn = s.writer.conn
    assert conn.execute("SELECT count(*) FROM events WHERE wall < ?", (boundary,)).fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM events WHERE wall >= ?", (boundary,)).fetchone()[0] > 0
    kept = {pid for (pid,) in conn.execute("SELECT pid FROM procs")}
    assert not {k.pid for k in first.values()} & kept
    assert {k.pid for k in second.values()} <= kept
    s.writer.close()
    with StoreReader(str(s.db)) as reader:
        assert reader.integrity() == "ok"


# -- the file ---------------------------------------------------------------------------------


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


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _recorded_db(path: Path) -> Path:
    writer = StoreWriter(str(path))
    for i in range(2000):  # enough rows for several pages
        writer.add_event((None, i, i, "lost", -1, 0, 0, 0, i, None, None, None, "drops",
                          None, None, None, None, None, None, None, None))
    writer.close()
    return path


@pytest.mark.parametrize("opener", ["reader", "writer"])
def test_foreign_files_are_refused_untouched(tmp_path: Path, opener: str) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n" * 100)
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    newer = _recorded_db(tmp_path / "newer.db")
    conn = sqlite3.connect(newer)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    cases = {text: "not an SQLite file", other: "not a procevents one", newer: "newer procevents"}
    for path, message in cases.items():
        before = _digest(path)
        with pytest.raises(StoreError, match=message):
            if opener == "reader":
                StoreReader(str(path))
            else:
                StoreWriter(str(path))
        assert _digest(path) == before, path
    with pytest.raises(StoreError, match="no database"):
        StoreReader(str(tmp_path / "missing.db"))
    with pytest.raises(StoreError, match="directory"):
        StoreReader(str(tmp_path))


def test_damaged_file_is_reported(tmp_path: Path) -> None:
    path = _recorded_db(tmp_path / "events.db")
    size = path.stat().st_size
    assert size > 8 * 4096
    with path.open("r+b") as f:  # garbage over everything but the header page
        f.seek(4096)
        f.write(os.urandom(size - 4096))
    with pytest.raises(StoreError, match="damaged"), StoreReader(str(path)) as reader:
        list(reader.events())
        reader.lifetimes(LifetimeQuery())
    truncated = _recorded_db(tmp_path / "truncated.db")
    with truncated.open("r+b") as f:
        f.truncate(3 * 4096 + 100)
    with pytest.raises(StoreError, match="damaged"), StoreReader(str(truncated)) as reader:
        list(reader.events())


def test_sql_is_read_only(tmp_path: Path) -> None:
    path = _recorded_db(tmp_path / "events.db")
    before = _digest(path)
    with StoreReader(str(path)) as reader:
        columns, rows = reader.sql("SELECT event, count(*) AS n FROM events GROUP BY event")
        assert columns == ["event", "n"] and list(rows) == [("lost", 2000)]
        _, rows = reader.sql("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3) "
                             "SELECT sum(i) FROM n")
        assert list(rows) == [(6,)]
        _, rows = reader.sql("PRAGMA table_info(events)")
        assert len(list(rows)) > 10
        _, rows = reader.sql("SELECT status, failed FROM lifetimes")
        assert list(rows) == []
        for statement in (
            "DELETE FROM events",
            "UPDATE events SET cpu = 7",
            "INSERT INTO sessions (started_wall, clock_offset) VALUES (1, 2)",
            "DROP TABLE events",
            "CREATE TABLE x (y)",
            f"ATTACH DATABASE '{tmp_path / 'x.db'}' AS x",
            "PRAGMA user_version = 9",
            "PRAGMA journal_mode = DELETE",
            "SELECT 1; DELETE FROM events",
        ):
            with pytest.raises(StoreError):
                _, rows = reader.sql(statement)
                list(rows)
    assert _digest(path) == before
    assert not (tmp_path / "x.db").exists()


# -- the audit's surviving bugs, caught from synthetic events ------------------------------------


def _recorded(tmp_path: Path, events: list[tuple[Event, Proc]], retain_ns: int | None = None) -> StoreWriter:
    writer = StoreWriter(str(tmp_path / "synthetic.db"), retain_ns=retain_ns)
    sink = StoreSink(writer)
    for event, proc in events:
        sink.emit(event, proc, {"comm": proc.comm, "duration": 1.0} if type(event) is Exit else {"comm": proc.comm})
    writer.commit()
    return writer


def test_a_core_dump_is_kept_in_lifetimes_and_the_view(tmp_path: Path) -> None:
    """Bug caught: core_dumped always false in stored lifetimes and in the lifetimes view."""
    from procevents.events import Fork

    proc = Proc(pid=4242, ppid=1, start_ns=1_000, comm="crash")
    aborted = 0x80 | signal.SIGABRT  # killed by SIGABRT, core dumped
    writer = _recorded(tmp_path, [
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
    writer = _recorded(tmp_path, [
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


_READING_PRAGMAS = [
    "user_version", "application_id", "page_count", "page_size", "freelist_count", "table_list", "database_list",
    "collation_list", "function_list", "pragma_list", "compile_options", "journal_mode",
    "table_info(events)", "table_xinfo(procs)", "index_list(events)", "index_info(events_ts)",
    "index_xinfo(events_ts)", "foreign_key_list(events)", "quick_check", "integrity_check",
]


@pytest.fixture
def small_db(tmp_path: Path) -> str:
    from procevents.events import Fork

    proc = Proc(pid=77, ppid=1, start_ns=5, comm="x")
    writer = _recorded(tmp_path, [(Fork(0, 1, 5, 1, 1, 77, 77), proc)])
    writer.close()
    return writer.path


@pytest.mark.parametrize("pragma", _READING_PRAGMAS)
def test_sql_may_run_every_reading_pragma(small_db: str, pragma: str) -> None:
    with StoreReader(small_db) as reader:
        _columns, rows = reader.sql(f"PRAGMA {pragma}")
        list(rows)  # no StoreError


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO sessions (started_wall, clock_offset) VALUES (1, 1)",
        "UPDATE procs SET comm = 'y'",
        "DELETE FROM events",
        "CREATE TABLE t (x)",
        "DROP TABLE events",
        "ALTER TABLE procs ADD COLUMN z",
        "ATTACH DATABASE ':memory:' AS other",
        "PRAGMA user_version = 9",
        "PRAGMA journal_mode = DELETE",
        "PRAGMA writable_schema = 1",
        "PRAGMA wal_checkpoint",
        "CREATE TEMP VIEW v AS SELECT 1",
    ],
)
def test_sql_refuses_every_write(small_db: str, statement: str) -> None:
    before = _digest_file(small_db)
    with StoreReader(small_db) as reader, pytest.raises(StoreError, match="not authorized"):
        reader.sql(statement)
    assert _digest_file(small_db) == before


def test_sql_reads_with_functions_and_recursion(small_db: str) -> None:
    with StoreReader(small_db) as reader:
        _, rows = reader.sql(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3) "
            "SELECT upper(p.comm), (SELECT count(*) FROM n) FROM procs p"
        )
        assert list(rows) == [("X", 3)]


def _digest_file(path: str) -> bytes:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).digest()


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

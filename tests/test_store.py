"""The SQLite store as a library: what goes in comes back out.

Events come from the real kernel through the same Pipeline as the live view,
with a tee sink that renders JSON (or text, or the tree) and records at the
same time, so the replay can be compared with the live output byte for byte.
"""

from __future__ import annotations

import io
import os
import signal
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers import SH, TIMEOUT, Gated, skip_unless_connector

import procevents
from procevents.cli.replay import replay_clock, replay_lineage
from procevents.cli.runner import ancestor_lineage
from procevents.enrich import Enricher
from procevents.events import Event, Exit, wall_clock_ns
from procevents.pipeline import JsonSink, Output, Pipeline, TextSink, TreeSink
from procevents.proctable import Proc
from procevents.store import (
    LifetimeQuery,
    StoreReader,
    StoreSink,
    StoreWriter,
)

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



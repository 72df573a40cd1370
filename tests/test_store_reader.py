"""The store's reading end, against real databases written by the real
writer (StoreWriter and StoreSink, fed synthetic events): every query's
exact rows, every event type rebuilt field for field, and every error's
one line.

Fields are checked by name, so a schema that gains columns keeps these
tests meaningful.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import NOBODY
from helpers import CONTAINER_ID, collected_store, digest, lost_rows_db, record_synthetic, two_hosts_build

from procevents.events import (
    Comm,
    Coredump,
    Event,
    Exec,
    Exit,
    Fork,
    Gid,
    Lost,
    Ptrace,
    Sid,
    Uid,
    Unknown,
    wall_clock_ns,
)
from procevents.proctable import Proc
from procevents.store import LifetimeQuery, StoreError, StoreReader, StoreSink, StoreWriter
from procevents.store.reader import RecordedProc
from procevents.store.schema import COST_COLUMNS

ROOT_NAME = "root"
STRANGER = 4242  # no passwd entry: shown as its number


Step = tuple[Event, "Proc | None", Mapping[str, Any]]


def record(path: Path, steps: Sequence[Step], procs: Mapping[int, Proc] | None = None) -> StoreWriter:
    """A database holding these events, written as the recorder writes them
    (``procs``: the live table the sink links parents through)."""
    writer = StoreWriter(str(path))
    sink = StoreSink(writer, (procs or {}).get)
    for event, proc, info in steps:
        sink.emit(event, proc, info)
    writer.close()
    return writer


def exit_code(status: int = 0, sig: int = 0, core: bool = False) -> int:
    return (status << 8) | sig | (0x80 if core else 0)


# -- a small process tree --------------------------------------------------------------------
#
#   server (100, running when recording began, uid 0)
#   `- worker (200, forked at 2_000, execs /opt/w/bin/worker, exits 3 at 5_000)
#      `- crasher (300, forked at 3_000, SIGSEGV with a core at 4_000)
#   lonely (400, uid NOBODY, forked by 1 at 6_000, still running)
#   failing (500, uid STRANGER, forked by 1 at 7_000, exits 1 at 8_000)


def _tree() -> tuple[list[Step], dict[int, Proc]]:
    server = Proc(pid=100, ppid=1, start_ns=1_000, comm="server", exe="/usr/sbin/server",
                  argv=["server", "--serve"], cwd="/", ruid=0, euid=0)
    worker = Proc(pid=200, ppid=100, start_ns=2_000, comm="server", exe="/usr/sbin/server",
                  argv=["server", "--serve"], cwd="/srv", ruid=0, euid=0)
    crasher = Proc(pid=300, ppid=200, start_ns=3_000, comm="crasher", exe="/bin/crasher",
                   argv=["crasher"], cwd="/tmp", ruid=0, euid=0)
    lonely = Proc(pid=400, ppid=1, start_ns=6_000, comm="lonely", exe="/bin/lonely",
                  argv=["lonely"], cwd="/home", ruid=NOBODY, euid=NOBODY)
    failing = Proc(pid=500, ppid=1, start_ns=7_000, comm="failing", exe="/bin/false",
                   argv=["false"], cwd="/", ruid=STRANGER, euid=STRANGER)
    table = {p.pid: p for p in (server, worker, crasher, lonely, failing)}
    steps: list[Step] = [
        (Sid(0, 1, 1_500, 100, 100), server, {"comm": "server", "ppid": 1}),
        (Fork(0, 2, 2_000, 100, 100, 200, 200), worker, {"comm": "server", "ppid": 100}),
    ]
    # the worker execs: what the enricher read after the exec
    worker.comm, worker.exe, worker.argv = "worker", "/opt/w/bin/worker", ["worker-argv0", "job"]
    steps += [
        (Exec(1, 1, 2_500, 200, 200), worker, {
            "cmdline": ["worker-argv0", "job"], "exe": "/opt/w/bin/worker", "cwd": "/srv", "ppid": 100,
            "uid": 0, "user": ROOT_NAME, "comm": "worker",
        }),
        (Fork(1, 2, 3_000, 200, 200, 300, 300), crasher, {"comm": "crasher", "ppid": 200}),
        (Exit(1, 3, 4_000, 300, 300, exit_code(sig=signal.SIGSEGV, core=True), 17, 200, 200), crasher,
         {"comm": "crasher", "cmdline": ["crasher"], "duration": 0.25, "ppid": 200, "uid": 0}),
        (Exit(0, 3, 5_000, 200, 200, exit_code(3), 17, 100, 100), worker,
         {"comm": "worker", "cmdline": ["worker-argv0", "job"], "duration": 3.0, "ppid": 100, "uid": 0}),
        (Fork(0, 4, 6_000, 1, 1, 400, 400), lonely, {"comm": "lonely", "ppid": 1}),
        (Fork(0, 5, 7_000, 1, 1, 500, 500), failing, {"comm": "failing", "ppid": 1}),
        (Exit(0, 6, 8_000, 500, 500, exit_code(1), 17, 1, 1), failing,
         {"comm": "failing", "cmdline": ["false"], "duration": 1.0, "ppid": 1, "uid": STRANGER}),
    ]
    return steps, table


@pytest.fixture
def tree(tmp_path: Path) -> StoreWriter:
    steps, table = _tree()
    return record(tmp_path / "tree.db", steps, table)


def shown(info: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    """These keys, in this order, with these values (later schemas add keys)."""
    assert {key: info.get(key, "(absent)") for key in expected} == dict(expected)
    assert [key for key in info if key in expected] == [key for key in expected if expected[key] != "(absent)"]


def pids(lives: Sequence[Any]) -> list[int]:
    return [life.pid for life in lives]


def test_lifetimes_decode_every_field(tree: StoreWriter) -> None:
    with StoreReader(tree.path) as reader:
        lives = {life.pid: life for life in reader.lifetimes(LifetimeQuery())}
    server, worker, crasher, lonely = lives[100], lives[200], lives[300], lives[400]
    assert server.session == tree.session
    assert (server.ppid, server.parent, server.forked, server.start_ns, server.end_ns) == (1, None, False, 1_000, None)
    assert (server.start_wall, server.end_wall) == (wall_clock_ns(1_000), None)
    assert (server.comm, server.exe, server.argv, server.cwd) == (
        "server", "/usr/sbin/server", ["server", "--serve"], "/")
    assert (server.uid, server.user, server.execs, server.exit_code, server.duration) == (0, ROOT_NAME, 0, None, None)
    assert (server.status, server.signal, server.core_dumped, server.failed) == (None, None, None, False)

    assert (worker.ppid, worker.parent, worker.forked) == (100, server.id, True)
    assert (worker.start_ns, worker.end_ns, worker.end_wall) == (2_000, 5_000, wall_clock_ns(5_000))
    assert (worker.comm, worker.exe, worker.argv, worker.cwd) == (
        "worker", "/opt/w/bin/worker", ["worker-argv0", "job"], "/srv")
    assert (worker.execs, worker.exit_code, worker.duration) == (1, 3 << 8, 3.0)
    assert (worker.status, worker.signal, worker.core_dumped, worker.failed) == (3, None, False, True)

    assert crasher.parent == worker.id
    assert (crasher.status, crasher.signal, crasher.core_dumped, crasher.failed) == (None, signal.SIGSEGV, True, True)
    assert (lonely.uid, lonely.user, lonely.parent, lonely.end_ns) == (NOBODY, "nobody", None, None)
    assert (lives[500].uid, lives[500].user) == (STRANGER, str(STRANGER))


def test_lifetimes_come_by_start_then_id(tmp_path: Path) -> None:
    """Same start: by id (the order they were first seen)."""
    a = Proc(pid=30, ppid=1, start_ns=50, comm="a")
    b = Proc(pid=20, ppid=1, start_ns=50, comm="b")
    c = Proc(pid=10, ppid=1, start_ns=40, comm="c")
    writer = record(tmp_path / "order.db", [
        (Fork(0, 1, 50, 1, 1, 30, 30), a, {}),
        (Fork(0, 2, 50, 1, 1, 20, 20), b, {}),
        (Fork(0, 3, 40, 1, 1, 10, 10), c, {}),
    ])
    with StoreReader(writer.path) as reader:
        assert [life.comm for life in reader.lifetimes(LifetimeQuery())] == ["c", "a", "b"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (LifetimeQuery(), [100, 200, 300, 400, 500]),
        # alive at some time in [since, until]: ended at or after since, started at or before until
        (LifetimeQuery(since=wall_clock_ns(5_000)), [100, 200, 400, 500]),
        (LifetimeQuery(since=wall_clock_ns(5_001)), [100, 400, 500]),
        (LifetimeQuery(until=wall_clock_ns(6_000)), [100, 200, 300, 400]),
        (LifetimeQuery(until=wall_clock_ns(5_999)), [100, 200, 300]),
        (LifetimeQuery(since=wall_clock_ns(4_500), until=wall_clock_ns(6_500)), [100, 200, 400]),
        (LifetimeQuery(failed=True), [200, 300, 500]),
        (LifetimeQuery(user=ROOT_NAME), [100, 200, 300]),
        (LifetimeQuery(user="nobody"), [400]),
        (LifetimeQuery(user=str(NOBODY)), [400]),
        (LifetimeQuery(user=str(STRANGER)), [500]),
        (LifetimeQuery(user="0"), [100, 200, 300]),
        (LifetimeQuery(user="no-such-user"), []),
        (LifetimeQuery(pids=frozenset({200})), [200, 300]),
        (LifetimeQuery(pids=frozenset({100})), [100, 200, 300]),
        (LifetimeQuery(pids=frozenset({300, 400})), [300, 400]),
        (LifetimeQuery(pids=frozenset({999})), []),
        (LifetimeQuery(pids=frozenset({100}), failed=True, user="0"), [200, 300]),
    ],
)
def test_lifetime_queries(tree: StoreWriter, query: LifetimeQuery, expected: list[int]) -> None:
    with StoreReader(tree.path) as reader:
        assert pids(reader.lifetimes(query)) == expected


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("^crash", [300]),  # comm only
        ("/opt/w/", [200]),  # exe only
        ("argv0$", [200]),  # argv[0] only
        ("^job$", []),  # argv[1] never matches
        ("--serve", []),
        ("^(lonely|false)$", [400, 500]),  # comm of one, argv[0] of the other
        ("nothing-like-it", []),
    ],
)
def test_lifetimes_by_command(tree: StoreWriter, pattern: str, expected: list[int]) -> None:
    import re

    with StoreReader(tree.path) as reader:
        assert pids(reader.lifetimes(LifetimeQuery(command=re.compile(pattern)))) == expected


def test_command_matches_odd_bytes_and_missing_fields(tmp_path: Path) -> None:
    """comm and exe stored as BLOBs (not UTF-8) are matched as the text they
    decode to; lifetimes with no comm, exe or argv do not match and do not fail."""
    import re

    odd = Proc(pid=10, ppid=1, start_ns=10, comm="bad\udcffname", exe="/x/\udcfeexe", argv=["ar\udcfdg0"])
    bare = Proc(pid=11, ppid=1, start_ns=11)
    empty_argv = Proc(pid=12, ppid=1, start_ns=12, argv=[])
    writer = record(tmp_path / "odd.db", [
        (Fork(0, 1, 10, 1, 1, 10, 10), odd, {}),
        (Fork(0, 2, 11, 1, 1, 11, 11), bare, {}),
        (Fork(0, 3, 12, 1, 1, 12, 12), empty_argv, {}),
    ])
    with StoreReader(writer.path) as reader:
        (life,) = reader.lifetimes(LifetimeQuery(pids=frozenset({10})))
        assert (life.comm, life.exe, life.argv) == ("bad\udcffname", "/x/\udcfeexe", ["ar\udcfdg0"])
        for pattern in ("\udcff", "\udcfe", "\udcfd"):
            assert pids(reader.lifetimes(LifetimeQuery(command=re.compile(pattern)))) == [10]
        assert pids(reader.lifetimes(LifetimeQuery(command=re.compile("")))) == [10]


def test_lifetimes_by_id_in_chunks(tmp_path: Path) -> None:
    """More ids than one statement takes (chunks of 500): every one found,
    unknown ids left out."""
    steps: list[Step] = []
    for n in range(1, 1202):
        steps.append((Fork(0, n, n, 1, 1, 10_000 + n, 10_000 + n), Proc(pid=10_000 + n, ppid=1, start_ns=n), {}))
    writer = record(tmp_path / "many.db", steps)
    with StoreReader(writer.path) as reader:
        ids = [life.id for life in reader.lifetimes(LifetimeQuery())]
        assert len(ids) == 1201
        found = reader.lifetimes_by_id([*ids, 99_999])
        assert sorted(found) == sorted(ids)
        assert all(found[i].id == i for i in ids)
        assert {life.pid for life in found.values()} == {10_000 + n for n in range(1, 1202)}
        assert reader.lifetimes_by_id([]) == {}
        two = reader.lifetimes_by_id(ids[:2])
        assert sorted(two) == ids[:2]


def test_with_ancestors_follows_parents(tree: StoreWriter) -> None:
    with StoreReader(tree.path) as reader:
        lives = {life.pid: life for life in reader.lifetimes(LifetimeQuery())}
        crasher, worker, server, lonely = lives[300], lives[200], lives[100], lives[400]
        got = reader.with_ancestors([crasher])
        assert got == {crasher.id: crasher, worker.id: worker, server.id: server}
        assert got[crasher.id] is crasher  # the lifetimes given are kept as given
        assert reader.with_ancestors([lonely]) == {lonely.id: lonely}
        assert reader.with_ancestors([worker, crasher]) == {crasher.id: crasher, worker.id: worker, server.id: server}
        assert reader.with_ancestors([]) == {}


def test_with_ancestors_stops_at_the_depth_limit(tmp_path: Path) -> None:
    """A chain deeper than MAX_ANCESTRY (256): the lifetimes given and their
    256 nearest ancestors, no more (a loop in bad data ends there too)."""
    from procevents.store.schema import MAX_ANCESTRY

    depth = MAX_ANCESTRY + 10
    table: dict[int, Proc] = {}
    steps: list[Step] = []
    for n in range(1, depth + 2):
        proc = Proc(pid=1_000 + n, ppid=1_000 + n - 1 if n > 1 else 1, start_ns=n)
        table[proc.pid] = proc
        steps.append((Fork(0, n, n, proc.ppid, proc.ppid, proc.pid, proc.pid), proc, {}))
    writer = record(tmp_path / "deep.db", steps, table)
    with StoreReader(writer.path) as reader:
        (leaf,) = reader.lifetimes(LifetimeQuery(pids=frozenset({1_000 + depth + 1})))
        got = reader.with_ancestors([leaf])
        assert len(got) == MAX_ANCESTRY + 1
        assert min(life.pid for life in got.values()) == 1_000 + depth + 1 - MAX_ANCESTRY


# -- events, rebuilt -----------------------------------------------------------------------


def _every_type() -> tuple[list[Step], dict[int, Proc]]:
    proc = Proc(pid=700, ppid=600, start_ns=100, comm="shell", exe="/bin/sh", argv=["sh"], cwd="/", ruid=0, euid=0)
    parent = Proc(pid=600, ppid=1, start_ns=50, comm="parent", exe="/bin/parent", argv=["parent"], ruid=0, euid=0)
    table = {700: proc, 600: parent}
    steps: list[Step] = [
        (Fork(3, 10, 100, 600, 600, 700, 700), proc, {"comm": "shell", "ppid": 600}),
        (Exec(3, 11, 200, 700, 700), proc, {
            "cmdline": ["tool", "--flag"], "exe": "/usr/bin/tool", "cwd": "/work", "ppid": 600,
            "uid": 0, "user": ROOT_NAME, "comm": "tool", "missing": None,
        }),
    ]
    proc.comm, proc.exe, proc.argv, proc.cwd = "tool", "/usr/bin/tool", ["tool", "--flag"], "/work"
    steps += [
        (Uid(2, 12, 300, 700, 700, NOBODY, STRANGER), proc, {"comm": "tool", "ppid": 600}),
    ]
    later = Proc(pid=700, ppid=600, start_ns=100, comm="tool", exe="/usr/bin/tool", argv=["tool", "--flag"],
                 cwd="/work", ruid=NOBODY, euid=STRANGER)
    steps += [
        (Gid(2, 13, 400, 700, 700, 10, 20), later, {"comm": "tool", "ppid": 600}),
        (Sid(1, 14, 500, 700, 700), later, {"comm": "tool", "ppid": 600}),
        (Ptrace(1, 15, 600, 700, 700, 600, 601), later, {"comm": "tool", "ppid": 600}),
        (Comm(1, 16, 700, 701, 700, b"re\xffnamed"), later, {"comm": "tool", "ppid": 600}),
        (Coredump(0, 17, 800, 701, 700, 600, 600), later, {"comm": "tool", "ppid": 600}),
        (Lost(-1, 0, 850, 7, "drops"), None, {}),
        (Lost(5, 99, 860, 2, "seq-gap"), None, {}),
        (Unknown(0, 18, 900, 0x1234, b"\x01\x02payload"), None, {}),
        (Exit(0, 19, 1_000, 701, 700, 0, -1, 700, 700), later, {"comm": "tool", "ppid": 600}),
        (Exit(0, 20, 1_100, 700, 700, exit_code(sig=signal.SIGABRT, core=True), 17, 600, 600), later, {
            "comm": "tool", "cmdline": ["tool", "--flag"], "duration": 1.5, "ppid": 600, "uid": NOBODY,
        }),
        # an exec whose process the enricher never knew
        (Exec(0, 21, 1_200, 800, 800), None, {}),
    ]
    return steps, table


@pytest.fixture
def every_type(tmp_path: Path) -> tuple[StoreWriter, list[Event]]:
    steps, table = _every_type()
    return record(tmp_path / "types.db", steps, table), [event for event, _, _ in steps]


def test_every_event_type_comes_back_exactly(every_type: tuple[StoreWriter, list[Event]]) -> None:
    writer, events = every_type
    with StoreReader(writer.path) as reader:
        recorded = list(reader.events())
    assert [r.event for r in recorded] == events
    assert [r.wall for r in recorded] == [wall_clock_ns(e.timestamp_ns) for e in events]


def test_replayed_enrichment_is_what_was_shown(every_type: tuple[StoreWriter, list[Event]]) -> None:
    writer, _ = every_type
    with StoreReader(writer.path) as reader:
        recorded = list(reader.events())
        lives = {life.pid: life for life in reader.lifetimes(LifetimeQuery())}
    life, parent = lives[700], lives[600]
    fork, exec_, uid, gid, _sid, _ptrace, _comm, _core, lost1, lost2, unknown, thread_exit, exit_, stranger = recorded
    shown(fork.info, {"comm": "shell", "ppid": 600})
    shown(exec_.info, {
        "cmdline": ["tool", "--flag"], "exe": "/usr/bin/tool", "cwd": "/work", "ppid": 600,
        "uid": 0, "user": ROOT_NAME, "comm": "tool", "missing": "(absent)",
    })
    shown(uid.info, {"comm": "tool", "ppid": 600, "cmdline": "(absent)", "uid": "(absent)"})
    shown(thread_exit.info, {
        "comm": "tool", "cmdline": ["tool", "--flag"], "duration": 1.5, "ppid": 600, "uid": None, "user": None,
    })
    shown(exit_.info, {
        "comm": "tool", "cmdline": ["tool", "--flag"], "duration": 1.5, "ppid": 600, "uid": NOBODY, "user": "nobody",
    })
    for r in (lost1, lost2, unknown, stranger):
        assert (r.info, r.proc, r.life, r.parent) == ({}, None, None, None)
    for r in (fork, exec_, uid, gid, exit_):
        assert (r.life, r.parent) == (life.id, parent.id)
        assert r.proc is not None
        assert isinstance(r.proc, RecordedProc)
        assert (r.proc.pid, r.proc.ppid, r.proc.start_ns, r.proc.life) == (700, 600, 100, life.id)
    # exec: the row's own argv, exe and uid; the others: the lifetime's final ones
    assert exec_.proc is not None and fork.proc is not None and gid.proc is not None
    assert (exec_.proc.comm, exec_.proc.argv, exec_.proc.exe, exec_.proc.ruid, exec_.proc.euid) == (
        "tool", ["tool", "--flag"], "/usr/bin/tool", 0, 0)
    assert (fork.proc.comm, fork.proc.argv, fork.proc.exe, fork.proc.ruid, fork.proc.euid) == (
        "shell", ["tool", "--flag"], "/usr/bin/tool", NOBODY, NOBODY)
    assert (gid.proc.ruid, gid.proc.euid) == (NOBODY, NOBODY)


def test_a_collected_store_names_its_hosts_and_replays_one(tmp_path: Path) -> None:
    central = collected_store(tmp_path, two_hosts_build())
    with StoreReader(str(central)) as reader:
        assert reader.hosts() == ["web-1", "web-2"]
        every = list(reader.events())
        assert [r.host for r in every[:4]] == ["web-1", "web-2", "web-1", "web-2"]  # as collected
        web2 = list(reader.events(host="web-2"))
        assert [r.host for r in web2] == ["web-2"] * 6 and web2 == [r for r in every if r.host == "web-2"]
        # The lifetime's cgroup on every event of it (what --container filters by).
        assert [(r.event.name, r.proc.cgroup) for r in web2 if r.proc is not None and r.proc.pid == 601] == [
            (name, f"/system.slice/docker-{CONTAINER_ID}.scope") for name in ("fork", "exec", "exit")]
    with StoreReader(str(tmp_path / "web-1.db")) as reader:
        assert reader.hosts() == ["web-1"] and {r.host for r in reader.events()} == {"web-1"}


def test_an_exec_row_says_why_argv_is_missing(tmp_path: Path) -> None:
    proc = Proc(pid=70, ppid=0, start_ns=10, comm="gone")
    writer = record(tmp_path / "missing.db", [
        (Exec(0, 1, 20, 70, 70), proc, {
            "cmdline": None, "exe": None, "cwd": None, "ppid": None, "uid": None, "user": None, "comm": "gone",
            "missing": "exited",
        }),
        (Sid(0, 2, 30, 70, 70), proc, {}),
    ])
    with StoreReader(writer.path) as reader:
        exec_, sid = reader.events()
    shown(exec_.info, {
        "cmdline": None, "exe": None, "cwd": None, "ppid": None, "uid": None, "user": None, "comm": "gone",
        "missing": "exited",
    })
    assert exec_.proc is not None and sid.proc is not None
    assert (exec_.proc.ppid, exec_.proc.argv, exec_.proc.ruid) == (0, None, None)  # no ppid known: 0
    shown(sid.info, {"comm": None, "ppid": None})


@pytest.mark.parametrize(
    ("since", "until", "expected"),
    [
        (None, None, [100, 200, 300, 400]),
        (200, None, [200, 300, 400]),
        (201, None, [300, 400]),
        (None, 300, [100, 200, 300]),
        (None, 299, [100, 200]),
        (200, 300, [200, 300]),
        (401, None, []),
    ],
)
def test_events_between(tmp_path: Path, since: int | None, until: int | None, expected: list[int]) -> None:
    """since and until are wall-clock ns, both ends included; arrival order
    kept (not time order)."""
    proc = Proc(pid=5, ppid=1, start_ns=100)
    writer = record(tmp_path / "times.db", [
        (Fork(0, 1, 100, 1, 1, 5, 5), proc, {}),
        (Sid(0, 2, 200, 5, 5), proc, {}),
        (Sid(1, 1, 300, 5, 5), proc, {}),
        (Sid(1, 2, 400, 5, 5), proc, {}),
    ])
    wall = wall_clock_ns
    with StoreReader(writer.path) as reader:
        got = reader.events(None if since is None else wall(since), None if until is None else wall(until))
        assert [r.event.timestamp_ns for r in got] == expected


def test_events_come_in_arrival_order(tmp_path: Path) -> None:
    proc = Proc(pid=5, ppid=1, start_ns=100)
    writer = record(tmp_path / "arrival.db", [
        (Sid(1, 1, 300, 5, 5), proc, {}),
        (Sid(0, 1, 100, 5, 5), proc, {}),
        (Sid(0, 2, 200, 5, 5), proc, {}),
    ])
    with StoreReader(writer.path) as reader:
        assert [r.event.timestamp_ns for r in reader.events()] == [300, 100, 200]


def _edit(path: str, *statements: str) -> None:
    """Change a recorded file as another program might (rows by hand)."""
    conn = sqlite3.connect(path)
    try:
        for statement in statements:
            conn.execute(statement)
        conn.commit()
    finally:
        conn.close()


def test_rows_written_by_another_tool(tmp_path: Path) -> None:
    """A comm event's name stored as TEXT, an unknown event with no data, a
    lost row with no reason: each read back as the event it stands for."""
    proc = Proc(pid=5, ppid=1, start_ns=100, comm="x")
    writer = record(tmp_path / "hand.db", [
        (Comm(0, 1, 100, 5, 5, b"named"), proc, {}),
        (Unknown(0, 2, 200, 77, b"data"), None, {}),
        (Lost(-1, 0, 300, 4, "drops"), None, {}),
    ])
    _edit(writer.path, "UPDATE events SET data = 'caf\u00e9' WHERE event = 'comm'",
          "UPDATE events SET data = NULL WHERE event IN ('unknown', 'lost')")
    with StoreReader(writer.path) as reader:
        comm, unknown, lost = (r.event for r in reader.events())
    assert comm == Comm(0, 1, 100, 5, 5, "caf\u00e9".encode())
    assert unknown == Unknown(0, 2, 200, 77, b"")
    assert lost == Lost(-1, 0, 300, 4, "")


def test_user_names_prefer_what_was_recorded(tree: StoreWriter) -> None:
    """A file from another host: its names win; a uid recorded without one
    is named as this host names it."""
    _edit(tree.path, f"UPDATE procs SET user = 'admin-there' WHERE uid = {NOBODY}",
          f"UPDATE procs SET user = CAST(x'6f64647e' || x'ff' AS BLOB) WHERE uid = {STRANGER}",
          "UPDATE procs SET user = NULL WHERE uid = 0")
    with StoreReader(tree.path) as reader:
        name = reader.user_names()
    assert name(NOBODY) == "admin-there"
    assert name(STRANGER) == "odd~\udcff"
    assert name(0) == ROOT_NAME  # recorded without a name: this host's
    assert name(1) == "daemon"  # never recorded: this host's
    assert name(None) is None


def test_a_recorded_empty_user_name_is_the_uid(tree: StoreWriter) -> None:
    _edit(tree.path, f"UPDATE procs SET user = '' WHERE uid = {NOBODY}")
    with StoreReader(tree.path) as reader:
        assert reader.user_names()(NOBODY) == str(NOBODY)


def test_replay_names_users_as_recorded(tree: StoreWriter) -> None:
    _edit(tree.path, "UPDATE procs SET user = 'boss' WHERE uid = 0")
    with StoreReader(tree.path) as reader:
        (exec_,) = (r for r in reader.events() if r.event.name == "exec")
    assert exec_.info["user"] == "boss"


# -- opening, and errors in one line --------------------------------------------------------


def test_reader_is_read_only_and_usable_from_another_thread(tree: StoreWriter) -> None:
    """A reader opened in one thread may be used from another (it is a
    library class; nothing ties it to its opener's thread)."""
    with StoreReader(tree.path) as reader:
        result: list[Any] = []
        thread = threading.Thread(target=lambda: result.append(pids(reader.lifetimes(LifetimeQuery()))))
        thread.start()
        thread.join()
        assert result == [[100, 200, 300, 400, 500]]
        assert reader.path == tree.path
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.conn.execute("DELETE FROM procs")


def test_empty_file_is_nothing_recorded(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    with pytest.raises(StoreError) as err:
        StoreReader(str(path))
    assert str(err.value) == f"{path} is an empty database (nothing recorded yet)"
    assert path.stat().st_size == 0


def test_missing_file_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "none.db"
    with pytest.raises(StoreError) as err:
        StoreReader(str(path))
    assert str(err.value) == f"no database at {path} (record one with: procevents record --db {path})"
    assert not path.exists()


def test_sqlite_header_with_garbage_is_damaged(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4080)
    with pytest.raises(StoreError) as err:
        StoreReader(str(path))
    assert str(err.value) == f"{path} is damaged or not a procevents database: file is not a database"


def test_a_missing_table_is_named(tree: StoreWriter) -> None:
    _edit(tree.path, "DROP VIEW lifetimes", "ALTER TABLE procs RENAME TO procs_old")
    with StoreReader(tree.path) as reader:
        with pytest.raises(StoreError) as err:
            reader.lifetimes(LifetimeQuery())
        assert str(err.value) == f"{tree.path}: no such table: procs"


def test_integrity(tree: StoreWriter) -> None:
    """ok, or the first five problems SQLite's quick check found."""
    with StoreReader(tree.path) as reader:
        assert reader.integrity() == "ok"
    # NOT NULL violations: rows the schema forbids, slipped in by another program
    columns = ["session", "pid", "forked", "execs"]
    conn = sqlite3.connect(tree.path)
    (schema,) = conn.execute("SELECT sql FROM sqlite_schema WHERE name = 'procs'").fetchone()
    conn.execute("PRAGMA writable_schema = ON")
    conn.execute("UPDATE sqlite_schema SET sql = replace(sql, 'NOT NULL', '') WHERE name = 'procs'")
    conn.commit()
    conn.close()
    conn = sqlite3.connect(tree.path)
    for n, column in enumerate(columns * 2):
        conn.execute(f"UPDATE procs SET {column} = NULL WHERE pid = ?", (100 * (n % 5 + 1),))
    conn.execute("PRAGMA writable_schema = ON")
    conn.execute("UPDATE sqlite_schema SET sql = ? WHERE name = 'procs'", (schema,))
    conn.commit()
    conn.close()
    with StoreReader(tree.path) as reader:
        found = reader.integrity()
        _, rows = reader.sql("PRAGMA quick_check")
        problems = [row[0] for row in rows]
    assert len(problems) > 5
    assert found == "; ".join(problems[:5])
    assert found.startswith("NULL value in procs.")


# -- SQL ----------------------------------------------------------------------------------


def test_sql_columns_and_rows(tree: StoreWriter) -> None:
    with StoreReader(tree.path) as reader:
        columns, rows = reader.sql("SELECT pid, comm AS name FROM procs WHERE pid < 300 ORDER BY pid")
        assert columns == ["pid", "name"]
        assert list(rows) == [(100, "server"), (200, "worker")]


def test_sql_errors_are_one_line(tree: StoreWriter) -> None:
    with StoreReader(tree.path) as reader:
        with pytest.raises(StoreError) as err:
            reader.sql("SELECT nosuchcolumn FROM procs")
        assert str(err.value) == "SQL error: no such column: nosuchcolumn"
        with pytest.raises(StoreError) as err:
            reader.sql("DELETE FROM procs")
        assert str(err.value) == "SQL error: not authorized (--sql is read-only: SELECT, WITH and read-only PRAGMAs)"
        with pytest.raises(StoreError) as err:
            reader.sql("SELECT 1; SELECT 2")
        assert str(err.value) == "SQL error: You can only execute one statement at a time."


def test_sql_error_after_the_first_row(tree: StoreWriter) -> None:
    """A statement that fails while its rows are read (abs() overflows on the
    third row; the sqlite3 module reads one row ahead): one line naming the file."""
    with StoreReader(tree.path) as reader:
        _, rows = reader.sql(
            "SELECT abs(v) FROM (SELECT 1 AS v UNION ALL SELECT 2 UNION ALL SELECT -9223372036854775808)"
        )
        assert next(rows) == (1,)
        with pytest.raises(StoreError) as err:
            next(rows)
        assert str(err.value) == f"{tree.path}: integer overflow"


_COUNTING = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {}) SELECT {} FROM n"


def test_sql_stops_a_runaway_statement(tree: StoreWriter) -> None:
    """stop() is asked while SQLite works: True ends the statement with
    KeyboardInterrupt, before its first row."""
    asked: list[int] = []

    def stop() -> bool:
        asked.append(1)
        return len(asked) >= 3

    with StoreReader(tree.path) as reader, pytest.raises(KeyboardInterrupt):
        reader.sql(_COUNTING.format(2_000_000, "count(*)"), stop)
    assert len(asked) >= 3
    with StoreReader(tree.path) as reader:  # never stopped: the whole answer
        _, rows = reader.sql(_COUNTING.format(100_000, "count(*)"), lambda: False)
        assert list(rows) == [(100_000,)]


def test_sql_stops_while_rows_are_read(tree: StoreWriter) -> None:
    stopping = False
    with StoreReader(tree.path) as reader:
        _, rows = reader.sql(_COUNTING.format(2_000_000, "i"), lambda: stopping)
        assert next(rows) == (1,)
        stopping = True
        with pytest.raises(KeyboardInterrupt):
            list(rows)


def test_damaged_file_is_reported(tmp_path: Path) -> None:
    path = lost_rows_db(tmp_path / "events.db")
    size = path.stat().st_size
    assert size > 8 * 4096
    with path.open("r+b") as f:  # garbage over everything but the header page
        f.seek(4096)
        f.write(os.urandom(size - 4096))
    with pytest.raises(StoreError, match="damaged"), StoreReader(str(path)) as reader:
        list(reader.events())
        reader.lifetimes(LifetimeQuery())
    truncated = lost_rows_db(tmp_path / "truncated.db")
    with truncated.open("r+b") as f:
        f.truncate(3 * 4096 + 100)
    with pytest.raises(StoreError, match="damaged"), StoreReader(str(truncated)) as reader:
        list(reader.events())


def test_sql_is_read_only(tmp_path: Path) -> None:
    path = lost_rows_db(tmp_path / "events.db")
    before = digest(path)
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
    assert digest(path) == before
    assert not (tmp_path / "x.db").exists()


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
    writer = record_synthetic(tmp_path, [(Fork(0, 1, 5, 1, 1, 77, 77), proc)])
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
    before = digest(small_db)
    with StoreReader(small_db) as reader, pytest.raises(StoreError, match="not authorized"):
        reader.sql(statement)
    assert digest(small_db) == before


def test_sql_reads_with_functions_and_recursion(small_db: str) -> None:
    with StoreReader(small_db) as reader:
        _, rows = reader.sql(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3) "
            "SELECT upper(p.comm), (SELECT count(*) FROM n) FROM procs p"
        )
        assert list(rows) == [("X", 3)]


@pytest.mark.parametrize(
    ("data", "want"),
    [
        (json.dumps(list(range(10))), dict(zip(COST_COLUMNS, range(10), strict=True))),
        (json.dumps(list(range(10))).encode(), dict(zip(COST_COLUMNS, range(10), strict=True))),
        (json.dumps([None] * 10), dict.fromkeys(COST_COLUMNS)),
        (None, {}),
        (7, {}),
        (b"not json", {}),
        (b'{"utime": 1}', {}),
        (json.dumps(list(range(9))), {}),
        (json.dumps(list(range(11))), {}),
    ],
)
def test_an_exit_rows_costs_are_read_back_or_left_out(data: object, want: dict[str, object]) -> None:
    from procevents.store.reader import _costs

    assert _costs(data) == want

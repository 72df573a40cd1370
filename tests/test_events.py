"""The event model: decoding helpers, names, masks, identity properties."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest

from procevents.events import (
    EVENT_BITS,
    EVENT_NAMES,
    EVENT_TYPES,
    Ack,
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
    decode_wait_status,
    event_mask,
    parse_event_names,
    signal_name,
    wall_clock_ns,
)

TS = 1_234_567_890_123


def exit_with(code: int) -> Exit:
    return Exit(0, 0, TS, 10, 10, code, 17, 1, 1)


# --------------------------------------------------------------------------
# Exit and wait statuses


@pytest.mark.parametrize(
    ("code", "status", "signal", "core", "failed"),
    [
        (0, 0, None, False, False),
        (768, 3, None, False, True),  # exit(3)
        (256, 1, None, False, True),
        (0xFF00, 255, None, False, True),
        (9, None, 9, False, True),  # SIGKILL
        (15, None, 15, False, True),  # SIGTERM
        (139, None, 11, True, True),  # SIGSEGV + core
        (11, None, 11, False, True),  # SIGSEGV, no core file
        (134, None, 6, True, True),  # SIGABRT + core
        (0x7F, None, 0x7F, False, True),
    ],
)
def test_exit_properties(code: int, status: int | None, signal: int | None, core: bool, failed: bool) -> None:
    ev = exit_with(code)
    assert ev.status == status
    assert ev.signal == signal
    assert ev.core_dumped is core
    assert ev.failed is failed
    assert decode_wait_status(code) == (status, signal, core)


def test_exit_core_bit_without_signal_is_not_core_dumped() -> None:
    # 0x80 with signal 0 is part of the exit status (status 0x80 >> 8 == 0 here), not a core flag.
    ev = exit_with(0x80)
    assert ev.signal is None
    assert ev.core_dumped is False
    assert decode_wait_status(0x80)[2] is False


@pytest.mark.parametrize("code", [*range(0, 0x10000, 37), 0, 9, 139, 768, 0xFFFF])
def test_decode_wait_status_exactly_one_of_status_signal(code: int) -> None:
    status, sig, core = decode_wait_status(code)
    assert (status is None) != (sig is None)
    ev = exit_with(code)
    assert (ev.status, ev.signal, ev.core_dumped) == (status, sig, core)
    if status is not None:
        assert 0 <= status <= 255
        assert core is False
    else:
        assert sig is not None
        assert 1 <= sig <= 0x7F


def test_signal_name() -> None:
    assert signal_name(9) == "SIGKILL"
    assert signal_name(11) == "SIGSEGV"
    assert signal_name(100) == "SIG100"


# --------------------------------------------------------------------------
# names and masks


def test_parse_event_names_string() -> None:
    assert parse_event_names("fork,exec") == frozenset({"fork", "exec"})


def test_parse_event_names_whitespace_case_and_empties() -> None:
    assert parse_event_names(" Fork , EXIT,,") == frozenset({"fork", "exit"})


def test_parse_event_names_iterables() -> None:
    assert parse_event_names({"exit"}) == frozenset({"exit"})
    assert parse_event_names(["comm", "uid"]) == frozenset({"comm", "uid"})
    assert parse_event_names(("gid",)) == frozenset({"gid"})
    assert parse_event_names(frozenset({"sid", "ptrace"})) == frozenset({"sid", "ptrace"})


def test_parse_event_names_all() -> None:
    names = "fork,exec,uid,gid,sid,ptrace,comm,coredump,exit"
    assert parse_event_names(names) == frozenset(names.split(","))


def test_parse_event_names_returns_frozenset() -> None:
    assert isinstance(parse_event_names("fork"), frozenset)


@pytest.mark.parametrize("bad", ["forkk", "fork,bogus", ["exec", "nope"], "lost", "ack"])
def test_parse_event_names_unknown(bad: str | list[str]) -> None:
    with pytest.raises(ValueError) as info:
        parse_event_names(bad)
    message = str(info.value)
    for name in ("fork", "exec", "uid", "gid", "sid", "ptrace", "comm", "coredump", "exit"):
        assert name in message


def test_parse_event_names_unknown_names_the_culprit() -> None:
    with pytest.raises(ValueError, match="bogus"):
        parse_event_names("fork,bogus")


@pytest.mark.parametrize("empty", ["", ",", " , ", [], set(), frozenset(), ()])
def test_parse_event_names_empty(empty: str | list[str]) -> None:
    with pytest.raises(ValueError) as info:
        parse_event_names(empty)
    assert "fork" in str(info.value)


def test_event_mask_values() -> None:
    assert event_mask(frozenset({"fork"})) == 0x1
    assert event_mask(frozenset({"exec"})) == 0x2
    assert event_mask(frozenset({"uid"})) == 0x4
    assert event_mask(frozenset({"gid"})) == 0x40
    assert event_mask(frozenset({"sid"})) == 0x80
    assert event_mask(frozenset({"ptrace"})) == 0x100
    assert event_mask(frozenset({"comm"})) == 0x200
    assert event_mask(frozenset({"coredump"})) == 0x40000000
    assert event_mask(frozenset({"exit"})) == 0x80000000
    assert event_mask(frozenset({"exec", "exit"})) == 0x80000002
    assert event_mask(frozenset()) == 0


def test_event_mask_all() -> None:
    expected = 0x1 | 0x2 | 0x4 | 0x40 | 0x80 | 0x100 | 0x200 | 0x40000000 | 0x80000000
    assert event_mask(frozenset(EVENT_BITS)) == expected


def test_event_mask_of_parsed_names() -> None:
    assert event_mask(parse_event_names("fork,exit")) == 0x80000001


def test_event_names_and_class_names_agree() -> None:
    classes = [Fork, Exec, Uid, Gid, Sid, Ptrace, Comm, Coredump, Exit, Lost, Unknown]
    assert [c.name for c in classes] == list(EVENT_NAMES)
    assert Ack.name == "ack"


def test_event_types_table() -> None:
    expected = {
        0x0: Ack,
        0x1: Fork,
        0x2: Exec,
        0x4: Uid,
        0x40: Gid,
        0x80: Sid,
        0x100: Ptrace,
        0x200: Comm,
        0x40000000: Coredump,
        0x80000000: Exit,
    }
    assert expected == EVENT_TYPES


# --------------------------------------------------------------------------
# pid / tgid / is_thread


@pytest.mark.parametrize(
    ("event", "pid", "tgid"),
    [
        (Fork(0, 0, TS, 1, 2, 30, 31), 30, 31),
        (Exec(0, 0, TS, 40, 41), 40, 41),
        (Uid(0, 0, TS, 42, 43, 0, 0), 42, 43),
        (Gid(0, 0, TS, 44, 45, 0, 0), 44, 45),
        (Sid(0, 0, TS, 46, 47), 46, 47),
        (Ptrace(0, 0, TS, 48, 49, 1, 1), 48, 49),
        (Comm(0, 0, TS, 50, 51, b"x"), 50, 51),
        (Coredump(0, 0, TS, 52, 53, 1, 1), 52, 53),
        (Exit(0, 0, TS, 54, 55, 0, 17, 1, 1), 54, 55),
        (Ack(0, 0, TS, 0, 1), 0, 0),
        (Lost(0, 0, TS, 5, "seq-gap"), 0, 0),
        (Unknown(0, 0, TS, 0x400, b""), 0, 0),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Event) else str(v),
)
def test_pid_tgid_is_thread(event: Event, pid: int, tgid: int) -> None:
    assert event.pid == pid
    assert event.tgid == tgid
    assert event.is_thread is (pid != tgid)


def test_fork_pid_is_child_not_parent() -> None:
    ev = Fork(0, 0, TS, 100, 100, 200, 200)
    assert (ev.pid, ev.tgid) == (200, 200)
    assert not ev.is_thread
    thread = Fork(0, 0, TS, 100, 100, 201, 200)
    assert (thread.pid, thread.tgid) == (201, 200)
    assert thread.is_thread


def test_exit_of_process_and_thread() -> None:
    assert not Exit(0, 0, TS, 7, 7, 0, 17, 1, 1).is_thread
    assert Exit(0, 0, TS, 8, 7, 0, -1, 0, 0).is_thread


def test_comm_text_round_trips_bytes() -> None:
    raw = b"\xff\x1b[2J"
    ev = Comm(0, 0, TS, 1, 1, raw)
    assert ev.comm_text == "\udcff\x1b[2J"
    assert ev.comm_text.encode("utf-8", "surrogateescape") == raw


# --------------------------------------------------------------------------
# time


def test_time_is_aware_utc() -> None:
    t = Exec(0, 0, TS, 1, 1).time
    assert isinstance(t, dt.datetime)
    assert t.tzinfo is not None
    assert t.utcoffset() == dt.timedelta(0)


@pytest.mark.parametrize("ts", [0, 1, 999, 1_000, 999_999_999, 1_000_000_000, TS, 5_000_000_123_456_789])
def test_time_consistent_with_wall_ns(ts: int) -> None:
    ev = Exec(0, 0, ts, 1, 1)
    wall = ev.wall_ns
    assert wall == wall_clock_ns(ts)
    t = ev.time
    expected = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=wall // 1000)
    assert t == expected
    assert t.microsecond == (wall // 1000) % 1_000_000


def test_time_of_now_is_near_now() -> None:
    import time

    ev = Exec(0, 0, time.monotonic_ns(), 1, 1)
    now = dt.datetime.now(dt.UTC)
    assert abs((ev.time - now).total_seconds()) < 5
    assert abs(ev.wall_ns - time.time_ns()) < 5_000_000_000


def test_time_is_monotonic_in_timestamp() -> None:
    a = Exec(0, 0, TS, 1, 1)
    b = Exec(0, 0, TS + 1_500_000, 1, 1)
    assert b.time - a.time == dt.timedelta(microseconds=1500)
    assert b.wall_ns - a.wall_ns == 1_500_000


# --------------------------------------------------------------------------
# immutability


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (Fork(0, 0, TS, 1, 2, 3, 4), "child_pid"),
        (Exit(0, 0, TS, 1, 1, 0, 17, 1, 1), "exit_code"),
        (Comm(0, 0, TS, 1, 1, b"x"), "comm"),
        (Exec(0, 0, TS, 1, 1), "process_pid"),
        (Exec(0, 0, TS, 1, 1), "cpu"),
        (Lost(0, 0, TS, 1, "drops"), "count"),
        (Ack(0, 0, TS, 0, 1), "err"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Event) else str(v),
)
def test_frozen(event: Event, field: str) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(event, field, 99)


def test_no_new_attributes() -> None:
    ev = Exec(0, 0, TS, 1, 1)
    with pytest.raises((dataclasses.FrozenInstanceError, AttributeError, TypeError)):
        ev.extra = 1  # type: ignore[attr-defined]


def test_events_hashable_and_equal_by_value() -> None:
    a = Exit(0, 1, TS, 1, 1, 768, 17, 1, 1)
    b = Exit(0, 1, TS, 1, 1, 768, 17, 1, 1)
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b}) == 1
    assert a != Exit(0, 1, TS, 1, 1, 9, 17, 1, 1)
    # Same fields, different type: never equal.
    assert Exec(0, 0, TS, 1, 1) != Sid(0, 0, TS, 1, 1)


def test_parse_event_names_messages_exact() -> None:
    every = "fork, exec, uid, gid, sid, ptrace, comm, coredump, exit"
    with pytest.raises(ValueError) as info:
        parse_event_names("fork,zeta,alpha")
    assert str(info.value) == f"unknown event type alpha, zeta; choose from {every}"
    with pytest.raises(ValueError) as info:
        parse_event_names(" , ")
    assert str(info.value) == f"no event types given; choose from {every}"


def test_resync_clock_takes_the_midpoint_of_two_monotonic_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """The offset is the wall clock minus the middle of the monotonic reads
    around it (rounded down), in integer ns; resync_clock() re-reads it."""
    import types

    from procevents import events

    reads = iter([100, 1_001])  # monotonic before and after the wall-clock read
    clock = types.SimpleNamespace(monotonic_ns=lambda: next(reads), time_ns=lambda: 5_000_000)
    monkeypatch.setattr(events, "_clock_offset_ns", events._clock_offset_ns)  # put back afterwards
    monkeypatch.setattr(events, "_time", clock)
    events.resync_clock()
    assert wall_clock_ns(0) == 5_000_000 - 550
    assert type(wall_clock_ns(0)) is int
    assert Exec(0, 0, 50, 1, 1).wall_ns == 5_000_000 - 500


# --------------------------------------------------------------------------
# one entry per event class in every per-type table

#: One event of each class; leaders about pid 10, a fork of 12 by 1.
SAMPLES: dict[type[Event], Event] = {
    Ack: Ack(0, 1, TS, 0, 1),
    Fork: Fork(0, 2, TS, 1, 1, 12, 12),
    Exec: Exec(0, 3, TS, 10, 10),
    Uid: Uid(0, 4, TS, 10, 10, 1000, 1000),
    Gid: Gid(0, 5, TS, 10, 10, 1000, 1000),
    Sid: Sid(0, 6, TS, 10, 10),
    Ptrace: Ptrace(0, 7, TS, 10, 10, 1, 1),
    Comm: Comm(0, 8, TS, 10, 10, b"worker"),
    Coredump: Coredump(0, 9, TS, 10, 10, 1, 1),
    Exit: Exit(0, 10, TS, 10, 10, 0, 17, 1, 1),
    Lost: Lost(-1, 0, TS, 3, "drops"),
    Unknown: Unknown(0, 11, TS, 0x1000, bytes(range(24))),  # a whole union: decode gives 24 bytes
}


def test_payload_fields_are_the_union_words_in_cn_proc_h_order() -> None:
    from procevents.events import PAYLOAD_FIELDS

    process = ("process_pid", "process_tgid")
    assert {
        Ack: ("err",),  # ack is cn_msg's
        Fork: ("parent_pid", "parent_tgid", "child_pid", "child_tgid"),
        Exec: process,
        Uid: (*process, "ruid", "euid"),
        Gid: (*process, "rgid", "egid"),
        Sid: process,
        Ptrace: (*process, "tracer_pid", "tracer_tgid"),
        Comm: (*process, "comm"),
        Coredump: (*process, "parent_pid", "parent_tgid"),
        Exit: (*process, "exit_code", "exit_signal", "parent_pid", "parent_tgid"),
        Lost: ("count", "reason"),
        Unknown: ("what", "data"),
    } == PAYLOAD_FIELDS
    assert set(SAMPLES) == set(PAYLOAD_FIELDS)


@pytest.mark.parametrize("event", SAMPLES.values(), ids=lambda e: type(e).__name__)
def test_every_class_has_an_entry_in_each_table(event: Event, tmp_path: Path) -> None:
    """A new event type cannot be forgotten by a table keyed by class."""
    from procevents.events import PAYLOAD_FIELDS
    from procevents.procfs import ProcFS
    from procevents.proctable import Proc, ProcessTable
    from procevents.render.clock import Clock
    from procevents.render.jsonl import event_fields
    from procevents.render.text import details
    from procevents.wire import decode, encode_event

    keys = list(event_fields(event, Clock()))
    assert keys[:7] == ["event", "time", "timestamp_ns", "cpu", "seq", "pid", "tgid"]
    assert [n for n in PAYLOAD_FIELDS[type(event)] if n not in ("process_pid", "process_tgid")] == [
        k for k in keys[7:] if not k.endswith("_b64") and k not in ("status", "signal", "core_dumped")
    ]
    assert isinstance(details(event), str)
    if type(event) is Lost:
        with pytest.raises(TypeError):
            encode_event(event)
    else:
        assert decode(encode_event(event)) == event
    table = ProcessTable(ProcFS(str(tmp_path)), seed=False)  # knows only the processes below
    table.procs = {1: Proc(pid=1, ppid=0), 10: Proc(pid=10, ppid=1)}
    proc = table.update(event)
    assert (proc.pid if proc is not None else 0) == event.tgid, "the entry of the process it is about"

"""Renderers: JSON Lines fields and the human text line."""

from __future__ import annotations

import base64
import json
import re

import pytest

from procevents.events import (
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
    wall_clock_ns,
)
from procevents.render.clock import Clock
from procevents.render.jsonl import choose_dumps, event_fields
from procevents.render.text import TextRenderer, details, exit_description

TS = 2_000_000_123_456_789
COMMON = ["event", "time", "timestamp_ns", "cpu", "seq", "pid", "tgid"]
ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


def fields(event: Event) -> dict[str, object]:
    return event_fields(event, Clock())


# --------------------------------------------------------------------------
# keys per type


@pytest.mark.parametrize(
    ("event", "extra"),
    [
        (Fork(1, 2, TS, 10, 11, 12, 13), ["parent_pid", "parent_tgid", "child_pid", "child_tgid"]),
        (
            Exit(1, 2, TS, 10, 10, 768, 17, 1, 1),
            ["exit_code", "exit_signal", "parent_pid", "parent_tgid", "status", "signal", "core_dumped"],
        ),
        (Exec(1, 2, TS, 10, 10), []),
        (Sid(1, 2, TS, 10, 10), []),
        (Uid(1, 2, TS, 10, 10, 1000, 0), ["ruid", "euid"]),
        (Gid(1, 2, TS, 10, 10, 1000, 0), ["rgid", "egid"]),
        (Ptrace(1, 2, TS, 10, 10, 20, 20), ["tracer_pid", "tracer_tgid"]),
        (Comm(1, 2, TS, 10, 10, b"bash"), ["comm"]),
        (Comm(1, 2, TS, 10, 10, b"\xff\x1b[2J"), ["comm", "comm_b64"]),
        (Coredump(1, 2, TS, 10, 10, 1, 1), ["parent_pid", "parent_tgid"]),
        (Lost(-1, 0, TS, 5, "drops"), ["count", "reason"]),
        (Lost(3, 77, TS, 5, "seq-gap"), ["count", "reason"]),
        (Unknown(1, 2, TS, 0x400, b"\x01\x02"), ["what", "data"]),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Event) else "",
)
def test_keys_per_type(event: Event, extra: list[str]) -> None:
    out = fields(event)
    assert list(out) == COMMON + extra
    assert out["event"] == event.name


def test_fork_values() -> None:
    out = fields(Fork(1, 2, TS, 10, 11, 12, 13))
    assert out["cpu"] == 1
    assert out["seq"] == 2
    assert out["timestamp_ns"] == TS
    assert (out["pid"], out["tgid"]) == (12, 13)
    assert (out["parent_pid"], out["parent_tgid"], out["child_pid"], out["child_tgid"]) == (10, 11, 12, 13)


@pytest.mark.parametrize(
    ("code", "status", "signal", "core"),
    [
        (0, 0, None, False),
        (768, 3, None, False),
        (9, None, 9, False),
        (139, None, 11, True),
        (11, None, 11, False),
    ],
)
def test_exit_values(code: int, status: int | None, signal: int | None, core: bool) -> None:
    out = fields(Exit(0, 0, TS, 5, 4, code, -1, 0, 0))
    assert out["exit_code"] == code
    assert out["exit_signal"] == -1
    assert (out["pid"], out["tgid"]) == (5, 4)
    assert (out["parent_pid"], out["parent_tgid"]) == (0, 0)
    assert out["status"] == status
    assert out["signal"] == signal
    assert out["core_dumped"] is core


def test_uid_gid_ptrace_coredump_values() -> None:
    assert fields(Uid(0, 0, TS, 1, 1, 4294967294, 7))["ruid"] == 4294967294
    assert fields(Uid(0, 0, TS, 1, 1, 4294967294, 7))["euid"] == 7
    g = fields(Gid(0, 0, TS, 1, 1, 8, 9))
    assert (g["rgid"], g["egid"]) == (8, 9)
    p = fields(Ptrace(0, 0, TS, 1, 1, 30, 31))
    assert (p["tracer_pid"], p["tracer_tgid"]) == (30, 31)
    c = fields(Coredump(0, 0, TS, 1, 1, 40, 41))
    assert (c["parent_pid"], c["parent_tgid"]) == (40, 41)


def test_comm_valid_utf8() -> None:
    out = fields(Comm(0, 0, TS, 1, 1, "é中".encode()))
    assert out["comm"] == "é中"
    assert "comm_b64" not in out


def test_comm_invalid_utf8() -> None:
    raw = b"\xff\x1b[2J"
    out = fields(Comm(0, 0, TS, 1, 1, raw))
    assert out["comm"] == "\ufffd\x1b[2J"
    assert isinstance(out["comm_b64"], str)
    assert base64.b64decode(out["comm_b64"]) == raw


def test_lost_cpu_none_when_unknown() -> None:
    out = fields(Lost(-1, 0, TS, 5, "drops"))
    assert out["cpu"] is None
    assert out["count"] == 5
    assert out["reason"] == "drops"
    assert out["event"] == "lost"


def test_lost_cpu_kept_when_known() -> None:
    out = fields(Lost(3, 77, TS, 2, "seq-gap"))
    assert out["cpu"] == 3
    assert out["count"] == 2
    assert out["reason"] == "seq-gap"


def test_unknown_values() -> None:
    out = fields(Unknown(0, 0, TS, 0x400, b"\x01\xab"))
    assert out["what"] == 0x400
    assert out["data"] == "01ab"


# --------------------------------------------------------------------------
# time


@pytest.mark.parametrize("ts", [0, 1, 999_999, TS, 10**18])
def test_time_format(ts: int) -> None:
    out = fields(Exec(0, 0, ts, 1, 1))
    assert ISO.match(out["time"]), out["time"]


@pytest.mark.parametrize("ts", [0, 999_999, 1_000_000_000, TS, TS + 999])
def test_time_matches_event_time(ts: int) -> None:
    ev = Exec(0, 0, ts, 1, 1)
    expected = ev.time.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert fields(ev)["time"] == expected


def test_clock_cache_across_seconds() -> None:
    clock = Clock()
    a = Exec(0, 0, TS, 1, 1)
    b = Exec(0, 0, TS + 1_000_000_000, 1, 1)
    c = Exec(0, 0, TS + 1000, 1, 1)
    for ev in (a, b, c, a):
        assert event_fields(ev, clock)["time"] == ev.time.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_clock_iso_micro_digits() -> None:
    clock = Clock()
    wall = wall_clock_ns(TS)
    out = clock.iso_utc(TS)
    assert out.endswith(f".{(wall // 1000) % 1_000_000:06d}Z")


# --------------------------------------------------------------------------
# JSON output


def _all_events() -> list[Event]:
    return [
        Fork(1, 2, TS, 10, 11, 12, 13),
        Exit(1, 2, TS, 10, 10, 139, 17, 1, 1),
        Exec(1, 2, TS, 10, 10),
        Sid(1, 2, TS, 10, 10),
        Uid(1, 2, TS, 10, 10, 4294967294, 0),
        Gid(1, 2, TS, 10, 10, 1000, 0),
        Ptrace(1, 2, TS, 10, 10, 20, 20),
        Comm(1, 2, TS, 10, 10, b"\xff\x1b[2J"),
        Comm(1, 2, TS, 10, 10, "é中\u202e".encode()),
        Coredump(1, 2, TS, 10, 10, 1, 1),
        Lost(-1, 0, TS, 5, "drops"),
        Unknown(1, 2, TS, 0x400, b"\x01\x02"),
        Ack(1, 2, TS, 0, 1),
    ]


@pytest.mark.parametrize("event", _all_events(), ids=lambda e: type(e).__name__)
def test_json_dumps_valid_utf8_one_line(event: Event) -> None:
    dumps = choose_dumps()
    data = dumps(event_fields(event, Clock()))
    assert isinstance(data, bytes)
    text = data.decode("utf-8")  # strict: valid UTF-8
    assert "\n" not in text
    assert "\x1b" not in text
    assert json.loads(text) == event_fields(event, Clock())


def test_json_hostile_comm_round_trip() -> None:
    raw = b"\xff\x1b[2J"
    data = choose_dumps()(event_fields(Comm(0, 0, TS, 1, 1, raw), Clock()))
    data.decode("utf-8")
    obj = json.loads(data)
    assert obj["comm"] == "\ufffd\x1b[2J"
    assert base64.b64decode(obj["comm_b64"]) == raw


def test_stdlib_dumps_also_valid() -> None:
    from procevents.render.jsonl import _stdlib_dumps

    raw = b"\xff\x1b[2J\n"
    data = _stdlib_dumps(event_fields(Comm(0, 0, TS, 1, 1, raw), Clock()))
    assert b"\n" not in data
    assert b"\x1b" not in data
    obj = json.loads(data.decode("utf-8"))
    assert base64.b64decode(obj["comm_b64"]) == raw


# --------------------------------------------------------------------------
# text


@pytest.mark.parametrize("event", _all_events(), ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("ppid", [None, 1])
def test_text_one_line(event: Event, ppid: int | None) -> None:
    line = TextRenderer().render(event, ppid)
    assert line.endswith("\n")
    assert line.count("\n") == 1
    assert "\x1b" not in line
    assert "\r" not in line
    assert event.name in line


@pytest.mark.parametrize(
    "raw",
    [
        b"\x1b[2J\x1b[H",
        b"evil\nfake line",
        b"\r\x1b]0;title\x07",
        b"\xff\xfe\x9b31m",
        "\u202eabc".encode(),
        "\u0085\u009b2J".encode(),
        b"a\\x1b",
        b"\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n",
    ],
)
def test_text_hostile_comm(raw: bytes) -> None:
    line = TextRenderer().render(Comm(0, 0, TS, 42, 42, raw[:16]), 1)
    assert line.endswith("\n")
    body = line[:-1]
    for bad in ("\n", "\r", "\x1b", "\x07", "\x85", "\x9b", "\u202e", "\u2028"):
        assert bad not in body
    body.encode("utf-8")  # no lone surrogates reach the terminal


def test_text_hostile_info() -> None:
    info = {"cmdline": ["sh", "-c", "echo\x1b[2J\nhi"], "comm": "x\ny", "user": "r\x1boot", "duration": 0.5}
    line = TextRenderer().render(Exec(0, 0, TS, 42, 42), 1, info)
    assert line.count("\n") == 1
    assert line.endswith("\n")
    assert "\x1b" not in line


def test_text_hostile_comm_fallback() -> None:
    info = {"comm": b"\xff\x1b[2J".decode("utf-8", "surrogateescape")}
    line = TextRenderer().render(Exec(0, 0, TS, 42, 42), 1, info)
    assert line.count("\n") == 1
    assert "\x1b" not in line
    assert "[\\xff\\x1b[2J]" in line


def test_text_fields() -> None:
    line = TextRenderer().render(Exit(0, 0, TS, 2608, 2608, 768, 17, 2567, 2567), 2567)
    parts = line.split()
    assert parts[1] == "exit"
    assert parts[2] == "2608"
    assert parts[3] == "2567"
    assert line.rstrip("\n").endswith("status 3")


def test_text_lost_has_no_pid() -> None:
    line = TextRenderer().render(Lost(-1, 0, TS, 5, "drops"), None)
    assert "5 events lost (drops)" in line
    line2 = TextRenderer().render(Lost(2, 0, TS, 5, "seq-gap"), None)
    assert "5 events lost on cpu 2 (seq-gap)" in line2


def test_text_time_prefix() -> None:
    line = TextRenderer().render(Exec(0, 0, TS, 1, 1), None)
    assert re.match(r"^\d{2}:\d{2}:\d{2}\.\d{3} ", line)


def test_exit_description() -> None:
    assert exit_description(768) == "status 3"
    assert exit_description(0) == "status 0"
    assert exit_description(9) == "killed by SIGKILL"
    assert "core dumped" in exit_description(139)
    assert "SIGSEGV" in exit_description(139)
    assert "core dumped" not in exit_description(11)


def test_details_thread_exit_and_fork() -> None:
    assert details(Exit(0, 0, TS, 5, 4, 0, -1, 0, 0)) == "thread 5 status 0"
    assert details(Fork(0, 0, TS, 1, 1, 7, 7)) == "child 7"
    assert details(Fork(0, 0, TS, 1, 1, 8, 7)) == "thread 8 in 7"
    assert details(Ptrace(0, 0, TS, 1, 1, 0, 0)) == "detached"
    assert details(Ptrace(0, 0, TS, 1, 1, 9, 9)) == "traced by 9"


# -- tree depth ------------------------------------------------------------------------------


def test_depth_below_init_without_roots() -> None:
    from procevents.render.tree import depth_below

    assert depth_below(500, [400, 300, 1], None) == 2  # two ancestors below init
    assert depth_below(500, [400, 2], None) == 1  # kthreadd ends it too
    assert depth_below(500, [], None) == 0


def test_depth_below_a_root() -> None:
    from procevents.render.tree import depth_below

    assert depth_below(300, [200, 100, 1], {300}) == 0  # a root itself
    assert depth_below(500, [400, 300, 1], {300}) == 2
    assert depth_below(500, [400, 300, 1], {400}) == 1
    assert depth_below(500, [400, 1], {300}) == 2  # not below a root: all ancestors counted


# -- tree lines: a time on each, ancestors once ------------------------------------------------


def test_tree_prints_the_unseen_ancestors_once_then_indents_under_them() -> None:
    import io

    from procevents.pipeline import Output, TreeSink
    from procevents.proctable import Proc
    from procevents.render.tree import lineage_below

    shell = Proc(pid=40, ppid=1, start_ns=TS - 5 * 10**9, comm="bash", argv=["bash"])
    make = Proc(pid=50, ppid=40, start_ns=TS - 10**9, comm="make", argv=["make", "-j2"])
    table = {40: shell, 50: make}

    def ancestors(proc: Proc) -> list[Proc]:
        found = []
        parent = table.get(proc.ppid)
        while parent is not None:
            found.append(parent)
            parent = table.get(parent.ppid)
        return lineage_below(proc.pid, found, None)

    buf = io.BytesIO()
    sink = TreeSink(Output(buf), lineage=ancestors)
    cc = Proc(pid=60, ppid=50, start_ns=TS, comm="cc")
    ld = Proc(pid=61, ppid=50, start_ns=TS + 10, comm="ld")
    assert sink.emit(Exec(0, 1, TS + 1000, 60, 60), cc, {"cmdline": ["cc", "-c", "a.c"]})
    assert sink.emit(Exec(0, 2, TS + 2000, 61, 61), ld, {"cmdline": ["ld", "a.o"]})
    assert sink.emit(Exit(0, 3, TS + 3000, 60, 60, 1 << 8, 17, 50, 50), cc, {"duration": 0.25})
    assert not sink.emit(Exit(0, 4, TS + 4000, 99, 99, 0, 17, 1, 1), Proc(pid=99, ppid=1), {})  # never shown
    sink.output.flush()
    lines = buf.getvalue().decode().splitlines()
    stamp = r"\d{2}:\d{2}:\d{2}\.\d{3} "
    expected = [
        r"40 bash  \(ancestor\)$",
        r"  50 make -j2  \(ancestor\)$",
        r"    60 cc -c a\.c$",
        r"    61 ld a\.o$",  # its ancestors are on screen already
        r"    60 exit status 1 after 250\.0ms \[cc\]$",
    ]
    assert len(lines) == len(expected), lines
    for line, pattern in zip(lines, expected, strict=True):
        assert re.match(stamp + pattern, line), (line, pattern)
    # The ancestors' times are their starts (5 s and 1 s before), the others their events'.
    clock = Clock()
    assert [line[:12] for line in lines[:3]] == [clock.local_ms(TS - 5 * 10**9), clock.local_ms(TS - 10**9),
                                                 clock.local_ms(TS + 1000)]


def test_tree_shows_a_reused_ancestor_pid_again() -> None:
    from procevents.proctable import Proc
    from procevents.render.tree import TreeRenderer

    first = Proc(pid=40, ppid=1, start_ns=TS - 100, comm="sh")
    again = Proc(pid=40, ppid=1, start_ns=TS + 100, comm="sh")
    parent = {60: first, 70: again}
    tree = TreeRenderer(lineage=lambda proc: [parent[proc.pid]])
    one = tree.render(Exec(0, 1, TS, 60, 60), Proc(pid=60, ppid=40, start_ns=TS), {"cmdline": ["a"]})
    two = tree.render(Exec(0, 2, TS + 200, 70, 70), Proc(pid=70, ppid=40, start_ns=TS + 150), {"cmdline": ["b"]})
    assert one is not None and two is not None
    assert "40 [sh]  (ancestor)" in one and "40 [sh]  (ancestor)" in two  # another process under that pid
    three = tree.render(Exec(0, 3, TS + 300, 70, 70), Proc(pid=70, ppid=40, start_ns=TS + 150), {"cmdline": ["c"]})
    assert three is not None and "ancestor" not in three

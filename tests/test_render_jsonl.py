"""The JSON Lines view (render/jsonl.py): the fields of every event type, time,
valid UTF-8 on one line under both encoders."""

from __future__ import annotations

import base64
import json

import pytest
from helpers import ISO, TS, all_events

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
)
from procevents.render.clock import Clock
from procevents.render.jsonl import choose_dumps, event_fields

COMMON = ["event", "time", "timestamp_ns", "cpu", "seq", "pid", "tgid"]


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


# --------------------------------------------------------------------------
# JSON output


@pytest.mark.parametrize("event", all_events(), ids=lambda e: type(e).__name__)
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

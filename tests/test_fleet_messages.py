"""The row codec a recorder ships (fleet/messages.py): pure, no server.  The
whole path through a real nats-server: test_fleet.py."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest

from procevents.fleet.messages import (
    COLUMNS,
    MAC_DIGITS,
    MAX_ROWS,
    SESSION_COLUMNS,
    SHIPPED_EVENT_COLUMNS,
    BadMessage,
    column_rules,
    decode,
    encode,
    subject_token,
)
from procevents.store.schema import PROC_COLUMNS

KEY = b"k" * 32


def _event(id_: int | None, **values: Any) -> list[Any]:
    """An events row as the outbox ships it (a lost event), ``values`` by column."""
    row = dict.fromkeys(SHIPPED_EVENT_COLUMNS)
    row.update(id=id_, proc=7, ts=1, wall=2, event="lost", a=1, data=b"argv\0\xff\0", host="web-1.example")
    row.update(values)
    return list(row.values())


def _session(id_: int, **values: Any) -> list[Any]:
    row = dict.fromkeys(SESSION_COLUMNS)
    row.update(id=id_, started_wall=1, clock_offset=0)
    row.update(values)
    return list(row.values())


def _proc(id_: int, **values: Any) -> list[Any]:
    row = dict.fromkeys(PROC_COLUMNS)
    row.update(id=id_, session=1, pid=700, forked=1, execs=0, rev=id_, host="h")
    row.update(values)
    return list(row.values())


def _id(msg_id: str) -> str:
    """A message id without its MAC (checked to be MAC_DIGITS hex digits)."""
    head, mac = msg_id.rsplit(":", 1)
    assert re.fullmatch(f"[0-9a-f]{{{MAC_DIGITS}}}", mac), msg_id
    return head


def test_rows_come_back_exactly_bytes_included() -> None:
    rows = [_event(1), _event(2, comm="caf\u00e9"), _event(3, proc=8, data=None, host=None)]
    (msg,) = encode("pe", "web-1.example", "s1", "events", SHIPPED_EVENT_COLUMNS, rows, secret=KEY)
    assert (msg.subject, _id(msg.msg_id), msg.kind, msg.last, msg.rows) == (
        "pe.web-1_example.events", "web-1.example:s1:events:1-3", "events", 3, 3,
    )
    batch = decode(msg.payload)
    assert (batch.host, batch.store, batch.kind) == ("web-1.example", "s1", "events")
    assert batch.columns == list(SHIPPED_EVENT_COLUMNS)
    assert batch.rows == rows


def test_rows_are_cut_into_messages_of_at_most_max_rows() -> None:
    rows = [_event(i, host="h") for i in range(1, 2 * MAX_ROWS + 2)]
    msgs = list(encode("pe", "h", "s", "events", SHIPPED_EVENT_COLUMNS, rows, secret=KEY))
    assert [m.rows for m in msgs] == [MAX_ROWS, MAX_ROWS, 1]
    assert [_id(m.msg_id) for m in msgs] == ["h:s:events:1-1000", "h:s:events:1001-2000", "h:s:events:2001-2001"]
    assert [row for m in msgs for row in decode(m.payload).rows] == rows


def test_each_state_of_a_session_row_is_a_message_of_its_own() -> None:
    (open_,) = encode("pe", "h", "s", "sessions", SESSION_COLUMNS, [_session(1)], secret=KEY)
    (ended,) = encode("pe", "h", "s", "sessions", SESSION_COLUMNS, [_session(1, ended="clean")], secret=KEY)
    assert open_.msg_id != ended.msg_id and _id(open_.msg_id) == _id(ended.msg_id) == "h:s:sessions:1-1"


def test_the_cursor_is_the_order_column() -> None:
    rows = [_proc(5, rev=40), _proc(2, rev=41)]
    (msg,) = encode("pe", "h", "s", "procs", PROC_COLUMNS, rows, order=PROC_COLUMNS.index("rev"), secret=KEY)
    assert (msg.last, _id(msg.msg_id)) == (41, "h:s:procs:40-41")


def test_a_message_id_cannot_be_guessed_without_the_store_secret() -> None:
    """The ids of the next messages were HOST:STORE:KIND:FIRST-LAST: anyone
    could publish them first, and JetStream dropped the real ones as
    duplicates.  The MAC makes them depend on the secret (and the rows):
    the same message under the same secret, the same id (a message sent
    again is still dropped); another secret, another id."""
    rows = [_event(34, host="h")]
    (mine,) = encode("pe", "h", "s", "events", SHIPPED_EVENT_COLUMNS, rows, secret=KEY)
    (again,) = encode("pe", "h", "s", "events", SHIPPED_EVENT_COLUMNS, rows, secret=KEY)
    (other,) = encode("pe", "h", "s", "events", SHIPPED_EVENT_COLUMNS, rows, secret=b"x" * 32)
    assert mine.msg_id == again.msg_id != other.msg_id and mine.msg_id != "h:s:events:34-34"
    assert "k" * 8 not in mine.msg_id and KEY not in mine.payload


def test_subject_token() -> None:
    assert (subject_token("a.b.c"), subject_token(""), subject_token("x")) == ("a_b_c", "_", "x")


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b"\xff", "not JSON"),
        (b"[1]", "not a procevents message"),
        (json.dumps({"v": 2}).encode(), "not a procevents message"),
        (json.dumps({"v": 1, "host": "h", "store": "s", "kind": "files"}).encode(), "no host, store or kind"),
        (json.dumps({"v": 1, "host": "h", "store": "s", "kind": "events", "columns": [1], "rows": []}).encode(),
         "no columns or rows"),
        (json.dumps({"v": 1, "host": "h", "store": "s", "kind": "events", "columns": ["id"], "rows": [[1, 2]]})
         .encode(), "a row does not match"),
        # Issue 23: each was a traceback.
        (b"[" * 100_000 + b"]" * 100_000, "not JSON: nested too deep"),
        (b'{"b64": 5}', "not a procevents message"),
        (b'{"b64": "!!"}', "a b64 value is not base64"),
    ],
)
def test_a_foreign_message_is_refused_in_one_line(payload: bytes, why: str) -> None:
    with pytest.raises(BadMessage, match=why) as info:
        decode(payload)
    assert "\n" not in str(info.value)


def _payload(kind: str, columns: Any, rows: list[list[Any]], host: str = "h") -> bytes:
    """A message as another publisher could write it: any JSON at all."""
    return json.dumps({"v": 1, "host": host, "store": "s", "kind": kind, "columns": list(columns), "rows": rows},
                      default=lambda b: {"b64": base64.b64encode(b).decode()}).encode()


def test_the_checks_are_the_schema_s_columns() -> None:
    """Read from store/schema.py's SCHEMA, one rule per shipped column."""
    for kind in COLUMNS:
        assert [name for name, _, _ in column_rules(kind)] == list(COLUMNS[kind])
    rules = {name: (declared, nullable) for name, declared, nullable in column_rules("procs")}
    assert rules["pid"] == ("INTEGER", False) and rules["ppid"] == ("INTEGER", True)
    assert rules["duration"] == ("REAL", True) and rules["argv"] == ("BLOB", True) and rules["comm"] == ("TEXT", True)
    assert rules["id"] == ("INTEGER", False)  # the row's key, though SQLite declares a rowid nullable


@pytest.mark.parametrize(
    ("kind", "row", "why"),
    [
        # What made collect exit 1 or print a traceback (issue 23).
        ("events", _event(1, a=[1], host="h"), "row 1: a is [1], not INTEGER"),
        ("events", _event(1, a={"x": 1}, host="h"), "row 1: a is {'x': 1}, not INTEGER"),
        ("events", _event(1, proc={"x": 1}, host="h"), "row 1: proc is {'x': 1}, not INTEGER"),
        ("events", _event(1, a=2**64, host="h"), "row 1: a is 18446744073709551616, not INTEGER"),
        ("events", _event(1, a=-(2**63) - 1, host="h"), "not INTEGER"),
        ("events", _event(1, ts=None, host="h"), "row 1: ts is null"),
        ("events", _event(1, event=7, host="h"), "row 1: event is 7, not TEXT"),
        ("events", _event(1, comm="\ud800", host="h"), "row 1: comm is '\\ud800', not TEXT"),
        ("events", _event(1, a=True, host="h"), "row 1: a is True, not INTEGER"),
        ("events", _event(None, host="h"), "row 1: id is null"),
        ("procs", _proc(1, pid=None), "row 1: pid is null"),
        ("procs", _proc(1, duration=float("nan")), "row 1: duration is nan, not REAL"),
        ("procs", _proc(1, duration="1.5"), "row 1: duration is '1.5', not REAL"),
        ("procs", _proc(1, argv=[b"x"]), "not BLOB"),
        ("sessions", _session(1, started_wall=None), "row 1: started_wall is null"),
    ],
)
def test_a_value_that_does_not_fit_its_column_is_refused(kind: str, row: list[Any], why: str) -> None:
    good = {"events": _event(2, host="h"), "procs": _proc(2), "sessions": _session(2)}[kind]
    payload = _payload(kind, COLUMNS[kind], [row, good])
    with pytest.raises(BadMessage) as info:
        decode(payload)
    assert why in str(info.value), str(info.value)
    assert "\n" not in str(info.value)


def test_values_that_fit_are_let_through() -> None:
    """The edges of each type: SQLite's largest integers, ints in a REAL,
    bytes and text in TEXT and BLOB alike (encode_text, a lost reason)."""
    rows = [
        _event(1, a=2**63 - 1, b=-(2**63), comm=b"\xff", data="reason", host="h"),
        _event(2, proc=None, host=None),  # recorded before schema 3: no host
    ]
    assert decode(_payload("events", SHIPPED_EVENT_COLUMNS, rows)).rows == rows
    procs = [_proc(1, duration=1, utime=0.5)]
    assert decode(_payload("procs", PROC_COLUMNS, procs)).rows == procs


@pytest.mark.parametrize(
    ("kind", "columns", "why"),
    [
        ("sessions", [c for c in SESSION_COLUMNS if c != "id"], "sessions without id"),
        ("procs", PROC_COLUMNS[:-1], "procs without rev"),
        ("events", [c for c in SHIPPED_EVENT_COLUMNS if c not in ("ts", "wall")], "events without ts, wall"),
    ],
)
def test_a_message_without_a_column_its_kind_ships_is_refused(kind: str, columns: list[str], why: str) -> None:
    with pytest.raises(BadMessage, match=f"^{why}$"):
        decode(_payload(kind, columns, [[None] * len(columns)]))


def test_a_row_of_another_host_is_refused() -> None:
    with pytest.raises(BadMessage, match=r"^row 2: host 'web-1' in a message of host 'web-2'$"):
        decode(_payload("procs", PROC_COLUMNS, [_proc(1, host="web-2"), _proc(2, host="web-1")], host="web-2"))

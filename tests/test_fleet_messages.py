"""The row codec a recorder ships (fleet/messages.py): pure, no server.  The
whole path through a real nats-server: test_fleet.py."""

from __future__ import annotations

import json

import pytest

from procevents.fleet.messages import MAX_ROWS, BadMessage, decode, encode, subject_token


def test_rows_come_back_exactly_bytes_included() -> None:
    rows = [[1, 7, b"argv\0\xff\0"], [2, 7, "caf\u00e9"], [3, 8, None]]
    (msg,) = encode("pe", "web-1.example", "s1", "events", ["id", "proc", "data"], rows)
    assert (msg.subject, msg.msg_id, msg.kind, msg.last, msg.rows) == (
        "pe.web-1_example.events", "web-1.example:s1:events:1-3", "events", 3, 3,
    )
    batch = decode(msg.payload)
    assert (batch.host, batch.store, batch.kind) == ("web-1.example", "s1", "events")
    assert batch.columns == ["id", "proc", "data"]
    assert batch.rows == rows


def test_rows_are_cut_into_messages_of_at_most_max_rows() -> None:
    rows = [[i] for i in range(1, 2 * MAX_ROWS + 2)]
    msgs = list(encode("pe", "h", "s", "events", ["id"], rows))
    assert [m.rows for m in msgs] == [MAX_ROWS, MAX_ROWS, 1]
    assert [m.msg_id for m in msgs] == ["h:s:events:1-1000", "h:s:events:1001-2000", "h:s:events:2001-2001"]
    assert [row for m in msgs for row in decode(m.payload).rows] == rows


def test_each_state_of_a_session_row_is_a_message_of_its_own() -> None:
    (open_,) = encode("pe", "h", "s", "sessions", ["id", "end"], [[1, None]])
    (ended,) = encode("pe", "h", "s", "sessions", ["id", "end"], [[1, 99]])
    assert open_.msg_id != ended.msg_id and open_.msg_id.startswith("h:s:sessions:1-1:")


def test_the_cursor_is_the_order_column() -> None:
    (msg,) = encode("pe", "h", "s", "procs", ["id", "revision"], [[5, 40], [2, 41]], order=1)
    assert (msg.last, msg.msg_id) == (41, "h:s:procs:40-41")


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
    ],
)
def test_a_foreign_message_is_refused_in_one_line(payload: bytes, why: str) -> None:
    with pytest.raises(BadMessage, match=why) as info:
        decode(payload)
    assert "\n" not in str(info.value)

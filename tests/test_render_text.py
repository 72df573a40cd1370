"""The text view (render/text.py): one line per event, hostile names escaped, the fields and details of each line."""

from __future__ import annotations

import re

import pytest
from helpers import TS, all_events

from procevents.escape import escape
from procevents.events import (
    Comm,
    Event,
    Exec,
    Exit,
    Fork,
    Lost,
    Ptrace,
)
from procevents.render.text import (
    CUT_MARKER,
    TextRenderer,
    cut_to_width,
    details,
    display_width,
    exit_description,
    format_bytes,
    pad,
)


@pytest.mark.parametrize("event", all_events(), ids=lambda e: type(e).__name__)
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


def test_text_lost_says_the_running_total_and_one_event() -> None:
    """The total the pipeline (or replay) puts in info; 1 event, not 1 events."""
    line = TextRenderer().render(Lost(2, 0, TS, 1, "seq-gap"), None, {"total": 1})
    assert line.rstrip("\n").endswith(" 1 event lost on cpu 2 (seq-gap, 1 in all)"), line
    line = TextRenderer().render(Lost(-1, 0, TS, 4000, "drops"), None, {"total": 12345})
    assert line.rstrip("\n").endswith(" 4,000 events lost (drops, 12,345 in all)"), line


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


@pytest.mark.parametrize(
    ("size", "shown"),
    [
        (0, "0B"), (999, "999B"), (1000, "1.0K"), (4096, "4.0K"), (10 * 1024 - 1, "10K"),
        (1000 * 1024, "1.0M"), (1023 * 1024, "1.0M"), (1024**2, "1.0M"), (212 * 1024**2, "212M"),
        (int(1.5 * 1024**3), "1.5G"), (5000 * 1024**4, "5000T"),
    ],
)
def test_format_bytes_has_at_most_three_digits(size: int, shown: str) -> None:
    # Issue 22: RSS showed as 1000K beside 1.0M; one unit per size, as ps and top.
    assert format_bytes(size) == shown


def test_display_width_counts_terminal_columns() -> None:
    assert display_width("ls -l") == 5
    assert display_width("日本") == 4  # wide: two columns each
    assert display_width("e\u0301") == 1  # a combining accent takes none
    assert display_width(escape("\x1b[2J")) == len("\\x1b[2J")  # escaped: what it shows


@pytest.mark.parametrize("width", range(0, 40))
def test_a_cut_fits_and_never_splits_an_escape_or_a_wide_character(width: int) -> None:
    # Issue 22: argv is cut to the terminal's width, with a visible marker.
    text = escape("a\x1bb日本語\u200be\u0301\\x" + "\U0001f600" * 3 + "tail")
    cut = cut_to_width(text, width)
    assert display_width(cut) <= width
    if cut == text:
        assert display_width(text) <= width
        return
    if width < len(CUT_MARKER):
        assert cut == CUT_MARKER[:width]
        return
    assert cut.endswith(CUT_MARKER)
    kept = cut.removesuffix(CUT_MARKER)
    assert text.startswith(kept)
    # Kept whole: every escape (a backslash and its letter and digits) and every character.
    escapes = re.compile(r"\\(?:x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8}|[\\nrt'])")
    assert "\\" not in escapes.sub("", kept), kept


def test_pad_fills_display_columns() -> None:
    assert pad("日本", 6) == "日本  " and pad("7", 3, right=True) == "  7" and pad("toolong", 3) == "toolong"

"""Human output: one line per event, safe for a terminal."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from ..costs import exit_cpu
from ..escape import escape, quote_arg
from ..events import (
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
    signal_name,
)
from .clock import Clock


def exit_description(exit_code: int) -> str:
    """``status 3``, ``killed by SIGKILL``, ``killed by SIGSEGV (core dumped)``."""
    status, sig, core_dumped = decode_wait_status(exit_code)
    if sig is None:
        return f"status {status}"
    return f"killed by {signal_name(sig)}{' (core dumped)' if core_dumped else ''}"


def format_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.1f}ms"
    if seconds < 120:
        return f"{seconds:.3f}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 120:
        return f"{int(minutes)}m{secs:02.0f}s"
    hours, minutes = divmod(minutes, 60)
    return f"{int(hours)}h{int(minutes):02d}m"


def format_bytes(size: int) -> str:
    """``512B``, ``4.0K``, ``212M``, ``1.0M``, ``1.5G`` (powers of 1024, as ps
    and top): at most three digits, so 1000K is 1.0M and sizes line up."""
    value = float(size)
    for unit in ("B", "K", "M", "G", "T"):
        # 999.5 and up would print as 1000; 9.95 and up as 10.0 (four characters)
        if value < 999.5 or unit == "T":
            if unit == "B":
                return f"{int(value)}B"
            return f"{value:.1f}{unit}" if value < 9.95 else f"{value:.0f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


#: How many characters the escapes of procevents.escape take (a backslash,
#: then this letter): ``\\x1b``, ``\\u200b``, ``\\U0001f600``; any other, two.
_ESCAPE_LENGTH: Final = {"x": 4, "u": 6, "U": 10}


def _units(text: str) -> list[tuple[str, int]]:
    """Escaped text as what a cut must keep whole, each with its display
    columns: an escape, or one character (wide ones 2, combining ones 0)."""
    import unicodedata

    units = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            chunk = text[i : i + _ESCAPE_LENGTH.get(text[i + 1], 2)]
            units.append((chunk, len(chunk)))
            i += len(chunk)
            continue
        if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
            units.append((ch, 0))
        else:
            units.append((ch, 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1))
        i += 1
    return units


def display_width(text: str) -> int:
    """The columns a terminal gives ``text`` (already escaped)."""
    if text.isascii():
        return len(text)
    return sum(columns for _, columns in _units(text))


#: What ends a cut line: shown where the rest was left out.
CUT_MARKER: Final = "..."


def cut_to_width(text: str, width: int) -> str:
    """``text`` (escaped) in at most ``width`` columns: whole if it fits, else
    cut and ended by CUT_MARKER, never inside an escape or a wide character."""
    if display_width(text) <= width:
        return text
    if width < len(CUT_MARKER):
        return CUT_MARKER[: max(0, width)]
    room = width - len(CUT_MARKER)
    kept = []
    used = 0
    for chunk, columns in _units(text):
        if used + columns > room:
            break
        kept.append(chunk)
        used += columns
    return "".join(kept) + CUT_MARKER


def pad(text: str, width: int, *, right: bool = False) -> str:
    """``text`` filled with spaces to ``width`` display columns (on the left
    when ``right``-aligned)."""
    fill = " " * max(0, width - display_width(text))
    return fill + text if right else text + fill


def format_cost(info: Mapping[str, Any]) -> str:
    """``cpu 0.52s rss 212M`` from an exit's taskstats figures ('' without them)."""
    cpu, rss = exit_cpu(info), info.get("max_rss")
    parts = []
    if cpu is not None:
        parts.append(f"cpu {format_duration(cpu)}")
    if rss is not None:
        parts.append(f"rss {format_bytes(rss)}")
    return " ".join(parts)


def format_command(info: Mapping[str, Any]) -> str:
    """The best available description of the program: argv, else [comm]."""
    argv = info.get("cmdline")
    if argv:
        return " ".join(quote_arg(arg) for arg in argv)
    comm = info.get("comm")
    if comm:
        return f"[{escape(comm)}]"
    return ""


def _fork(event: Fork) -> str:
    if event.child_pid != event.child_tgid:
        return f"thread {event.child_pid} in {event.child_tgid}"
    return f"child {event.child_tgid}"


def _exit(event: Exit) -> str:
    text = exit_description(event.exit_code)
    if event.process_pid != event.process_tgid:
        return f"thread {event.process_pid} {text}"
    return text


def _ptrace(event: Ptrace) -> str:
    return f"traced by {event.tracer_tgid}" if event.tracer_pid else "detached"


def lost_words(event: Lost, total: int | None = None) -> str:
    """``5 events lost on cpu 2 (seq-gap, 17 in all)``: ``total`` is the
    running total (info's ``total``), when known."""
    where = f" on cpu {event.cpu}" if event.cpu >= 0 else ""
    so_far = "" if total is None else f", {total:,} in all"
    return f"{event.count:,} {'event' if event.count == 1 else 'events'} lost{where} ({event.reason}{so_far})"


#: Event class -> the words its line starts with (every class has an entry).
_DETAILS: Final[dict[type[Event], Callable[[Any], str]]] = {
    Ack: lambda event: f"err {event.err}",
    Fork: _fork,
    Exec: lambda event: "",
    Uid: lambda event: f"ruid {event.ruid} euid {event.euid}",
    Gid: lambda event: f"rgid {event.rgid} egid {event.egid}",
    Sid: lambda event: "new session",
    Ptrace: _ptrace,
    Comm: lambda event: f"comm {escape(event.comm_text)!s}",
    Coredump: lambda event: "core-class signal",
    Exit: _exit,
    Lost: lost_words,
    Unknown: lambda event: f"what 0x{event.what:08x} data {event.data.hex()}",
}


def _user(info: Mapping[str, Any]) -> str:
    user = info.get("user")
    return "" if user is None else f"user {escape(str(user))}"


#: Event class -> the words its enrichment adds after the duration.
_INFO_DETAILS: Final[dict[type[Event], Callable[[Mapping[str, Any]], str]]] = {
    Exec: _user,
    Exit: format_cost,
}


def details(event: Event, info: Mapping[str, Any] | None = None) -> str:
    """The per-type part of a line."""
    if type(event) is Lost:  # no process: no command, no duration, but a total
        return lost_words(event, None if info is None else info.get("total"))
    text = _DETAILS[type(event)](event)
    if info:
        command = format_command(info)
        duration = info.get("duration")
        if duration is not None:
            text = f"{text} after {format_duration(duration)}" if text else format_duration(duration)
        more = _INFO_DETAILS.get(type(event))
        if more is not None:
            words = more(info)
            if words:
                text = f"{text} {words}" if text else words
        if command:
            text = f"{text}  {command}" if text else command
    return text


class TextRenderer:
    """``10:40:01.123 exit      2608    2567 status 3``: time, event, pid, ppid, details."""

    header = f"{'TIME':<12} {'EVENT':<8} {'PID':>7} {'PPID':>7} DETAILS"

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()

    def render(self, event: Event, ppid: int | None, info: Mapping[str, Any] | None = None) -> str:
        pid = "" if isinstance(event, Lost) else str(event.tgid)
        parent = "" if ppid is None else str(ppid)
        return (
            f"{self.clock.local_ms(event.timestamp_ns)} {event.name:<8} {pid:>7} {parent:>7} "
            f"{details(event, info)}\n"
        )

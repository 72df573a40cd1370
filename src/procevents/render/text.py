"""Human output: one line per event, safe for a terminal."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
    """``512B``, ``4.0K``, ``212M``, ``1.5G`` (powers of 1024, as ps and top)."""
    value = float(size)
    for unit in ("B", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            if unit == "B":
                return f"{int(value)}B"
            return f"{value:.1f}{unit}" if value < 10 else f"{value:.0f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


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


def details(event: Event, info: Mapping[str, Any] | None = None) -> str:
    """The per-type part of a line."""
    cls = type(event)
    text: str
    if cls is Fork:
        assert isinstance(event, Fork)
        if event.child_pid != event.child_tgid:
            text = f"thread {event.child_pid} in {event.child_tgid}"
        else:
            text = f"child {event.child_tgid}"
    elif cls is Exec:
        text = ""
    elif cls is Exit:
        assert isinstance(event, Exit)
        text = exit_description(event.exit_code)
        if event.process_pid != event.process_tgid:
            text = f"thread {event.process_pid} {text}"
    elif cls is Uid:
        assert isinstance(event, Uid)
        text = f"ruid {event.ruid} euid {event.euid}"
    elif cls is Gid:
        assert isinstance(event, Gid)
        text = f"rgid {event.rgid} egid {event.egid}"
    elif cls is Sid:
        text = "new session"
    elif cls is Ptrace:
        assert isinstance(event, Ptrace)
        text = f"traced by {event.tracer_tgid}" if event.tracer_pid else "detached"
    elif cls is Comm:
        assert isinstance(event, Comm)
        text = f"comm {escape(event.comm_text)!s}"
    elif cls is Coredump:
        text = "core-class signal"
    elif cls is Lost:
        assert isinstance(event, Lost)
        where = f" on cpu {event.cpu}" if event.cpu >= 0 else ""
        text = f"{event.count} events lost{where} ({event.reason})"
    elif cls is Unknown:
        assert isinstance(event, Unknown)
        text = f"what 0x{event.what:08x} data {event.data.hex()}"
    elif cls is Ack:
        assert isinstance(event, Ack)
        text = f"err {event.err}"
    else:
        text = ""
    if info:
        command = format_command(info)
        duration = info.get("duration")
        if duration is not None:
            text = f"{text} after {format_duration(duration)}" if text else format_duration(duration)
        if cls is Exit:
            cost = format_cost(info)
            if cost:
                text = f"{text} {cost}" if text else cost
        user = info.get("user")
        if user is not None and cls is Exec:
            text = f"{text} user {escape(str(user))}" if text else f"user {escape(str(user))}"
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

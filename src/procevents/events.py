"""Typed, immutable process events.

Field names follow ``linux/cn_proc.h``.  Every event also answers ``pid`` and
``tgid`` for the task it is about (for :class:`Fork`, the child), so code that
does not care about the type can still ask "which process?".  ``pid`` is the
thread id and ``tgid`` the process id, as in the kernel; ``is_thread`` tells
them apart.

The kernel stamps events with CLOCK_MONOTONIC nanoseconds; :attr:`Event.time`
turns that into an aware UTC :class:`~datetime.datetime` using the offset
between the wall clock and the monotonic clock (see :func:`wall_clock_ns`).
"""

from __future__ import annotations

import datetime as _dt
import signal as _signal
import time as _time
from dataclasses import dataclass, field, fields
from typing import ClassVar, Final

# PROC_EVENT_* values, as in linux/cn_proc.h.
PROC_EVENT_NONE: Final = 0x00000000
PROC_EVENT_FORK: Final = 0x00000001
PROC_EVENT_EXEC: Final = 0x00000002
PROC_EVENT_UID: Final = 0x00000004
PROC_EVENT_GID: Final = 0x00000040
PROC_EVENT_SID: Final = 0x00000080
PROC_EVENT_PTRACE: Final = 0x00000100
PROC_EVENT_COMM: Final = 0x00000200
PROC_EVENT_COREDUMP: Final = 0x40000000
PROC_EVENT_EXIT: Final = 0x80000000

#: Names accepted by ``events=`` / ``--events`` and used as the ``event`` key
#: in JSON output, mapped to their kernel filter bits.
EVENT_BITS: Final[dict[str, int]] = {
    "fork": PROC_EVENT_FORK,
    "exec": PROC_EVENT_EXEC,
    "uid": PROC_EVENT_UID,
    "gid": PROC_EVENT_GID,
    "sid": PROC_EVENT_SID,
    "ptrace": PROC_EVENT_PTRACE,
    "comm": PROC_EVENT_COMM,
    "coredump": PROC_EVENT_COREDUMP,
    "exit": PROC_EVENT_EXIT,
}

#: Every name a stream can produce, in a stable order for summaries.
EVENT_NAMES: Final[tuple[str, ...]] = (*EVENT_BITS, "lost", "unknown")


def _compute_clock_offset() -> int:
    # Bracket the wall-clock read with two monotonic reads to halve the error.
    m0 = _time.monotonic_ns()
    w = _time.time_ns()
    m1 = _time.monotonic_ns()
    return w - (m0 + m1) // 2


_clock_offset_ns: int = _compute_clock_offset()


def resync_clock() -> None:
    """Re-read the wall-clock/monotonic offset (call after the clock is set)."""
    global _clock_offset_ns
    _clock_offset_ns = _compute_clock_offset()


def wall_clock_ns(monotonic_ns: int) -> int:
    """Convert a CLOCK_MONOTONIC timestamp to nanoseconds since the epoch."""
    return monotonic_ns + _clock_offset_ns


def decode_wait_status(code: int) -> tuple[int | None, int | None, bool]:
    """Split a wait(2) status into (exit status, terminating signal, core dumped).

    Exactly one of status and signal is not None.
    """
    sig = code & 0x7F
    if sig == 0:
        return (code >> 8) & 0xFF, None, False
    return None, sig, bool(code & 0x80)


def signal_name(number: int) -> str:
    """``SIGKILL`` for 9; ``SIG42`` for a number without a name."""
    try:
        return _signal.Signals(number).name
    except ValueError:
        return f"SIG{number}"


@dataclass(frozen=True, slots=True)
class Event:
    """Fields every event carries.

    ``seq`` is the kernel's per-CPU event counter, ``cpu`` the CPU that
    generated the event, ``timestamp_ns`` CLOCK_MONOTONIC nanoseconds.
    """

    cpu: int
    seq: int
    timestamp_ns: int

    #: The ``event`` name used in JSON and ``--events``.
    name: ClassVar[str] = ""

    @property
    def pid(self) -> int:
        """Thread id of the task the event is about (0 when there is none)."""
        return 0

    @property
    def tgid(self) -> int:
        """Process id of the task the event is about (0 when there is none)."""
        return 0

    @property
    def is_thread(self) -> bool:
        """True when the task is a thread other than its process's leader."""
        return self.pid != self.tgid

    @property
    def wall_ns(self) -> int:
        """Nanoseconds since the epoch, derived from ``timestamp_ns``."""
        return self.timestamp_ns + _clock_offset_ns

    @property
    def time(self) -> _dt.datetime:
        """Wall-clock time of the event, an aware UTC datetime."""
        ns = self.timestamp_ns + _clock_offset_ns
        return _dt.datetime.fromtimestamp(ns // 1_000_000_000, _dt.UTC).replace(
            microsecond=(ns // 1000) % 1_000_000
        )


@dataclass(frozen=True, slots=True)
class _ProcessEvent(Event):
    process_pid: int
    process_tgid: int

    @property
    def pid(self) -> int:
        return self.process_pid

    @property
    def tgid(self) -> int:
        return self.process_tgid


@dataclass(frozen=True, slots=True)
class Ack(Event):
    """The kernel's answer to a subscription request (``what`` = NONE).

    ``err`` is a positive errno, 0 for success; ``ack`` is the request's ack
    number plus one, which is how a subscriber recognises its own answer.
    """

    err: int
    # Not a word of the union: the kernel puts it in the cn_msg header.
    ack: int = field(default=0, metadata={"cn_msg": True})
    name: ClassVar[str] = "ack"


@dataclass(frozen=True, slots=True)
class Fork(Event):
    """A new task: a process (child_pid == child_tgid) or a thread."""

    parent_pid: int
    parent_tgid: int
    child_pid: int
    child_tgid: int
    name: ClassVar[str] = "fork"

    @property
    def pid(self) -> int:
        return self.child_pid

    @property
    def tgid(self) -> int:
        return self.child_tgid


@dataclass(frozen=True, slots=True)
class Exec(_ProcessEvent):
    """A successful execve(2); the new program's argv must be read from /proc."""

    name: ClassVar[str] = "exec"


@dataclass(frozen=True, slots=True)
class Uid(_ProcessEvent):
    """A credential change; reports the new real and effective uid."""

    ruid: int
    euid: int
    name: ClassVar[str] = "uid"


@dataclass(frozen=True, slots=True)
class Gid(_ProcessEvent):
    """A credential change; reports the new real and effective gid."""

    rgid: int
    egid: int
    name: ClassVar[str] = "gid"


@dataclass(frozen=True, slots=True)
class Sid(_ProcessEvent):
    """setsid(2): the process leads a new session."""

    name: ClassVar[str] = "sid"


@dataclass(frozen=True, slots=True)
class Ptrace(_ProcessEvent):
    """ptrace attach/seize (tracer set) or detach (tracer_pid == 0)."""

    tracer_pid: int
    tracer_tgid: int
    name: ClassVar[str] = "ptrace"

    @property
    def attached(self) -> bool:
        return self.tracer_pid != 0


@dataclass(frozen=True, slots=True)
class Comm(_ProcessEvent):
    """A task renamed itself (prctl(PR_SET_NAME) or a write to its comm file).

    ``comm`` holds the raw bytes up to the first NUL (any byte may occur);
    :attr:`comm_text` is a lossless str (undecodable bytes become
    surrogate escapes, as ``os.fsdecode`` does).
    """

    comm: bytes
    name: ClassVar[str] = "comm"

    @property
    def comm_text(self) -> str:
        return self.comm.decode("utf-8", "surrogateescape")


@dataclass(frozen=True, slots=True)
class Coredump(_ProcessEvent):
    """A task received a core-class signal (a core file may or may not follow)."""

    parent_pid: int
    parent_tgid: int
    name: ClassVar[str] = "coredump"


@dataclass(frozen=True, slots=True)
class Exit(_ProcessEvent):
    """A task ended.

    ``exit_code`` is the raw wait(2) status; ``status``, ``signal`` and
    ``core_dumped`` decode it.  ``exit_signal`` is the signal the parent is
    sent (17, SIGCHLD, for processes; -1 for threads).  ``parent_*`` are 0
    when the kernel had already released the task.
    """

    exit_code: int
    exit_signal: int
    parent_pid: int
    parent_tgid: int
    name: ClassVar[str] = "exit"

    @property
    def status(self) -> int | None:
        """Exit status (0-255), or None when a signal ended the task."""
        return decode_wait_status(self.exit_code)[0]

    @property
    def signal(self) -> int | None:
        """The terminating signal, or None after a normal exit."""
        return decode_wait_status(self.exit_code)[1]

    @property
    def core_dumped(self) -> bool:
        return decode_wait_status(self.exit_code)[2]

    @property
    def failed(self) -> bool:
        """Non-zero status or death by signal."""
        return self.exit_code != 0


@dataclass(frozen=True, slots=True)
class Lost(Event):
    """Events the kernel could not deliver to this subscriber.

    ``count`` is how many; ``cpu`` the CPU they were generated on when
    known (from a per-CPU sequence gap), else -1; ``reason`` is
    ``"seq-gap"``, ``"drops"`` (the socket's drop counter) or ``"enobufs"``.
    ``timestamp_ns`` is when the loss was noticed.
    """

    count: int
    reason: str
    name: ClassVar[str] = "lost"


@dataclass(frozen=True, slots=True)
class Unknown(Event):
    """An event type this library does not know; ``data`` is its raw payload."""

    what: int
    data: bytes
    name: ClassVar[str] = "unknown"


#: Event classes by kernel ``what`` value.
EVENT_TYPES: Final[dict[int, type[Event]]] = {
    PROC_EVENT_NONE: Ack,
    PROC_EVENT_FORK: Fork,
    PROC_EVENT_EXEC: Exec,
    PROC_EVENT_UID: Uid,
    PROC_EVENT_GID: Gid,
    PROC_EVENT_SID: Sid,
    PROC_EVENT_PTRACE: Ptrace,
    PROC_EVENT_COMM: Comm,
    PROC_EVENT_COREDUMP: Coredump,
    PROC_EVENT_EXIT: Exit,
}


def _payload(cls: type[Event]) -> tuple[str, ...]:
    common = len(fields(Event))
    return tuple(f.name for f in fields(cls)[common:] if not f.metadata.get("cn_msg"))


#: Per event class, the fields it adds to (cpu, seq, timestamp_ns), in
#: order.  For the kernel's events these are the words of the class's
#: member of the proc_event union, named and ordered as in cn_proc.h; the
#: wire format, the JSON keys and the tables keyed by class (one entry per
#: class here) all follow them.
PAYLOAD_FIELDS: Final[dict[type[Event], tuple[str, ...]]] = {
    cls: _payload(cls) for cls in (*EVENT_TYPES.values(), Lost, Unknown)
}


def parse_event_names(names: str | set[str] | frozenset[str] | list[str] | tuple[str, ...]) -> frozenset[str]:
    """Validate event names ("fork,exec" or an iterable); raise ValueError."""
    items = names.split(",") if isinstance(names, str) else list(names)
    chosen = {item.strip().lower() for item in items if item.strip()}
    unknown = sorted(chosen - EVENT_BITS.keys())
    if unknown:
        raise ValueError(
            f"unknown event type {', '.join(unknown)}; choose from {', '.join(EVENT_BITS)}"
        )
    if not chosen:
        raise ValueError(f"no event types given; choose from {', '.join(EVENT_BITS)}")
    return frozenset(chosen)


def event_mask(names: frozenset[str]) -> int:
    """The kernel filter mask (struct proc_input.event_type) for these names."""
    mask = 0
    for name in names:
        mask |= EVENT_BITS[name]
    return mask

"""Exec snapshots: what /proc showed of a process right after its exec,
read either by a capture reader while it was held or by the main process
after the event, and the checks that keep a late read from describing
another program (a pid exec'd again or reused)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Final

from .events import Event, Exec, Fork
from .procfs import ARGV_CUT_LIMIT, ARGV_LIMIT, ProcessHandle, ProcFS, Stat, Unavailable, parse_cmdline


@dataclass(slots=True)
class ExecSnapshot:
    """/proc values read for an exec event, before the process could vanish."""

    argv: list[str] | None
    comm: str | None
    exe: str | None
    cwd: str | None
    #: euid/egid; the real ids do not change on exec and come from the table.
    owner: tuple[int, int] | None
    #: Start time from /proc/PID/stat (CLOCK_MONOTONIC ns, tick resolution).
    start_ns: int | None = None
    #: Why argv is None: "gone" (exited first), "superseded" (the pid
    #: exec'd again or was reused before the read), "denied", or None.
    missing: str | None = None
    #: The environment (``--env``), as "KEY=VALUE" strings; None if not read.
    env: list[str] | None = None
    argv_truncated: bool = False
    env_truncated: bool = False
    #: Read while the exec'ing process was held by a realtime reader on its
    #: CPU: it cannot describe another program (no pid-reuse check needed).
    held: bool = False
    #: The cgroup path (procfs.parse_cgroup); None if not read.
    cgroup: str | None = None


def same_start(a: int | None, b: int | None) -> bool:
    """Could two start times (ns) be the same process's?  False if unknown.

    /proc start times have clock-tick resolution (10 ms at USER_HZ=100)."""
    return a is not None and b is not None and abs(a - b) <= 20_000_000


def read_exec_snapshots(
    procfs: ProcFS, pids: list[int], boot_offset_ns: int | None = None, env_limit: int = 0, cgroup: bool = True,
    argv_budget: int | None = None,
) -> list[ExecSnapshot]:
    """Read argv first for every pid (in the order given), then the rest.

    Each process is pinned by its /proc directory before anything is read,
    so a pid reused meanwhile reads as gone instead of as a stranger.
    ``argv_budget``: the bytes of argv text all of them may take; once it is
    spent, each argv is cut to ARGV_CUT_LIMIT (and marked so).
    """
    handles = [procfs.open_process(pid) for pid in pids]
    if boot_offset_ns is None:
        boot_offset_ns = procfs.boottime_offset_ns()
    argvs: list[tuple[list[str] | Unavailable, bool]] = []
    left = ARGV_LIMIT * len(pids) if argv_budget is None else argv_budget
    for handle in handles:
        if not isinstance(handle, ProcessHandle):
            argvs.append((handle, False))
            continue
        argv, cut = handle.argv(ARGV_LIMIT if left >= ARGV_LIMIT else max(ARGV_CUT_LIMIT, left))
        if isinstance(argv, list):
            left -= sum(len(arg) for arg in argv)
        argvs.append((argv, cut))
    snapshots = []
    for handle, (argv, argv_cut) in zip(handles, argvs, strict=True):
        if not isinstance(handle, ProcessHandle):
            snapshots.append(ExecSnapshot(None, None, None, None, None, None, handle.value))
            continue
        with handle:
            if argv is Unavailable.GONE:
                # Nothing more to read (and each try costs a syscall).
                snapshots.append(ExecSnapshot(None, None, None, None, None, None, "gone"))
                continue
            stat = handle.stat()  # comm and start time in one read
            exe: str | Unavailable
            cwd: str | Unavailable
            owner: tuple[int, int] | Unavailable
            environ: tuple[bytes, bool] | Unavailable = Unavailable.GONE
            group: str | Unavailable = Unavailable.GONE
            if argv is Unavailable.EMPTY:
                # A zombie: its comm (the exec'd program's) is all that is left.
                exe = cwd = owner = Unavailable.GONE
            else:
                exe = handle.exe()
                cwd = handle.cwd()
                owner = handle.owner()
                if env_limit:
                    environ = handle.read_bounded("environ", env_limit)
                if cgroup:
                    group = handle.cgroup()
        comm = start_ns = None
        if isinstance(stat, Stat):
            comm = stat.comm
            start_ns = stat.start_boottime_ns - boot_offset_ns
        missing = None
        if not isinstance(argv, list):
            missing = "gone" if argv is not Unavailable.DENIED else "denied"
        env = None
        env_cut = False
        if isinstance(environ, tuple):
            parsed = parse_cmdline(environ[0])
            env = parsed if isinstance(parsed, list) else []
            env_cut = environ[1]
        snapshots.append(
            ExecSnapshot(
                argv if isinstance(argv, list) else None,
                comm,
                exe if isinstance(exe, str) else None,
                cwd if isinstance(cwd, str) else None,
                owner if isinstance(owner, tuple) else None,
                start_ns,
                missing,
                env=env,
                argv_truncated=argv_cut,
                env_truncated=env_cut,
                cgroup=group or None if isinstance(group, str) else None,
            )
        )
    return snapshots


def _supersede(snapshot: ExecSnapshot) -> None:
    if snapshot.argv is not None:
        snapshot.missing = "superseded"
    snapshot.argv = None
    snapshot.exe = None
    snapshot.cwd = None
    snapshot.owner = None
    snapshot.comm = None
    snapshot.env = None
    snapshot.cgroup = None


def validate_snapshots(
    batch: Sequence[Event],
    exec_indexes: list[int],
    snapshots: list[ExecSnapshot],
    later: Sequence[Event],
    *,
    complete: bool = True,
    known_start: Callable[[int], int | None] | None = None,
) -> None:
    """Drop a snapshot that may describe another program than its exec's
    (``exec_indexes``: where the execs are in ``batch``, ascending).

    Valid unless, after that exec, the same pid exec'd again (we read the
    newer program) or a fork created a task with that pid (the pid was
    reused before we pinned it).  Every event generated before our reads
    finished is in ``batch`` or ``later`` (the socket drained afterwards)
    when ``complete``.  When it is not (the reader is far behind and stopped
    draining to bound memory), a snapshot is also checked against the start
    time the process is known by (its fork in the batch, else
    ``known_start``): a reused pid started later.
    """
    superseded: set[int] = set()
    for event in later:
        _note_pid_reuse(superseded, event)
    # Walk backwards collecting the pids that something later supersedes.
    position = len(batch)
    for index, snapshot in zip(reversed(exec_indexes), reversed(snapshots), strict=True):
        while position > index + 1:
            position -= 1
            _note_pid_reuse(superseded, batch[position])
        if snapshot.argv is None and snapshot.comm is None and snapshot.exe is None and snapshot.cwd is None:
            continue  # nothing read that could be another process's
        pid = batch[index].tgid
        unverified = not complete and not same_start(
            _start_before(batch, index, pid, known_start), snapshot.start_ns
        )
        if pid in superseded or unverified:
            _supersede(snapshot)


#: The pid an event makes name something new: a fork's child (a new task),
#: an exec's process (a new program).
_RENAMED: Final[dict[type[Event], Callable[[Any], int]]] = {
    Fork: attrgetter("child_pid"),
    Exec: attrgetter("tgid"),
}


def _note_pid_reuse(superseded: set[int], event: Event) -> None:
    renamed = _RENAMED.get(type(event))
    if renamed is not None:
        superseded.add(renamed(event))


def _start_before(
    batch: Sequence[Event], index: int, pid: int, known_start: Callable[[int], int | None] | None
) -> int | None:
    for position in range(index - 1, -1, -1):
        event = batch[position]
        if type(event) is Fork and event.pid == pid:
            return event.timestamp_ns
    return known_start(pid) if known_start is not None else None


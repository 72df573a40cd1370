"""The process table: every live process, seeded from /proc, kept current by events.

Identity is (pid, start time): a fork always creates a fresh entry, an exit
removes it, so after pid reuse two processes are never mixed.  Threads
belong to their process (keyed by tgid).  Memory stays bounded: exited
processes leave, and a hard cap evicts the oldest entries should exits be
lost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from .events import Ack, Comm, Coredump, Event, Exec, Exit, Fork, Gid, Lost, Ptrace, Sid, Uid, Unknown
from .procfs import Creds, ProcessHandle, ProcFS, Stat, Unavailable
from .snapshot import ExecSnapshot, same_start

#: Beyond this many tracked processes the oldest entries are forgotten.
MAX_TRACKED = 1 << 18
#: Processes remembered after their exit, for the exits of their threads
#: that the kernel reports later (a joined thread may still be on its way out).
MAX_EXITED = 4096
_MAX_DEPTH = 256


@dataclass(slots=True)
class Proc:
    """What is known of one process.  ``start_ns`` is CLOCK_MONOTONIC."""

    pid: int
    ppid: int
    start_ns: int | None = None
    comm: str | None = None
    argv: list[str] | None = None
    exe: str | None = None
    cwd: str | None = None
    ruid: int | None = None
    euid: int | None = None
    rgid: int | None = None
    egid: int | None = None
    #: How argv was learned: "exec" (read right after its exec), "seed"
    #: (running at start), "fork" (inherited from the parent), or None.
    argv_source: str | None = None
    execs: int = 0
    #: The cgroup path (see procfs.parse_cgroup): read at its exec or when
    #: first seen, else inherited at its fork (as the kernel does).
    cgroup: str | None = None
    #: Its fleet-wide id and its parent's (procevents.identity), once named.
    exec_id: str | None = None
    parent_exec_id: str | None = None


class ProcessTable:
    """tgid -> :class:`Proc`, fed by events in arrival order."""

    def __init__(self, procfs: ProcFS | None = None, *, seed: bool = True) -> None:
        self.procfs = procfs or ProcFS()
        self.procs: dict[int, Proc] = {}
        #: tid -> start (CLOCK_MONOTONIC ns) of threads seen created; the
        #: enricher takes an entry at the thread's exit.
        self.thread_starts: dict[int, int] = {}
        #: tgid -> the entry of a process whose exit was seen, until its pid
        #: names a new process: a thread's exit may come after its process's.
        self.exited: dict[int, Proc] = {}
        self.boot_offset_ns = self.procfs.boottime_offset_ns()
        if seed:
            self.seed()

    def __len__(self) -> int:
        return len(self.procs)

    def __contains__(self, tgid: int) -> bool:
        return tgid in self.procs

    def get(self, tgid: int) -> Proc | None:
        return self.procs.get(tgid)

    # -- from /proc ------------------------------------------------------

    def seed(self) -> None:
        """Add every running process (and refresh ones already known)."""
        for pid in self.procfs.pids():
            proc = self.load(pid)
            if proc is not None:
                self.procs[pid] = proc

    def load(self, pid: int) -> Proc | None:
        """Build an entry from /proc, or None if the process is gone."""
        handle = self.procfs.open_process(pid)
        if isinstance(handle, Unavailable):
            return None
        with handle:
            return self._load(pid, handle)

    def _load(self, pid: int, handle: ProcessHandle) -> Proc | None:
        stat = handle.stat()
        if not isinstance(stat, Stat):
            return None
        argv = handle.cmdline()
        creds = handle.creds()
        exe = handle.exe()
        cgroup = handle.cgroup()
        proc = Proc(
            pid=pid,
            ppid=stat.ppid,
            start_ns=stat.start_boottime_ns - self.boot_offset_ns,
            comm=stat.comm,
            argv=argv if isinstance(argv, list) else None,
            exe=exe if isinstance(exe, str) else None,
            argv_source="seed" if isinstance(argv, list) else None,
            cgroup=cgroup or None if isinstance(cgroup, str) else None,
        )
        if isinstance(creds, Creds):
            proc.ruid, proc.euid, proc.rgid, proc.egid = creds.ruid, creds.euid, creds.rgid, creds.egid
        return proc

    def resync(self) -> None:
        """After lost events: drop entries whose process is gone or whose pid
        now names another process, and add processes we never heard of."""
        live = set(self.procfs.pids())
        for pid in [pid for pid in self.procs if pid not in live]:
            del self.procs[pid]
        for pid in live:
            fresh = self.load(pid)
            if fresh is None:
                self.procs.pop(pid, None)
                continue
            known = self.procs.get(pid)
            if known is None or (known.start_ns is not None and not same_start(known.start_ns, fresh.start_ns)):
                self.procs[pid] = fresh
            else:
                known.ppid = fresh.ppid

    # -- from events -------------------------------------------------------

    def _add(self, proc: Proc) -> None:
        procs = self.procs
        if len(procs) >= MAX_TRACKED and proc.pid not in procs:
            del procs[next(iter(procs))]
        procs[proc.pid] = proc
        self.exited.pop(proc.pid, None)

    def _lookup(self, tgid: int) -> Proc | None:
        proc = self.procs.get(tgid)
        if proc is None and tgid > 0:
            proc = self.load(tgid)
            if proc is not None:
                self._add(proc)
        return proc

    def update(self, event: Event, snapshot: ExecSnapshot | None = None) -> Proc | None:
        """Apply ``event``; return the entry of the process it is about.

        For an exit of a whole process the entry is removed and returned.
        """
        return _APPLY[type(event)](self, event, snapshot)

    def _fork(self, event: Fork, snapshot: ExecSnapshot | None) -> Proc | None:
        if event.child_pid != event.child_tgid:
            starts = self.thread_starts
            if len(starts) >= MAX_TRACKED:
                del starts[next(iter(starts))]
            starts[event.child_pid] = event.timestamp_ns
            return self._lookup(event.child_tgid)
        parent = self._lookup(event.parent_tgid)
        child = Proc(pid=event.child_tgid, ppid=event.parent_tgid, start_ns=event.timestamp_ns)
        if parent is not None:
            child.comm = parent.comm
            child.argv = parent.argv
            child.exe = parent.exe
            child.cwd = parent.cwd
            child.ruid, child.euid, child.rgid, child.egid = parent.ruid, parent.euid, parent.rgid, parent.egid
            child.cgroup = parent.cgroup
            child.argv_source = "fork" if parent.argv is not None else None
        self._add(child)
        return child

    def _exit(self, event: Exit, snapshot: ExecSnapshot | None) -> Proc | None:
        if event.process_pid != event.process_tgid:
            proc = self.procs.get(event.process_tgid)
            return proc if proc is not None else self.exited.get(event.process_tgid)
        proc = self.procs.pop(event.process_tgid, None)
        if proc is None:
            proc = Proc(pid=event.process_tgid, ppid=event.parent_tgid)
        exited = self.exited
        if len(exited) >= MAX_EXITED and proc.pid not in exited:
            del exited[next(iter(exited))]
        exited[proc.pid] = proc
        return proc

    def _exec(self, event: Exec, snapshot: ExecSnapshot | None) -> Proc | None:
        proc = self._lookup(event.tgid)
        if proc is None:
            proc = Proc(pid=event.tgid, ppid=0)
            self._add(proc)
        proc.execs += 1
        # What the process was before the exec no longer describes it:
        # a name or argv that could not be read is unknown, never the old one.
        if snapshot is None:
            proc.argv = proc.comm = proc.exe = None
            proc.argv_source = None
            return proc
        proc.argv = snapshot.argv
        proc.argv_source = "exec" if snapshot.argv is not None else None
        proc.comm = snapshot.comm
        proc.exe = snapshot.exe
        if snapshot.cwd is not None:
            proc.cwd = snapshot.cwd
        if snapshot.owner is not None:
            proc.euid, proc.egid = snapshot.owner
        if snapshot.cgroup is not None:
            proc.cgroup = snapshot.cgroup
        return proc

    # Threads have their own name and credentials: only the leader's describe the process.

    def _comm(self, event: Comm, snapshot: ExecSnapshot | None) -> Proc | None:
        proc = self._lookup(event.tgid)
        if proc is not None and event.pid == event.tgid:
            proc.comm = event.comm_text
        return proc

    def _uid(self, event: Uid, snapshot: ExecSnapshot | None) -> Proc | None:
        proc = self._lookup(event.tgid)
        if proc is not None and event.pid == event.tgid:
            proc.ruid, proc.euid = event.ruid, event.euid
        return proc

    def _gid(self, event: Gid, snapshot: ExecSnapshot | None) -> Proc | None:
        proc = self._lookup(event.tgid)
        if proc is not None and event.pid == event.tgid:
            proc.rgid, proc.egid = event.rgid, event.egid
        return proc

    def _about(self, event: Event, snapshot: ExecSnapshot | None) -> Proc | None:
        return self._lookup(event.tgid)

    # -- relationships -----------------------------------------------------

    def ancestors(self, tgid: int) -> Iterator[Proc]:
        """Parent, grandparent, ... as far as the table knows."""
        seen = {tgid}
        proc = self.procs.get(tgid)
        while proc is not None and len(seen) < _MAX_DEPTH:
            parent = self.procs.get(proc.ppid)
            if parent is None or parent.pid in seen:
                return
            seen.add(parent.pid)
            yield parent
            proc = parent

    def descendants(self, roots: set[int]) -> set[int]:
        """``roots`` and every process below them in the table."""
        return subtree(roots, {proc.pid: proc.ppid for proc in self.procs.values()})


#: What each event type does to the table (every class has an entry).
_APPLY: Final[dict[type[Event], Callable[[ProcessTable, Any, ExecSnapshot | None], Proc | None]]] = {
    Fork: ProcessTable._fork,
    Exit: ProcessTable._exit,
    Exec: ProcessTable._exec,
    Comm: ProcessTable._comm,
    Uid: ProcessTable._uid,
    Gid: ProcessTable._gid,
    Sid: ProcessTable._about,
    Ptrace: ProcessTable._about,
    Coredump: ProcessTable._about,
    Ack: ProcessTable._about,
    Lost: ProcessTable._about,
    Unknown: ProcessTable._about,
}


def subtree(roots: Iterable[int], parents: Mapping[int, int]) -> set[int]:
    """``roots`` and every process below them, from a pid -> ppid map."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    found = set(roots)
    stack = list(found)
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found

"""Enrichment: who, what and how long, from the process table and /proc.

The kernel sends only ids.  For every batch of events the enricher first
reads the argv of each exec (newest first: the oldest ones are the likeliest
to be gone already), before any other work, then applies the events to the
process table in arrival order and attaches to each event a small dict of
what is known (:class:`EventInfo` lists the keys per event type).
"""

from __future__ import annotations

import os
import pwd
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, TypedDict

from .containers import container_fields
from .costs import COST_KEYS, cost_fields, whole_process
from .events import Event, Exec, Exit, Fork, Lost
from .identity import Identity
from .procfs import ARGV_CUT_LIMIT, ARGV_LIMIT, ProcFS
from .proctable import Proc, ProcessTable
from .snapshot import ExecSnapshot, read_exec_snapshots, validate_snapshots

if TYPE_CHECKING:
    from .accounting import ExitCosts
    from .capture import ExecCapture
    from .costs import TaskCost

#: Seconds between two /proc rescans after lost events.
RESYNC_INTERVAL: Final = 1.0


class EventInfo(TypedDict, total=False):
    """What enrichment adds to an event: the ``--json`` keys beyond the kernel's.

    exec: cmdline, exe, cwd, ppid, uid, user, comm, and missing (why cmdline
    is null), cmdline_truncated, env and env_truncated (``--env``); exit:
    comm, cmdline, duration (seconds), ppid, uid, user, and with taskstats
    (``costs``) utime, stime, max_rss, rchar, wchar, read_bytes, write_bytes,
    cpu_delay, io_delay, mem_delay (seconds and bytes); fork and other
    events: comm, ppid; a thread's fork and exit: thread.  None is unknown.
    Every event of a known process then has exec_id and parent_exec_id
    (procevents.identity); an exec also has cgroup and, when its cgroup
    names one, container_id, container_runtime and pod_uid
    (procevents.containers).
    """

    cmdline: list[str] | None
    cmdline_truncated: bool
    missing: str
    exe: str | None
    cwd: str | None
    ppid: int | None
    uid: int | None
    user: str | None
    comm: str | None
    env: list[str] | None
    env_truncated: bool
    duration: float | None
    thread: bool
    utime: float | None
    stime: float | None
    max_rss: int | None
    rchar: int | None
    wchar: int | None
    read_bytes: int | None
    write_bytes: int | None
    cpu_delay: float | None
    io_delay: float | None
    mem_delay: float | None
    cgroup: str | None
    container_id: str
    container_runtime: str
    pod_uid: str
    exec_id: str | None
    parent_exec_id: str | None


class Users:
    """uid -> user name, cached; an unknown uid is shown as its number."""

    __slots__ = ("_names",)

    def __init__(self) -> None:
        self._names: dict[int, str] = {}

    def name(self, uid: int | None) -> str | None:
        if uid is None:
            return None
        names = self._names
        name = names.get(uid)
        if name is None:
            try:
                name = pwd.getpwuid(uid).pw_name
            except (KeyError, OverflowError):
                name = str(uid)
            names[uid] = name
        return name

    def uid(self, text: str) -> int:
        """A user name or number to a uid; KeyError when unknown."""
        if text.isdigit():
            return int(text)
        return pwd.getpwnam(text).pw_uid


#: Bytes of argv text one batch's execs may hold (a batch is up to 4,096
#: events): past it, argv is cut to ARGV_CUT_LIMIT and marked as cut.
BATCH_ARGV_BYTES: Final = 16 * 1024 * 1024


class Enricher:
    """Feeds a :class:`ProcessTable` and describes each event's process."""

    def __init__(
        self,
        table: ProcessTable | None = None,
        procfs: ProcFS | None = None,
        *,
        capture: ExecCapture | None = None,
        env_limit: int = 0,
        costs: ExitCosts | None = None,
        identity: Identity | None = None,
    ) -> None:
        self.procfs = procfs or (table.procfs if table is not None else ProcFS())
        self.table = table or ProcessTable(self.procfs)
        #: Builds each process's exec id (this host's name unless given).
        self.identity = identity or Identity(boot_offset_ns=self.table.boot_offset_ns)
        self.users = Users()
        #: Per-CPU readers that read each exec while it is held (None: async).
        self.capture = capture
        #: Read the environment of each exec, up to this many bytes (0: no).
        self.env_limit = env_limit
        #: What each task cost, from taskstats (None: not asked for, or
        #: unavailable); opened and closed by the main loop, like ``capture``.
        self.costs = costs
        #: tgid -> figures of its threads that ended (summed into the process's).
        self._thread_costs: dict[int, list[TaskCost]] = {}
        #: pid -> the argv we started it with (``trace``): the truth for its
        #: first exec should no reader have it.
        self.launched: dict[int, list[str]] = {}
        #: Exec events seen / those whose argv was captured.
        self.execs = 0
        self.argv_captured = 0
        self.resyncs = 0
        self._resync_wanted = False
        self._last_resync = float("-inf")

    def read_execs(self, batch: Sequence[Event]) -> dict[int, ExecSnapshot]:
        """Each exec's snapshot, by index in ``batch``: the capture readers'
        (taken while the process was held), else /proc read now, newest
        first (the oldest ones are the likeliest to be gone already).  A
        snapshot not ``held`` may describe a later process with the same
        pid: :meth:`check_snapshots` tells, from the events queued since."""
        exec_indexes = [i for i, event in enumerate(batch) if type(event) is Exec]
        if not exec_indexes:
            return {}
        found: dict[int, ExecSnapshot] = {}
        capture = self.capture
        # What a batch's argv may take, whatever any user execs: past it each
        # is cut to ARGV_CUT_LIMIT and marked (cmdline_truncated).
        left = BATCH_ARGV_BYTES
        if capture is not None:
            capture.collect()
            for i in exec_indexes:
                snapshot = capture.take(batch[i], ARGV_LIMIT if left >= ARGV_LIMIT else ARGV_CUT_LIMIT)  # type: ignore[arg-type]
                if snapshot is not None:
                    found[i] = snapshot
                    left -= sum(len(arg) for arg in snapshot.argv or ())
        newest_first = [i for i in reversed(exec_indexes) if i not in found]
        if newest_first:
            snapshots = read_exec_snapshots(
                self.procfs, [batch[i].tgid for i in newest_first], self.table.boot_offset_ns, self.env_limit,
                argv_budget=max(0, left),
            )
            found.update(zip(newest_first, snapshots, strict=True))
        if self.launched:
            self._use_launched(batch, exec_indexes, found)
        return found

    def check_snapshots(
        self, batch: Sequence[Event], found: dict[int, ExecSnapshot], later: Sequence[Event], complete: bool
    ) -> None:
        """Drop what the unheld snapshots of ``found`` may have read from
        another process: ``later`` are the events queued after ``batch``
        (``complete``: all of them), whose exit and fork of the same pid
        would show the reuse."""
        unheld = sorted(i for i, snapshot in found.items() if not snapshot.held)  # in batch order
        if unheld:
            validate_snapshots(
                batch, unheld, [found[i] for i in unheld], later, complete=complete, known_start=self._known_start
            )

    def collect_costs(self) -> None:
        """Read the taskstats records queued so far: each was queued before
        its task's exit event was, so every exit of a batch read before this
        call finds its own."""
        costs = self.costs
        if costs is not None and not costs.closed:
            costs.collect()

    def _use_launched(self, batch: Sequence[Event], exec_indexes: list[int], found: dict[int, ExecSnapshot]) -> None:
        for i in exec_indexes:
            argv = self.launched.pop(batch[i].tgid, None)
            if argv is not None and found[i].argv is None:
                comm = os.path.basename(argv[0])[:15] if argv else None
                found[i] = ExecSnapshot(list(argv), comm, None, None, None, held=True)

    def _known_start(self, pid: int) -> int | None:
        proc = self.table.get(pid)
        return None if proc is None else proc.start_ns

    def maybe_resync(self, now: float | None = None) -> bool:
        """Rescan /proc if asked and none was done in the last RESYNC_INTERVAL
        seconds: under sustained loss a rescan per batch would cost more
        loss.  Returns whether it rescanned."""
        if not self._resync_wanted:
            return False
        now = time.monotonic() if now is None else now
        if now - self._last_resync < RESYNC_INTERVAL:
            return False
        self.resync()
        self._last_resync = now
        return True

    def resync(self) -> None:
        self._resync_wanted = False
        self.resyncs += 1
        self.table.resync()
        # Lost events may have taken a process's exit: its threads' figures go too.
        self._thread_costs = {tgid: costs for tgid, costs in self._thread_costs.items() if tgid in self.table}

    def apply(self, event: Event, snapshot: ExecSnapshot | None) -> tuple[Proc | None, EventInfo]:
        """Update the table with ``event``; return its process and what is
        known of it (:class:`EventInfo`; empty for lost events)."""
        cls = type(event)
        if cls is Lost:
            # Lost events may include forks and exits: re-read /proc soon so
            # the table (parents, argv, users) is right for what follows.
            self._resync_wanted = True
            return None, {}
        proc = self.table.update(event, snapshot)
        if proc is None:
            return None, {}
        describe = _DESCRIBE.get(cls)
        info = describe(self, event, proc, snapshot) if describe is not None else self._process_info(event, proc)
        identity = self.identity
        info["exec_id"] = identity.of(proc)
        info["parent_exec_id"] = identity.parent_of(proc, self.table.get(proc.ppid))
        return proc, info

    def _exec_info(self, event: Exec, proc: Proc, snapshot: ExecSnapshot | None) -> EventInfo:
        self.execs += 1
        captured = snapshot is not None and snapshot.argv is not None
        info: EventInfo = {
            "cmdline": proc.argv if captured else None,
            "exe": proc.exe,
            "cwd": proc.cwd,
            "ppid": proc.ppid,
            "uid": proc.ruid,
            "user": self.users.name(proc.ruid),
            "comm": proc.comm,
        }
        if captured:
            self.argv_captured += 1
            if snapshot.argv_truncated:  # type: ignore[union-attr]
                info["cmdline_truncated"] = True
        elif snapshot is not None and snapshot.missing:
            info["missing"] = snapshot.missing
        if self.env_limit:
            info["env"] = None if snapshot is None else snapshot.env
            if snapshot is not None and snapshot.env_truncated:
                info["env_truncated"] = True
        info["cgroup"] = proc.cgroup
        if proc.cgroup is not None:
            info.update(container_fields(proc.cgroup))  # type: ignore[typeddict-item]
        return info

    def _exit_info(self, event: Exit, proc: Proc, snapshot: ExecSnapshot | None) -> EventInfo:
        thread = event.process_pid != event.process_tgid
        # A thread has its own lifetime, not its process's.
        start = self.table.thread_starts.pop(event.process_pid, None) if thread else proc.start_ns
        info: EventInfo = {
            "comm": proc.comm,
            "cmdline": proc.argv,
            "duration": None if start is None else max(0, event.timestamp_ns - start) / 1e9,
            "ppid": event.parent_tgid or proc.ppid,
            "uid": proc.ruid,
            "user": self.users.name(proc.ruid),
        }
        if thread:
            info["thread"] = True
        if self.costs is not None:
            self._add_costs(event, proc, start, info)
        return info

    def _fork_info(self, event: Fork, proc: Proc, snapshot: ExecSnapshot | None) -> EventInfo:
        info = self._process_info(event, proc)
        if event.is_thread:
            info["thread"] = True
        return info

    @staticmethod
    def _process_info(event: Event, proc: Proc) -> EventInfo:
        return {"comm": proc.comm, "ppid": proc.ppid}

    def _add_costs(self, event: Exit, proc: Proc, start: int | None, info: EventInfo) -> None:
        assert self.costs is not None
        cost = self.costs.take(event.process_pid, start, event.timestamp_ns)
        if event.process_pid != event.process_tgid:
            # Kept for its process's exit, unless that came first (then it
            # counted this thread's record already: CostJoin.threads_of).
            if cost is not None and event.process_tgid in self.table:
                self._thread_costs.setdefault(event.process_tgid, []).append(cost)
        else:
            threads = self._thread_costs.pop(event.process_tgid, [])
            if cost is not None:
                # and those whose exit events are still to come (after this one)
                threads += self.costs.join.threads_of(event.process_tgid, start)
                cost = whole_process(cost, threads)
                # The kernel's last word on the task's name: it corrects a
                # name read too late, or never read (a missed exec).
                final = cost.comm_text
                if final is not None and final != proc.comm:
                    proc.comm = info["comm"] = final
        if cost is None:
            info.update(dict.fromkeys(COST_KEYS))  # type: ignore[typeddict-item]
        else:
            info.update(cost_fields(cost))  # type: ignore[typeddict-item]


#: What enrichment says of each event type; any other is described by its
#: process's name and parent alone.
_DESCRIBE: Final[dict[type[Event], Callable[[Enricher, Any, Proc, ExecSnapshot | None], EventInfo]]] = {
    Exec: Enricher._exec_info,
    Exit: Enricher._exit_info,
    Fork: Enricher._fork_info,
}

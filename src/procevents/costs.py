"""What each task cost: one exit's figures (:class:`TaskCost`), a process's
from its threads' (:func:`whole_process`), and the join of each record to
the exit event of the same task (:class:`CostJoin`).  Pure: the records come
decoded (procevents.taskstats) and read (procevents.accounting).

The record is queued before the kernel even generates the exit event
(``taskstats_exit`` runs before ``proc_exit_connector`` in ``do_exit``), so
once the socket has been read after a batch of exits, every record for them
is at hand; records are taken per pid in arrival order and checked against
the life they are offered to (see :meth:`CostJoin.take`).
"""

from __future__ import annotations

import operator
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final


# Not frozen: a frozen dataclass's __init__ took 6 of a record's 11 us.
@dataclass(slots=True)
class TaskCost:
    """One task's figures at its exit, in the units people read.

    Times in seconds, memory and I/O in bytes; None where the kernel's
    version does not report the figure.  ``thread_group`` is True for the
    kernel's aggregate of a whole multi-threaded process (sent with the
    exit of its last thread), False for one task's own figures.
    """

    pid: int
    tgid: int | None
    thread_group: bool
    version: int
    comm: bytes | None
    exit_code: int | None
    btime: int | None
    elapsed: float | None
    utime: float | None
    stime: float | None
    max_rss: int | None
    max_vm: int | None
    rchar: int | None
    wchar: int | None
    read_bytes: int | None
    write_bytes: int | None
    minflt: int | None
    majflt: int | None
    nvcsw: int | None
    nivcsw: int | None
    cpu_delay: float | None
    io_delay: float | None
    mem_delay: float | None

    @property
    def cpu(self) -> float | None:
        """User plus system CPU time, seconds."""
        return cpu_seconds(self.utime, self.stime)

    @property
    def comm_text(self) -> str | None:
        return None if self.comm is None else self.comm.decode("utf-8", "surrogateescape")


#: The figures an exit carries in JSON, the store and summaries, in this order.
COST_KEYS: Final = (
    "utime", "stime", "max_rss", "rchar", "wchar", "read_bytes", "write_bytes",
    "cpu_delay", "io_delay", "mem_delay",
)
_SUMMED: Final = ("utime", "stime", "rchar", "wchar", "read_bytes", "write_bytes", "minflt", "majflt",
                  "nvcsw", "nivcsw")
#: Waits of threads that ran side by side overlap in time: summed, a busy
#: thread pool's waited more than its whole life (61 s for a 0.18 s
#: process), so a process waited what its longest-waiting thread did.
_LONGEST: Final = ("max_rss", "max_vm", "cpu_delay", "io_delay", "mem_delay")


_cost_values: Final = operator.attrgetter(*COST_KEYS)


def cost_fields(cost: TaskCost) -> dict[str, float | int | None]:
    """The :data:`COST_KEYS` of one record (None: not reported by this kernel)."""
    return dict(zip(COST_KEYS, _cost_values(cost), strict=True))


def whole_process(leader: TaskCost, threads: Sequence[TaskCost]) -> TaskCost:
    """A process's figures from its main thread's record and those of its
    threads that ended before it: times, I/O and faults add up; the peak
    memory is the address space's, shared, so the largest one seen; and the
    delays, which overlap, are the longest one thread waited."""
    if not threads:
        return leader
    changes: dict[str, object] = {}
    for key in _SUMMED:
        values = [getattr(cost, key) for cost in (leader, *threads)]
        known = [value for value in values if value is not None]
        changes[key] = sum(known) if known else None
    for key in _LONGEST:
        known = [value for cost in (leader, *threads) if (value := getattr(cost, key)) is not None]
        changes[key] = max(known) if known else None
    return replace(leader, **changes)  # type: ignore[arg-type]


def adjusted_cpu(utime_us: int, stime_us: int, runtime_ns: int | None) -> tuple[float, float]:
    """User and system seconds scaled so that they add up to the scheduler's
    exact runtime, as the kernel does for /proc/PID/stat and getrusage
    (cputime_adjust): the tick-sampled split is kept, not its total, which
    misses a process that runs between ticks on a busy CPU."""
    if not runtime_ns:
        return utime_us / 1e6, stime_us / 1e6
    runtime = runtime_ns / 1e9
    if stime_us == 0:
        return runtime, 0.0
    if utime_us == 0:
        return 0.0, runtime
    stime = runtime * stime_us / (utime_us + stime_us)
    return runtime - stime, stime

def cpu_seconds(utime: float | None, stime: float | None) -> float | None:
    """User plus system CPU seconds; None unless both are known."""
    return None if utime is None or stime is None else utime + stime


def exit_cpu(info: Mapping[str, Any]) -> float | None:
    """An exit's user plus system CPU seconds (taskstats); None without them."""
    return cpu_seconds(info.get("utime"), info.get("stime"))


@dataclass(slots=True, eq=False)  # by identity: CostJoin removes this very one
class _Pending:
    cost: TaskCost
    received_ns: int


#: A record claiming a life longer than the one observed by more than this
#: (ns) belongs to another life: the fork event is stamped within
#: microseconds of the task's start, so only a different task can exceed it.
LONGER_SLACK_NS: Final = 50_000_000
#: Records older than this (ns) with no exit to join are dropped.
PENDING_TTL_NS: Final = 30_000_000_000


class CostJoin:
    """Records waiting for the exit event of the same task.

    Per pid, records wait in arrival order.  The one offered to an exit is
    the oldest that fits the life ending: it was received after that life
    began (a record read before a fork cannot be that child's), and its
    elapsed time is not longer than the life's.  Records that fit no exit
    (a thread group's aggregate, a task whose exit event was filtered or
    lost) leave after :data:`PENDING_TTL_NS`.  The kernel's aggregate of a
    thread group is not kept: it carries only delays on many kernels, so a
    process's figures are summed from its threads' (:func:`whole_process`).
    """

    def __init__(self) -> None:
        self._pending: dict[int, deque[_Pending]] = {}
        #: tgid -> its threads' records not taken yet (see :meth:`threads_of`).
        self._threads: dict[int, list[_Pending]] = {}
        self.joined = 0
        self.unmatched = 0
        self._oldest_ns: int | None = None

    def __len__(self) -> int:
        return sum(len(queue) for queue in self._pending.values())

    def add(self, costs: Sequence[TaskCost], received_ns: int) -> None:
        table = self._pending
        for cost in costs:
            if cost.thread_group:
                continue  # the process's figures are summed from its threads' (whole_process)
            queue = table.get(cost.pid)
            if queue is None:
                queue = table[cost.pid] = deque()
            pending = _Pending(cost, received_ns)
            queue.append(pending)
            if cost.tgid is not None and cost.tgid != cost.pid:
                self._threads.setdefault(cost.tgid, []).append(pending)
        if costs and self._oldest_ns is None:
            self._oldest_ns = received_ns

    def take(self, pid: int, start_ns: int | None, end_ns: int) -> TaskCost | None:
        """The record of the task ``pid`` whose life ran from ``start_ns``
        (CLOCK_MONOTONIC, None when unknown) to its exit event at ``end_ns``."""
        queue = self._pending.get(pid)
        if not queue:
            return None
        while queue:
            pending = queue.popleft()
            self._unindex(pending)
            if start_ns is None or self._fits(pending, start_ns, end_ns):
                if not queue:
                    del self._pending[pid]
                self.joined += 1
                return pending.cost
            self.unmatched += 1  # an earlier life's record whose exit never came
        del self._pending[pid]
        return None

    def threads_of(self, tgid: int, start_ns: int | None) -> list[TaskCost]:
        """The records of threads of process ``tgid`` (begun at ``start_ns``)
        whose exit events have not come yet.  A thread's record is queued
        before a joining thread can go on, so when a process's exit event
        comes every thread's record is here, even if its exit event is not."""
        found = self._threads.get(tgid, ())
        return [p.cost for p in found if start_ns is None or p.received_ns >= start_ns]

    def _unindex(self, pending: _Pending) -> None:
        tgid = pending.cost.tgid
        if tgid is None or tgid == pending.cost.pid:
            return
        siblings = self._threads.get(tgid)
        if siblings is not None:
            siblings.remove(pending)
            if not siblings:
                del self._threads[tgid]

    @staticmethod
    def _fits(pending: _Pending, start_ns: int, end_ns: int) -> bool:
        if pending.received_ns < start_ns:
            return False
        elapsed = pending.cost.elapsed
        return elapsed is None or elapsed * 1e9 <= end_ns - start_ns + LONGER_SLACK_NS

    def expire(self, now_ns: int) -> int:
        """Drop records older than :data:`PENDING_TTL_NS`; return how many."""
        if self._oldest_ns is None or now_ns - self._oldest_ns < PENDING_TTL_NS:
            return 0
        limit = now_ns - PENDING_TTL_NS
        dropped = 0
        oldest: int | None = None
        table = self._pending
        for pid in list(table):
            queue = table[pid]
            while queue and queue[0].received_ns < limit:
                self._unindex(queue.popleft())
                dropped += 1
            if not queue:
                del table[pid]
            elif oldest is None or queue[0].received_ns < oldest:
                oldest = queue[0].received_ns
        self._oldest_ns = oldest
        self.unmatched += dropped
        return dropped

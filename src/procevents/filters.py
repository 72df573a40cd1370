"""Per-event filters: small predicates ``(event, proc) -> bool`` applied in order.

Lost events pass every filter: loss is data.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from .containers import container_of
from .events import Event, Exit, Fork, Lost
from .procfs import ProcFS, Stat
from .proctable import Proc, subtree


class OwnProcesses:
    """procevents' own processes: this one and every process below it (the
    capture readers, the guardian, record's shipper, and whatever those
    fork).  ``-p`` leaves them out: a procevents started from the followed
    shell is a descendant of it, and would otherwise wait for itself.

    A command that follows ``-p`` runs nothing else, so being below this
    process is the rule, and no fork site has to say what it started: who
    was forked before the subscription is found in the process table or in
    /proc (:meth:`found_in`), who is forked after by its fork event."""

    __slots__ = ("pid", "tgids")

    def __init__(self, pid: int | None = None) -> None:
        #: This process, the root of ours.
        self.pid = os.getpid() if pid is None else pid
        self.tgids: set[int] = {self.pid}

    def __contains__(self, tgid: object) -> bool:
        return tgid in self.tgids

    def found_in(self, parents: Mapping[int, int]) -> set[int]:
        """Add every process below ours in a pid -> ppid map; return them all."""
        self.tgids |= subtree(self.tgids, parents)
        return self.tgids


class DescendantFilter:
    """Pass events of the given processes and of every descendant, followed
    through forks as they happen; never those of ``own`` (procevents' own
    processes), however they descend from the roots."""

    __slots__ = ("newest_ns", "own", "tgids")

    def __init__(self, roots: Iterable[int], own: OwnProcesses | None = None) -> None:
        self.own = own
        self.tgids: set[int] = set(roots)
        if own is not None:
            self.tgids -= own.tgids
        #: The latest timestamp_ns of the events seen (FollowEnd's clock).
        self.newest_ns = 0

    def add(self, tgid: int) -> None:
        self.tgids.add(tgid)

    def __call__(self, event: Event, proc: Proc | None = None) -> bool:
        if event.timestamp_ns > self.newest_ns:
            self.newest_ns = event.timestamp_ns
        return _FOLLOW.get(type(event), DescendantFilter._member)(self, event)

    def _member(self, event: Event) -> bool:
        return event.tgid in self.tgids

    def _fork(self, event: Fork) -> bool:
        tgids = self.tgids
        own = self.own
        child = event.child_tgid
        if own is not None:
            if event.child_pid != child:
                # A thread: its parent is said to be its process's parent
                # (the kernel's real_parent), so a thread of ours would seem
                # a child of the followed shell.  It is its process's.
                return child in tgids
            if event.parent_tgid in own.tgids:
                own.tgids.add(child)
                return False
            own.tgids.discard(child)  # a pid of ours reused (its exit was lost)
        if event.parent_tgid in tgids or child in tgids:
            tgids.add(child)
            return True
        return False

    def _exit(self, event: Exit) -> bool:
        tgid = event.tgid
        if tgid not in self.tgids:
            if self.own is not None and event.pid == tgid:
                self.own.tgids.discard(tgid)  # its pid may be reused by a followed process
            return False
        if event.pid == tgid:
            # The process is gone; its pid may be reused by a stranger.
            self.tgids.discard(tgid)
        return True

    def _lost(self, event: Lost) -> bool:
        return True


#: How DescendantFilter treats each event type; the others pass when their
#: process is followed.
_FOLLOW: Final[dict[type[Event], Callable[[DescendantFilter, Any], bool]]] = {
    Fork: DescendantFilter._fork,
    Exit: DescendantFilter._exit,
    Lost: DescendantFilter._lost,
}


def live_descendants(roots: Iterable[int], parents: Mapping[int, int]) -> set[int]:
    """The roots that are alive and every live process below them, from a
    pid -> ppid map of the running processes."""
    return subtree((pid for pid in roots if pid in parents), parents)


class FollowEnd:
    """``-p``'s end, as the main loop's ``stop``: True once every followed
    process has exited.

    The followed set was taken from the process table before subscribing:
    a process that exited before the subscription took effect would wait
    forever for an exit the kernel never sends.  So the first call (after
    subscribing, before the first read) reads /proc: who is alive joins the
    set, and who is not is doubtful.  A doubtful process that exited after
    subscribing has its exit queued before the scan ended; the socket's
    queue is in the order events were sent, so once the filter has seen an
    event stamped after the scan, every such exit has been seen, and the
    doubtful still in the set are dropped.  Not sooner: the first batch may
    be only what subscribing read while waiting for its ack.  A thread
    started and ended right after the scan makes that later event, so a
    quiet host does not keep it waiting.

    Our own ancestors below a root (``sudo procevents -p $$ &``: sudo; a
    shell running procevents in the foreground) wait for us: they are
    followed, but not waited for, or neither would ever end."""

    __slots__ = ("above", "doubtful", "follow", "procfs", "roots", "scanned_ns")

    def __init__(self, follow: DescendantFilter, roots: Iterable[int], procfs: ProcFS | None = None) -> None:
        self.follow = follow
        self.roots = frozenset(roots)
        self.procfs = procfs
        #: CLOCK_MONOTONIC at the end of the first call's /proc scan; None before it.
        self.scanned_ns: int | None = None
        self.doubtful: set[int] = set()
        #: Our ancestors strictly below a root (with ``follow.own`` only),
        #: found now: once a root has exited, they are init's children.
        self.above: set[int] = set()
        if follow.own is not None:
            self.above = self._below_a_root(follow.own.pid, self._parent)

    def __call__(self) -> bool:
        tgids = self.follow.tgids
        if self.scanned_ns is None:
            procfs = self.procfs or ProcFS()
            parents: dict[int, int] = {}
            for pid in procfs.pids():
                stat = procfs.stat(pid)
                if isinstance(stat, Stat):
                    parents[pid] = stat.ppid
            self.scanned_ns = time.monotonic_ns()
            self.doubtful = {pid for pid in tgids if pid not in parents}
            live = live_descendants(self.roots | tgids, parents)
            own = self.follow.own
            if own is not None:
                # The readers, forked before the subscription, are seen here only.
                live -= own.found_in(parents)
            tgids |= live
            if self.doubtful:
                _mark_time()
            return False
        if self.doubtful and self.follow.newest_ns > self.scanned_ns:
            tgids -= self.doubtful
            self.doubtful = set()
        if not tgids:
            return True
        if self.above and tgids <= self.above:
            # Only those waiting for us are left, if they still are our
            # ancestors (one that exited may have had its pid reused).
            assert self.follow.own is not None
            self.above &= set(_ancestors(self.follow.own.pid, self._parent))
            return tgids <= self.above
        return False

    def _parent(self, pid: int) -> int | None:
        stat = (self.procfs or ProcFS()).stat(pid)
        return stat.ppid if isinstance(stat, Stat) else None

    def _below_a_root(self, pid: int, parent: Callable[[int], int | None]) -> set[int]:
        """The ancestors of ``pid`` strictly below the nearest root; none
        when no root is an ancestor."""
        chain: list[int] = []
        for ancestor in _ancestors(pid, parent):
            if ancestor in self.roots:
                return set(chain)
            chain.append(ancestor)
        return set()


def _ancestors(pid: int, parent: Callable[[int], int | None]) -> list[int]:
    """``pid``'s parent, its parent's, and so on, below init."""
    chain: list[int] = []
    ancestor = parent(pid)
    while ancestor is not None and ancestor > 1 and ancestor not in chain:
        chain.append(ancestor)
        ancestor = parent(ancestor)
    return chain


def _mark_time() -> None:
    """A thread's fork and exit: events stamped now, of this process."""
    import threading

    marker = threading.Thread(target=lambda: None, name="procevents-mark")
    marker.start()
    marker.join()


class EventTypeFilter:
    """Pass only the named event types."""

    __slots__ = ("names",)

    def __init__(self, names: Iterable[str]) -> None:
        self.names = frozenset(names) | {"lost"}

    def __call__(self, event: Event, proc: Proc | None = None) -> bool:
        return event.name in self.names


class UserFilter:
    """Pass events of processes whose real or effective uid is ``uid``."""

    __slots__ = ("uid",)

    def __init__(self, uid: int) -> None:
        self.uid = uid

    def __call__(self, event: Event, proc: Proc | None = None) -> bool:
        if type(event) is Lost:
            return True
        return proc is not None and (proc.ruid == self.uid or proc.euid == self.uid)


class CommandFilter:
    """Pass events of processes whose comm, exe or argv[0] matches a regex."""

    __slots__ = ("pattern",)

    def __init__(self, pattern: str | re.Pattern[str]) -> None:
        self.pattern = re.compile(pattern) if isinstance(pattern, str) else pattern

    def __call__(self, event: Event, proc: Proc | None = None) -> bool:
        if type(event) is Lost:
            return True
        if proc is None:
            return False
        search = self.pattern.search
        if proc.comm is not None and search(proc.comm):
            return True
        if proc.exe is not None and search(proc.exe):
            return True
        return bool(proc.argv) and search(proc.argv[0]) is not None  # type: ignore[index]


class ContainerFilter:
    """Pass events of processes in a container whose id is or begins with
    ``prefix`` (the container their cgroup names, procevents.containers)."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix.lower()

    def __call__(self, event: Event, proc: Proc | None = None) -> bool:
        if type(event) is Lost:
            return True
        if proc is None:
            return False
        found = container_of(proc.cgroup)
        return found is not None and found.id is not None and found.id.startswith(self.prefix)


def no_threads(event: Event, proc: Proc | None = None) -> bool:
    """``--no-threads``: drop events about a thread other than its process's leader."""
    return not event.is_thread

"""Per-event filters: small predicates ``(event, proc) -> bool`` applied in order.

Lost events pass every filter: loss is data.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from .containers import container_of
from .events import Event, Exit, Fork, Lost
from .procfs import ProcFS, Stat
from .proctable import Proc, subtree


class DescendantFilter:
    """Pass events of the given processes and of every descendant, followed
    through forks as they happen."""

    __slots__ = ("tgids",)

    def __init__(self, roots: Iterable[int]) -> None:
        self.tgids: set[int] = set(roots)

    def add(self, tgid: int) -> None:
        self.tgids.add(tgid)

    def __call__(self, event: Event, proc: Proc | None = None) -> bool:
        return _FOLLOW.get(type(event), DescendantFilter._member)(self, event)

    def _member(self, event: Event) -> bool:
        return event.tgid in self.tgids

    def _fork(self, event: Fork) -> bool:
        tgids = self.tgids
        if event.parent_tgid in tgids or event.child_tgid in tgids:
            tgids.add(event.child_tgid)
            return True
        return False

    def _exit(self, event: Exit) -> bool:
        tgid = event.tgid
        if tgid not in self.tgids:
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
    set, and who is not is doubtful.  Once a batch read after that has gone
    through the filter (``seen()``, the events handled so far, has grown),
    the exits then queued have been seen, and the doubtful still in the set
    are dropped."""

    __slots__ = ("doubtful", "follow", "procfs", "roots", "seen", "seen_first")

    def __init__(
        self, follow: DescendantFilter, roots: Iterable[int], seen: Callable[[], int], procfs: ProcFS | None = None
    ) -> None:
        self.follow = follow
        self.roots = frozenset(roots)
        self.seen = seen
        self.procfs = procfs
        self.seen_first: int | None = None
        self.doubtful: set[int] = set()

    def __call__(self) -> bool:
        tgids = self.follow.tgids
        if self.seen_first is None:
            self.seen_first = self.seen()
            procfs = self.procfs or ProcFS()
            parents: dict[int, int] = {}
            for pid in procfs.pids():
                stat = procfs.stat(pid)
                if isinstance(stat, Stat):
                    parents[pid] = stat.ppid
            self.doubtful = {pid for pid in tgids if pid not in parents}
            tgids |= live_descendants(self.roots | tgids, parents)
            return False
        if self.doubtful and self.seen() > self.seen_first:
            tgids -= self.doubtful
            self.doubtful = set()
        return not tgids


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

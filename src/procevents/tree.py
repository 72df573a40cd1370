"""Process relationships fed by events."""

from __future__ import annotations

from .events import Coredump, Event, Exit, Fork

#: Beyond this many tracked processes the oldest entries are forgotten, so a
#: lost exit cannot make memory grow without bound.
MAX_TRACKED = 1 << 20


class ParentMap:
    """tgid -> parent tgid, learned from forks, exits and coredumps."""

    __slots__ = ("parents",)

    def __init__(self) -> None:
        self.parents: dict[int, int] = {}

    def update(self, event: Event) -> int | None:
        """Record what ``event`` teaches; return the parent of its process if known."""
        cls = type(event)
        parents = self.parents
        if cls is Fork:
            assert isinstance(event, Fork)
            if event.child_pid == event.child_tgid:
                if len(parents) >= MAX_TRACKED:
                    del parents[next(iter(parents))]
                parents[event.child_tgid] = event.parent_tgid
            return event.parent_tgid
        if cls is Exit:
            assert isinstance(event, Exit)
            known = parents.pop(event.process_tgid, None) if event.process_pid == event.process_tgid else None
            return event.parent_tgid or known or parents.get(event.process_tgid)
        if cls is Coredump:
            assert isinstance(event, Coredump)
            return event.parent_tgid or parents.get(event.process_tgid)
        return parents.get(event.tgid)

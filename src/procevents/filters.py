"""Per-event filters: small predicates the pipeline applies in order."""

from __future__ import annotations

from collections.abc import Iterable

from .events import Event, Exit, Fork, Lost


class DescendantFilter:
    """Pass events of the given processes and of every descendant, followed
    through forks as they happen.  Lost events always pass: loss is data."""

    __slots__ = ("tgids",)

    def __init__(self, roots: Iterable[int]) -> None:
        self.tgids: set[int] = set(roots)

    def add(self, tgid: int) -> None:
        self.tgids.add(tgid)

    def __call__(self, event: Event) -> bool:
        tgids = self.tgids
        cls = type(event)
        if cls is Fork:
            assert isinstance(event, Fork)
            if event.parent_tgid in tgids or event.child_tgid in tgids:
                tgids.add(event.child_tgid)
                return True
            return False
        if cls is Lost:
            return True
        tgid = event.tgid
        if tgid not in tgids:
            return False
        if cls is Exit and event.pid == tgid:
            assert isinstance(event, Exit)
            # The process is gone; its pid may be reused by a stranger.
            tgids.discard(tgid)
        return True

"""Counting: events by type and loss, for the exit summary."""

from __future__ import annotations

from collections import Counter

from .events import EVENT_NAMES, Event, Lost


class Summary:
    """Counts events by type name; ``lost`` sums the Lost events' counts."""

    __slots__ = ("counts", "lost")

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.lost = 0

    def add(self, event: Event) -> None:
        self.counts[event.name] += 1
        if type(event) is Lost:
            assert isinstance(event, Lost)
            self.lost += event.count

    @property
    def received(self) -> int:
        return sum(n for name, n in self.counts.items() if name != "lost")

    def line(self) -> str:
        """``1234 events received (fork 400, exec 300, exit 400), 0 events lost``."""
        parts = [f"{name} {self.counts[name]}" for name in EVENT_NAMES if name != "lost" and self.counts[name]]
        by_type = f" ({', '.join(parts)})" if parts else ""
        return f"{self.received} events received{by_type}, {self.lost} events lost"

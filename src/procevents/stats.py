"""Counting: events by type and loss for the exit summary, and per command for ``-S``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from .costs import exit_cpu
from .events import EVENT_NAMES, Event, Exec, Exit, Fork, Lost

if TYPE_CHECKING:
    from .proctable import Proc


def counted(n: int, one: str, many: str | None = None) -> str:
    """``1 event``, ``2 events``, ``1 process``, ``3 processes``."""
    return f"{n} {one if n == 1 else (many or one + 's')}"


class Summary:
    """Counts the events shown by type name, and those that arrived
    (``seen``: every event the filters were asked about, ``lost`` events
    too); ``lost`` sums the Lost events' counts.  The words say what
    became of the events: ``shown`` (or ``recorded``...) and ``received``
    (or ``read``...); ``everything``, the word when all of them were shown
    (default: ``received``)."""

    __slots__ = ("counts", "everything", "lost", "lost_events", "seen", "words")

    def __init__(self, shown: str = "shown", received: str = "received", everything: str | None = None) -> None:
        self.counts: Counter[str] = Counter()
        self.lost = 0
        self.lost_events = 0
        self.seen = 0
        self.words = (shown, received)
        self.everything = everything or received

    def add(self, event: Event, shown: bool = True) -> None:
        """An event that passed the filters (``shown``: and was written)."""
        if shown:
            self.counts[event.name] += 1
        if type(event) is Lost:
            self.lost += event.count
            self.lost_events += 1

    @property
    def shown(self) -> int:
        return sum(n for name, n in self.counts.items() if name != "lost")

    @property
    def received(self) -> int:
        """Events that arrived (from the kernel, or from the store for replay);
        at least those shown, should nobody have counted them."""
        return max(self.seen - self.lost_events, self.shown)

    def line(self) -> str:
        """``1234 events received (fork 400, exec 300, exit 400), 0 events lost``
        when everything was shown; else ``12 events shown (exec 6, exit 6) of
        1234 events received, 0 events lost``."""
        parts = [f"{name} {self.counts[name]}" for name in EVENT_NAMES if name != "lost" and self.counts[name]]
        by_type = f" ({', '.join(parts)})" if parts else ""
        lost = f"{counted(self.lost, 'event')} lost"
        if self.shown == self.received:
            return f"{counted(self.shown, 'event')} {self.everything}{by_type}, {lost}"
        shown, received = self.words
        total = counted(self.received, "event")
        return f"{counted(self.shown, 'event')} {shown}{by_type} of {total} {received}, {lost}"


class LifecycleCounter:
    """The one dispatch of the counting observers (``-S``, metrics, top,
    trace's summary): events by type, events lost, and a process's three
    moments, threads left out; subclasses fill in the hooks.  Call it with
    each event, its process and its enrichment."""

    def __init__(self) -> None:
        self.events: Counter[str] = Counter()
        self.lost = 0

    def __call__(self, event: Event, proc: Proc | None, info: Mapping[str, Any]) -> None:
        self.events[event.name] += 1
        count = _COUNT.get(type(event))
        if count is not None:
            count(self, event, info)

    # Through self, so that a subclass's hooks are the ones called.

    def _fork(self, event: Fork, info: Mapping[str, Any]) -> None:
        if event.pid == event.tgid:
            self.forked(info)

    def _exec(self, event: Exec, info: Mapping[str, Any]) -> None:
        self.execed(info)

    def _exit(self, event: Exit, info: Mapping[str, Any]) -> None:
        if event.pid == event.tgid:
            self.exited(event, info)

    def _lost(self, event: Lost, info: Mapping[str, Any]) -> None:
        self.lost += event.count

    def forked(self, info: Mapping[str, Any]) -> None:
        """A new process (``info`` is its, named after its parent until it execs)."""

    def execed(self, info: Mapping[str, Any]) -> None:
        """A process started a program."""

    def exited(self, event: Exit, info: Mapping[str, Any]) -> None:
        """A process ended."""


#: The event types counted beyond their name; the others only by name.
_COUNT: Final[dict[type[Event], Callable[[LifecycleCounter, Any, Mapping[str, Any]], None]]] = {
    Fork: LifecycleCounter._fork,
    Exec: LifecycleCounter._exec,
    Exit: LifecycleCounter._exit,
    Lost: LifecycleCounter._lost,
}


#: Distinct commands counted one by one; beyond that they are counted together.
MAX_COMMANDS = 10_000
OTHER = "(other)"


class CommandCounts:
    """Per command name: processes it forked, times it was exec'd, failed
    exits, and the summed lifetime of its processes."""

    __slots__ = ("cpu", "execs", "failures", "forks", "lifetime")

    def __init__(self) -> None:
        self.forks = 0
        self.execs = 0
        self.failures = 0
        self.lifetime = 0.0
        #: CPU seconds (user plus system) of its processes that exited, from taskstats.
        self.cpu = 0.0


class CommandStats(LifecycleCounter):
    """The ``-S`` table: events per type and the top commands.

    A pipeline observer (call it with each event, its process and its
    enrichment).  A fork counts for the command that forked (a new child
    carries its parent's name until it execs), an exec for the program
    started, a failure (non-zero status or a signal) and a lifetime for the
    command that exited.  Threads are not counted as forks or exits.
    """

    def __init__(self, top: int = 10) -> None:
        super().__init__()
        self.top = top
        self.commands: dict[str, CommandCounts] = {}

    def _command(self, info: Mapping[str, Any]) -> CommandCounts:
        name = info.get("comm") or "?"
        commands = self.commands
        counts = commands.get(name)
        if counts is None:
            if len(commands) >= MAX_COMMANDS:
                name = OTHER
                counts = commands.get(name)
            if counts is None:
                counts = commands[name] = CommandCounts()
        return counts

    def forked(self, info: Mapping[str, Any]) -> None:
        if info:  # no enrichment, no name
            self._command(info).forks += 1

    def execed(self, info: Mapping[str, Any]) -> None:
        if info:
            self._command(info).execs += 1

    def exited(self, event: Exit, info: Mapping[str, Any]) -> None:
        if info:
            counts = self._command(info)
            if event.exit_code:
                counts.failures += 1
            duration = info.get("duration")
            if duration is not None:
                counts.lifetime += duration
            cpu = exit_cpu(info)
            if cpu is not None:
                counts.cpu += cpu

    def leaders(self) -> list[tuple[str, CommandCounts]]:
        """The top ``top`` commands by each measure, together, most forks first."""
        items = list(self.commands.items())
        chosen: dict[str, CommandCounts] = {}
        measures: list[Callable[[tuple[str, CommandCounts]], float]] = [
            lambda item: item[1].forks,
            lambda item: item[1].execs,
            lambda item: item[1].failures,
            lambda item: item[1].lifetime,
            lambda item: item[1].cpu,
        ]
        for key in measures:
            ranked = sorted((item for item in items if key(item)), key=key, reverse=True)
            chosen.update(ranked[: self.top])
        return sorted(
            chosen.items(), key=lambda item: (-item[1].forks, -item[1].execs, -item[1].failures, item[0])
        )

    def lines(self) -> list[str]:
        """The table, one string per line (command names escaped for a terminal)."""
        from .escape import escape
        from .render.text import format_duration

        out = ["statistics: events by type"]
        names = [name for name in EVENT_NAMES if self.events[name]]
        width = max([len(name) for name in names] + [5])
        counts = [f"{self.events[name]:,}" for name in names]
        count_width = max([len(c) for c in counts] + [5])
        out.append(f"  {'EVENT':<{width}}  {'COUNT':>{count_width}}")
        for name, count in zip(names, counts, strict=True):
            out.append(f"  {name:<{width}}  {count:>{count_width}}")
        if self.lost:
            out.append(f"  ({self.lost:,} {'event' if self.lost == 1 else 'events'} lost)")
        leaders = self.leaders()
        if not leaders:
            return out
        out.append(
            f"statistics: top commands (up to {self.top} by each of forks, execs, failures, lifetime, CPU)"
        )
        rows = [
            (escape(name), f"{c.forks:,}", f"{c.execs:,}", f"{c.failures:,}",
             format_duration(c.lifetime) if c.lifetime else "-", format_duration(c.cpu) if c.cpu else "-")
            for name, c in leaders
        ]
        header = ("COMMAND", "FORKS", "EXECS", "FAILED", "LIFETIME", "CPU")
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        for row in [header, *rows]:
            cells = [row[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(row[1:], widths[1:], strict=True)]
            out.append("  " + "  ".join(cells).rstrip())
        return out

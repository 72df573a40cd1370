"""``procevents top``: event rates and the top spawners, refreshed in place.

:class:`TopModel` (a pipeline observer) counts and computes rates between
two frames; :func:`render` draws a frame with rich, an optional extra
(``pip install 'procevents[top]'``) imported only here.  Command names come
from other processes and are escaped, and handed to rich as plain Text (never
as markup).
"""

from __future__ import annotations

import heapq
from collections import Counter, deque
from collections.abc import Mapping, Sized
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .costs import exit_cpu
from .events import EVENT_NAMES, Exit
from .stats import LifecycleCounter

if TYPE_CHECKING:
    from rich.console import RenderableType


#: Distinct command names counted one by one; beyond, they count together.
MAX_COMMANDS = 10_000

#: Rates are over the last this many seconds (or since the start, if sooner).
WINDOW = 5.0
OTHER = "(other)"


_Counts = tuple[float, Counter[str], int, Counter[str], Counter[str], Counter[str]]


@dataclass
class Spawner:
    command: str
    forks: int
    execs: int
    failures: int
    forks_rate: float
    execs_rate: float
    failures_rate: float


@dataclass(frozen=True, order=True)
class Heavy:
    """An exited process and what it cost: CPU seconds, peak memory."""

    cpu: float
    pid: int
    max_rss: int | None = field(compare=False)
    command: str = field(compare=False)


#: The heaviest processes kept (and shown at most).
HEAVIEST = 5


@dataclass
class Frame:
    """What one refresh shows."""

    elapsed: float  # seconds the rates are over: the window, or less just after the start
    uptime: float  # seconds since the first frame
    totals: dict[str, int]
    rates: dict[str, float]
    lost: int
    lost_rate: float
    alive: int | None
    spawners: list[Spawner] = field(default_factory=list)
    #: The processes that used the most CPU (taskstats), heaviest first.
    heaviest: list[Heavy] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return sum(rate for name, rate in self.rates.items() if name != "lost")

    @property
    def total(self) -> int:
        return sum(count for name, count in self.totals.items() if name != "lost")


class TopModel(LifecycleCounter):
    """Counts events by type, and forks, execs and failures by command name.

    A fork counts for the command that forked (a new child carries its
    parent's name until it execs); an exec for the program started; a
    failure (non-zero status or a signal) for the command that exited.
    """

    def __init__(self, table: Sized | None = None) -> None:
        super().__init__()
        self.table = table
        self.forks: Counter[str] = Counter()
        self.execs: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        #: Counts at each frame, oldest first: the window's start and what follows.
        self._samples: deque[_Counts] = deque()
        self._first: _Counts | None = None
        self._heaviest: list[Heavy] = []  # a min-heap of the HEAVIEST largest

    def _key(self, counter: Counter[str], info: Mapping[str, Any]) -> str:
        name: str = info.get("comm") or "?"
        if name not in counter and len(counter) >= MAX_COMMANDS:
            return OTHER
        return name

    def forked(self, info: Mapping[str, Any]) -> None:
        self.forks[self._key(self.forks, info)] += 1

    def execed(self, info: Mapping[str, Any]) -> None:
        self.execs[self._key(self.execs, info)] += 1

    def exited(self, event: Exit, info: Mapping[str, Any]) -> None:
        if event.exit_code:
            self.failures[self._key(self.failures, info)] += 1
        cpu = exit_cpu(info)
        if cpu is not None:
            heavy = Heavy(cpu, event.pid, info.get("max_rss"), info.get("comm") or "?")
            if len(self._heaviest) < HEAVIEST:
                heapq.heappush(self._heaviest, heavy)
            elif heavy > self._heaviest[0]:
                heapq.heapreplace(self._heaviest, heavy)

    def frame(self, now: float, rows: int = 10, *, window: float = WINDOW) -> Frame:
        """The counts now, with rates over the last ``window`` seconds: from
        the newest earlier frame at least that old (or the first frame, before
        then), so a burst shows for the whole window and a quiet spell before
        the start is never counted.  The first frame has no rates."""
        current: _Counts = (
            now, Counter(self.events), self.lost, Counter(self.forks), Counter(self.execs), Counter(self.failures)
        )
        if self._first is None:
            self._first = current
        samples = self._samples
        samples.append(current)
        while len(samples) > 1 and samples[1][0] <= now - window:
            samples.popleft()
        previous = samples[0]
        elapsed = now - previous[0]

        def rate(new: float, old: float) -> float:
            return (new - old) / elapsed if elapsed > 0 else 0.0

        _, events, lost, forks, execs, failures = current
        _, old_events, old_lost, old_forks, old_execs, old_failures = previous
        spawners = [
            Spawner(
                name, forks[name], execs[name], failures[name],
                rate(forks[name], old_forks[name]), rate(execs[name], old_execs[name]),
                rate(failures[name], old_failures[name]),
            )
            for name in set(forks) | set(execs) | set(failures)
        ]
        spawners.sort(key=lambda s: (-s.forks_rate, -s.execs_rate, -s.forks, -s.execs, -s.failures, s.command))
        return Frame(
            elapsed=elapsed,
            uptime=now - self._first[0],
            totals={name: events[name] for name in EVENT_NAMES if events[name]},
            rates={name: rate(events[name], old_events[name]) for name in EVENT_NAMES if events[name]},
            lost=lost,
            lost_rate=rate(lost, old_lost),
            alive=None if self.table is None else len(self.table),
            spawners=spawners[:rows],
            heaviest=sorted(self._heaviest, reverse=True),
        )


def render(frame: Frame, *, keys: bool = False) -> RenderableType:
    """The frame as rich renderables (import rich only when called); ``keys``:
    say which keys work."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from .escape import escape

    alive = "" if frame.alive is None else f"{frame.alive:,} processes, "
    header = Text(
        f"procevents top: {alive}{frame.rate:,.0f} events/s over {frame.elapsed:.1f} s "
        f"({frame.total:,} in {frame.uptime:.0f} s), "
        f"{frame.lost:,} lost"
    )
    if frame.lost_rate:
        header.append(f" ({frame.lost_rate:,.0f}/s)", style="bold red")
    events = Table(title="events", title_justify="left", box=None, pad_edge=False)
    events.add_column("EVENT")
    events.add_column("PER SEC", justify="right")
    events.add_column("TOTAL", justify="right")
    for name, total in frame.totals.items():
        if name != "lost":
            events.add_row(name, f"{frame.rates.get(name, 0.0):,.1f}", f"{total:,}")
    spawners = Table(title="top spawners", title_justify="left", box=None, pad_edge=False)
    spawners.add_column("COMMAND")
    for heading in ("FORKS/S", "EXECS/S", "FAILED/S", "FORKS", "EXECS", "FAILED"):
        spawners.add_column(heading, justify="right")
    for s in frame.spawners:
        spawners.add_row(
            Text(escape(s.command)),
            f"{s.forks_rate:,.1f}", f"{s.execs_rate:,.1f}", f"{s.failures_rate:,.1f}",
            f"{s.forks:,}", f"{s.execs:,}", f"{s.failures:,}",
        )
    parts: list[RenderableType] = [header, Text(""), events, Text(""), spawners]
    if frame.heaviest:
        from .render.text import format_bytes, format_duration

        heaviest = Table(title="most CPU (exited)", title_justify="left", box=None, pad_edge=False)
        for heading in ("PID", "CPU", "MAXRSS"):
            heaviest.add_column(heading, justify="right")
        heaviest.add_column("COMMAND")
        for h in frame.heaviest:
            rss = "?" if h.max_rss is None else format_bytes(h.max_rss)
            heaviest.add_row(str(h.pid), format_duration(h.cpu), rss, Text(escape(h.command)))
        parts += [Text(""), heaviest]
    if keys:
        parts += [Text(""), Text("q: quit", style="dim")]
    return Group(*parts)

"""Tree view: each exec under its ancestors, indented, like extrace.

Every line starts with a time.  The first time a process of a branch not
shown yet appears, the ancestors it hangs from are printed once above it,
with their start time and marked ``(ancestor)``: the indentation is never
left unexplained.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

from ..escape import escape
from ..events import Event, Exec, Exit, Lost
from ..proctable import Proc
from .clock import Clock
from .text import cut_to_width, exit_description, format_command, format_cost, format_duration, lost_words

INDENT = "  "

#: The time column where a time is unknown (as wide as ``10:40:01.123``).
NO_TIME = " " * 12

#: An ancestor's command line is context: cut to this many display columns.
CONTEXT_WIDTH = 100


def lineage_below(pid: int, ancestors: Iterable[Proc], roots: set[int] | None) -> list[Proc]:
    """The ancestors a tree line hangs from, nearest first: up to a root
    (included; a root itself has none), or without roots those below init
    and kthreadd.  Its length is the line's indentation."""
    if roots is not None and pid in roots:
        return []
    chain: list[Proc] = []
    for ancestor in ancestors:
        if roots is None and ancestor.pid <= 2:
            return chain
        chain.append(ancestor)
        if roots is not None and ancestor.pid in roots:
            return chain
    return chain


class TreeRenderer:
    """Renders execs as ``<time> <indent><pid> <argv>`` and, for processes
    shown, their exit as ``<time> <indent><pid> exit <status> after
    <duration>``.

    ``lineage`` gives a process's ancestors below the tree's top, nearest
    first (see :func:`lineage_below`): those not shown yet are printed above
    it, and their number is its indentation.  Without it every line is at
    the top.
    """

    def __init__(
        self,
        lineage: Callable[[Proc], Sequence[Proc]] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.lineage = lineage
        self.clock = clock or Clock()
        #: pid -> (indentation, start) of the processes on screen.
        self.shown: dict[int, tuple[int, int | None]] = {}

    def _ancestors(self, chain: Sequence[Proc]) -> list[str]:
        lines = []
        for level, ancestor in enumerate(reversed(chain)):
            known = self.shown.get(ancestor.pid)
            if known is not None and known[1] == ancestor.start_ns:
                continue
            self.shown[ancestor.pid] = (level, ancestor.start_ns)
            stamp = NO_TIME if ancestor.start_ns is None else self.clock.local_ms(ancestor.start_ns)
            command = format_command({"cmdline": ancestor.argv, "comm": ancestor.comm}) or "?"
            command = cut_to_width(command, CONTEXT_WIDTH)  # never inside an escape or a wide character
            lines.append(f"{stamp} {INDENT * level}{ancestor.pid} {command}  (ancestor)\n")
        return lines

    def render(self, event: Event, proc: Proc | None, info: Mapping[str, Any]) -> str | None:
        lines = _LINES.get(type(event))
        return None if lines is None else lines(self, event, proc, info)

    def _exec(self, event: Exec, proc: Proc | None, info: Mapping[str, Any]) -> str | None:
        if proc is None:
            return None
        lines: list[str] = []
        level = 0
        if self.lineage is not None:
            chain = self.lineage(proc)
            lines = self._ancestors(chain)
            level = len(chain)
        self.shown[proc.pid] = (level, proc.start_ns)
        stamp = self.clock.local_ms(event.timestamp_ns)
        lines.append(f"{stamp} {INDENT * level}{proc.pid} {format_command(info) or '?'}\n")
        return "".join(lines)

    def _exit(self, event: Exit, proc: Proc | None, info: Mapping[str, Any]) -> str | None:
        if proc is None or event.pid != event.tgid or proc.pid not in self.shown:
            return None
        level, _ = self.shown.pop(proc.pid)
        duration = info.get("duration")
        took = f" after {format_duration(duration)}" if duration is not None else ""
        cost = format_cost(info)
        if cost:
            took = f"{took} {cost}"
        name = f" [{escape(proc.comm)}]" if proc.comm else ""
        stamp = self.clock.local_ms(event.timestamp_ns)
        return f"{stamp} {INDENT * level}{proc.pid} exit {exit_description(event.exit_code)}{took}{name}\n"

    def _lost(self, event: Lost, proc: Proc | None, info: Mapping[str, Any]) -> str | None:
        return f"{self.clock.local_ms(event.timestamp_ns)} !! {lost_words(event, info.get('total'))}\n"


#: The event types the tree shows; the others make no line.
_LINES: Final[dict[type[Event], Callable[[TreeRenderer, Any, Proc | None, Mapping[str, Any]], str | None]]] = {
    Exec: TreeRenderer._exec,
    Exit: TreeRenderer._exit,
    Lost: TreeRenderer._lost,
}

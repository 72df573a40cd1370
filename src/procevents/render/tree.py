"""Tree view: each exec under its ancestors, indented, like extrace."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..escape import escape
from ..events import Event, Exec, Exit, Lost
from ..proctable import Proc
from .text import exit_description, format_command, format_cost, format_duration

INDENT = "  "


def depth_below(pid: int, ancestor_pids: Iterable[int], roots: set[int] | None) -> int:
    """Indentation of ``pid`` given its ancestors' pids, nearest first: the
    ancestors below a root (a root itself is at 0), or without roots those
    below init and kthreadd."""
    if roots is not None and pid in roots:
        return 0
    level = 0
    for ancestor in ancestor_pids:
        if roots is not None:
            if ancestor in roots:
                return level + 1
        elif ancestor <= 2:
            return level
        level += 1
    return level


class TreeRenderer:
    """Renders execs as ``<indent><pid> <argv>`` and, for processes shown,
    their exit as ``<indent><pid> exit <status> after <duration>``.

    ``depth`` gives a process's indentation level.
    """

    def __init__(self, depth: Callable[[Proc], int]) -> None:
        self.depth = depth
        self.shown: dict[int, int] = {}

    def render(self, event: Event, proc: Proc | None, info: Mapping[str, Any]) -> str | None:
        cls = type(event)
        if cls is Exec and proc is not None:
            level = self.depth(proc)
            self.shown[proc.pid] = level
            return f"{INDENT * level}{proc.pid} {format_command(info) or '?'}\n"
        if cls is Exit and proc is not None and event.pid == event.tgid:
            assert isinstance(event, Exit)
            if proc.pid not in self.shown:
                return None
            level = self.shown.pop(proc.pid)
            duration = info.get("duration")
            took = f" after {format_duration(duration)}" if duration is not None else ""
            cost = format_cost(info)
            if cost:
                took = f"{took} {cost}"
            name = f" [{escape(proc.comm)}]" if proc.comm else ""
            return f"{INDENT * level}{proc.pid} exit {exit_description(event.exit_code)}{took}{name}\n"
        if cls is Lost:
            assert isinstance(event, Lost)
            return f"!! {event.count} events lost ({event.reason})\n"
        return None

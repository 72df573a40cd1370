"""A timeline of process lifetimes in the Chrome trace event format, for
Perfetto (ui.perfetto.dev, "Open trace file") and chrome://tracing.

Each lifetime is one ``X`` span from fork to exit, named by its argv, on a
track of its own: ``tid`` is the lifetime's id in the store, so a reused
pid never shares a track (Perfetto needs the spans of one track to nest).
A process tree is one ``pid`` group, named after its root; init and
kthreadd start no group, so a whole-host timeline is not one huge group.
Execs and failed exits are instant events on the process's track, and each
recorded fork an arrow (flow ``s`` on the parent's track, ``f`` on the
child's, both at the fork).

Times are microseconds since the earliest time in the timeline (``otherData``
gives that moment as ISO 8601 UTC); events are written in time order, spans
before the arrows that start at the same moment, so an importer that sorts
only when it must keeps the arrows bound to their spans.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..escape import json_text
from .text import exit_description, format_command

if TYPE_CHECKING:
    from ..store import Lifetime
    from ..store.reader import ExecPoint

#: A span's name is the argv, shortened to this many characters (args keep it whole).
NAME_WIDTH = 200

#: Parent links followed at most this deep (a loop in bad data ends there).
_MAX_DEPTH = 256


def _short(text: str, width: int = NAME_WIDTH) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _safe(text: str) -> str:
    return json_text(text)[0]


def _command(argv: list[str] | None, comm: str | None) -> str:
    return _safe(format_command({"cmdline": argv, "comm": comm}) or "?")


def _label(life: Lifetime) -> str:
    """A track's name: ``4640 ls``."""
    name = life.comm or (os.path.basename(life.argv[0]) if life.argv else "?")
    return f"{life.pid} {_safe(name)}"


def _iso(wall_ns: int) -> str:
    sec, rem = divmod(wall_ns, 1_000_000_000)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(sec))}.{rem // 1000:06d}Z"


def _meta(pid: int, tid: int, name: str, args: dict[str, Any]) -> dict[str, Any]:
    # "ts" early and present: Perfetto's older tokenizer scans the keys up to it.
    return {"ph": "M", "ts": 0, "pid": pid, "tid": tid, "name": name, "args": args}


def _groups(selected: Mapping[int, Lifetime]) -> dict[int, int]:
    """Lifetime id -> the id of its tree's root among the selected (init and
    kthreadd, and their direct children, are roots of their own)."""
    group: dict[int, int] = {}
    for life in selected.values():
        chain = [life]
        seen = {life.id}
        node = life
        while node.pid > 2 and node.id not in group and len(chain) < _MAX_DEPTH:
            parent = selected.get(node.parent) if node.parent is not None else None
            if parent is None:
                break
            if parent.pid <= 2 or parent.id in seen:
                break
            chain.append(parent)
            seen.add(parent.id)
            node = parent
        root = group.get(node.id, node.id)
        for member in chain:
            group[member.id] = root
    return group


def _tree_order(lives: Sequence[Lifetime], selected: Mapping[int, Lifetime]) -> dict[int, int]:
    """Lifetime id -> its place when the trees are walked depth first, children by start."""
    children: dict[int | None, list[Lifetime]] = {}
    for life in lives:
        parent = life.parent if life.parent in selected and life.parent != life.id else None
        children.setdefault(parent, []).append(life)
    order: dict[int, int] = {}
    stack = list(reversed(children.get(None, [])))
    while stack:
        life = stack.pop()
        if life.id in order:
            continue
        order[life.id] = len(order)
        stack.extend(reversed(children.get(life.id, [])))
    for life in lives:  # in a parent loop (bad data): after the rest
        order.setdefault(life.id, len(order))
    return order


def timeline_events(
    lives: Sequence[Lifetime],
    execs: Mapping[int, Sequence[ExecPoint]],
    args_of: Callable[[Lifetime], dict[str, Any]],
    window: tuple[int | None, int | None] = (None, None),
) -> tuple[list[dict[str, Any]], int | None]:
    """The trace events of these lifetimes (metadata first, then in time
    order) and the wall-clock ns their times count from (None: no times).
    Spans are cut to the ``window`` (wall-clock ns) where one is given, so
    that a daemon started at boot does not stretch a timeline of ten minutes."""
    since, until = window

    def inside(wall: int | None) -> int | None:
        if wall is None:
            return None
        if since is not None and wall < since:
            return since
        if until is not None and wall > until:
            return until
        return wall

    selected = {life.id: life for life in lives}
    known = [t for life in lives for t in (inside(life.start_wall), inside(life.end_wall)) if t is not None]
    if not known:
        return [], None
    first, last = min(known), max(known)

    def us(wall: int) -> float:
        return (wall - first) / 1000

    group = _groups(selected)
    order = _tree_order(lives, selected)
    meta: list[dict[str, Any]] = []
    for root_id in sorted(set(group.values()), key=lambda i: order[i]):
        root = selected[root_id]
        name = f"{_short(_command(root.argv, root.comm), 80)} (pid {root.pid})"
        meta.append(_meta(root_id, root_id, "process_name", {"name": name}))
        meta.append(_meta(root_id, root_id, "process_sort_index", {"sort_index": order[root_id]}))
    # (ts, rank, -dur, n): spans before the arrows and marks of the same moment,
    # a longer span before a shorter one.
    timed: list[tuple[float, int, float, int, dict[str, Any]]] = []

    def add(rank: int, event: dict[str, Any]) -> None:
        timed.append((event["ts"], rank, -event.get("dur", 0.0), len(timed), event))

    for life in lives:
        pid, tid = group[life.id], life.id
        meta.append(_meta(pid, tid, "thread_name", {"name": _label(life)}))
        meta.append(_meta(pid, tid, "thread_sort_index", {"sort_index": order[life.id]}))
        start = inside(life.start_wall)
        start = first if start is None else start
        end = inside(life.end_wall)
        end = last if end is None else max(end, start)
        code = life.exit_code
        failed = bool(code)
        span: dict[str, Any] = {
            "ph": "X", "ts": us(start), "dur": (end - start) / 1000, "pid": pid, "tid": tid,
            "name": _short(_command(life.argv, life.comm)), "cat": "process,failed" if failed else "process",
        }
        if failed:
            span["cname"] = "terrible"  # chrome://tracing's red
        span["args"] = args_of(life)
        add(0, span)
        for point in execs.get(life.id, ()):
            if not start <= point.wall <= end:
                continue  # outside the window (or a clock step)
            add(3, {
                "ph": "i", "s": "t", "ts": us(point.wall), "pid": pid, "tid": tid,
                "name": f"exec {_short(_command(point.argv, point.comm))}", "cat": "exec",
                "args": {"cmdline": None if point.argv is None else [_safe(a) for a in point.argv]},
            })
        if code and life.end_wall is not None and inside(life.end_wall) == life.end_wall:
            add(3, {
                "ph": "i", "s": "t", "ts": us(end), "pid": pid, "tid": tid,
                "name": exit_description(code), "cat": "failed", "cname": "terrible", "args": {},
            })
        parent = selected.get(life.parent) if life.parent is not None else None
        if parent is not None and life.forked and start == life.start_wall and parent.id != life.id:
            # The arrow's id is the child's lifetime: one fork per child.  Its
            # start before its end, both after the child's span of that moment.
            add(1, {"ph": "s", "ts": us(start), "pid": group[parent.id], "tid": parent.id, "id": life.id,
                    "name": "fork", "cat": "fork"})
            add(2, {"ph": "f", "bp": "e", "ts": us(start), "pid": pid, "tid": tid, "id": life.id,
                    "name": "fork", "cat": "fork"})
    timed.sort(key=lambda item: item[:4])
    return meta + [item[4] for item in timed], first


def write_timeline(
    write: Callable[[bytes], None],
    lives: Sequence[Lifetime],
    execs: Mapping[int, Sequence[ExecPoint]],
    args_of: Callable[[Lifetime], dict[str, Any]],
    dumps: Callable[[Any], bytes],
    window: tuple[int | None, int | None] = (None, None),
) -> int:
    """Write the timeline as one JSON object, one event per line; returns
    the number of spans."""
    events, first = timeline_events(lives, execs, args_of, window)
    other: dict[str, Any] = {"producer": "procevents", "time_unit": "us since start_time"}
    if first is not None:
        other["start_time"] = _iso(first)
    write(b'{"displayTimeUnit":"ms","otherData":' + dumps(other) + b',"traceEvents":[\n')
    write(b",\n".join(dumps(event) for event in events))
    write(b"\n]}\n")
    return len(lives)

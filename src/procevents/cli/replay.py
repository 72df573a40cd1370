"""``procevents replay``: recorded events written as the live view does."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from .options import (
    PROG,
    Parser,
    UsageError,
    add_command_option,
    add_container_option,
    add_db_option,
    add_events_option,
    add_host_option,
    add_output_options,
    add_pid_option,
    add_time_range_options,
    add_user_option,
)
from .query import open_reader
from .runner import finish_output, open_output, refuse_output_onto, silence_stdout, stderr

if TYPE_CHECKING:
    from ..pipeline import Filter, Output, Sink
    from ..proctable import Proc
    from ..store import StoreReader

REPLAY_EPILOG = """\
examples:
  procevents replay --since 1h                   the last hour, as the live view showed it
  procevents replay --json -e exec,exit          JSON Lines, execs and exits only
  procevents replay --tree -p 1234               pid 1234's execs under their ancestors

Events are written in the order they arrived, with the enrichment recorded
then (argv, user, ...), in the formats of the live view.  From a store
collected from several hosts, each text or tree line starts with its host's
name (a tree per host: pids repeat across hosts), and --json has a "host"
key on every line, as it has on every line from a store of schema 3.
"""


def replay_clock() -> Any:
    """A Clock that renders recorded timestamps with the recorder's wall-clock
    offset: set ``shift`` (recorded wall - timestamp_ns - our offset) per event."""
    from ..render.clock import Clock

    class ReplayClock(Clock):
        __slots__ = ("shift",)

        def __init__(self) -> None:
            super().__init__()
            self.shift = 0

        def iso_utc(self, timestamp_ns: int) -> str:
            return super().iso_utc(timestamp_ns + self.shift)

        def local_ms(self, timestamp_ns: int) -> str:
            return super().local_ms(timestamp_ns + self.shift)

    return ReplayClock()


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=f"{PROG} replay",
        description="Write recorded events as the live view does.",
        epilog=REPLAY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_db_option(parser)
    out = parser.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="one JSON object per line")
    out.add_argument("--tree", action="store_true", help="execs indented under their ancestors, with exits")
    add_output_options(out)
    sel = parser.add_argument_group("selection")
    add_time_range_options(sel, "events")
    add_events_option(sel)
    add_pid_option(sel, "only this process and the descendants it forks during the replay (repeatable)")
    add_user_option(sel)
    add_command_option(sel)
    add_host_option(sel, "events")
    add_container_option(sel, "events of processes")
    return parser


def host_sinks(output: Output, hosts: list[str], make: Callable[[Output], Sink]) -> Callable[[str | None], Sink]:
    """Each host's sink (``make``), whose every line starts with the host's
    name in a column as wide as the longest: the sink, for an event's host."""
    from ..escape import escape
    from ..pipeline import Output

    width = max(len(escape(host)) for host in hosts)

    class Prefixed(Output):
        """Writes each line to ``output`` after its host's column."""

        def __init__(self, prefix: str) -> None:
            super().__init__(output.stream)
            self.prefix = prefix.ljust(width).encode("utf-8", "backslashreplace") + b" "

        def write(self, data: bytes) -> None:
            prefix = self.prefix
            output.write(b"".join(prefix + line for line in data.splitlines(keepends=True)))

    sinks: dict[str | None, Sink] = {}

    def sink(host: str | None) -> Sink:
        found = sinks.get(host)
        if found is None:
            found = sinks[host] = make(Prefixed(escape(host or "?")))
        return found

    return sink


def replay_lineage(reader: StoreReader, roots: set[int] | None) -> Callable[[Proc], list[Proc]]:
    """The tree's ancestors from the recorded parent links (as the live view's
    come from its table)."""
    from ..proctable import Proc
    from ..render.tree import lineage_below
    from ..store.reader import RecordedProc

    nodes: dict[int, tuple[Proc, int | None] | None] = {}

    def node(life_id: int) -> tuple[Proc, int | None] | None:
        if life_id not in nodes:
            life = reader.lifetimes_by_id([life_id]).get(life_id)
            nodes[life_id] = None if life is None else (
                Proc(pid=life.pid, ppid=life.ppid or 0, start_ns=life.start_ns, comm=life.comm, argv=life.argv),
                life.parent,
            )
        return nodes[life_id]

    def ancestors(life_id: int) -> Iterator[Proc]:
        seen = {life_id}
        found = node(life_id)
        parent = None if found is None else found[1]
        while parent is not None and parent not in seen and len(seen) < 256:
            seen.add(parent)
            found = node(parent)
            if found is None:  # not recorded
                return
            yield found[0]
            parent = found[1]

    def lineage(proc: Proc) -> list[Proc]:
        life_id = proc.life if isinstance(proc, RecordedProc) else None
        if life_id is None:
            return []
        return lineage_below(proc.pid, ancestors(life_id), roots)

    return lineage


def run(args: argparse.Namespace) -> int:
    from ..events import Lost, wall_clock_ns
    from ..filters import CommandFilter, DescendantFilter, EventTypeFilter, UserFilter
    from ..pipeline import choose_sink
    from ..stats import Summary
    from ..store import StoreError, default_db_path

    if args.tree and args.json:
        raise UsageError("choose one of --tree and --json")
    path = args.db or default_db_path()
    filters: list[Filter] = []
    roots = set(args.pid) if args.pid else None
    if roots is not None:
        filters.append(DescendantFilter(set(roots)))
    if args.events:
        filters.append(EventTypeFilter(args.events))
    if args.user is not None:
        filters.append(UserFilter(args.user))
    if args.command is not None:
        filters.append(CommandFilter(args.command))
    if args.container is not None:
        from ..filters import ContainerFilter

        filters.append(ContainerFilter(args.container))
    try:
        reader = open_reader(path, args.trust_db)
    except StoreError as exc:
        stderr(f"error: {exc}")
        return 1
    refuse_output_onto(args.output, path)
    output = open_output(args.output)
    clock = replay_clock()
    lineage = replay_lineage(reader, roots) if args.tree else None
    sink = choose_sink(output, json=args.json, lineage=lineage, clock=clock)
    summary = Summary("replayed", "read", "replayed")
    offset = wall_clock_ns(0)
    status = 0
    try:
        with reader:
            # Several hosts in one text or tree: a column says whose each line is.
            hosts = [] if args.json or args.host is not None else reader.hosts()
            by_host = None
            if len(hosts) > 1:
                by_host = host_sinks(
                    output, hosts, lambda out: choose_sink(out, json=False, lineage=lineage, clock=clock)
                )
            for n, rec in enumerate(reader.events(args.since, args.until, args.host), 1):
                event = rec.event
                summary.seen = n
                if filters and not all(check(event, rec.proc) for check in filters):
                    continue
                clock.shift = rec.wall - event.timestamp_ns - offset
                info = rec.info
                if type(event) is Lost:  # the running total, as the live view has it
                    info = {**info, "total": summary.lost + event.count}
                if by_host is not None:
                    summary.add(event, by_host(rec.host).emit(event, rec.proc, info))
                elif args.json and rec.host is not None:  # where it happened: the live stream has one host
                    summary.add(event, sink.emit(event, rec.proc, {**info, "host": rec.host}))
                else:
                    summary.add(event, sink.emit(event, rec.proc, info))
                if n % 4096 == 0:
                    output.flush()
    except StoreError as exc:
        stderr(f"error: {exc}")
        status = 1
    except BrokenPipeError:
        silence_stdout()
        output.close()
        return 0
    except KeyboardInterrupt:
        status = 130
    status = finish_output(output) or status
    if not args.quiet:
        stderr(summary.line())
    return status


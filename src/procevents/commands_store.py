"""The ``record``, ``query``, ``replay`` and ``top`` commands, and the watcher's
``-S`` and ``--metrics``.

Imported only when one of them runs (``procevents --help`` stays fast); the
parsers need argparse alone, and sqlite3, rich and prometheus_client are
imported by the code that uses them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from .cli import (
    EVENT_TYPES_HELP,
    PROG,
    UsageError,
    _add_capture_options,
    _add_output_options,
    _add_tuning_options,
    _event_list,
    _make_enricher,
    _open_output,
    _Parser,
    _pid,
    _positive_float,
    _positive_int,
    _regex,
    _run_pipeline,
    _silence_stdout,
    _stderr,
    _user,
)

if TYPE_CHECKING:
    from .connector import Connector
    from .enrich import Enricher
    from .events import Event
    from .metrics import MetricsObserver, MetricsServer
    from .pipeline import Filter, Output, Sink
    from .render.clock import Clock
    from .stats import CommandStats
    from .store import Lifetime, StoreReader, StoreWriter
    from .tree import Proc


# -- option values ----------------------------------------------------------------

_UNITS = {
    "": 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0,
    "ms": 0.001,
}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*$")
_CLOCK_TIME = re.compile(r"^\s*(\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?\s*$")


def parse_duration(text: str) -> float:
    """``10m``, ``2h``, ``7d``, ``1.5h``, ``90s``, ``90`` (seconds) -> seconds."""
    match = _DURATION.match(text.lower())
    if not match or match[2] not in _UNITS:
        raise ValueError(f"not a duration: {text!r} (e.g. 90s, 10m, 2h, 7d)")
    return float(match[1]) * _UNITS[match[2]]


def parse_time(text: str, now_ns: int | None = None) -> int:
    """A point in time as wall-clock ns since the epoch.

    Relative to now: ``10m``, ``2h ago``, ``now``; absolute: ISO 8601
    (``2026-11-21T10:40``, ``2026-11-21 10:40:01Z``; local time unless a
    zone is given), ``HH:MM[:SS]`` (today, local time), ``@SECONDS`` (epoch).
    """
    now = time.time_ns() if now_ns is None else now_ns
    value = text.strip()
    lowered = value.lower()
    if lowered == "now":
        return now
    if lowered.startswith("@"):
        try:
            return int(float(lowered[1:]) * 1e9)
        except ValueError:
            raise ValueError(f"not a time: {text!r}") from None
    relative = lowered.removesuffix("ago").strip()
    if relative and _DURATION.match(relative) and not re.fullmatch(r"\d{4,}", relative):
        return now - int(parse_duration(relative) * 1e9)
    clock = _CLOCK_TIME.match(value)
    if clock:
        today = dt.datetime.fromtimestamp(now / 1e9).astimezone()
        micro = int((clock[4] or "0").ljust(6, "0"))
        try:
            moment = today.replace(
                hour=int(clock[1]), minute=int(clock[2]), second=int(clock[3] or 0), microsecond=micro
            )
        except ValueError:
            raise ValueError(f"not a time: {text!r}") from None
        return _ns(moment)
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"not a time: {text!r} (e.g. 10m, '2h ago', 14:30, 2026-11-21T14:30, @1763735400)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # local time
    return _ns(moment)


def _ns(moment: dt.datetime) -> int:
    delta = moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def _duration_arg(text: str) -> int:
    """A retention period -> ns."""
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0: {text!r}")
    return int(seconds * 1e9)


def _time_arg(text: str) -> int:
    try:
        return parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def metrics_address(text: str) -> tuple[str, int]:
    """argparse type for ``--metrics [ADDR:]PORT``."""
    from .metrics import parse_address

    try:
        return parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _db_help() -> str:
    return (
        "the database (default: /var/lib/procevents/events.db as root, else "
        "$XDG_DATA_HOME/procevents/events.db)"
    )


def _add_metrics_option(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--metrics", metavar="[ADDR:]PORT", type=metrics_address,
        help="serve Prometheus metrics at http://ADDR:PORT/metrics (ADDR defaults to 127.0.0.1; "
        "PORT 0 picks a free one; needs prometheus_client)",
    )


def _check_pids(pids: Sequence[int] | None) -> set[int] | None:
    if not pids:
        return None
    roots = set(pids)
    missing = sorted(pid for pid in roots if not os.path.exists(f"/proc/{pid}"))
    if missing:
        raise UsageError(f"no such process: {', '.join(map(str, missing))}")
    return roots


# -- -S and --metrics ------------------------------------------------------------------


class Reporting:
    """Observers for ``-S`` and ``--metrics``, the SIGUSR1 handler, the server."""

    def __init__(
        self,
        *,
        stats: bool,
        metrics: tuple[str, int] | None,
        connector: Connector | None,
        table: Any = None,
        writer: StoreWriter | None = None,
        quiet: bool = False,
    ) -> None:
        from .metrics import MetricsObserver
        from .stats import CommandStats

        self.quiet = quiet
        self.address = metrics
        self.connector = connector
        self.table = table
        self.writer = writer
        self.stats: CommandStats | None = CommandStats() if stats else None
        self.metrics: MetricsObserver | None = MetricsObserver() if metrics is not None else None
        self.server: MetricsServer | None = None
        self.observers: list[Callable[[Event, Proc | None, Mapping[str, Any]], None]] = [
            observer for observer in (self.stats, self.metrics) if observer is not None
        ]
        self._previous_usr1: Any = None

    @classmethod
    def for_watch(cls, args: argparse.Namespace, connector: Connector, enricher: Enricher | None) -> Reporting:
        return cls(
            stats=args.stats, metrics=args.metrics, connector=connector,
            table=None if enricher is None else enricher.table, quiet=args.quiet,
        )

    def start(self) -> None:
        """Serve metrics and handle SIGUSR1; UsageError when the port cannot be had."""
        import signal

        if self.metrics is not None and self.address is not None:
            from .metrics import MetricsError, serve

            try:
                self.server = serve(
                    self.address, self.metrics, connector=self.connector, table=self.table, writer=self.writer
                )
            except MetricsError as exc:
                raise UsageError(str(exc)) from None
            if not self.quiet:
                _stderr(f"metrics at {self.server.url}")
        if self.stats is not None:
            self._previous_usr1 = signal.signal(signal.SIGUSR1, self._on_usr1)

    def _on_usr1(self, _signum: int, _frame: object) -> None:
        self.print_stats()

    def print_stats(self) -> None:
        if self.stats is not None:
            for line in self.stats.lines():
                _stderr(line)

    def after(self) -> None:
        self.print_stats()

    def close(self) -> None:
        import signal

        if self._previous_usr1 is not None:
            signal.signal(signal.SIGUSR1, self._previous_usr1)
            self._previous_usr1 = None
        if self.server is not None:
            self.server.close()
            self.server = None


# -- record ------------------------------------------------------------------------------

RECORD_EPILOG = """\
examples:
  procevents record                       record every process event (Ctrl-C to stop)
  procevents record --db build.db -p $$   this shell and everything it starts
  procevents record --retain 7d           and delete what is older than a week
  procevents record --metrics 9100        with Prometheus metrics on 127.0.0.1:9100

Events are committed at least every 0.25 s in one transaction (SQLite, WAL),
so a crash or kill -9 loses at most the last moments and never damages the
file.  The database is created with 0600 permissions.  Read it with
procevents query and procevents replay, or any SQLite client.
"""


def build_record_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=f"{PROG} record",
        description="Record process events and process lifetimes to an SQLite database.",
        epilog=RECORD_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--db", metavar="PATH", help=_db_help())
    parser.add_argument(
        "--retain", metavar="DURATION", type=_duration_arg,
        help="delete events and ended lifetimes older than DURATION (e.g. 12h, 7d), at start and every minute",
    )
    parser.add_argument(
        "-p", "--pid", metavar="PID", type=_pid, action="append",
        help="only this process and its descendants (repeatable); lost events are always recorded",
    )
    parser.add_argument("-D", "--duration", metavar="SECONDS", type=_positive_float, help="stop after SECONDS")
    parser.add_argument("-q", "--quiet", action="store_true", help="no startup notice or summary on stderr")
    group = parser.add_argument_group("capture, metrics and tuning")
    _add_capture_options(group, threads=False)
    _add_metrics_option(group)
    _add_tuning_options(group)
    return parser


class _StoreOutput:
    """The Output the shared main loop flushes and closes: commit, close the database."""

    def __init__(self, writer: StoreWriter) -> None:
        self.writer = writer
        self.failed = False

    def write(self, data: bytes) -> None:
        pass

    @property
    def flush_due_in(self) -> float | None:
        return None if self.failed else self.writer.flush_due_in

    def batch_done(self) -> None:
        if not self.failed:
            try:
                self.writer.flush()
            except OSError:
                self.failed = True
                raise

    def flush(self) -> None:
        if not self.failed:
            try:
                self.writer.commit()
            except OSError:
                self.failed = True
                raise

    def close(self) -> None:
        try:
            self.writer.close()
        except OSError:
            pass  # reported by flush()


def run_record(args: argparse.Namespace) -> int:
    from . import __version__
    from .connector import DEFAULT_RCVBUF, Connector
    from .filters import DescendantFilter
    from .pipeline import RECORD_LINGER
    from .store import StoreError, StoreSink, StoreWriter, database_bytes, default_db_path

    path = args.db or default_db_path()
    roots = _check_pids(args.pid)
    try:
        writer = StoreWriter(path, retain_ns=args.retain, version=__version__)
    except StoreError as exc:
        _stderr(f"error: {exc}")
        return 1
    try:
        if args.retain is not None:
            writer.prune()
        conn = Connector(None, rcvbuf=args.buffer or DEFAULT_RCVBUF)
        enricher = _make_enricher(args)
        filters: list[Filter] = []
        if roots is not None:
            filters.append(DescendantFilter(enricher.table.descendants(roots)))
        sink = StoreSink(writer, enricher.table.get)
        reporting = Reporting(
            stats=False, metrics=args.metrics, connector=conn, table=enricher.table, writer=writer, quiet=args.quiet
        )
        reporting.start()
    except BaseException:
        writer.close()
        raise
    output = _StoreOutput(writer)

    def summary() -> None:
        if not args.quiet:
            _stderr(f"{writer.events_written} events recorded to {path} ({database_bytes(path):,} bytes)")

    if not args.quiet:
        _stderr(f"recording to {path}")
    try:
        return _run_pipeline(
            # Duck-typed: the loop only flushes and closes its Output.
            conn, sink, cast("Output", output), enricher=enricher, filters=filters, count=None,
            duration=args.duration, quiet=args.quiet, observers=reporting.observers, after=summary,
            linger=RECORD_LINGER,
        )
    finally:
        reporting.close()


# -- query ---------------------------------------------------------------------------------

QUERY_EPILOG = """\
examples:
  procevents query --since 10m --failed --tree   what failed lately, under which parents
  procevents query --command '^gcc$' --json      every gcc run, as JSON Lines
  procevents query --pid 1234 --tree             pid 1234 and everything it started
  procevents query --sql "SELECT comm, count(*) FROM procs GROUP BY comm ORDER BY 2 DESC LIMIT 10"

Each result is a process lifetime (fork to exit) that overlaps the time
range.  TIME is relative (10m, '2h ago'), a clock time today (14:30), ISO
8601 (2026-11-21T14:30, local time unless a zone is given) or @EPOCH.  With
--tree, lines marked * match; the others are their recorded ancestors.

--json keys: pid, ppid, comm, cmdline, exe, cwd, uid, user, start_time,
end_time (ISO 8601 UTC), duration (seconds), exit_code, status, signal,
core_dumped, execs; text that is not valid UTF-8 also has <key>_b64, as in
the live --json stream.

--sql runs one read-only statement.  Tables: procs (one row per lifetime:
id, pid, ppid, parent, start_wall, end_wall, comm, exe, argv, cwd, uid, user,
exit_code, duration, ...), events (one row per event: ts, wall, event, cpu,
seq, pid, tgid, proc, ...), sessions; views lifetimes (procs with status,
signal, core_dumped, failed, start_time, end_time) and events_named (events with
the cn_proc.h field names).  Times are ns: wall since the epoch, ts and *_ns
CLOCK_MONOTONIC.
"""


def build_query_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=f"{PROG} query",
        description="Query recorded process lifetimes.",
        epilog=QUERY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--db", metavar="PATH", help=_db_help())
    sel = parser.add_argument_group("selection")
    sel.add_argument("--since", metavar="TIME", type=_time_arg, help="alive at or after TIME (e.g. 10m, 14:30)")
    sel.add_argument("--until", metavar="TIME", type=_time_arg, help="alive at or before TIME")
    sel.add_argument(
        "-c", "--command", metavar="REGEX", type=_regex, help="comm, exe or argv[0] matches REGEX"
    )
    sel.add_argument("-u", "--user", metavar="NAME|UID", help="run by this user (as recorded)")
    sel.add_argument(
        "-p", "--pid", metavar="PID", type=_pid, action="append",
        help="processes with this pid and their descendants (repeatable)",
    )
    sel.add_argument("--failed", action="store_true", help="only those that exited non-zero or by a signal")
    out = parser.add_argument_group("output")
    out.add_argument("--tree", action="store_true", help="under their recorded ancestors")
    out.add_argument("--json", action="store_true", help="one JSON object per process lifetime")
    out.add_argument("--sql", metavar="STATEMENT", help="run one read-only SQL statement instead")
    out.add_argument("-o", "--output", metavar="FILE", help="write to FILE (appending) instead of stdout")
    return parser


def iso_wall(clock: Clock, wall_ns: int | None) -> str | None:
    """Wall-clock ns as the live JSON's ``time`` (ISO 8601 UTC, microseconds)."""
    if wall_ns is None:
        return None
    from .events import wall_clock_ns

    return clock.iso_utc(wall_ns - wall_clock_ns(0))


def local_wall(wall_ns: int | None) -> str:
    """``2026-11-21 10:40:01.211`` in local time."""
    if wall_ns is None:
        return "?"
    sec, rem = divmod(wall_ns, 1_000_000_000)
    return f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(sec))}.{rem // 1_000_000:03d}"


def lifetime_fields(life: Lifetime, clock: Clock) -> dict[str, Any]:
    """The JSON object for one lifetime (key names as in the live stream)."""
    from .render.jsonl import put_argv, put_text

    out: dict[str, Any] = {"pid": life.pid, "ppid": life.ppid}
    put_text(out, "comm", life.comm)
    put_argv(out, "cmdline", life.argv)
    put_text(out, "exe", life.exe)
    put_text(out, "cwd", life.cwd)
    out["uid"] = life.uid
    put_text(out, "user", life.user)
    out["start_time"] = iso_wall(clock, life.start_wall)
    out["end_time"] = iso_wall(clock, life.end_wall)
    out["duration"] = life.duration
    out["exit_code"] = life.exit_code
    out["status"] = life.status
    out["signal"] = life.signal
    out["core_dumped"] = life.core_dumped
    out["execs"] = life.execs
    return out


def _outcome(life: Lifetime) -> str:
    from .render.text import exit_description, format_duration

    if life.exit_code is None:
        return "no exit recorded"
    took = f" after {format_duration(life.duration)}" if life.duration is not None else ""
    return exit_description(life.exit_code) + took


def _command(life: Lifetime) -> str:
    from .render.text import format_command

    return format_command({"cmdline": life.argv, "comm": life.comm}) or "?"


def _table_lines(lives: Sequence[Lifetime]) -> list[str]:
    from .escape import escape
    from .render.text import exit_description, format_duration

    header = ("START", "PID", "PPID", "USER", "DURATION", "EXIT", "COMMAND")
    rows = [
        (
            local_wall(life.start_wall), str(life.pid), "" if life.ppid is None else str(life.ppid),
            escape(life.user or ""), "" if life.duration is None else format_duration(life.duration),
            "-" if life.exit_code is None else exit_description(life.exit_code), _command(life),
        )
        for life in lives
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    right = {1, 2, 4}
    lines = []
    for row in [header, *rows]:
        pairs = enumerate(zip(row[:-1], widths, strict=True))
        cells = [cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in pairs]
        lines.append("  ".join([*cells, row[-1]]).rstrip() + "\n")
    return lines


_CONTEXT_WIDTH = 100


def _tree_lines(matches: Sequence[Lifetime], known: Mapping[int, Lifetime]) -> list[str]:
    """Matches under their ancestors (init and kthreadd left out as context)."""
    matched = {life.id for life in matches}
    shown = {i: life for i, life in known.items() if i in matched or life.pid > 2}
    children: dict[int | None, list[Lifetime]] = {}
    for life in shown.values():
        parent = life.parent if life.parent in shown else None
        children.setdefault(parent, []).append(life)
    for kids in children.values():
        kids.sort(key=lambda life: (life.start_wall or 0, life.id))
    lines: list[str] = []
    stack: list[tuple[Lifetime, int]] = [(life, 0) for life in reversed(children.get(None, []))]
    seen: set[int] = set()
    while stack:
        life, level = stack.pop()
        if life.id in seen:
            continue
        seen.add(life.id)
        command = _command(life)
        if life.id in matched:
            mark = "*"
        else:  # context: kept short
            mark = " "
            if len(command) > _CONTEXT_WIDTH:
                command = command[: _CONTEXT_WIDTH - 3] + "..."
        lines.append(f"{mark} {local_wall(life.start_wall)}  {'  ' * level}{life.pid} {command}  ({_outcome(life)})\n")
        stack.extend((kid, level + 1) for kid in reversed(children.get(life.id, [])))
    return lines


def _write_lines(output: Output, lines: Sequence[str] | Sequence[bytes]) -> None:
    for line in lines:
        output.write(line if isinstance(line, bytes) else line.encode("utf-8", "backslashreplace"))


def _finish_output(output: Output) -> int:
    status = 0
    try:
        output.flush()
    except BrokenPipeError:
        _silence_stdout()
    except OSError as exc:
        _stderr(f"error: writing output: {exc.strerror or exc}")
        status = 1
    output.close()
    return status


def _open_reader(path: str) -> StoreReader:
    from .store import StoreReader

    return StoreReader(path)


def run_query(args: argparse.Namespace) -> int:
    from .render.jsonl import choose_dumps
    from .store import LifetimeQuery, StoreError, default_db_path

    path = args.db or default_db_path()
    selection = (args.since, args.until, args.command, args.user, args.pid)
    if args.sql is not None and (any(v is not None for v in selection) or args.failed or args.tree):
        raise UsageError("--sql runs alone; put the conditions in the statement")
    if args.tree and args.json:
        raise UsageError("choose one of --tree and --json")
    output = _open_output(args.output)
    try:
        with _open_reader(path) as reader:
            if args.sql is not None:
                lines = _sql_lines(reader, args.sql, args.json)
                for line in lines:
                    output.write(line)
                return _finish_output(output)
            query = LifetimeQuery(
                since=args.since, until=args.until, command=args.command, user=args.user,
                pids=frozenset(args.pid) if args.pid else None, failed=args.failed,
            )
            lives = reader.lifetimes(query)
            if args.json:
                from .render.clock import Clock

                clock = Clock()
                dumps = choose_dumps()
                for life in lives:
                    output.write(dumps(lifetime_fields(life, clock)) + b"\n")
            elif args.tree:
                _write_lines(output, _tree_lines(lives, reader.with_ancestors(lives)))
            else:
                _write_lines(output, _table_lines(lives))
    except StoreError as exc:
        output.close()
        _stderr(f"error: {exc}")
        return 1
    return _finish_output(output)


def _sql_lines(reader: StoreReader, statement: str, as_json: bool) -> Iterator[bytes]:
    """Rows as tab-separated text (escaped) or JSON objects; a generator of bytes."""
    from .escape import escape
    from .render.jsonl import choose_dumps, put_text

    columns, rows = reader.sql(statement)
    if as_json:
        dumps = choose_dumps()
        for row in rows:
            obj: dict[str, Any] = {}
            for name, value in zip(columns, row, strict=True):
                if isinstance(value, bytes):
                    put_text(obj, name, value.decode("utf-8", "surrogateescape"))
                elif isinstance(value, str):
                    put_text(obj, name, value)
                else:
                    obj[name] = value
            yield dumps(obj) + b"\n"
        return

    def cell(value: object) -> str:
        if value is None:
            return "NULL"
        if isinstance(value, bytes):
            text = value.decode("utf-8", "surrogateescape")
            return escape(text.rstrip("\0").replace("\0", " ")) if "\0" in text else escape(text)
        text = escape(str(value))
        return text.replace("\t", "\\t")

    yield ("\t".join(escape(c) for c in columns) + "\n").encode("utf-8", "backslashreplace")
    for row in rows:
        yield ("\t".join(cell(v) for v in row) + "\n").encode("utf-8", "backslashreplace")


# -- replay ------------------------------------------------------------------------------

REPLAY_EPILOG = """\
examples:
  procevents replay --since 1h                   the last hour, as the live view showed it
  procevents replay --json -e exec,exit          JSON Lines, execs and exits only
  procevents replay --tree -p 1234               pid 1234's execs under their ancestors

Events are written in the order they arrived, with the enrichment recorded
then (argv, user, ...), in the formats of the live view.
"""


def replay_clock() -> Any:
    """A Clock that renders recorded timestamps with the recorder's wall-clock
    offset: set ``shift`` (recorded wall - timestamp_ns - our offset) per event."""
    from .render.clock import Clock

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


def build_replay_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=f"{PROG} replay",
        description="Write recorded events as the live view does.",
        epilog=REPLAY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--db", metavar="PATH", help=_db_help())
    out = parser.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="one JSON object per line")
    out.add_argument("--tree", action="store_true", help="execs indented under their ancestors, with exits")
    _add_output_options(out)
    sel = parser.add_argument_group("selection")
    sel.add_argument("--since", metavar="TIME", type=_time_arg, help="events at or after TIME (e.g. 10m, 14:30)")
    sel.add_argument("--until", metavar="TIME", type=_time_arg, help="events at or before TIME")
    sel.add_argument(
        "-e", "--events", metavar="LIST", type=_event_list,
        help=f"comma-separated event types to show (default: all): {EVENT_TYPES_HELP}",
    )
    sel.add_argument(
        "-p", "--pid", metavar="PID", type=_pid, action="append",
        help="only this process and the descendants it forks during the replay (repeatable)",
    )
    sel.add_argument("-u", "--user", metavar="NAME|UID", type=_user, help="only processes of this user")
    sel.add_argument("-c", "--command", metavar="REGEX", type=_regex, help="only processes whose comm, exe or "
                     "argv[0] matches REGEX")
    return parser


def replay_depth(reader: StoreReader, roots: set[int] | None) -> Callable[[Proc], int]:
    """Tree indentation from the recorded parent links (as the live view's)."""
    nodes: dict[int, tuple[int, int | None]] = {}

    def node(life_id: int) -> tuple[int, int | None]:
        found = nodes.get(life_id)
        if found is None:
            life = reader.lifetimes_by_id([life_id]).get(life_id)
            found = nodes[life_id] = (0, None) if life is None else (life.pid, life.parent)
        return found

    def depth(proc: Proc) -> int:
        if roots is not None and proc.pid in roots:
            return 0
        life_id = proc.extra.get("life")
        if not isinstance(life_id, int):
            return 0
        level = 0
        seen = {life_id}
        parent = node(life_id)[1]
        while parent is not None and parent not in seen and len(seen) < 256:
            seen.add(parent)
            pid, grandparent = node(parent)
            if pid == 0:
                break
            if roots is not None:
                if pid in roots:
                    return level + 1
            elif pid <= 2:
                return level
            level += 1
            parent = grandparent
        return level

    return depth


def run_replay(args: argparse.Namespace) -> int:
    from .events import wall_clock_ns
    from .filters import CommandFilter, DescendantFilter, EventTypeFilter, UserFilter
    from .pipeline import JsonSink, TextSink, TreeSink
    from .stats import Summary
    from .store import StoreError, default_db_path

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
    try:
        reader = _open_reader(path)
    except StoreError as exc:
        _stderr(f"error: {exc}")
        return 1
    output = _open_output(args.output)
    clock = replay_clock()
    sink: Sink
    if args.json:
        json_sink = JsonSink(output)
        json_sink.clock = clock
        sink = json_sink
    elif args.tree:
        sink = TreeSink(output, replay_depth(reader, roots))
    else:
        text_sink = TextSink(output)
        text_sink.renderer.clock = clock
        sink = text_sink
    summary = Summary()
    offset = wall_clock_ns(0)
    status = 0
    try:
        with reader:
            for n, rec in enumerate(reader.events(args.since, args.until), 1):
                event = rec.event
                if filters and not all(check(event, rec.proc) for check in filters):
                    continue
                clock.shift = rec.wall - event.timestamp_ns - offset
                sink.emit(event, rec.proc, rec.info)
                summary.add(event)
                if n % 4096 == 0:
                    output.flush()
    except StoreError as exc:
        _stderr(f"error: {exc}")
        status = 1
    except BrokenPipeError:
        _silence_stdout()
        output.close()
        return 0
    except KeyboardInterrupt:
        status = 130
    status = _finish_output(output) or status
    if not args.quiet:
        _stderr(summary.line().replace(" received", " replayed"))
    return status


# -- top -------------------------------------------------------------------------------------

TOP_EPILOG = """\
Rates are per second over the last refresh interval.  A fork counts for the
command that forked, an exec for the program started, a failure (non-zero
status or a signal) for the command that exited.  q or Ctrl-C to quit.
"""


def build_top_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=f"{PROG} top",
        description="A live view of process event rates and the top spawners (needs rich).",
        epilog=TOP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-i", "--interval", metavar="SECONDS", type=_positive_float, default=1.0,
        help="refresh every SECONDS (default 1)",
    )
    parser.add_argument(
        "-r", "--rows", metavar="N", type=_positive_int, default=15, help="show the top N commands (default 15)"
    )
    parser.add_argument(
        "-p", "--pid", metavar="PID", type=_pid, action="append",
        help="only this process and its descendants (repeatable)",
    )
    parser.add_argument("-D", "--duration", metavar="SECONDS", type=_positive_float, help="stop after SECONDS")
    parser.add_argument("-q", "--quiet", action="store_true", help="no startup notice or summary on stderr")
    tune = parser.add_argument_group("capture and tuning")
    _add_capture_options(tune, env=False, threads=False)
    _add_tuning_options(tune)
    return parser


class _NullSink:
    def emit(self, event: Event, proc: Proc | None, info: Mapping[str, Any]) -> bool:
        return True


def run_top(args: argparse.Namespace) -> int:
    try:
        from rich.console import Console
        from rich.live import Live
    except ImportError:
        _stderr("error: procevents top needs the rich package: pip install 'procevents[top]'")
        return 1

    from .connector import DEFAULT_RCVBUF, Connector
    from .filters import DescendantFilter
    from .pipeline import Output
    from .top import TopModel, render

    roots = _check_pids(args.pid)
    conn = Connector(None, rcvbuf=args.buffer or DEFAULT_RCVBUF)
    enricher = _make_enricher(args, paths=False)  # top shows neither exe nor cwd
    filters: list[Filter] = []
    if roots is not None:
        filters.append(DescendantFilter(enricher.table.descendants(roots)))
    model = TopModel(enricher.table)
    output = Output(sys.stdout.buffer)
    rows = args.rows
    interval = args.interval
    with Live(render(model.frame(time.monotonic(), rows)), console=Console(), auto_refresh=False) as live:
        next_at = time.monotonic() + interval

        def refresh() -> bool:
            nonlocal next_at
            now = time.monotonic()
            if now >= next_at:
                live.update(render(model.frame(now, rows)), refresh=True)
                next_at = now + interval
            return False

        status = _run_pipeline(
            conn, _NullSink(), output, enricher=enricher, filters=filters, count=None, duration=args.duration,
            quiet=args.quiet, stop=refresh, observers=[model], tick=min(0.2, interval),
        )
        # The last frame stays (and is all a pipe or file gets): whole-run averages.
        live.update(render(model.frame(time.monotonic(), rows, overall=True), overall=True), refresh=True)
    return status

"""``procevents query``: recorded process lifetimes as a table, a tree,
JSON Lines, or the rows of one read-only SQL statement."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .options import (
    PROG,
    Parser,
    RuntimeFailure,
    UsageError,
    add_command_option,
    add_container_option,
    add_db_option,
    add_host_option,
    add_pid_option,
    add_time_range_options,
    add_user_option,
    cpu_seconds_arg,
)
from .runner import finish_output, open_output, refuse_output_onto, silence_stdout, stderr, write_lines

if TYPE_CHECKING:
    from ..pipeline import Output
    from ..render.clock import Clock
    from ..store import Lifetime, StoreReader

QUERY_EPILOG = """\
examples:
  procevents query --since 10m --failed --tree   what failed lately, under which parents
  procevents query --command '^gcc$' --json      every gcc run, as JSON Lines
  procevents query --pid 1234 --tree             pid 1234 and everything it started
  procevents query --since 1h --sort cpu         what used the most CPU in the last hour
  procevents query --min-cpu 10s --json          every process that used 10 s of CPU or more
  procevents query --pid 1234 --timeline build.json
                                                 a timeline for ui.perfetto.dev ("Open trace file")
  procevents query --sql "SELECT comm, count(*) FROM procs GROUP BY comm ORDER BY 2 DESC LIMIT 10"

Each result is a process lifetime (fork to exit) that overlaps the time
range.  TIME is relative (10m, '2h ago'), a clock time today (14:30), ISO
8601 (2026-11-21T14:30, local time unless a zone is given) or @EPOCH.  With
--tree, lines marked * match; the others are their recorded ancestors.

When nothing matches, stdout gets nothing (not even the table's header)
and stderr says "no recorded process matched"; the exit status is 0.

--command REGEX searches (re.search): 'ls' also matches 'false' and
'/usr/bin/lsblk'; anchor it ('^ls$') for the program ls alone.  It is tried
on the comm, the exe path and argv[0].

On a terminal the table and the tree fit its width: each command line is
cut to the room left (ending in ...); when that is short, the date leaves
START (all on one day), then the table drops PPID and shows EXIT as the
bare status or signal.  A pipe or file, and --json, get them whole.  From
several hosts (a collected store) a HOST column says whose each one is.

--timeline FILE writes the selected lifetimes in the Chrome trace event
format (JSON) for Perfetto (ui.perfetto.dev, "Open trace file") or
chrome://tracing: one track per process, grouped by process tree, each span
from fork to exit named by its argv (details in its args), execs and failed
exits marked, forks drawn as arrows.

--json keys: pid, ppid, comm, cmdline, exe, cwd, uid, user, start_time,
end_time (ISO 8601 UTC), duration (seconds), exit_code, status, signal,
core_dumped, execs, the exit costs, host, exec_id, parent_exec_id, cgroup,
container_id, pod_uid; text that is not valid UTF-8 also has <key>_b64, as
in the live --json stream.

--sql runs one read-only statement.  Tables: procs (one row per lifetime:
id, pid, ppid, parent, start_wall, end_wall, comm, exe, argv, cwd, uid, user,
exit_code, duration, utime, stime, max_rss, rchar, wchar, read_bytes,
write_bytes, cpu_delay, io_delay, mem_delay, ...), events (one row per
event: ts, wall, event, cpu, seq, pid, tgid, proc, ...), sessions; views
lifetimes (procs with status, signal, core_dumped, failed, start_time,
end_time) and events_named (events with the cn_proc.h field names; an
exit's costs as a JSON list, in the order of the procs columns).  Times
are ns: wall since the epoch, ts and *_ns CLOCK_MONOTONIC.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=f"{PROG} query",
        description="Query recorded process lifetimes.",
        epilog=QUERY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_db_option(parser)
    sel = parser.add_argument_group("selection")
    add_time_range_options(sel, "alive")
    add_command_option(sel, "comm, exe or argv[0] contains a match for REGEX (a search: '^ls$' for ls alone)")
    add_user_option(sel, recorded=True)
    add_pid_option(sel, "processes with this pid and their descendants (repeatable)")
    sel.add_argument("--failed", action="store_true", help="only those that exited non-zero or by a signal")
    add_host_option(sel, "those")
    add_container_option(sel, "those")
    sel.add_argument(
        "--min-cpu", metavar="SECONDS", type=cpu_seconds_arg,
        help="only those that used at least this much CPU time (user plus system, from taskstats)",
    )
    out = parser.add_argument_group("output")
    out.add_argument("--tree", action="store_true", help="under their recorded ancestors")
    out.add_argument("--json", action="store_true", help="one JSON object per process lifetime")
    out.add_argument(
        "--sort", choices=("cpu", "rss", "io", "duration"),
        help="heaviest first: CPU time, peak memory, storage I/O (from taskstats) or duration; "
        "default: by start time",
    )
    out.add_argument("--sql", metavar="STATEMENT", help="run one read-only SQL statement instead")
    out.add_argument(
        "--timeline", metavar="FILE",
        help="write a timeline (Chrome trace JSON) to FILE for ui.perfetto.dev or chrome://tracing",
    )
    out.add_argument("-o", "--output", metavar="FILE", help="write to FILE (appending) instead of stdout")
    return parser


def iso_wall(clock: Clock, wall_ns: int | None) -> str | None:
    """Wall-clock ns as the live JSON's ``time`` (ISO 8601 UTC, microseconds)."""
    if wall_ns is None:
        return None
    from ..events import wall_clock_ns

    return clock.iso_utc(wall_ns - wall_clock_ns(0))


def local_wall(wall_ns: int | None, short: bool = False) -> str:
    """``2026-11-21 10:40:01.211`` in local time; ``short``: ``10:40:01.211``."""
    if wall_ns is None:
        return "?" if not short else "?".ljust(12)
    sec, rem = divmod(wall_ns, 1_000_000_000)
    return f"{time.strftime('%H:%M:%S' if short else '%Y-%m-%d %H:%M:%S', time.localtime(sec))}.{rem // 1_000_000:03d}"


def _one_day(lives: Sequence[Lifetime]) -> bool:
    """Every start on the same local date (so a narrow terminal can leave
    the date out: it says nothing)."""
    days = {time.strftime("%Y-%m-%d", time.localtime(life.start_wall // 10**9)) for life in lives
            if life.start_wall is not None}
    return len(days) <= 1


def _several_hosts(lives: Sequence[Lifetime]) -> bool:
    """From a store collected from several hosts: each line says whose it is."""
    return len({life.host for life in lives if life.host is not None}) > 1


def lifetime_fields(life: Lifetime, clock: Clock) -> dict[str, Any]:
    """The JSON object for one lifetime (key names as in the live stream)."""
    from ..render.jsonl import put_argv, put_text

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
    from ..store.schema import COST_COLUMNS

    for key in COST_COLUMNS:
        out[key] = getattr(life, key)
    out["host"] = life.host
    out["exec_id"] = life.exec_id
    out["parent_exec_id"] = life.parent_exec_id
    put_text(out, "cgroup", life.cgroup)
    out["container_id"] = life.container_id
    out["pod_uid"] = life.pod_uid
    return out


def _outcome(life: Lifetime) -> str:
    from ..render.text import exit_description, format_duration

    if life.exit_code is None:
        return "no exit recorded"
    took = f" after {format_duration(life.duration)}" if life.duration is not None else ""
    return exit_description(life.exit_code) + took


def _command(life: Lifetime) -> str:
    from ..render.text import format_command

    return format_command({"cmdline": life.argv, "comm": life.comm}) or "?"


def _table_lines(lives: Sequence[Lifetime], width: int | None = None) -> list[str]:
    """The table; with a ``width`` (a terminal's), every line fits in it:
    each command line is cut to the room left, and while that is too little
    the date is left out of START (all on one day), then PPID, then EXIT
    says only the status or the signal (``2``, ``SIGKILL``); a line still
    too long is cut at the width."""
    from ..escape import escape
    from ..events import decode_wait_status, signal_name
    from ..render.text import cut_to_width, display_width, exit_description, format_bytes, format_duration, pad

    costs = any(life.utime is not None for life in lives)
    hosts = _several_hosts(lives)
    names = ["START", "PID", "PPID", "USER", "DURATION", "EXIT", "COMMAND"]
    if costs:  # recorded with taskstats: what each one cost
        names[5:5] = ["CPU", "MAXRSS"]
    if hosts:
        names.insert(1, "HOST")
    right = {"PID", "PPID", "DURATION", "CPU", "MAXRSS"}

    def outcome(code: int | None, brief: bool) -> str:
        if code is None:
            return "-"
        if not brief:
            return exit_description(code)
        status, sig, core = decode_wait_status(code)
        return str(status) if sig is None else f"{signal_name(sig)}{' core' if core else ''}"

    def cells(life: Lifetime, short: bool, brief: bool) -> dict[str, str]:
        cpu, rss = life.cpu, life.max_rss
        return {
            "START": local_wall(life.start_wall, short), "HOST": escape(life.host or "?"), "PID": str(life.pid),
            "PPID": "" if life.ppid is None else str(life.ppid), "USER": escape(life.user or ""),
            "DURATION": "" if life.duration is None else format_duration(life.duration),
            "CPU": "" if cpu is None else format_duration(cpu), "MAXRSS": "" if rss is None else format_bytes(rss),
            "EXIT": outcome(life.exit_code, brief), "COMMAND": _command(life),
        }

    header = {name: name for name in names}
    # Ways to narrow the table, tried in turn until the command has room.
    steps: list[tuple[bool, str | None, bool]] = [(False, None, False)]
    if width is not None:
        if _one_day(lives):
            steps.append((True, None, False))
        steps.append((steps[-1][0], "PPID", False))
        steps.append((steps[-1][0], "PPID", True))
    for short, dropped, brief in steps:
        shown = [name for name in names if name != dropped]
        rows = [header, *(cells(life, short, brief) for life in lives)]
        widths = {name: max(display_width(row[name]) for row in rows) for name in shown[:-1]}
        fixed = sum(widths.values()) + 2 * len(widths)
        if width is None or width - fixed >= _MIN_COMMAND:
            break
    room = None if width is None else max(_MIN_COMMAND, width - fixed)
    lines = []
    for row in rows:
        parts = [pad(row[name], widths[name], right=name in right) for name in shown[:-1]]
        command = row["COMMAND"] if room is None else cut_to_width(row["COMMAND"], room)
        line = "  ".join([*parts, command]).rstrip()
        lines.append((line if width is None else cut_to_width(line, width)) + "\n")
    return lines


#: However narrow the terminal, this much of a command line is shown (in
#: the table; in the tree, where indentation takes room too, less).
_MIN_COMMAND = 20
_MIN_TREE_COMMAND = 10


def terminal_width(output: Output) -> int | None:
    """The columns of the terminal the output is (else None: a file or pipe
    gets whole lines); $COLUMNS wins, as for ls."""
    import os

    try:
        fd = output.stream.fileno()
        if not os.isatty(fd):
            return None
    except (OSError, ValueError, AttributeError):
        return None
    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    if columns > 0:
        return columns
    try:  # the output's own terminal (-o /dev/pts/N too), not stdout's
        columns = os.get_terminal_size(fd).columns
    except OSError:
        columns = 0
    return columns or 80


def _tree_lines(
    matches: Sequence[Lifetime], known: Mapping[int, Lifetime], width: int | None = None
) -> list[str]:
    """Matches under their ancestors (init and kthreadd left out as context);
    with a ``width`` (a terminal's), every line fits in it: each command line
    is cut to the room left (when that is short and every start is on one
    day, the date is left out first), a line still too long at the width."""
    from ..escape import escape
    from ..render.text import cut_to_width, display_width

    matched = {life.id for life in matches}
    shown = {i: life for i, life in known.items() if i in matched or life.pid > 2}
    children: dict[int | None, list[Lifetime]] = {}
    for life in shown.values():
        parent = life.parent if life.parent in shown else None
        children.setdefault(parent, []).append(life)
    for kids in children.values():
        kids.sort(key=lambda life: (life.start_wall or 0, life.id))
    order: list[tuple[Lifetime, int]] = []
    stack: list[tuple[Lifetime, int]] = [(life, 0) for life in reversed(children.get(None, []))]
    seen: set[int] = set()
    while stack:
        life, level = stack.pop()
        if life.id in seen:
            continue
        seen.add(life.id)
        order.append((life, level))
        stack.extend((kid, level + 1) for kid in reversed(children.get(life.id, [])))
    lives = [life for life, _ in order]
    hosts = _several_hosts(lives)
    host_width = max((len(escape(life.host or "?")) for life in lives), default=0)

    def parts(life: Lifetime, level: int, short: bool) -> tuple[str, str, str]:
        """Before the command, the command, after it."""
        mark = "*" if life.id in matched else " "
        host = f"{escape(life.host or '?').ljust(host_width)}  " if hosts else ""
        before = f"{mark} {host}{local_wall(life.start_wall, short)}  {'  ' * level}{life.pid} "
        return before, _command(life), f"  ({_outcome(life)})"

    def cramped(short: bool) -> bool:
        return width is not None and any(
            width - display_width(before) - display_width(after) < _MIN_COMMAND
            for before, _, after in (parts(life, level, short) for life, level in order)
        )

    short = cramped(False) and _one_day(lives)
    lines: list[str] = []
    for life, level in order:
        before, command, after = parts(life, level, short)
        if width is not None:
            # Deep in a narrow tree the outcome is kept before the command's
            # usual minimum: the start of a command line is enough to know it.
            room = width - display_width(before) - display_width(after)
            command = cut_to_width(command, max(_MIN_TREE_COMMAND, room))
        line = before + command + after
        lines.append((line if width is None else cut_to_width(line, width)) + "\n")
    return lines


def timeline_args(life: Lifetime, clock: Clock) -> dict[str, Any]:
    """A timeline span's details: the --json object's values that are known,
    then any other field the store gives a lifetime (so new columns show
    up here without more work)."""
    import dataclasses

    from ..render.jsonl import put_argv, put_text

    out = {key: value for key, value in lifetime_fields(life, clock).items() if value is not None}
    for field in dataclasses.fields(life):
        name = field.name
        value = getattr(life, name)
        if value is None or name in out or name in _TIMELINE_SHOWN:
            continue
        if isinstance(value, str):
            put_text(out, name, value)
        elif isinstance(value, list):
            put_argv(out, name, [str(v) for v in value])
        elif isinstance(value, bool | int | float):
            out[name] = value
        else:
            put_text(out, name, str(value))
    return out


#: Lifetime fields a span already shows: its name (argv), its track (id), its
#: times (ts and dur; start_time and end_time in its args).
_TIMELINE_SHOWN = frozenset({"argv", "id", "start_ns", "start_wall", "end_ns", "end_wall"})


def write_timeline(
    reader: StoreReader, lives: Sequence[Lifetime], output: Output,
    window: tuple[int | None, int | None] = (None, None),
) -> int:
    """The lifetimes' timeline (Chrome trace JSON) into ``output``, cut to
    the ``window`` (wall-clock ns); returns the spans written."""
    from ..render.clock import Clock
    from ..render.jsonl import choose_dumps
    from ..render.timeline import write_timeline as write_events

    clock = Clock()
    return write_events(
        output.write, lives, reader.exec_points(lives), lambda life: timeline_args(life, clock), choose_dumps(),
        window,
    )


def open_timeline(path: str) -> Output:
    """The timeline's file, emptied (a second JSON object appended would be
    no trace at all); ``-`` is stdout."""
    from ..files import UnsafePath, open_replace
    from ..pipeline import Output

    if path == "-":
        return Output.open(None)
    try:
        return Output(open_replace(path), owned=True)
    except UnsafePath as exc:
        raise RuntimeFailure(f"refusing {exc.strerror}") from None
    except OSError as exc:
        raise RuntimeFailure(f"cannot open {path}: {exc.strerror}") from None


def timeline_notice(spans: int, path: str) -> str:
    from ..stats import counted

    where = "stdout" if path == "-" else path
    return f"timeline of {counted(spans, 'process', 'processes')} written to {where}: open it at ui.perfetto.dev"


#: On stderr when no lifetime matched (stdout gets nothing, not even the header).
NOTHING_MATCHED = "no recorded process matched"


def open_reader(path: str, trust: bool = False) -> StoreReader:
    from ..store import StoreReader

    return StoreReader(path, trust=trust)


def run(args: argparse.Namespace) -> int:
    from ..render.jsonl import choose_dumps
    from ..store import LifetimeQuery, StoreError, default_db_path

    path = args.db or default_db_path()
    selection = (args.since, args.until, args.command, args.user, args.pid, args.host, args.container)
    if args.sql is not None and (
        any(v is not None for v in selection) or args.failed or args.tree or args.timeline or args.sort or args.min_cpu
    ):
        raise UsageError("--sql runs alone; put the conditions in the statement")
    views = [name for name, on in (("--tree", args.tree), ("--json", args.json), ("--timeline", args.timeline)) if on]
    if len(views) > 1:
        raise UsageError(f"choose one of {' and '.join(views)}")
    if args.timeline is not None and args.output is not None:
        raise UsageError("--timeline FILE is the output: drop -o")
    refuse_output_onto(args.output, path)
    if args.timeline is not None:
        refuse_output_onto(args.timeline, path)
    output = open_output(args.output)
    try:
        with open_reader(path, args.trust_db) as reader:
            if args.sql is not None:
                return _run_sql(reader, args, output)
            if args.timeline is not None:
                output.close()
                output = open_timeline(args.timeline)
            query = LifetimeQuery(
                since=args.since, until=args.until, command=args.command, user=args.user,
                pids=frozenset(args.pid) if args.pid else None, failed=args.failed,
                min_cpu=args.min_cpu, sort=args.sort, host=args.host, container=args.container,
            )
            lives = reader.lifetimes(query)
            if not lives and args.timeline is None:
                # Not a header alone on stdout, which reads like a table cut
                # short: nothing there (a script sees no rows), and why here.
                stderr(NOTHING_MATCHED)
            elif args.json:
                from ..render.clock import Clock

                clock = Clock()
                dumps = choose_dumps()
                for life in lives:
                    output.write(dumps(lifetime_fields(life, clock)) + b"\n")
            elif args.tree:
                write_lines(output, _tree_lines(lives, reader.with_ancestors(lives), terminal_width(output)))
            elif args.timeline is not None:
                spans = write_timeline(reader, lives, output, (args.since, args.until))
                status = finish_output(output)
                if not status:
                    stderr(timeline_notice(spans, args.timeline))
                return status
            else:
                write_lines(output, _table_lines(lives, terminal_width(output)))
    except StoreError as exc:
        output.close()
        stderr(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        output.close()
        stderr("interrupted")
        return 130
    return finish_output(output)


#: --sql writes its rows at least this often (bytes, seconds): streamed, never gathered.
SQL_FLUSH_BYTES = 64 * 1024
SQL_FLUSH_SECONDS = 0.1


def _run_sql(reader: StoreReader, args: argparse.Namespace, output: Output) -> int:
    """One statement; Ctrl-C (or SIGTERM) ends even a runaway one, status 130."""
    import signal

    asked: list[int] = []

    def ask(signum: int, _frame: object) -> None:
        asked.append(signum)

    previous = {sig: signal.signal(sig, ask) for sig in (signal.SIGINT, signal.SIGTERM)}
    last_flush = time.monotonic()
    try:
        for line in _sql_lines(reader, args.sql, args.json, lambda: bool(asked)):
            output.write(line)
            if asked:
                raise KeyboardInterrupt
            # Streamed, not gathered: memory stays bounded however many rows
            # come, the first ones show at once, and a closed pipe ends it.
            if output.pending_bytes >= SQL_FLUSH_BYTES or time.monotonic() - last_flush >= SQL_FLUSH_SECONDS:
                output.flush()
                last_flush = time.monotonic()
    except KeyboardInterrupt:
        output.close()
        stderr("interrupted")
        return 130
    except BrokenPipeError:  # `| head`: what it wanted was written
        silence_stdout()
        output.close()
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return finish_output(output)


def _sql_lines(
    reader: StoreReader, statement: str, as_json: bool, stop: Callable[[], bool] | None = None
) -> Iterator[bytes]:
    """Rows as tab-separated text (escaped) or JSON objects; a generator of bytes."""
    from ..escape import escape
    from ..render.jsonl import choose_dumps, put_text

    columns, rows = reader.sql(statement, stop)
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


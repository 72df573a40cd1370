"""Command-line front end.

Kept light at import time (argparse only) so ``procevents --help`` is fast;
everything else is imported when a command runs.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Sequence

TYPE_CHECKING = False  # not typing's: see procevents/__init__.py

if TYPE_CHECKING:
    from typing import Any, NoReturn

    from .connector import Connector
    from .enrich import Enricher
    from .pipeline import Filter, Output, Sink
    from .tree import Proc

PROG = "procevents"
EVENT_TYPES_HELP = "fork,exec,uid,gid,sid,ptrace,comm,coredump,exit"

WATCH_EPILOG = f"""\
commands:
  procevents [options]               watch every process (the default)
  procevents trace [options] -- CMD  run CMD and show it and its descendants
  procevents record [--db PATH]      record events and process lifetimes to SQLite
  procevents query [options]         query the recording (--since 10m --failed --tree)
  procevents replay [options]        show recorded events as the live view does
  procevents top                     live event rates and top spawners
  (procevents COMMAND --help for its options)

examples:
  procevents                         watch every process event on the host
  procevents -e exec,exit            only execs and exits
  procevents --json -D 5             five seconds of JSON Lines
  procevents --tree                  execs drawn under their ancestors
  procevents -p 1234                 pid 1234 and everything below it
  procevents -c '^sleep$' -u root    root's sleep processes
  procevents --json -o events.jsonl  write JSON Lines to a file
  procevents --no-enrich -e exec     the bare, fastest stream
  procevents --json --env -e exec    every exec with its environment
  procevents --capture async         no helper processes (see "argv capture" below)

event types: {EVENT_TYPES_HELP}

JSON keys: event, time (ISO 8601 UTC), timestamp_ns (CLOCK_MONOTONIC), cpu,
seq, pid, tgid, then the linux/cn_proc.h names per type (parent_pid,
child_tgid, ruid, euid, comm, exit_code, ...); exit adds status, signal and
core_dumped; lost has count.  With enrichment (the default) exec adds
cmdline, exe, cwd, ppid, uid, user, comm (and env with --env); fork adds
comm, ppid; exit adds comm, cmdline, duration (seconds), ppid, uid, user;
a thread's fork and exit add thread: true, and its exit's duration is the
thread's own.  cmdline and comm are null when they could not be read
(missing says why): a process is never named after what it ran before its
exec.  Text from other processes that is not valid UTF-8 is shown with
U+FFFD and kept exactly, base64, in <key>_b64.

argv capture: by default (--capture sync) one reader process per CPU, pinned
to it at realtime priority (SCHED_FIFO 10) and woken only by that CPU's
execs, reads each exec's argv, name, exe and cwd while the exec'ing process
is held, so a program that lives 30 us is named too.  Without CAP_SYS_NICE
(or an RLIMIT_RTPRIO) the readers run at normal priority and the startup
notice says so; --capture async reads /proc after the event instead.

At exit a summary goes to stderr: events received per type and events lost.
Ctrl-C, SIGTERM and SIGHUP end it cleanly; the kernel is always told to stop
reporting (PROC_CN_MCAST_IGNORE).
"""

TRACE_EPILOG = """\
examples:
  procevents trace -- make -j4
  procevents trace --json -o build.jsonl -- ./build.sh
  procevents trace --flat -- sh -c 'ls / >/dev/null; sh -c "exit 3"; exit 5'

The summary on stderr counts the processes started, those that failed
(non-zero status) or were killed by a signal, and lists the slowest.
procevents exits with CMD's status (128+N if a signal N killed it).
Ctrl-C, SIGTERM and SIGHUP are passed on to CMD.
"""


class UsageError(Exception):
    """A bad option value: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: error: {message} (see {self.prog} --help)\n")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0: {text!r}")
    return value


def _positive_int(text: str, what: str = "a whole number") -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0: {text!r}")
    return value


def _pid(text: str) -> int:
    return _positive_int(text, "a pid")


def _size(text: str) -> int:
    units = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
    body = text.strip().lower().removesuffix("ib").removesuffix("b")
    unit = body[-1:] if body[-1:] in units else ""
    try:
        value = int(float(body[: len(body) - len(unit)]) * units[unit])
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 64M)") from None
    if value <= 0 or value >= 2**31:
        raise argparse.ArgumentTypeError(f"size out of range: {text!r}")
    return value


def _event_list(text: str) -> frozenset[str]:
    from .events import parse_event_names

    try:
        return parse_event_names(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _regex(text: str) -> Any:
    import re

    try:
        return re.compile(text)
    except re.error as exc:
        raise argparse.ArgumentTypeError(f"bad regular expression {text!r}: {exc}") from None


def _user(text: str) -> int:
    from .enrich import Users

    try:
        return Users().uid(text)
    except KeyError:
        raise argparse.ArgumentTypeError(f"no such user: {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Watch every process on this Linux host as it is born, changes and dies, "
        "through the kernel's process events connector.",
        epilog=WATCH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    out = parser.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="one JSON object per line")
    out.add_argument("--tree", action="store_true", help="execs indented under their ancestors, with exits")
    _add_output_options(out)
    sel = parser.add_argument_group("selection")
    sel.add_argument(
        "-e", "--events", metavar="LIST", type=_event_list,
        help=f"comma-separated event types to show (default: all): {EVENT_TYPES_HELP}",
    )
    sel.add_argument(
        "-p", "--pid", metavar="PID", type=_pid, action="append",
        help="only this process and its descendants, running or started later (repeatable)",
    )
    sel.add_argument("-u", "--user", metavar="NAME|UID", type=_user, help="only processes of this user")
    sel.add_argument(
        "-c", "--command", metavar="REGEX", type=_regex,
        help="only processes whose comm, exe or argv[0] matches REGEX",
    )
    stop = parser.add_argument_group("stopping")
    stop.add_argument("-D", "--duration", metavar="SECONDS", type=_positive_float, help="stop after SECONDS")
    stop.add_argument("-n", "--count", metavar="N", type=_positive_int, help="stop after N events")
    tune = parser.add_argument_group("capture and tuning")
    tune.add_argument(
        "--no-enrich", action="store_true",
        help="no /proc reads: bare kernel events, the fastest stream (no -u/-c/--tree)",
    )
    _add_capture_options(tune)
    _add_tuning_options(tune)
    tune.add_argument(
        "--no-kernel-filter", action="store_true",
        help="filter event types in userspace only (keeps per-CPU loss detection exact)",
    )
    report = parser.add_argument_group("statistics and metrics")
    report.add_argument(
        "-S", "--stats", action="store_true",
        help="at exit (and on SIGUSR1) print events per type and the top commands to stderr",
    )
    report.add_argument(
        "--metrics", metavar="[ADDR:]PORT", type=_metrics_address,
        help="serve Prometheus metrics on ADDR:PORT (ADDR 127.0.0.1 unless given; needs prometheus_client)",
    )
    return parser


def _metrics_address(text: str) -> tuple[str, int]:
    from .commands_store import metrics_address

    return metrics_address(text)


def _add_output_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument("-o", "--output", metavar="FILE", help="write events to FILE (appending) instead of stdout")
    group.add_argument("-q", "--quiet", action="store_true", help="no startup notice or summary on stderr")


def _add_tuning_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--buffer", metavar="SIZE", type=_size, default=None,
        help="socket receive buffer to request, e.g. 64M (default 64M; the kernel doubles it)",
    )


def _add_capture_options(group: argparse._ArgumentGroup, *, env: bool = True, threads: bool = True) -> None:
    group.add_argument(
        "--capture", choices=("sync", "async"), default="sync",
        help="sync (default): one realtime reader per CPU reads each exec's argv while the process is "
        "held, so even a 30 us program is named; async: read /proc after the event, as forkstat does "
        "(no helper processes; short-lived programs lose their argv)",
    )
    if env:
        group.add_argument(
            "--env", action="store_true",
            help="capture each exec's environment (JSON key env, at most 32 KiB per process)",
        )
    if threads:
        group.add_argument("--no-threads", action="store_true", help="hide events of threads (thread fork and exit)")


def _make_enricher(args: argparse.Namespace, *, paths: bool = True, **table_options: Any) -> Enricher:
    """The enricher for a command with capture options; its per-CPU readers
    (``--capture sync``) are created here and started by the main loop.
    ``paths``: the output or a filter uses each exec's exe and cwd (else
    the readers spare those two /proc lookups per exec)."""
    from .capture import ENV_LIMIT, ExecCapture
    from .enrich import Enricher

    env_limit = ENV_LIMIT if getattr(args, "env", False) else 0
    capture = ExecCapture(env_limit=env_limit, paths=paths) if args.capture == "sync" else None
    if table_options:
        from .procfs import ProcFS
        from .tree import ProcessTable

        return Enricher(ProcessTable(ProcFS(), **table_options), capture=capture, env_limit=env_limit)
    return Enricher(capture=capture, env_limit=env_limit)


def build_trace_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=f"{PROG} trace",
        usage=f"{PROG} trace [options] -- CMD [ARGS...]",
        description="Run CMD and show it and every process it starts, as a tree.",
        epilog=TRACE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    out = parser.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="one JSON object per line instead of the tree")
    out.add_argument("--flat", action="store_true", help="one text line per event instead of the tree")
    _add_output_options(out)
    out.add_argument("--slowest", metavar="N", type=int, default=5, help="list the N slowest processes (default 5)")
    tune = parser.add_argument_group("capture and tuning")
    _add_capture_options(tune)
    _add_tuning_options(tune)
    parser.add_argument("command", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def _stderr(message: str) -> None:
    try:
        sys.stderr.write(f"{PROG}: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _describe_subscription(conn: Connector) -> str:
    wanted = "all events" if conn.wanted is None else ",".join(sorted(conn.wanted))
    where = "kernel filter" if conn.kernel_filtered else "all events subscribed"
    size = conn.rcvbuf
    shown = f"{size // 1024**2} MiB" if size >= 1024**2 else f"{size // 1024} KiB"
    return f"listening for {wanted} ({where}, receive buffer {shown})"


def _silence_stdout() -> None:
    # Further writes (including the interpreter's final flush) must not raise.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except OSError:
        pass


def _open_output(path: str | None) -> Output:
    from .pipeline import Output

    try:
        return Output.open(path)
    except OSError as exc:
        raise UsageError(f"cannot open {path}: {exc.strerror}") from None


def _ancestor_depth(enricher: Enricher, roots: set[int] | None) -> Callable[[Proc], int]:
    """Indentation for the tree: ancestors up to a root (or to init)."""

    def depth(proc: Proc) -> int:
        level = 0
        if roots is not None and proc.pid in roots:
            return 0
        for ancestor in enricher.table.ancestors(proc.pid):
            if roots is not None:
                if ancestor.pid in roots:
                    return level + 1
            elif ancestor.pid <= 2:
                return level
            level += 1
        return level

    return depth


def _run_pipeline(
    conn: Connector,
    sink: Sink,
    output: Output,
    *,
    enricher: Enricher | None,
    filters: list[Filter],
    count: int | None,
    duration: float | None,
    quiet: bool,
    stop: Callable[[], bool] | None = None,
    observers: Sequence[Callable[..., None]] = (),
    after: Callable[[], None] | None = None,
    own_signals: bool = True,
    tick: float | None = None,
    linger: float | None = None,
) -> int:
    """Shared main loop: open, run, and close on every way out.

    With ``own_signals`` (the default), SIGINT, SIGTERM and SIGHUP ask the
    loop to stop between two batches, so output lines are never torn; a
    second Ctrl-C aborts the final drain.

    Events gather for ``linger`` seconds (default: as suits ``output``)
    before each read, unless /proc is read after the event (async capture),
    where every moment counts.  ``stop`` is asked after every batch and
    every ``tick`` seconds; with no tick an idle loop sleeps until an event
    or a signal.
    """
    from .connector import ConnectorError, Terminated
    from .pipeline import Pipeline

    pipeline = Pipeline(
        conn, sink, enricher=enricher, filters=filters, count=count, observers=observers, output=output
    )
    status = 0
    stopper = _StopOnSignal() if own_signals else None
    if stopper is not None:
        outer_stop = stop

        def stop() -> bool:
            return stopper.requested or (outer_stop is not None and outer_stop())

    capture = enricher.capture if enricher is not None else None
    try:
        try:
            if stopper is not None:
                stopper.install()
            if capture is not None and not capture.started:
                capture.start()
            if conn.closed:
                conn.open()
            races = enricher is not None and (capture is None or not capture.active)
            pipeline.linger = 0.0 if races else (output.linger if linger is None else linger)
            if stopper is not None:
                conn.wake_on(stopper.wake_fd)
            if not quiet:
                # "listening" last: it tells a reader of stderr that we are ready.
                if capture is not None:
                    _stderr(capture.describe())
                elif enricher is not None:
                    _stderr("argv capture: async (--capture async)")
                _stderr(_describe_subscription(conn))
            try:
                pipeline.run(duration=duration, stop=stop, tick=tick)
            except (KeyboardInterrupt, Terminated):
                pass
            # What the kernel queued before we stopped is still shown: an
            # event is never dropped silently on the way out.  A second
            # Ctrl-C skips this.
            pipeline.finish()
        except ConnectorError as exc:
            _stderr(f"error: {exc.strerror or exc}")
            quiet = True  # nothing was watched: no summary
            return 1
        except (KeyboardInterrupt, Terminated):
            pass
        except BrokenPipeError:
            # The reader went away (e.g. `| head`): stop quietly.
            _silence_stdout()
        except OSError as exc:
            _stderr(f"error: writing output: {exc.strerror or exc}")
            status = 1
    finally:
        conn.wake_on(None)
        conn.close()
        if capture is not None:
            capture.close()
        if stopper is not None:
            stopper.uninstall()
        try:
            output.flush()
        except BrokenPipeError:
            _silence_stdout()
        except OSError as exc:
            _stderr(f"error: writing output: {exc.strerror or exc}")
            status = 1
        output.close()
        if conn.malformed:
            _stderr(f"skipped {conn.malformed} malformed datagrams (last: {conn.last_decode_error})")
        if after is not None:
            after()
        if not quiet:
            _stderr(pipeline.summary.line())
    return status


class _StopOnSignal:
    """SIGINT/SIGTERM/SIGHUP set a flag that the loop checks between batches,
    so output lines are never torn; the signal also writes to ``wake_fd``
    (signal.set_wakeup_fd), which ends the loop's wait at once.  A second
    Ctrl-C raises KeyboardInterrupt to skip the final drain."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}
        self.wake_fd: int | None = None
        self._wake_write = -1
        self._previous_wakeup = -1

    def _handle(self, signum: int, _frame: object) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def install(self) -> None:
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        read_fd, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.wake_fd = read_fd
        self._previous_wakeup = signal.set_wakeup_fd(self._wake_write, warn_on_full_buffer=False)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        if self.wake_fd is not None:
            signal.set_wakeup_fd(self._previous_wakeup)
            os.close(self.wake_fd)
            os.close(self._wake_write)
            self.wake_fd = None


def run_watch(args: argparse.Namespace) -> int:
    from .connector import DEFAULT_RCVBUF, Connector
    from .filters import CommandFilter, DescendantFilter, EventTypeFilter, UserFilter, no_threads
    from .pipeline import JsonSink, TextSink, TreeSink

    enrich = not args.no_enrich
    if not enrich and (args.user is not None or args.command is not None or args.tree or args.env):
        raise UsageError("-u, -c, --tree and --env need enrichment; drop --no-enrich")
    if args.tree and args.json:
        raise UsageError("choose one of --tree and --json")
    # The table and the pid follower need every fork and exit, so with
    # them the kernel sends everything and -e filters here.
    needs_all = enrich or args.pid
    conn = Connector(
        None if needs_all else args.events,
        rcvbuf=args.buffer or DEFAULT_RCVBUF,
        kernel_filter=not args.no_kernel_filter,
    )
    # Only JSON shows exe and cwd; -c matches exe too.
    enricher = _make_enricher(args, paths=args.json or args.command is not None) if enrich else None
    filters: list[Filter] = []
    if args.no_threads:
        filters.append(no_threads)
    roots: set[int] | None = None
    if args.pid:
        roots = set(args.pid)
        missing = sorted(pid for pid in roots if not os.path.exists(f"/proc/{pid}"))
        if missing:
            raise UsageError(f"no such process: {', '.join(map(str, missing))}")
        followed = enricher.table.descendants(roots) if enricher is not None else roots
        filters.append(DescendantFilter(followed))
    if needs_all and args.events:
        filters.append(EventTypeFilter(args.events))
    if args.user is not None:
        filters.append(UserFilter(args.user))
    if args.command is not None:
        filters.append(CommandFilter(args.command))
    reporting = None
    if args.stats or args.metrics is not None:
        from .commands_store import Reporting

        reporting = Reporting.for_watch(args, conn, enricher)
        reporting.start()
    output = _open_output(args.output)
    sink: Sink
    if args.json:
        sink = JsonSink(output)
    elif args.tree:
        assert enricher is not None
        sink = TreeSink(output, _ancestor_depth(enricher, roots))
    else:
        sink = TextSink(output)
    try:
        return _run_pipeline(
            conn, sink, output, enricher=enricher, filters=filters, count=args.count,
            duration=args.duration, quiet=args.quiet,
            observers=reporting.observers if reporting else (), after=reporting.after if reporting else None,
        )
    finally:
        if reporting is not None:
            reporting.close()


class TraceReport:
    """Collects what the trace summary needs from the traced processes."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.root_exited = False
        self.started = 0
        self.failed = 0
        self.killed = 0
        self.finished: list[tuple[float, str, str]] = []

    def observe(self, event: Any, proc: Proc | None, info: dict[str, Any]) -> None:
        from .events import Exit, Fork
        from .render.text import exit_description, format_command

        if type(event) is Fork and event.child_pid == event.child_tgid:
            self.started += 1
        elif type(event) is Exit and event.pid == event.tgid:
            if event.signal is not None:
                self.killed += 1
            elif event.status:
                self.failed += 1
            duration = info.get("duration")
            if duration is not None:
                self.finished.append((duration, format_command(info), exit_description(event.exit_code)))
            if event.tgid == self.root:
                self.root_exited = True

    def lines(self, slowest: int) -> list[str]:
        from .render.text import format_duration

        out = [
            f"{self.started} processes started, {self.failed} failed, {self.killed} killed by a signal"
        ]
        ranked = sorted(self.finished, key=lambda item: item[0], reverse=True)[: max(0, slowest)]
        if ranked:
            out.append("slowest:")
            width = max(len(format_duration(d)) for d, _, _ in ranked)
            how_width = max(len(how) for _, _, how in ranked)
            for duration, command, how in ranked:
                out.append(f"  {format_duration(duration):>{width}}  {how:<{how_width}}  {command}")
        return out


def run_trace(args: argparse.Namespace) -> int:
    import subprocess
    import time

    from .connector import DEFAULT_RCVBUF, Connector, ConnectorError
    from .filters import DescendantFilter, no_threads
    from .pipeline import JsonSink, TextSink, TreeSink

    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        raise UsageError("no command given: procevents trace [options] -- CMD [ARGS...]")
    if args.json and args.flat:
        raise UsageError("choose one of --json and --flat")

    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, _frame: object) -> None:
        if signum == signal.SIGINT and _terminal_signalled_group():
            return  # Ctrl-C reached CMD itself, as part of the foreground group
        if child is not None and child.poll() is None:
            try:
                os.kill(child.pid, signum)
            except ProcessLookupError:
                pass

    forwarded = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, forward) for sig in forwarded}
    try:
        conn = Connector(None, rcvbuf=args.buffer or DEFAULT_RCVBUF)
        enricher = _make_enricher(args, paths=args.json, seed=False)
        capture = enricher.capture
        try:
            conn.open()  # subscribe first, so no event of CMD is missed
        except ConnectorError as exc:
            _stderr(f"error: {exc.strerror or exc}")
            return 1
        try:
            if capture is not None:
                capture.start()  # before CMD: every exec of it is read while held
            output = _open_output(args.output)
        except BaseException:
            conn.close()
            if capture is not None:
                capture.close()
            raise
        try:
            child = subprocess.Popen(command)
        except OSError as exc:
            conn.close()
            if capture is not None:
                capture.close()
            output.close()
            _stderr(f"error: cannot run {command[0]}: {exc.strerror or exc}")
            return 127 if isinstance(exc, FileNotFoundError) else 126
        enricher.launched[child.pid] = command
        report = TraceReport(child.pid)
        filters: list[Filter] = [DescendantFilter({child.pid})]
        if args.no_threads:
            filters.append(no_threads)
        sink: Sink
        if args.json:
            sink = JsonSink(output)
        elif args.flat:
            sink = TextSink(output)
        else:
            sink = TreeSink(output, _ancestor_depth(enricher, {child.pid}))
        exited_at: list[float] = []
        traced = child

        def finished() -> bool:
            # Stop once CMD's own exit event is shown, or shortly after it
            # was reaped if that event was lost.
            if traced.poll() is None:
                return False
            if report.root_exited:
                return True
            if not exited_at:
                exited_at.append(time.monotonic())
            return time.monotonic() - exited_at[0] > 1.0

        def summary() -> None:
            if not args.quiet:
                for line in report.lines(args.slowest):
                    _stderr(line)

        status = _run_pipeline(
            conn, sink, output, enricher=enricher, filters=filters, count=None, duration=None,
            quiet=True, stop=finished, observers=[report.observe], after=summary, own_signals=False, tick=0.2,
        )
        if status:
            return status
        returncode = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - returncode if returncode < 0 else returncode


def _terminal_signalled_group() -> bool:
    """True when we are in the terminal's foreground process group, so a
    Ctrl-C was delivered by the terminal to every process of the group."""
    try:
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (OSError, ValueError, AttributeError):
        return False


def _store_command(name: str) -> tuple[Callable[[], argparse.ArgumentParser], Callable[[argparse.Namespace], int]]:
    """record, query, replay, top: parser and runner from commands_store, imported on use."""

    def make_parser() -> argparse.ArgumentParser:
        from . import commands_store

        parser: argparse.ArgumentParser = getattr(commands_store, f"build_{name}_parser")()
        return parser

    def run(args: argparse.Namespace) -> int:
        from . import commands_store

        status: int = getattr(commands_store, f"run_{name}")(args)
        return status

    return make_parser, run


COMMANDS: dict[str, tuple[Callable[[], argparse.ArgumentParser], Callable[[argparse.Namespace], int]]] = {
    "trace": (build_trace_parser, run_trace),
    **{name: _store_command(name) for name in ("record", "query", "replay", "top")},
}


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        if args_list and args_list[0] in COMMANDS:
            make_parser, run = COMMANDS[args_list[0]]
            return run(make_parser().parse_args(args_list[1:]))
        return run_watch(build_parser().parse_args(args_list))
    except UsageError as exc:
        _stderr(f"error: {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())

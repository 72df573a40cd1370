"""``procevents trace -- CMD``: run CMD and show its process tree."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..costs import exit_cpu
from ..exits import STOPPING_SIGNALS
from ..stats import LifecycleCounter
from .options import (
    PROG,
    Parser,
    UsageError,
    add_capture_options,
    add_output_options,
    add_tuning_options,
    make_connector,
    make_enricher,
)
from .runner import ancestor_lineage, open_costs, open_output, run_pipeline, stderr

if TYPE_CHECKING:
    from ..enrich import Enricher
    from ..events import Event, Exit
    from ..pipeline import Filter
    from ..proctable import Proc
    from ..store import StoreSink, StoreWriter

TRACE_EPILOG = """\
examples:
  procevents trace -- make -j4
  procevents trace --json -o build.jsonl -- ./build.sh
  procevents trace --flat -- sh -c 'ls / >/dev/null; sh -c "exit 3"; exit 5'
  procevents trace --timeline build.json -- make -j4
                     then open build.json at ui.perfetto.dev ("Open trace file")

The summary on stderr counts the processes started, those that failed
(non-zero status) or were killed by a signal, and lists the slowest.
procevents exits with CMD's status (128+N if a signal N killed it).
Ctrl-C, SIGTERM and SIGHUP are passed on to CMD.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=f"{PROG} trace",
        usage=f"{PROG} trace [options] -- CMD [ARGS...]",
        description="Run CMD and show it and every process it starts, as a tree.",
        epilog=TRACE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    out = parser.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="one JSON object per line instead of the tree")
    out.add_argument("--flat", action="store_true", help="one text line per event instead of the tree")
    add_output_options(out)
    out.add_argument("--slowest", metavar="N", type=int, default=5, help="list the N slowest processes (default 5)")
    out.add_argument(
        "--timeline", metavar="FILE",
        help="also write a timeline of the run (Chrome trace JSON) to FILE for ui.perfetto.dev or chrome://tracing",
    )
    tune = parser.add_argument_group("capture and tuning")
    add_capture_options(tune)
    add_tuning_options(tune)
    parser.add_argument("command", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


class TraceReport(LifecycleCounter):
    """Collects what the trace summary needs from the traced processes."""

    def __init__(self, root: int) -> None:
        super().__init__()
        self.root = root
        self.root_exited = False
        self.started = 0
        self.failed = 0
        self.killed = 0
        self.finished: list[tuple[float, str, str]] = []
        #: (CPU seconds, peak RSS bytes, command) of processes with a taskstats record.
        self.costs: list[tuple[float, int | None, str]] = []

    def forked(self, info: Mapping[str, Any]) -> None:
        self.started += 1

    def exited(self, event: Exit, info: Mapping[str, Any]) -> None:
        from ..render.text import exit_description, format_command

        if event.signal is not None:
            self.killed += 1
        elif event.status:
            self.failed += 1
        duration = info.get("duration")
        if duration is not None:
            self.finished.append((duration, format_command(info), exit_description(event.exit_code)))
        cpu = exit_cpu(info)
        if cpu is not None:
            self.costs.append((cpu, info.get("max_rss"), format_command(info)))
        if event.tgid == self.root:
            self.root_exited = True

    def lines(self, slowest: int) -> list[str]:
        from ..render.text import format_duration
        from ..stats import counted

        out = [
            f"{counted(self.started, 'process', 'processes')} started, {self.failed} failed, "
            f"{self.killed} killed by a signal"
        ]
        ranked = sorted(self.finished, key=lambda item: item[0], reverse=True)[: max(0, slowest)]
        if ranked:
            out.append("slowest:")
            width = max(len(format_duration(d)) for d, _, _ in ranked)
            how_width = max(len(how) for _, _, how in ranked)
            for duration, command, how in ranked:
                out.append(f"  {format_duration(duration):>{width}}  {how:<{how_width}}  {command}")
        heaviest = sorted(self.costs, key=lambda item: item[0], reverse=True)[: max(0, slowest)]
        if heaviest:
            from ..render.text import format_bytes

            out.append("most CPU (user+system, peak memory):")
            cpus = [format_duration(cpu) for cpu, _, _ in heaviest]
            rsss = ["?" if rss is None else format_bytes(rss) for _, rss, _ in heaviest]
            cpu_width, rss_width = max(map(len, cpus)), max(map(len, rsss))
            for cpu, rss, (_, _, command) in zip(cpus, rsss, heaviest, strict=True):
                out.append(f"  {cpu:>{cpu_width}}  {rss:>{rss_width}}  {command}")
        return out


def run(args: argparse.Namespace) -> int:
    import subprocess
    import time

    from ..connector import ConnectorError
    from ..filters import DescendantFilter, no_threads
    from ..pipeline import choose_sink

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

    report: TraceReport | None = None

    def progress(_signum: int, _frame: object) -> None:
        if report is not None:
            for line in report.lines(args.slowest):
                stderr(line)

    # Signals that would end us go to CMD (as strace does); we end with it.
    previous = {sig: signal.signal(sig, forward) for sig in STOPPING_SIGNALS}
    previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, progress)
    timeline: Timeline | None = None
    try:
        if args.timeline is not None:
            timeline = Timeline(args.timeline)  # a bad FILE is said before CMD runs
        conn = make_connector(args)
        # exe and cwd: shown in JSON, and in the timeline's details.
        enricher = make_enricher(args, paths=args.json or timeline is not None, seed=False)
        capture = enricher.capture
        try:
            conn.open()  # subscribe first, so no event of CMD is missed
        except ConnectorError as exc:
            stderr(f"error: {exc.strerror or exc}")
            return 1
        try:
            if capture is not None:
                capture.start()  # before CMD: every exec of it is read while held
            if enricher.costs is not None:
                # Before CMD too: the kernel sends no taskstats record of a
                # task that exits before the registration, so CMD's first
                # exits would have no figures.  Where taskstats cannot be
                # used, trace goes on without them, as run_pipeline would.
                open_costs(enricher)
            output = open_output(args.output)
        except BaseException:
            conn.close()
            if enricher.costs is not None:
                enricher.costs.close()
            if capture is not None:
                capture.close()
            raise
        try:
            child = subprocess.Popen(command)
        except OSError as exc:
            conn.close()
            if enricher.costs is not None:
                enricher.costs.close()
            if capture is not None:
                capture.close()
            output.close()
            stderr(f"error: cannot run {command[0]}: {exc.strerror or exc}")
            return 127 if isinstance(exc, FileNotFoundError) else 126
        enricher.launched[child.pid] = command
        report = TraceReport(child.pid)
        observers: list[Callable[[Event, Proc | None, Mapping[str, Any]], None]] = [report]
        if timeline is not None:
            timeline.start(enricher)
            observers.append(timeline.observe)
        filters: list[Filter] = [DescendantFilter({child.pid})]
        if args.no_threads:
            filters.append(no_threads)
        lineage = None if args.flat else ancestor_lineage(enricher, {child.pid})
        sink = choose_sink(output, json=args.json, lineage=lineage)
        exited_at: list[float] = []
        traced = child

        def finished() -> bool:
            # Stop once CMD's own exit event is shown, or shortly after it
            # was reaped if that event was lost.
            if timeline is not None:
                timeline.flush()
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
                    stderr(line)

        status = run_pipeline(
            conn, sink, output, enricher=enricher, filters=filters, count=None, duration=None,
            quiet=True, stop=finished, observers=observers, after=summary, own_signals=False, tick=0.2,
        )
        if timeline is not None:
            status = timeline.finish(child.pid, quiet=args.quiet) or status
        if status:
            return status
        returncode = child.wait()
    finally:
        if timeline is not None:
            timeline.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - returncode if returncode < 0 else returncode


class Timeline:
    """``--timeline FILE``: the run is recorded to a private, temporary
    database as ``record`` would, and the timeline made from it as ``query
    --timeline`` makes one."""

    def __init__(self, path: str) -> None:
        from .query import open_timeline

        self.path = path
        self.output = open_timeline(path)
        self.directory: str | None = None
        self.writer: StoreWriter | None = None
        self.sink: StoreSink | None = None

    def start(self, enricher: Enricher) -> None:
        import tempfile

        from .. import __version__
        from ..store import StoreSink, StoreWriter

        self.directory = tempfile.mkdtemp(prefix="procevents-trace-")
        self.writer = StoreWriter(os.path.join(self.directory, "trace.db"), version=__version__)
        self.sink = StoreSink(self.writer, enricher.table.get)

    def observe(self, event: Event, proc: Proc | None, info: Mapping[str, Any]) -> None:
        assert self.sink is not None
        self.sink.emit(event, proc, info)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def finish(self, root: int, *, quiet: bool) -> int:
        """Write the timeline of ``root`` and its descendants; 1 (said) if that failed."""
        from ..store import LifetimeQuery, StoreError
        from .query import open_reader, timeline_notice, write_timeline
        from .runner import finish_output

        if self.writer is None:
            return 0
        try:
            self.writer.close()
            with open_reader(self.writer.path) as reader:
                lives = reader.lifetimes(LifetimeQuery(pids=frozenset({root})))
                spans = write_timeline(reader, lives, self.output)
        except (StoreError, OSError) as exc:
            stderr(f"error: timeline: {exc}")
            self.output.close()
            return 1
        status = finish_output(self.output)
        if not status and not quiet:
            stderr(timeline_notice(spans, self.path))
        return status

    def close(self) -> None:
        import shutil

        self.output.close()
        if self.writer is not None and not self.writer.closed:
            self.writer.close()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None


def _terminal_signalled_group() -> bool:
    """True when we are in the terminal's foreground process group, so a
    Ctrl-C was delivered by the terminal to every process of the group."""
    try:
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (OSError, ValueError, AttributeError):
        return False


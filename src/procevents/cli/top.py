"""``procevents top``: live event rates and the top spawners (needs rich)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .options import (
    PROG,
    Parser,
    add_capture_options,
    add_duration_option,
    add_keep_running_option,
    add_pid_option,
    add_quiet_option,
    add_tuning_options,
    check_pids,
    make_connector,
    make_enricher,
    positive_float,
    positive_int,
)
from .runner import follow_pids, following, run_pipeline, stderr

if TYPE_CHECKING:
    from ..events import Event
    from ..pipeline import Filter
    from ..proctable import Proc

TOP_EPILOG = """\
Rates are per second over the last --window seconds (5 by default; less
just after the start), the totals since the start.  A fork counts for the
command that forked, an exec for the program started, a failure (non-zero
status or a signal) for the command that exited.  q (or Ctrl-C) quits; the
terminal's settings are restored however it ends.  With -p it ends by
itself once every followed process has exited (--keep-running: it goes on).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=f"{PROG} top",
        description="A live view of process event rates and the top spawners (needs rich).",
        epilog=TOP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-i", "--interval", metavar="SECONDS", type=positive_float, default=1.0,
        help="refresh every SECONDS (default 1)",
    )
    parser.add_argument(
        "-r", "--rows", metavar="N", type=positive_int, default=15, help="show the top N commands (default 15)"
    )
    parser.add_argument(
        "-w", "--window", metavar="SECONDS", type=positive_float, default=5.0,
        help="rates over the last SECONDS (default 5)",
    )
    add_pid_option(parser, "only this process and its descendants (repeatable)")
    add_keep_running_option(parser)
    add_duration_option(parser)
    add_quiet_option(parser)
    tune = parser.add_argument_group("capture and tuning")
    add_capture_options(tune, env=False, threads=False)
    add_tuning_options(tune)
    return parser


class Keys:
    """Keys pressed on the terminal that runs top: its input is put in
    cbreak mode (one key at a time, not echoed; Ctrl-C is still a signal)
    and restored by :meth:`close`, on every way out.  While the main loop
    does not handle the ending signals (before it starts, after it ends),
    one of them restores the terminal first and then ends top as it would
    have (nothing is subscribed then)."""

    def __init__(self) -> None:
        import signal
        import termios
        import tty

        from ..exits import STOPPING_SIGNALS

        self.fd = -1
        self.saved: list[Any] | None = None
        self.previous: dict[int, Any] = {}
        try:
            fd = sys.stdin.fileno()
            if os.isatty(fd):
                self.saved = termios.tcgetattr(fd)
                self.previous = {sig: signal.signal(sig, self._ended) for sig in STOPPING_SIGNALS}
                tty.setcbreak(fd)
                self.fd = fd
        except (OSError, ValueError, termios.error):
            self.close()

    def _ended(self, signum: int, _frame: object) -> None:
        import signal

        self.close()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    @property
    def active(self) -> bool:
        return self.fd >= 0

    def quit(self) -> bool:
        """Was q pressed since the last call?"""
        import select

        if self.fd < 0 or not select.select([self.fd], [], [], 0)[0]:
            return False
        try:
            data = os.read(self.fd, 64)
        except OSError:
            return False
        return b"q" in data or b"Q" in data

    def close(self) -> None:
        import signal
        import termios

        if self.saved is not None:
            try:
                termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, self.saved)
            except (OSError, ValueError, termios.error):
                pass
            self.saved = None
            self.fd = -1
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}


class _NullSink:
    def emit(self, event: Event, proc: Proc | None, info: Mapping[str, Any]) -> bool:
        return True


def run(args: argparse.Namespace) -> int:
    try:
        from rich.console import Console
        from rich.live import Live
    except ImportError:
        stderr("error: procevents top needs the rich package: pip install 'procevents[top]'")
        return 1

    from ..pipeline import Output
    from ..stats import Summary
    from ..top import TopModel, render

    roots = check_pids(args.pid)
    conn = make_connector(args)
    enricher = make_enricher(args, paths=False)  # top shows neither exe nor cwd
    filters: list[Filter] = []
    summary = Summary()
    end = None
    if roots is not None:
        follow, end = follow_pids(roots, enricher, keep_running=args.keep_running)
        filters.append(follow)
    model = TopModel(enricher.table)
    output = Output(sys.stdout.buffer)
    rows, interval, window = args.rows, args.interval, max(args.window, args.interval)
    keys = Keys()
    try:
        first = render(model.frame(time.monotonic(), rows, window=window), keys=keys.active)
        with Live(first, console=Console(), auto_refresh=False) as live:
            next_at = time.monotonic() + interval

            def redraw() -> None:
                nonlocal next_at
                now = time.monotonic()
                if now >= next_at:
                    live.update(render(model.frame(now, rows, window=window), keys=keys.active), refresh=True)
                    next_at = now + interval

            def stop() -> bool:
                return keys.quit() or (end is not None and end())

            status = run_pipeline(
                conn, _NullSink(), output, enricher=enricher, filters=filters, count=None,
                duration=args.duration, quiet=args.quiet, stop=stop, on_batch=redraw, observers=[model],
                tick=min(0.2, interval),
                selection=following(roots, args.keep_running), summary=summary,
            )
            # The last frame stays (and is all a pipe or file gets).
            live.update(render(model.frame(time.monotonic(), rows, window=window)), refresh=True)
    finally:
        keys.close()
    return status


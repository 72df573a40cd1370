"""``procevents top``: live event rates and the top spawners (needs rich)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .options import (
    PROG,
    Parser,
    add_capture_options,
    add_duration_option,
    add_pid_option,
    add_quiet_option,
    add_tuning_options,
    check_pids,
    make_connector,
    make_enricher,
    positive_float,
    positive_int,
)
from .runner import run_pipeline, stderr

if TYPE_CHECKING:
    from ..events import Event
    from ..pipeline import Filter
    from ..proctable import Proc

TOP_EPILOG = """\
Rates are per second over the last refresh interval.  A fork counts for the
command that forked, an exec for the program started, a failure (non-zero
status or a signal) for the command that exited.  q or Ctrl-C to quit.
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
    add_pid_option(parser, "only this process and its descendants (repeatable)")
    add_duration_option(parser)
    add_quiet_option(parser)
    tune = parser.add_argument_group("capture and tuning")
    add_capture_options(tune, env=False, threads=False)
    add_tuning_options(tune)
    return parser


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

    from ..filters import DescendantFilter
    from ..pipeline import Output
    from ..top import TopModel, render

    roots = check_pids(args.pid)
    conn = make_connector(args)
    enricher = make_enricher(args, paths=False)  # top shows neither exe nor cwd
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

        status = run_pipeline(
            conn, _NullSink(), output, enricher=enricher, filters=filters, count=None, duration=args.duration,
            quiet=args.quiet, stop=refresh, observers=[model], tick=min(0.2, interval),
        )
        # The last frame stays (and is all a pipe or file gets): whole-run averages.
        live.update(render(model.frame(time.monotonic(), rows, overall=True), overall=True), refresh=True)
    return status


"""``procevents collect``: every host's shipped recording into one store."""

from __future__ import annotations

import argparse

from .options import PROG, Parser, add_db_option, add_duration_option, add_nats_options, add_quiet_option, nats_config
from .runner import stderr

COLLECT_EPILOG = """\
examples:
  procevents collect --nats nats://127.0.0.1:4222 --db /var/lib/procevents/central.db
  procevents query --db /var/lib/procevents/central.db --host web-1 --failed --tree

Reads the JetStream stream that procevents record --nats fills (created if
missing) with a durable consumer, writes each fetched batch in one SQLite
transaction and acknowledges it only once committed: a collector stopped or
killed at any point goes on where it was, and rows it already has are
ignored.  Every row keeps its host: query --host NAME, replay and --sql work
on the result as on a recorder's own file.  The host is the subject's
(procevents.HOST.KIND): a message whose payload says another host, or a
value that does not fit its column, is refused in one line and not
delivered again.
"""


def build_parser() -> argparse.ArgumentParser:
    from ..fleet import DEFAULT_DURABLE

    parser = Parser(
        prog=f"{PROG} collect",
        description="Collect the recordings many hosts ship to NATS JetStream into one SQLite database.",
        epilog=COLLECT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_db_option(parser, trust=False)  # a central store is the collector's own: no way round the checks
    parser.add_argument(
        "--durable", metavar="NAME", default=DEFAULT_DURABLE,
        help=f"the durable consumer's name: where this collector is in the stream (default {DEFAULT_DURABLE})",
    )
    add_duration_option(parser)
    add_quiet_option(parser)
    add_nats_options(parser.add_argument_group("NATS JetStream (needs nats-py)"), recorder=False)
    return parser


def run(args: argparse.Namespace) -> int:
    import asyncio
    import re

    from .. import __version__
    from ..fleet.collector import Collector
    from ..store import StoreError, default_db_path
    from .options import UsageError

    config = nats_config(args, required=True)
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,255}", args.durable):
        raise UsageError(f"not a consumer name: {args.durable!r} (letters, digits, '-', '_')")
    path = args.db or default_db_path()
    notes = (lambda _text: None) if args.quiet else stderr
    try:
        collector = Collector(path, config, durable=args.durable, version=__version__, note=notes)
    except StoreError as exc:
        stderr(f"error: {exc}")
        return 1
    try:
        asyncio.run(collector.run(args.duration))
    except OSError as exc:
        stderr(f"error: {exc.strerror or exc}")
        return 1
    except KeyboardInterrupt:
        pass
    if not args.quiet:
        stderr(collector.summary())
    return 0

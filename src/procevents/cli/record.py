"""``procevents record``: every event and process lifetime to SQLite."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from .options import (
    PROG,
    Parser,
    add_capture_options,
    add_db_option,
    add_duration_option,
    add_keep_running_option,
    add_metrics_option,
    add_nats_options,
    add_pid_option,
    add_quiet_option,
    add_tuning_options,
    check_pids,
    duration_arg,
    host_arg,
    make_connector,
    make_enricher,
    nats_config,
)
from .reporting import Reporting
from .runner import follow_pids, following, run_pipeline, stderr

if TYPE_CHECKING:
    from ..fleet.shipper import ShipperProcess
    from ..pipeline import Filter, Output
    from ..store import StoreWriter

RECORD_EPILOG = """\
examples:
  procevents record                       record every process event (Ctrl-C to stop)
  procevents record --db build.db -p $$   this shell and everything it starts, until it exits
  procevents record --retain 7d           and delete what is older than a week
  procevents record --metrics 9100        with Prometheus metrics on 127.0.0.1:9100
  procevents record --nats nats://central:4222 --nats-creds /etc/procevents/nats.creds
                                          and ship every event to NATS JetStream

Events are committed in batches (SQLite, WAL), so a crash or kill -9 loses
at most the last moments and never damages the file; a query sees an event
at most 0.5 s after it happened.  SIGUSR1 (kill -USR1 PID) commits what has
been received and then prints the summary so far ("N events recorded to
PATH ..."): once that line is out, a query sees every event from before the
signal.  The database is created with 0600 permissions.  Read it with
procevents query and procevents replay, or any SQLite client.

With --nats, a separate process publishes what is committed to a JetStream
stream (created if missing) and keeps a cursor in the database: the file is
the outbox, so an unreachable server, a slow one or a restart of either side
loses nothing, and recording never waits for the network.  Retention keeps
what the stream has not acknowledged.  At the end the shipper has 5 s to
ship the rest (1 s after -D: -D bounds the whole run, shipping included);
what it could not ship goes with the next run.  Its notices come before the
recorder's summary.  Collect with procevents collect.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=f"{PROG} record",
        description="Record process events and process lifetimes to an SQLite database.",
        epilog=RECORD_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_db_option(parser)
    parser.add_argument(
        "--retain", metavar="DURATION", type=duration_arg,
        help="delete events and ended lifetimes older than DURATION (e.g. 12h, 7d), at start and every minute",
    )
    add_pid_option(
        parser, "only this process and its descendants (repeatable; ends when they have all exited); "
        "lost events are always recorded",
    )
    add_keep_running_option(parser)
    add_duration_option(parser)
    add_quiet_option(parser)
    parser.add_argument(
        "--host", metavar="NAME", type=host_arg,
        help="the host name rows, process ids (exec_id) and shipped messages carry (default: this machine's)",
    )
    group = parser.add_argument_group("capture, metrics and tuning")
    add_capture_options(group, threads=False)
    add_metrics_option(group)
    add_tuning_options(group)
    add_nats_options(parser.add_argument_group("shipping (NATS JetStream; needs nats-py)"), recorder=True)
    return parser


class StoreOutput:
    """The Output the shared main loop flushes and closes: commit, close the
    database; on SIGUSR1, commit everything received, then ``answer()``."""

    def __init__(
        self, writer: StoreWriter, shipper: ShipperProcess | None = None, answer: Callable[[], None] | None = None
    ) -> None:
        self.writer = writer
        self.shipper = shipper
        self.answer = answer
        self.failed = False
        self._told_locked = False
        #: SIGUSR1 came (set in the signal handler), and then: a read has
        #: happened since, so what the kernel had queued by then is in.
        self._asked = False
        self._answering = False

    def write(self, data: bytes) -> None:
        pass

    def ask_commit(self) -> None:
        """The SIGUSR1 handler: only a flag (it may interrupt a commit); the
        main loop reads once more, right away, then commits and answers."""
        self._asked = True

    @property
    def flush_due_in(self) -> float | None:
        if self._asked or self._answering:
            return 0.0  # the next read does not wait
        return None if self.failed else self.writer.flush_due_in

    def _write(self, write: Callable[[], None]) -> None:
        if self.failed:
            return
        commits = self.writer.commits
        try:
            write()
        except OSError:
            self.failed = True
            raise
        if self.shipper is not None and self.writer.commits != commits:
            self.shipper.poke()

    def batch_done(self) -> None:
        if self._answering:
            # A read since the signal took every event the kernel had queued
            # before it (a read drains the socket): all of it is in this commit.
            self._answering = False
            self._write(self.writer.commit)
            if self.answer is not None and not self.failed:
                self.answer()
        if self._asked:
            self._asked = False
            self._answering = True
        self._write(self.writer.flush)
        if not self.failed:
            self._tell_lock()

    def _tell_lock(self) -> None:
        # Once per spell: the user should know why the file stops growing.
        locked = self.writer.locked_since is not None
        if locked and not self._told_locked:
            stderr(f"{self.writer.path} is locked by another program: events wait in memory")
        elif self._told_locked and not locked:
            stderr(f"{self.writer.path} unlocked: recording again")
        self._told_locked = locked

    def flush(self) -> None:
        self._write(self.writer.commit)

    def close(self) -> None:
        try:
            self.writer.close()
        except OSError as exc:
            if not self.failed:  # else reported by flush()
                self.failed = True
                stderr(f"error: {exc.strerror or exc}")


def run(args: argparse.Namespace) -> int:
    from .. import __version__
    from ..stats import Summary, counted
    from ..store import RECORD_LINGER, StoreError, StoreSink, StoreWriter, database_bytes, default_db_path

    path = args.db or default_db_path()
    roots = check_pids(args.pid)
    nats = nats_config(args)
    try:
        writer = StoreWriter(
            path, retain_ns=args.retain, version=__version__, host=args.host,
            outbox=None if nats is None else nats.stream, trust=args.trust_db,
        )
    except StoreError as exc:
        stderr(f"error: {exc}")
        return 1
    shipper = None
    if nats is not None:
        from ..fleet.shipper import DRAIN, DURATION_DRAIN, ShipperProcess

        try:
            # -D bounds the whole run: shipping after it may take DURATION_DRAIN.
            drain = DRAIN if args.duration is None else DURATION_DRAIN
            shipper = ShipperProcess(path, nats, writer.host, drain)
        except OSError as exc:
            writer.close()
            stderr(f"error: cannot start the shipper: {exc.strerror or exc}")
            return 1
    try:
        if args.retain is not None:
            writer.prune()
        conn = make_connector(args)
        enricher = make_enricher(args)
        filters: list[Filter] = []
        counts = Summary("recorded")
        end = None
        if roots is not None:
            follow, end = follow_pids(roots, enricher, keep_running=args.keep_running)
            filters.append(follow)
        sink = StoreSink(writer, enricher.table.get, enricher.identity)
        reporting = Reporting(
            stats=False, metrics=args.metrics, connector=conn, table=enricher.table, writer=writer, quiet=args.quiet
        )
        reporting.start()
    except BaseException:
        writer.close()
        if shipper is not None:
            shipper.close()
        raise
    def recorded() -> str:
        dropped = f", {writer.dropped} dropped while it was locked (recorded as lost)" if writer.dropped else ""
        where = writer.path  # where the file is now, should it have been moved while recording
        size = database_bytes(where)
        return f"{counted(writer.events_written, 'event')} recorded to {where} ({size:,} bytes){dropped}"

    def answer() -> None:
        # SIGUSR1's answer, even with -q (it was asked for): once this line
        # is out, a query sees every event the kernel sent before the signal.
        waiting = f", {len(writer.pending)} waiting for the lock" if writer.pending else ""
        stderr(recorded() + waiting)
        stderr(counts.line())

    output = StoreOutput(writer, shipper, answer)

    def summary() -> None:
        if shipper is not None:
            # The database is closed: what it holds is shipped now (within
            # the drain), or by the next run; the shipper's notices come
            # before the summary, which stays the last word.
            shipper.close()
        if not args.quiet:
            stderr(recorded())

    if not args.quiet:
        stderr(f"recording to {path}")
    try:
        status = run_pipeline(
            # Duck-typed: the loop only flushes and closes its Output.
            conn, sink, cast("Output", output), enricher=enricher, filters=filters, count=None,
            duration=args.duration, quiet=args.quiet, observers=reporting.observers, after=summary,
            linger=RECORD_LINGER, stop=end, selection=following(roots, args.keep_running),
            summary=counts, on_usr1=output.ask_commit,
        )
    finally:
        reporting.close()
        if shipper is not None:
            shipper.close()  # done already by summary(), unless the loop never ran
    return status or int(output.failed)


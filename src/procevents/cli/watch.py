"""``procevents`` (no subcommand): watch every process live."""

from __future__ import annotations

import argparse

from .options import (
    EVENT_TYPES_HELP,
    PROG,
    Parser,
    UsageError,
    add_capture_options,
    add_command_option,
    add_container_option,
    add_duration_option,
    add_events_option,
    add_keep_running_option,
    add_output_options,
    add_pid_option,
    add_tuning_options,
    add_user_option,
    check_pids,
    make_connector,
    make_enricher,
    metrics_address,
    positive_int,
    version,
)
from .runner import ancestor_lineage, follow_pids, following, open_output, run_pipeline

TYPE_CHECKING = False  # not typing's: see procevents/__init__.py

if TYPE_CHECKING:
    from ..pipeline import Filter

WATCH_EPILOG = f"""\
commands:
  procevents [options]               watch every process (the default)
  procevents trace [options] -- CMD  run CMD and show it and its descendants
  procevents record [--db PATH]      record events and process lifetimes to SQLite
  procevents query [options]         query the recording (--since 10m --failed --tree)
  procevents replay [options]        show recorded events as the live view does
  procevents top                     live event rates and top spawners
  procevents collect --nats URL      many hosts' recordings (record --nats) into one database
  (procevents COMMAND --help for its options)

examples:
  procevents                         watch every process event on the host
  procevents -e exec,exit            only execs and exits
  procevents --json -D 5             five seconds of JSON Lines
  procevents --tree                  execs drawn under their ancestors
  procevents -p 1234                 pid 1234 and everything below it, until all of it has exited
  procevents -c '^sleep$' -u root    root's sleep processes
  procevents --json -o events.jsonl  write JSON Lines to a file
  procevents --no-enrich -e exec     the bare, fastest stream
  procevents --json --env -e exec    every exec with its environment
  procevents --capture async         no helper processes (see "argv capture" below)

event types: {EVENT_TYPES_HELP}

JSON keys: event, time (ISO 8601 UTC), timestamp_ns (CLOCK_MONOTONIC), cpu,
seq, pid, tgid, then the linux/cn_proc.h names per type (parent_pid,
child_tgid, ruid, euid, comm, exit_code, ...); exit adds status, signal and
core_dumped; lost has count, reason and total (every loss so far).  With
enrichment (the default) exec adds cmdline, exe, cwd, ppid, uid, user, comm
(and env with --env); fork adds comm, ppid; exit adds comm, cmdline, duration
(seconds), ppid, uid, user; a thread's fork and exit add thread: true, and
its exit's duration is the thread's own.  cmdline and comm are null when
they could not be read (missing says why): a process is never named after
what it ran before its exec.  Text from other processes that is not valid
UTF-8 is shown with U+FFFD and kept exactly, base64, in <key>_b64.

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


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        description="Watch every process on this Linux host as it is born, changes and dies, "
        "through the kernel's process events connector.",
        epilog=WATCH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    out = parser.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="one JSON object per line")
    out.add_argument("--tree", action="store_true", help="execs indented under their ancestors, with exits")
    add_output_options(out)
    sel = parser.add_argument_group("selection")
    add_events_option(sel)
    add_pid_option(
        sel, "only this process and its descendants, running or started later (repeatable); "
        "ends when they have all exited",
    )
    add_keep_running_option(sel)
    add_user_option(sel)
    add_command_option(sel)
    add_container_option(sel, "processes")
    stop = parser.add_argument_group("stopping")
    add_duration_option(stop)
    stop.add_argument("-n", "--count", metavar="N", type=positive_int, help="stop after N events")
    tune = parser.add_argument_group("capture and tuning")
    tune.add_argument(
        "--no-enrich", action="store_true",
        help="no /proc reads: bare kernel events, the fastest stream (no -u/-c/--tree)",
    )
    add_capture_options(tune)
    add_tuning_options(tune)
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
        "--metrics", metavar="[ADDR:]PORT", type=metrics_address,
        help="serve Prometheus metrics on ADDR:PORT (ADDR 127.0.0.1 unless given; needs prometheus_client)",
    )
    return parser


def selection(args: argparse.Namespace, roots: set[int] | None) -> list[str]:
    """The startup notice's words for -p, -u and -c."""
    from ..escape import escape

    words = following(roots, args.keep_running)
    if args.user is not None:
        words.append(f"of uid {args.user}")
    if args.command is not None:
        words.append(f"of commands matching {escape(args.command.pattern)!r}")
    if args.container is not None:
        words.append(f"in container {args.container}")
    return words


def run(args: argparse.Namespace) -> int:
    from ..filters import CommandFilter, EventTypeFilter, UserFilter, no_threads
    from ..pipeline import choose_sink
    from ..stats import Summary

    enrich = not args.no_enrich
    if not enrich and (
        args.user is not None or args.command is not None or args.tree or args.env or args.container is not None
    ):
        raise UsageError("-u, -c, --container, --tree and --env need enrichment; drop --no-enrich")
    if args.tree and args.json:
        raise UsageError("choose one of --tree and --json")
    # The table and the pid follower need every fork and exit, so with
    # them the kernel sends everything and -e filters here.
    needs_all = enrich or args.pid
    conn = make_connector(args, None if needs_all else args.events, kernel_filter=not args.no_kernel_filter)
    # Only JSON shows exe and cwd; -c matches exe too.
    # ... and the cgroup, for JSON and --container.
    paths = args.json or args.command is not None or args.container is not None
    enricher = make_enricher(args, paths=paths) if enrich else None
    filters: list[Filter] = []
    roots = check_pids(args.pid)
    summary = Summary()
    end = None
    if roots is not None:
        # First: -p's end goes by the newest event, so the follower sees them all.
        follow, end = follow_pids(roots, enricher, keep_running=args.keep_running)
        filters.append(follow)
    if args.no_threads:
        filters.append(no_threads)
    if needs_all and args.events:
        filters.append(EventTypeFilter(args.events))
    if args.user is not None:
        filters.append(UserFilter(args.user))
    if args.command is not None:
        filters.append(CommandFilter(args.command))
    if args.container is not None:
        from ..filters import ContainerFilter

        filters.append(ContainerFilter(args.container))
    reporting = None
    if args.stats or args.metrics is not None:
        from .reporting import Reporting

        reporting = Reporting.for_watch(args, conn, enricher)
        reporting.start()
    output = open_output(args.output)
    lineage = ancestor_lineage(enricher, roots) if args.tree and enricher is not None else None
    sink = choose_sink(output, json=args.json, lineage=lineage)
    try:
        return run_pipeline(
            conn, sink, output, enricher=enricher, filters=filters, count=args.count,
            duration=args.duration, quiet=args.quiet, stop=end,
            observers=reporting.observers if reporting else (), after=reporting.after if reporting else None,
            shown=args.events, selection=selection(args, roots), summary=summary,
        )
    finally:
        if reporting is not None:
            reporting.close()


"""Every option and option value shared by the subcommands, defined once
(as pip's cmdoptions): parsers for values, the groups commands add, and the
objects built from them (the enricher and its capture readers).

Light at import time (argparse and re only): ``procevents --help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import re
import time
from collections.abc import Sequence

TYPE_CHECKING = False  # not typing's: see procevents/__init__.py

if TYPE_CHECKING:
    import datetime as dt
    from typing import Any, NoReturn

    from ..connector import Connector
    from ..enrich import Enricher

PROG = "procevents"


EVENT_TYPES_HELP = "fork,exec,uid,gid,sid,ptrace,comm,coredump,exit"


class UsageError(Exception):
    """A bad option value: reported as one line, exit status 2."""


class RuntimeFailure(Exception):
    """Good options that cannot be carried out (an output file that cannot
    be opened or is refused, a metrics port in use): one line, exit status 1."""


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: error: {message} (see {self.prog} --help)\n")


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0: {text!r}")
    return value


def positive_int(text: str, what: str = "a whole number") -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0: {text!r}")
    return value


def pid_arg(text: str) -> int:
    return positive_int(text, "a pid")


def size_arg(text: str) -> int:
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


def event_list(text: str) -> frozenset[str]:
    from ..events import parse_event_names

    try:
        return parse_event_names(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def regex_arg(text: str) -> Any:
    import re

    try:
        return re.compile(text)
    except re.error as exc:
        raise argparse.ArgumentTypeError(f"bad regular expression {text!r}: {exc}") from None


def user_arg(text: str) -> int:
    from ..enrich import Users

    try:
        return Users().uid(text)
    except KeyError:
        raise argparse.ArgumentTypeError(f"no such user: {text!r}") from None


def metrics_address(text: str) -> tuple[str, int]:
    """argparse type for ``--metrics [ADDR:]PORT``."""
    from ..metrics import parse_address

    try:
        return parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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


#: What a TIME may be, for the message that refuses one.
TIME_FORMS = "a duration ago: 10m, '2h ago'; a clock time today: 14:30; a date: 2026-11-21T14:30; @EPOCH; now"


def parse_time(text: str, now_ns: int | None = None) -> int:
    """A point in time as wall-clock ns since the epoch.

    Relative to now: ``10m``, ``2h ago``, ``now``; absolute: ISO 8601
    (``2026-11-21T10:40``, ``2026-11-21 10:40:01Z``; local time unless a
    zone is given), ``HH:MM[:SS]`` (today, local time), ``@SECONDS`` (epoch).
    """
    import datetime as dt  # here: it costs `procevents --help` time

    now = time.time_ns() if now_ns is None else now_ns
    value = text.strip()
    lowered = value.lower()
    not_a_time = ValueError(f"not a time: {text!r} ({TIME_FORMS})")
    if lowered == "now":
        return now
    if lowered.startswith("@"):
        try:
            return int(float(lowered[1:]) * 1e9)
        except ValueError:
            raise not_a_time from None
    relative = lowered.removesuffix("ago").strip()
    if relative and _DURATION.match(relative) and not re.fullmatch(r"\d{4,}", relative):
        try:
            return now - int(parse_duration(relative) * 1e9)
        except ValueError:  # 10x: a time may be a duration ago, but not only (issue 22)
            raise not_a_time from None
    clock = _CLOCK_TIME.match(value)
    if clock:
        today = dt.datetime.fromtimestamp(now / 1e9).astimezone()
        micro = int((clock[4] or "0").ljust(6, "0"))
        try:
            moment = today.replace(
                hour=int(clock[1]), minute=int(clock[2]), second=int(clock[3] or 0), microsecond=micro
            )
        except ValueError:
            raise not_a_time from None
        return _ns(moment)
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise not_a_time from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # local time
    return _ns(moment)


def _ns(moment: dt.datetime) -> int:
    import datetime as dt

    delta = moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def duration_arg(text: str) -> int:
    """A retention period -> ns."""
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0: {text!r}")
    if seconds * 1e9 >= _NS_LIMIT:
        raise argparse.ArgumentTypeError(f"too long: {text!r} (at most about 290 years)")
    return int(seconds * 1e9)


#: Times and durations are int64 nanoseconds (as SQLite stores them).
_NS_LIMIT = 2**63


def cpu_seconds_arg(text: str) -> float:
    """A CPU time: 0.5, 2s, 1m (seconds, 0 or more)."""
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not 0 <= seconds < 1e12:
        raise argparse.ArgumentTypeError(f"not a CPU time: {text!r}")
    return seconds


def time_arg(text: str) -> int:
    try:
        ns = parse_time(text)
    except (ValueError, OverflowError) as exc:
        raise argparse.ArgumentTypeError(str(exc) if isinstance(exc, ValueError) else f"not a time: {text!r}") from None
    if not -_NS_LIMIT < ns < _NS_LIMIT:
        raise argparse.ArgumentTypeError(f"time out of range: {text!r} (from 1678 to 2262)")
    return ns


def db_help() -> str:
    return (
        "the database (default: /var/lib/procevents/events.db as root, else "
        "$XDG_DATA_HOME/procevents/events.db)"
    )


def add_output_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument("-o", "--output", metavar="FILE", help="write events to FILE (appending) instead of stdout")
    add_quiet_option(group)


def add_quiet_option(group: argparse._ArgumentGroup | argparse.ArgumentParser) -> None:
    group.add_argument("-q", "--quiet", action="store_true", help="no startup notice or summary on stderr")


def add_pid_option(group: argparse._ArgumentGroup | argparse.ArgumentParser, help: str) -> None:
    group.add_argument("-p", "--pid", metavar="PID", type=pid_arg, action="append", help=help)


def add_keep_running_option(group: argparse._ArgumentGroup | argparse.ArgumentParser) -> None:
    group.add_argument(
        "--keep-running", action="store_true",
        help="with -p, go on after every followed process has exited (by default that ends it, status 0)",
    )


def add_duration_option(group: argparse._ArgumentGroup | argparse.ArgumentParser) -> None:
    group.add_argument("-D", "--duration", metavar="SECONDS", type=positive_float, help="stop after SECONDS")


def add_events_option(group: argparse._ArgumentGroup | argparse.ArgumentParser) -> None:
    group.add_argument(
        "-e", "--events", metavar="LIST", type=event_list,
        help=f"comma-separated event types to show (default: all): {EVENT_TYPES_HELP}",
    )


def add_user_option(group: argparse._ArgumentGroup | argparse.ArgumentParser, *, recorded: bool = False) -> None:
    if recorded:  # matched against the names stored then, not resolved now
        group.add_argument("-u", "--user", metavar="NAME|UID", help="run by this user (as recorded)")
    else:
        group.add_argument("-u", "--user", metavar="NAME|UID", type=user_arg, help="only processes of this user")


def add_command_option(
    group: argparse._ArgumentGroup | argparse.ArgumentParser,
    help: str = "only processes whose comm, exe or argv[0] matches REGEX",
) -> None:
    group.add_argument("-c", "--command", metavar="REGEX", type=regex_arg, help=help)


def add_time_range_options(group: argparse._ArgumentGroup | argparse.ArgumentParser, what: str) -> None:
    group.add_argument("--since", metavar="TIME", type=time_arg, help=f"{what} at or after TIME (e.g. 10m, 14:30)")
    group.add_argument("--until", metavar="TIME", type=time_arg, help=f"{what} at or before TIME")


def add_db_option(group: argparse._ArgumentGroup | argparse.ArgumentParser, *, trust: bool = True) -> None:
    """``--db``, and (``trust``) ``--trust-db``: the checks it lifts are in store/schema.py."""
    group.add_argument("--db", metavar="PATH", help=db_help())
    if trust:
        group.add_argument(
            "--trust-db", action="store_true",
            help="open a --db that another user owns, that others may read (when recording), or that has "
            "triggers or views procevents did not create: refused by default, as another user may have planted it",
        )


def container_arg(text: str) -> str:
    """A container id or the first digits of one (hex, as docker ps shows them)."""
    value = text.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{1,64}", value):
        raise argparse.ArgumentTypeError(f"not a container id: {text!r} (hex digits, e.g. 3f2a9c1b)")
    return value


def host_arg(text: str) -> str:
    """A host name as rows and message subjects carry it."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}(?:\.[A-Za-z0-9_-]{1,63})*", text):
        raise argparse.ArgumentTypeError(f"not a host name: {text!r} (letters, digits, '-', '_', '.')")
    return text


def add_host_option(group: argparse._ArgumentGroup | argparse.ArgumentParser, what: str) -> None:
    group.add_argument(
        "--host", metavar="NAME", type=host_arg, help=f"only {what} recorded on this host (a store collected from many)"
    )


def add_container_option(group: argparse._ArgumentGroup | argparse.ArgumentParser, what: str) -> None:
    group.add_argument(
        "--container", metavar="ID|PREFIX", type=container_arg,
        help=f"only {what} in the container whose id is or begins with ID (docker, containerd, CRI-O, podman)",
    )


def add_nats_options(group: argparse._ArgumentGroup, *, recorder: bool) -> None:
    """Where to ship (``record``) or collect from (``collect``): NATS JetStream."""
    from ..fleet import DEFAULT_PREFIX, DEFAULT_STREAM, URL_ENV

    what = "ship every recorded event to" if recorder else "collect from"
    group.add_argument(
        "--nats", metavar="URL",
        help=f"{what} the NATS JetStream server at URL (nats://HOST:4222, tls://..., several comma-separated; "
        f"default ${URL_ENV}, which keeps a password out of the command line)",
    )
    group.add_argument("--nats-creds", metavar="FILE", help="NATS credentials file (JWT and NKey seed)")
    group.add_argument("--nats-ca", metavar="FILE", help="CA certificates for a TLS server")
    group.add_argument("--nats-cert", metavar="FILE", help="client certificate for TLS (with --nats-key)")
    group.add_argument("--nats-key", metavar="FILE", help="client certificate's key")
    group.add_argument(
        "--nats-stream", metavar="NAME", default=DEFAULT_STREAM, help=f"the JetStream stream (default {DEFAULT_STREAM})"
    )
    group.add_argument(
        "--nats-subject", metavar="PREFIX", default=DEFAULT_PREFIX,
        help=f"subjects are PREFIX.HOST.events, .procs, .sessions (default {DEFAULT_PREFIX})",
    )
    if recorder:
        group.add_argument(
            "--nats-max-age", metavar="DURATION", type=duration_arg,
            help="when creating the stream: keep messages this long (e.g. 7d; default: until deleted)",
        )
        group.add_argument(
            "--nats-replicas", metavar="N", type=positive_int, default=1,
            help="when creating the stream: replicas in a NATS cluster (default 1)",
        )


def nats_config(args: argparse.Namespace, *, required: bool = False) -> Any:
    """The NatsConfig from --nats* (None without a URL, unless ``required``)."""
    import os

    from ..fleet import URL_ENV
    from ..fleet.connect import NatsConfig, nats_available, nkeys_missing

    url = args.nats or os.environ.get(URL_ENV)
    if not url:
        if required:
            raise UsageError(f"--nats URL is required (or ${URL_ENV})")
        return None
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,255}", args.nats_stream):
        raise UsageError(f"not a stream name: {args.nats_stream!r} (letters, digits, '-', '_')")
    if not re.fullmatch(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*", args.nats_subject):
        raise UsageError(f"not a subject prefix: {args.nats_subject!r} (tokens of letters, digits, '-', '_')")
    if bool(args.nats_cert) != bool(args.nats_key):
        raise UsageError("--nats-cert and --nats-key go together")
    for name in ("nats_creds", "nats_ca", "nats_cert", "nats_key"):
        path = getattr(args, name)
        if path is not None and not os.access(path, os.R_OK):
            raise UsageError(f"cannot read --{name.replace('_', '-')} {path}")
    if not nats_available():
        raise UsageError("--nats needs nats-py: pip install 'procevents[fleet]'")
    if args.nats_creds is not None and (missing := nkeys_missing()):
        # Here, not at the first connection: nats-py imports nkeys only then,
        # and the shipper or collector would retry that failure for ever.
        raise UsageError(f"--nats-creds needs nkeys ({missing}): pip install 'procevents[fleet]'")
    max_age = getattr(args, "nats_max_age", None)
    return NatsConfig(
        url=url, creds=args.nats_creds, ca=args.nats_ca, cert=args.nats_cert, key=args.nats_key,
        stream=args.nats_stream, prefix=args.nats_subject, max_age=None if max_age is None else max_age / 1e9,
        replicas=getattr(args, "nats_replicas", 1),
    )


def add_tuning_options(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--buffer", metavar="SIZE", type=size_arg, default=None,
        help="socket receive buffer to request, e.g. 64M (default 64M; the kernel doubles it)",
    )


def add_capture_options(group: argparse._ArgumentGroup, *, env: bool = True, threads: bool = True) -> None:
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
    group.add_argument(
        "--no-costs", dest="costs", action="store_false",
        help="do not read what each process cost from the kernel's taskstats (CPU time, peak memory, "
        "I/O on every exit; on by default where permitted: root or CAP_NET_ADMIN, host namespaces)",
    )


def add_metrics_option(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--metrics", metavar="[ADDR:]PORT", type=metrics_address,
        help="serve Prometheus metrics at http://ADDR:PORT/metrics (ADDR defaults to 127.0.0.1; "
        "PORT 0 picks a free one; needs prometheus_client)",
    )


def make_connector(
    args: argparse.Namespace, events: frozenset[str] | None = None, *, kernel_filter: bool = True
) -> Connector:
    """The command's subscription: ``--buffer``, and a guardian process that
    sends IGNORE should procevents be killed with SIGKILL."""
    from ..connector import DEFAULT_RCVBUF, Connector

    return Connector(events, rcvbuf=args.buffer or DEFAULT_RCVBUF, kernel_filter=kernel_filter, guard=True)


def make_enricher(args: argparse.Namespace, *, paths: bool = True, **table_options: Any) -> Enricher:
    """The enricher for a command with capture options; its per-CPU readers
    (``--capture sync``) are created here and started by the main loop.
    ``paths``: the output or a filter uses each exec's exe and cwd (else
    the readers spare those two /proc lookups per exec)."""
    from ..capture import ENV_LIMIT, ExecCapture
    from ..enrich import Enricher

    env_limit = ENV_LIMIT if getattr(args, "env", False) else 0
    capture = ExecCapture(env_limit=env_limit, paths=paths) if args.capture == "sync" else None
    costs = None
    events = getattr(args, "events", None)
    if getattr(args, "costs", True) and (events is None or "exit" in events):
        from ..accounting import ExitCosts

        costs = ExitCosts()
    if table_options:
        from ..procfs import ProcFS
        from ..proctable import ProcessTable

        enricher = Enricher(ProcessTable(ProcFS(), **table_options), capture=capture, env_limit=env_limit, costs=costs)
    else:
        enricher = Enricher(capture=capture, env_limit=env_limit, costs=costs)
    host = getattr(args, "host", None)
    if host is not None:
        from ..identity import Identity

        enricher.identity = Identity(host, boot_offset_ns=enricher.table.boot_offset_ns)
    return enricher


def check_pids(pids: Sequence[int] | None) -> set[int] | None:
    if not pids:
        return None
    roots = set(pids)
    from ..procfs import pid_exists

    missing = sorted(pid for pid in roots if not pid_exists(pid))
    if missing:
        raise UsageError(f"no such process: {', '.join(map(str, missing))}")
    if os.getpid() in roots:
        # `exec procevents -p $$`: it would follow only itself, which -p leaves out.
        raise UsageError(f"-p {os.getpid()} is procevents itself")
    return roots


def version() -> str:
    from .. import __version__

    return __version__


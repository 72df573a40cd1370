"""Command-line front end.

Kept light at import time (argparse only) so ``procevents --help`` is fast;
everything else is imported when a command runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    from .connector import Connector

PROG = "procevents"
EVENT_TYPES_HELP = "fork,exec,uid,gid,sid,ptrace,comm,coredump,exit"

WATCH_EPILOG = f"""\
examples:
  procevents                         watch every process event on the host
  procevents -e exec,exit            only execs and exits (filtered in the kernel)
  procevents --json -D 5             five seconds of JSON Lines
  procevents -p 1234                 pid 1234 and everything it starts
  procevents --json -o events.jsonl  write JSON Lines to a file

event types: {EVENT_TYPES_HELP}

JSON keys: event, time (ISO 8601 UTC), timestamp_ns (CLOCK_MONOTONIC), cpu,
seq, pid, tgid, then the linux/cn_proc.h names per type (parent_pid,
child_tgid, ruid, euid, comm, exit_code, ...); exit adds status, signal and
core_dumped; lost has count.  Text from other processes that is not valid
UTF-8 is shown with U+FFFD and kept exactly, base64-encoded, in <key>_b64.

At exit a summary goes to stderr: events received per type and events lost.
Ctrl-C, SIGTERM and SIGHUP end it cleanly; the kernel is always told to stop
reporting (PROC_CN_MCAST_IGNORE).
"""


class UsageError(Exception):
    """A bad option value: reported as one line, exit status 2."""


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0: {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0: {text!r}")
    return value


def _pid(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a pid: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"not a pid: {text!r}")
    return value


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Watch every process on this Linux host as it is born, changes and dies, "
        "through the kernel's process events connector.",
        epilog=WATCH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    add_watch_options(parser)
    return parser


def add_watch_options(parser: argparse.ArgumentParser) -> None:
    out = parser.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="one JSON object per line")
    out.add_argument("-o", "--output", metavar="FILE", help="write events to FILE instead of stdout")
    out.add_argument("-q", "--quiet", action="store_true", help="no startup notice or summary on stderr")
    sel = parser.add_argument_group("selection")
    sel.add_argument(
        "-e", "--events", metavar="LIST", type=_event_list,
        help=f"comma-separated event types to show (default: all): {EVENT_TYPES_HELP}",
    )
    sel.add_argument(
        "-p", "--pid", metavar="PID", type=_pid, action="append",
        help="only this process and its descendants, followed through forks (repeatable)",
    )
    stop = parser.add_argument_group("stopping")
    stop.add_argument("-D", "--duration", metavar="SECONDS", type=_positive_float, help="stop after SECONDS")
    stop.add_argument("-n", "--count", metavar="N", type=_positive_int, help="stop after N events")
    tune = parser.add_argument_group("tuning")
    tune.add_argument(
        "--buffer", metavar="SIZE", type=_size, default=None,
        help="socket receive buffer to request, e.g. 64M (default 32M; the kernel doubles it)",
    )
    tune.add_argument(
        "--no-kernel-filter", action="store_true",
        help="filter event types in userspace only (keeps per-CPU loss detection exact)",
    )


def _version() -> str:
    from . import __version__

    return __version__


class Output:
    """Buffered event output; lines are flushed once per batch."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.stream: BinaryIO
        if path is None or path == "-":
            self.stream = sys.stdout.buffer
        else:
            try:
                self.stream = open(path, "ab")  # noqa: SIM115 - closed in close()
            except OSError as exc:
                raise UsageError(f"cannot open {path}: {exc.strerror}") from None
        self.pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.pending.append(data)

    def flush(self) -> None:
        if self.pending:
            data = b"".join(self.pending)
            self.pending.clear()
            self.stream.write(data)
        self.stream.flush()

    def close(self) -> None:
        if self.stream is not sys.stdout.buffer:
            self.stream.close()


def _stderr(message: str) -> None:
    try:
        sys.stderr.write(f"{PROG}: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _describe_subscription(conn: Connector) -> str:
    wanted = "all events" if conn.wanted is None else ",".join(sorted(conn.wanted))
    where = "kernel filter" if conn.kernel_filtered else "all events subscribed"
    return f"listening for {wanted} ({where}, receive buffer {conn.rcvbuf // (1024 * 1024)} MiB)"


def run_watch(args: argparse.Namespace) -> int:
    import time

    from .connector import DEFAULT_RCVBUF, Connector, ConnectorError, Terminated
    from .events import Lost
    from .filters import DescendantFilter
    from .render.jsonl import choose_dumps, event_fields
    from .render.text import TextRenderer
    from .stats import Summary
    from .tree import ParentMap

    output = Output(args.output)
    summary = Summary()
    parents = ParentMap()
    follow = DescendantFilter(args.pid) if args.pid else None
    renderer = TextRenderer()
    dumps = choose_dumps()
    json_mode = args.json
    remaining = args.count
    conn = Connector(
        args.events,
        rcvbuf=args.buffer or DEFAULT_RCVBUF,
        kernel_filter=not args.no_kernel_filter,
    )
    status = 0
    try:
        conn.open()
        if not args.quiet:
            _stderr(_describe_subscription(conn))
        deadline = None if args.duration is None else time.monotonic() + args.duration
        while True:
            timeout = None if deadline is None else deadline - time.monotonic()
            if timeout is not None and timeout <= 0:
                break
            batch = conn.read_batch(timeout)
            for event in batch:
                ppid = parents.update(event)
                if follow is not None and not follow(event):
                    continue
                summary.add(event)
                if json_mode:
                    fields: dict[str, Any] = event_fields(event, renderer.clock)
                    output.write(dumps(fields) + b"\n")
                else:
                    output.write(renderer.render(event, ppid).encode("utf-8", "backslashreplace"))
                if remaining is not None and type(event) is not Lost:
                    remaining -= 1
                    if remaining == 0:
                        break
            output.flush()
            if remaining == 0:
                break
    except ConnectorError as exc:
        _stderr(f"error: {exc.strerror or exc}")
        return 1
    except (KeyboardInterrupt, Terminated):
        pass
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly.
        _silence_stdout()
    finally:
        conn.close()
        try:
            output.flush()
        except BrokenPipeError:
            _silence_stdout()
        except OSError as exc:
            _stderr(f"error: writing output: {exc.strerror}")
            status = 1
        output.close()
        if conn.malformed:
            _stderr(f"skipped {conn.malformed} malformed datagrams (last: {conn.last_decode_error})")
        if not args.quiet:
            _stderr(summary.line())
    return status


def _silence_stdout() -> None:
    # Further writes (including the interpreter's final flush) must not raise.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except OSError:
        pass


COMMANDS: dict[str, str] = {}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return run_watch(args)
    except UsageError as exc:
        _stderr(f"error: {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())

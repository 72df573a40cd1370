"""Running a command's main loop: open, subscribe, run the pipeline, and
close on every way out; signals, stderr notices and exit statuses are
decided here, once for every command."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Sequence

from .options import PROG, RuntimeFailure, UsageError

TYPE_CHECKING = False  # not typing's: see procevents/__init__.py

if TYPE_CHECKING:
    from typing import Any

    from ..accounting import ExitCosts
    from ..capture import ExecCapture
    from ..connector import Connector
    from ..enrich import Enricher
    from ..filters import DescendantFilter, FollowEnd
    from ..pipeline import Filter, Output, Sink
    from ..proctable import Proc
    from ..senders import Refusals
    from ..stats import Summary


def stderr(message: str) -> None:
    try:
        sys.stderr.write(f"{PROG}: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def describe_subscription(
    conn: Connector, shown: frozenset[str] | None = None, selection: Sequence[str] = ()
) -> str:
    """``listening for exec, exit events, following pid 42 and its
    descendants (all events subscribed, receive buffer 128 MiB)``: what is
    shown (``shown``: the event types, when the kernel sends more), what
    else selects, then what the kernel was asked for."""
    from ..events import EVENT_NAMES

    types = conn.wanted if shown is None else shown
    wanted = "all events" if types is None else ", ".join(n for n in EVENT_NAMES if n in types) + " events"
    where = "kernel filter" if conn.kernel_filtered else "all events subscribed"
    size = conn.rcvbuf
    buffer = f"{size // 1024**2} MiB" if size >= 1024**2 else f"{size // 1024} KiB"
    return f"listening for {', '.join([wanted, *selection])} ({where}, receive buffer {buffer})"


def following(roots: set[int] | None, keep_running: bool) -> list[str]:
    """The notice's words for ``-p``."""
    if not roots:
        return []
    pids = ", ".join(map(str, sorted(roots)))
    text = f"following pid {pids} and {'its' if len(roots) == 1 else 'their'} descendants"
    return [text if keep_running else f"{text} until they have all exited"]


def follow_pids(
    roots: set[int], enricher: Enricher | None, *, keep_running: bool
) -> tuple[DescendantFilter, FollowEnd | None]:
    """``-p``'s filter and its end (None with ``--keep-running``), the same
    for every command: the followed tree leaves out procevents' own
    processes (this one, its readers, its guardian, record's shipper), so
    ``procevents -p $$ &`` ends once the shell and the rest have exited,
    and neither shows nor records itself."""
    from ..filters import DescendantFilter, FollowEnd, OwnProcesses

    own = OwnProcesses()
    followed = roots
    if enricher is not None:
        table = enricher.table
        # Seeded before the readers start: the shipper, if any, is here.
        own.tgids |= table.descendants(own.tgids)
        followed = table.descendants(roots)
    follow = DescendantFilter(followed, own)
    end = None if keep_running else FollowEnd(follow, roots)
    return follow, end


def silence_stdout() -> None:
    # Further writes (including the interpreter's final flush) must not raise.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except OSError:
        pass


def open_output(path: str | None) -> Output:
    from ..files import UnsafePath
    from ..pipeline import Output

    try:
        return Output.open(path)
    except UnsafePath as exc:
        raise RuntimeFailure(f"refusing {exc.strerror}") from None
    except OSError as exc:
        raise RuntimeFailure(f"cannot open {path}: {exc.strerror}") from None


def refuse_output_onto(output: str | None, database: str) -> None:
    """-o must not append text to the database being read."""
    from ..files import same_file

    if output not in (None, "-") and same_file(output, database):
        raise UsageError(f"-o {output} is the database being read")


def finish_output(output: Output) -> int:
    status = 0
    try:
        output.flush()
    except BrokenPipeError:
        silence_stdout()
    except OSError as exc:
        stderr(f"error: writing output: {exc.strerror or exc}")
        status = 1
    output.close()
    return status


def write_lines(output: Output, lines: Sequence[str] | Sequence[bytes]) -> None:
    for line in lines:
        output.write(line if isinstance(line, bytes) else line.encode("utf-8", "backslashreplace"))


def ancestor_lineage(enricher: Enricher, roots: set[int] | None) -> Callable[[Proc], list[Proc]]:
    """For the tree: the ancestors up to a root (or to init), from the table."""
    from ..render.tree import lineage_below

    def lineage(proc: Proc) -> list[Proc]:
        return lineage_below(proc.pid, enricher.table.ancestors(proc.pid), roots)

    return lineage


def run_pipeline(
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
    on_batch: Callable[[], None] | None = None,
    observers: Sequence[Callable[..., None]] = (),
    after: Callable[[], None] | None = None,
    own_signals: bool = True,
    tick: float | None = None,
    linger: float | None = None,
    shown: frozenset[str] | None = None,
    selection: Sequence[str] = (),
    summary: Summary | None = None,
    on_usr1: Callable[[], None] | None = None,
) -> int:
    """Shared main loop: open, run, and close on every way out.

    With ``own_signals`` (the default), Ctrl-C and every other signal that
    would end the process ask the loop to stop between two batches, so
    output lines are never torn and IGNORE is sent; a second Ctrl-C aborts
    the final drain; SIGUSR1 prints the summary so far, or calls
    ``on_usr1`` instead (in the signal handler: it may only set a flag).

    While events keep coming, reads are spaced out up to ``linger`` seconds
    (default: as suits ``output``), unless /proc is read after the event
    (async capture), where every moment counts.  ``stop`` is asked after
    every batch and every ``tick`` seconds, after ``on_batch()``; with no
    tick an idle loop sleeps until an event or a signal.  ``shown`` and ``selection`` are for the
    notice (see describe_subscription); ``summary`` counts for the last line.
    """
    from ..connector import ConnectorError, Terminated
    from ..pipeline import JsonSink, Pipeline

    pipeline = Pipeline(
        conn, sink, enricher=enricher, filters=filters, count=count, observers=observers, output=output,
        summary=summary,
    )
    status = 0
    stopper = _StopOnSignal(on_usr1 or (lambda: stderr(pipeline.summary.line()))) if own_signals else None
    if stopper is not None:
        outer_stop = stop

        def stop() -> bool:
            return stopper.requested or (outer_stop is not None and outer_stop())

    capture = enricher.capture if enricher is not None else None
    costs = enricher.costs if enricher is not None else None
    try:
        try:
            if stopper is not None:
                stopper.install()
            if capture is not None and not capture.started:
                capture.start()
            if conn.closed:
                conn.open()
            cost_notice = open_costs(enricher) if enricher is not None and costs is not None and costs.closed else None
            races = enricher is not None and (capture is None or not capture.active)
            pipeline.linger = 0.0 if races else (output.linger if linger is None else linger)
            if stopper is not None:
                conn.wake_on(stopper.wake_fd)
            if not quiet:
                # "listening" last: it tells a reader of stderr that we are ready.
                if capture is not None:
                    stderr(capture.describe())
                elif enricher is not None:
                    stderr("argv capture: async (--capture async)")
                if cost_notice is not None:
                    stderr(cost_notice)
                stderr(describe_subscription(conn, shown, selection))
            try:
                pipeline.run(duration=duration, stop=stop, tick=tick, on_batch=on_batch)
            except (KeyboardInterrupt, Terminated):
                pass
            # What the kernel queued before we stopped is still shown: an
            # event is never dropped silently on the way out.  A second
            # Ctrl-C skips this.
            pipeline.finish()
        except ConnectorError as exc:
            stderr(f"error: {exc.strerror or exc}")
            quiet = True  # nothing was watched: no summary
            return 1
        except (KeyboardInterrupt, Terminated):
            pass
        except BrokenPipeError:
            # The reader went away (e.g. `| head`): stop quietly.
            silence_stdout()
        except OSError as exc:
            stderr(f"error: writing output: {exc.strerror or exc}")
            status = 1
    finally:
        conn.wake_on(None)
        conn.close()
        if costs is not None:
            costs.close()
            trouble = costs.problems()
            if trouble is not None:
                stderr(trouble)
        if capture is not None:
            capture.close()
        if stopper is not None:
            stopper.uninstall()
        refused = refusals(conn, capture, costs)
        if refused and isinstance(sink, JsonSink):
            # In band, once, after the last event: a consumer of the stream sees it too.
            try:
                sink.write_record(refused.record())
            except OSError:
                pass  # the output is gone: finish_output says so
        status = finish_output(output) or status
        if conn.malformed:
            stderr(f"skipped {conn.malformed} malformed datagrams (last: {conn.last_decode_error})")
        if refused:
            stderr(refused.line())
        if after is not None:
            after()
        if not quiet:
            stderr(pipeline.summary.line())
    return status


def refusals(conn: Connector, capture: ExecCapture | None, costs: ExitCosts | None) -> Refusals:
    """Datagrams not sent by the kernel, over every socket of the run."""
    from ..senders import Refusals

    total = Refusals()
    for source in (conn, capture, costs):
        if source is not None:
            total.merge(source.refused)
    return total


def open_costs(enricher: Enricher) -> str:
    """Register for taskstats; where that is not possible, say why once
    and go on without figures."""
    from ..accounting import CostsUnavailable

    costs = enricher.costs
    assert costs is not None
    try:
        costs.open()
    except CostsUnavailable as exc:
        enricher.costs = None
        return f"no exit costs: {exc.strerror} (--no-costs hides this notice)"
    return costs.describe()


class _StopOnSignal:
    """Ctrl-C and every other catchable signal that would end the process
    (SIGTERM, SIGHUP, SIGQUIT, SIGUSR2, SIGALRM, SIGXCPU, ...) set a flag
    that the loop checks between batches, so output lines are never torn
    and IGNORE is always sent; the signal also writes to ``wake_fd``
    (signal.set_wakeup_fd), which ends the loop's wait at once.  A second
    Ctrl-C raises KeyboardInterrupt to skip the final drain.  SIGUSR1
    prints the summary so far (``-S`` prints its table instead)."""

    def __init__(self, on_usr1: Callable[[], None] | None = None) -> None:
        from ..exits import STOPPING_SIGNALS

        self.signals = STOPPING_SIGNALS
        self.on_usr1 = on_usr1
        self.requested = False
        self._previous: dict[int, Any] = {}
        self.wake_fd: int | None = None
        self._wake_write = -1
        self._previous_wakeup = -1

    def _handle(self, signum: int, _frame: object) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def _usr1(self, _signum: int, _frame: object) -> None:
        if self.on_usr1 is not None:
            self.on_usr1()

    def install(self) -> None:
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        if signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL:  # -S has its own
            self._previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, self._usr1)
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


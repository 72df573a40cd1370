"""The per-batch pipeline: enrich, filter, render, write.

Composed of small stages, as structlog composes processors.  A batch is
everything the socket had queued; /proc is read for its execs before
anything else is done with it, then each event goes through the stages in
arrival order, and the output is flushed once per batch.
"""

from __future__ import annotations

import os
import stat
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, BinaryIO, Protocol

from .connector import Connector
from .enrich import Enricher
from .events import Event, Lost
from .proctable import Proc
from .render.clock import Clock
from .render.jsonl import choose_dumps, event_fields, put_argv, put_text
from .render.text import TextRenderer
from .render.tree import TreeRenderer
from .snapshot import ExecSnapshot
from .stats import Summary

Filter = Callable[[Event, Proc | None], bool]


#: A regular file is written when this much is buffered, or after this long.
FILE_FLUSH_BYTES = 256 * 1024
FILE_FLUSH_SECONDS = 0.2

#: Seconds the main loop lets events gather after one arrives, by where they
#: go: a terminal still shows each line within 100 ms (the recorder's is
#: store.writer.RECORD_LINGER, within its bound on a query's lag).  Only
#: where nothing races the processes (argv is read by the capture readers,
#: or not at all).
TERMINAL_LINGER = 0.05
STREAM_LINGER = 0.25


class Output:
    """Buffered byte output.

    A terminal or pipe gets every batch at once (a live view); a regular
    file is written in larger chunks, at most FILE_FLUSH_SECONDS late, which
    saves a write per batch when events trickle in.
    """

    def __init__(self, stream: BinaryIO, *, owned: bool = False) -> None:
        self.stream = stream
        self.owned = owned
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.lazy = _is_regular_file(stream)
        #: The write error that ended this output (reported once, by the
        #: caller of the flush that met it); later writes are dropped.
        self.failed: OSError | None = None
        self._last_flush = time.monotonic()

    @classmethod
    def open(cls, path: str | None) -> Output:
        if path is None or path == "-":
            return cls(sys.stdout.buffer)
        from .files import open_append

        return cls(open_append(path), owned=True)

    def write(self, data: bytes) -> None:
        self.pending.append(data)
        self.pending_bytes += len(data)

    @property
    def linger(self) -> float:
        """How long events may gather before they are shown here."""
        try:
            return TERMINAL_LINGER if os.isatty(self.stream.fileno()) else STREAM_LINGER
        except (OSError, ValueError, AttributeError):
            return TERMINAL_LINGER

    @property
    def flush_due_in(self) -> float | None:
        """Seconds until buffered data must be written; None if none is."""
        if not self.pending:
            return None
        return max(0.0, self._last_flush + FILE_FLUSH_SECONDS - time.monotonic())

    def batch_done(self) -> None:
        """End of a batch: write now, or later for a regular file."""
        if not self.lazy or self.pending_bytes >= FILE_FLUSH_BYTES or self.flush_due_in == 0.0:
            self.flush()

    def flush(self) -> None:
        if self.failed is not None:
            self.pending.clear()
            self.pending_bytes = 0
            return
        try:
            if self.pending:
                data = b"".join(self.pending)
                self.pending.clear()
                self.pending_bytes = 0
                self.stream.write(data)
            self.stream.flush()
        except OSError as exc:
            self.failed = exc
            raise
        self._last_flush = time.monotonic()

    def close(self) -> None:
        if self.owned:
            try:
                self.stream.close()
            except OSError:
                pass  # what is still buffered failed to write: reported by flush()


def _is_regular_file(stream: BinaryIO) -> bool:
    try:
        return stat.S_ISREG(os.fstat(stream.fileno()).st_mode)
    except (OSError, ValueError, AttributeError):
        return False


class Flushed(Protocol):
    """What the main loop flushes: an :class:`Output`, or the recorder's store."""

    @property
    def flush_due_in(self) -> float | None:
        """Seconds until buffered data must be written; None if none is."""

    def batch_done(self) -> None:
        """End of a batch: write what is due."""

    def flush(self) -> None:
        """Write everything now."""


class Sink(Protocol):
    def emit(self, event: Event, proc: Proc | None, info: Mapping[str, Any]) -> bool:
        """Render one event; return whether anything was written."""


class TextSink:
    def __init__(self, output: Output, clock: Clock | None = None) -> None:
        self.output = output
        self.renderer = TextRenderer(clock)

    def emit(self, event: Event, proc: Proc | None, info: Mapping[str, Any]) -> bool:
        ppid = info.get("ppid")
        if ppid is None:
            ppid = getattr(event, "parent_tgid", None) or None
        self.output.write(self.renderer.render(event, ppid, info).encode("utf-8", "backslashreplace"))
        return True


_TEXT_KEYS = ("comm", "exe", "cwd", "user")


class JsonSink:
    def __init__(self, output: Output, clock: Clock | None = None) -> None:
        self.output = output
        self.clock = clock or Clock()
        self.dumps = choose_dumps()

    def emit(self, event: Event, proc: Proc | None, info: Mapping[str, Any]) -> bool:
        fields = event_fields(event, self.clock)
        if info:
            fields.update(info)
        try:
            data = self.dumps(fields)
        except (TypeError, ValueError):
            # Text that is not valid UTF-8 (orjson refuses it, the stdlib
            # fails to encode it): rare, so only then is each value checked.
            for key, value in info.items():
                if key == "cmdline":
                    put_argv(fields, key, value)
                elif key in _TEXT_KEYS:
                    put_text(fields, key, value)
            data = self.dumps(fields)
        self.output.write(data + b"\n")
        return True

    def write_record(self, record: Mapping[str, Any]) -> None:
        """One in-band line that is not an event (``{"event": "refused", ...}``)."""
        self.output.write(self.dumps(record) + b"\n")


class TreeSink:
    def __init__(
        self,
        output: Output,
        lineage: Callable[[Proc], Sequence[Proc]] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.output = output
        self.renderer = TreeRenderer(lineage, clock)

    def emit(self, event: Event, proc: Proc | None, info: Mapping[str, Any]) -> bool:
        line = self.renderer.render(event, proc, info)
        if line is None:
            return False
        self.output.write(line.encode("utf-8", "backslashreplace"))
        return True


def choose_sink(
    output: Output,
    *,
    json: bool,
    clock: Clock | None = None,
    lineage: Callable[[Proc], Sequence[Proc]] | None = None,
) -> Sink:
    """JSON Lines, else the tree view when given its ``lineage``, else text."""
    if json:
        return JsonSink(output, clock)
    if lineage is not None:
        return TreeSink(output, lineage, clock)
    return TextSink(output, clock)


class Pipeline:
    """Connector -> enrich -> filters -> sink, one batch at a time."""

    def __init__(
        self,
        connector: Connector,
        sink: Sink,
        *,
        enricher: Enricher | None = None,
        filters: Sequence[Filter] = (),
        summary: Summary | None = None,
        count: int | None = None,
        observers: Sequence[Callable[[Event, Proc | None, Mapping[str, Any]], None]] = (),
        output: Flushed | None = None,
        linger: float = 0.0,
    ) -> None:
        self.connector = connector
        self.output = output
        #: Seconds to let events gather after one arrives (Connector.read_batch).
        self.linger = linger
        self.sink = sink
        self.enricher = enricher
        self.filters = list(filters)
        self.summary = summary or Summary()
        self.remaining = count
        self.observers = list(observers)

    @property
    def done(self) -> bool:
        return self.remaining is not None and self.remaining <= 0

    def process(self, batch: list[Event]) -> None:
        enricher = self.enricher
        snapshots: dict[int, ExecSnapshot] = {}
        if enricher is not None:
            snapshots = enricher.read_execs(batch)
            if any(not snapshot.held for snapshot in snapshots.values()):
                # A snapshot read after its process was released may be of a
                # later process with the same pid: the events queued since tell.
                later, complete = self.connector.peek()
                enricher.check_snapshots(batch, snapshots, later, complete)
            enricher.collect_costs()
        filters = self.filters
        sink = self.sink
        summary = self.summary
        observers = self.observers
        empty: Mapping[str, Any] = {}
        proc: Proc | None
        info: Mapping[str, Any]
        seen = len(batch)
        for index, event in enumerate(batch):
            if enricher is not None:
                proc, info = enricher.apply(event, snapshots.get(index))
            else:
                proc, info = None, empty
            if filters and not all(check(event, proc) for check in filters):
                continue
            if type(event) is Lost:
                # The running total, in-band: every loss so far, this one
                # included (the summary's last count; loss passes every filter).
                info = {**info, "total": summary.lost + event.count}
            for observe in observers:
                observe(event, proc, info)
            written = sink.emit(event, proc, info)
            summary.add(event, written)
            if written and self.remaining is not None and type(event) is not Lost:
                self.remaining -= 1
                if self.remaining <= 0:
                    seen = index + 1
                    break
        summary.seen += seen
        if enricher is not None:
            enricher.maybe_resync()

    def run(
        self,
        duration: float | None = None,
        stop: Callable[[], bool] | None = None,
        tick: float | None = None,
        on_batch: Callable[[], None] | None = None,
    ) -> None:
        """Process batches until ``count`` events, ``duration`` seconds, or
        ``stop()`` (asked once before the first read, after every batch, and
        at least every ``tick`` seconds when given; with no tick, an idle
        loop never wakes).  ``on_batch()`` runs at the same moments, before
        ``stop()``: work to do as events are processed (a view's redraw)."""
        output = self.output
        connector = self.connector
        linger = self.linger
        deadline = None if duration is None else time.monotonic() + duration
        if stop is not None and stop():
            return
        while not self.done:
            timeout = tick
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                timeout = left if timeout is None else min(timeout, left)
            wait = linger
            if output is not None:
                due = output.flush_due_in
                if due is not None:
                    timeout = due if timeout is None else min(timeout, due)
                    wait = min(wait, due)  # gathering never delays a due write
            batch = connector.read_batch(timeout, linger=wait)
            if batch:
                self.process(batch)
            if output is not None:
                output.batch_done()
            if on_batch is not None:
                on_batch()
            if stop is not None and stop():
                break

    def finish(self) -> None:
        """Unsubscribe, then process what is still queued (unless done)."""
        self.connector.unsubscribe()
        self.connector.poll_drops()
        output = self.output
        while not self.done:
            batch = self.connector.read_batch(0)
            if not batch:
                break
            self.process(batch)
            if output is not None:
                output.flush()

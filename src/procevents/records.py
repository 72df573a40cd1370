"""The enriched Python API: records with the fields the JSON output has.

``watch()`` is what the command line runs, as a Python iterator: the same
subscription, the same per-CPU exec capture, the same process table, and
for each event a :class:`Record` whose keys are the ``--json`` keys
(``cmdline``, ``exe``, ``cwd``, ``user``, ``comm``, ``duration``,
``status``...), with text as ``str`` exactly as the kernel and /proc gave it
(undecodable bytes surrogate-escaped, as ``os.fsdecode`` does).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any

from .accounting import CostsUnavailable, ExitCosts
from .capture import ENV_LIMIT, ExecCapture
from .connector import DEFAULT_RCVBUF, Connector
from .enrich import Enricher
from .events import Comm, Event, parse_event_names
from .filters import EventTypeFilter, no_threads
from .pipeline import Filter, Pipeline
from .proctable import Proc
from .render.clock import Clock
from .render.jsonl import event_fields


class Record(Mapping[str, Any]):
    """One event and what is known of its process.

    A read-only mapping with the ``--json`` keys, also readable as
    attributes (``record.cmdline``); ``record.event`` is the decoded
    :class:`~procevents.Event` itself."""

    __slots__ = ("_fields", "event")

    def __init__(self, event: Event, fields: dict[str, Any]) -> None:
        self.event = event
        self._fields = fields

    def __getitem__(self, key: str) -> Any:
        return self._fields[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._fields[name]
        except KeyError:
            raise AttributeError(name) from None

    def __repr__(self) -> str:
        return f"Record({self._fields!r})"


class _Collect:
    """The sink: each event that passed the filters becomes a Record."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.records: list[Record] = []

    def emit(self, event: Event, proc: Proc | None, info: Mapping[str, Any]) -> bool:
        fields = event_fields(event, self.clock)
        if type(event) is Comm:
            # The JSON form escapes it; Python gets the text itself.
            fields.pop("comm_b64", None)
            fields["comm"] = event.comm_text
        fields.update(info)
        self.records.append(Record(event, fields))
        return True

    def take(self) -> list[Record]:
        records, self.records = self.records, []
        return records


class Watch:
    """An enriched subscription: iterate it for :class:`Record` objects.

    Use as a context manager, or call :meth:`open` and :meth:`close`.  The
    kernel is told to stop (IGNORE, on every socket) on close, at the end of
    a ``with`` block, on garbage collection and at interpreter exit; the
    capture readers also end by themselves when this process does.
    """

    def __init__(
        self,
        events: Iterable[str] | str | None = None,
        *,
        capture: str = "sync",
        env: bool = False,
        threads: bool = True,
        rcvbuf: int = DEFAULT_RCVBUF,
        costs: bool = True,
    ) -> None:
        if capture not in ("sync", "async"):
            raise ValueError(f"capture must be 'sync' or 'async', not {capture!r}")
        env_limit = ENV_LIMIT if env else 0
        names = None if events is None else parse_event_names(events if isinstance(events, str) else list(events))
        self.connector = Connector(None, rcvbuf=rcvbuf)
        self.capture = ExecCapture(env_limit=env_limit) if capture == "sync" else None
        # The exit costs the command line's JSON has (taskstats), where exits are wanted.
        exit_costs = ExitCosts() if costs and (names is None or "exit" in names) else None
        self.enricher = Enricher(capture=self.capture, env_limit=env_limit, costs=exit_costs)
        #: Why exits come without costs, when taskstats could not be used
        #: (not root, a container): the command line's notice.  None otherwise.
        self.costs_unavailable: str | None = None
        filters: list[Filter] = []
        if names is not None:
            filters.append(EventTypeFilter(names))
        if not threads:
            filters.append(no_threads)
        self._sink = _Collect()
        self._async_batch: list[Record] = []
        self._pipeline = Pipeline(self.connector, self._sink, enricher=self.enricher, filters=filters)

    @property
    def lost(self) -> int:
        """Running total of events reported lost."""
        return self.connector.lost

    def open(self) -> Watch:
        """Register for exit costs, start the capture readers, then subscribe
        (ConnectorError if the kernel will not have us).  Where taskstats
        cannot be used, exits come without costs and
        :attr:`costs_unavailable` says why."""
        try:
            costs = self.enricher.costs
            if costs is not None and costs.closed:
                try:
                    costs.open()
                except CostsUnavailable as exc:
                    self.enricher.costs = None
                    self.costs_unavailable = exc.strerror or str(exc)
            if self.capture is not None:
                self.capture.start()
            self.connector.open()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        self.connector.close()
        if self.enricher.costs is not None:
            self.enricher.costs.close()
        if self.capture is not None:
            self.capture.close()

    def __enter__(self) -> Watch:
        if self.connector.closed:
            self.open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def read_batch(self, timeout: float | None = None) -> list[Record]:
        """Wait up to ``timeout`` seconds (None: forever) for events; return
        the records of everything queued ([] on timeout)."""
        batch = self.connector.read_batch(timeout)
        if batch:
            self._pipeline.process(batch)
        return self._sink.take()

    def __iter__(self) -> Iterator[Record]:
        if self.connector.closed:
            self.open()
        while True:
            yield from self.read_batch()

    async def read_batch_async(self) -> list[Record]:
        """Like :meth:`read_batch`, waiting on the running event loop."""
        while True:
            batch = await self.connector.read_batch_async()
            self._pipeline.process(batch)
            records = self._sink.take()
            if records:
                return records

    def __aiter__(self) -> Watch:
        if self.connector.closed:
            self.open()
        return self

    async def __anext__(self) -> Record:
        if self.connector.closed:
            raise StopAsyncIteration
        while not self._async_batch:
            try:
                self._async_batch = await self.read_batch_async()
            except BaseException:
                self.close()
                raise
        return self._async_batch.pop(0)

    async def __aenter__(self) -> Watch:
        if self.connector.closed:
            self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def watch(
    events: Iterable[str] | str | None = None,
    *,
    capture: str = "sync",
    env: bool = False,
    threads: bool = True,
    rcvbuf: int = DEFAULT_RCVBUF,
    costs: bool = True,
) -> Watch:
    """Every process event with what the command line shows for it.

    >>> with procevents.watch(events="exec,exit") as records:  # doctest: +SKIP
    ...     for record in records:
    ...         print(record.event.name, record.pid, record.comm, record.cmdline, record.get("duration"))

    ``async for record in procevents.watch(...)`` works too (in a
    coroutine).  ``events`` selects what is handed out (every event is
    still received: the process table needs forks and exits); ``capture``
    is ``"sync"`` (per-CPU realtime readers, the default) or ``"async"``;
    ``env`` adds each exec's environment; ``threads=False`` hides thread
    events.  Exits carry what the process cost (``utime``, ``max_rss``...,
    from taskstats, as ``--json`` has them; ``costs=False``: not asked).
    Leaving the ``with`` block unsubscribes.
    """
    return Watch(events, capture=capture, env=env, threads=threads, rcvbuf=rcvbuf, costs=costs)

"""Prometheus metrics: counted in the pipeline, served over HTTP.

The counting (:class:`MetricsObserver`, a pipeline observer) is plain Python
on the pipeline's thread.  prometheus_client, an optional extra
(``pip install 'procevents[metrics]'``), is imported only when the server
starts; it serves ``/metrics`` from a daemon thread, which reads the counts
when scraped.

Labels by command name are bounded: each family gives its own label to at
most ``top`` command names, chosen at scrape time among those not yet
labelled, highest count first, while slots are free; everything else is
``command="other"``.  A label once given is kept, so every series only ever
grows (a promoted command's series starts at its full count; what it had
added to ``other`` stays there).
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator, Mapping, Sequence, Sized
from typing import TYPE_CHECKING, Any, Final, Protocol

from .costs import exit_cpu
from .escape import escape
from .events import EVENT_NAMES, Exit
from .stats import LifecycleCounter

if TYPE_CHECKING:
    from http.server import ThreadingHTTPServer

    from prometheus_client.metrics_core import Metric


#: Command names given their own label, per metric family.
DEFAULT_TOP: Final = 20
OTHER: Final = "other"
#: Distinct command names counted one by one (memory bound); beyond, they count as OTHER.
MAX_TRACKED: Final = 10_000
_OVERFLOW: Final = "\0other"  # never a comm: comm cannot hold NUL
DEFAULT_HOST: Final = "127.0.0.1"


#: Seconds a scrape's connection may stay silent before it is closed.
CLIENT_TIMEOUT: Final = 10.0
#: Scrapes answered at once; more are refused (each holds a thread).
MAX_CLIENTS: Final = 16


class MetricsError(Exception):
    """Metrics cannot be served; ``str()`` is one line for a user."""


def parse_address(text: str) -> tuple[str, int]:
    """``[ADDR:]PORT`` -> (host, port).  ``9100`` binds 127.0.0.1; ``0.0.0.0:9100``
    or ``[::]:9100`` every interface; ``[::1]:9100`` IPv6.  Raises ValueError."""
    text = text.strip()
    host = DEFAULT_HOST
    port_text = text
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise ValueError(f"not [ADDR:]PORT: {text!r} (e.g. 9100, 0.0.0.0:9100, [::1]:9100)")
        host, port_text = text[1:end], text[end + 2 :]
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
        if not host or ":" in host:
            raise ValueError(f"not [ADDR:]PORT: {text!r} (e.g. 9100, 0.0.0.0:9100, [::1]:9100)")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"not a port: {port_text!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range: {port}")
    return host, port


class CommandCounter:
    """Counts by command name (bounded memory); read from another thread by
    snapshot."""

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def add(self, name: str | None) -> None:
        counts = self.counts
        key = _label(name)
        value = counts.get(key)
        if value is None and len(counts) >= MAX_TRACKED:
            key = _OVERFLOW
            value = counts.get(key)
        counts[key] = (value or 0) + 1

    def snapshot(self) -> dict[str, int]:
        # A C-level copy of a plain dict: atomic under the GIL.
        return dict(self.counts)


def _label(name: str | None) -> str:
    """A label value any scrape can encode: a name that is not valid UTF-8
    (any process may call itself b"x\\xff") is shown escaped, as the terminal
    shows it."""
    if not name:
        return "?"
    if not name.isascii():
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            return escape(name)
    return name


class LabelSet:
    """The sticky, bounded choice of command labels for one family."""

    __slots__ = ("carried", "labelled", "last", "top")

    def __init__(self, top: int) -> None:
        self.top = top
        self.labelled: set[str] = set()
        #: What promoted commands had added to "other" when it was last exported.
        self.carried = 0
        #: The unlabelled commands' counts at the last export.
        self.last: dict[str, int] = {}

    def export(self, counts: Mapping[str, int]) -> list[tuple[str, int]]:
        """(command, value) pairs, "other" last.  Every value is at least what
        it was at the previous export."""
        labelled = self.labelled
        free = self.top - len(labelled)
        if free > 0:
            candidates = sorted(
                ((count, name) for name, count in counts.items() if name not in labelled and name != _OVERFLOW),
                key=lambda item: (-item[0], item[1]),
            )
            for _count, name in candidates[:free]:
                labelled.add(name)
                self.carried += self.last.get(name, 0)
        unlabelled = {name: count for name, count in counts.items() if name not in labelled}
        self.last = unlabelled
        out = sorted((name, counts.get(name, 0)) for name in labelled)
        out.append((OTHER, self.carried + sum(unlabelled.values())))
        return out


class Histogram:
    """Counts per bucket (upper bounds, +Inf last), their sum and count: a
    Prometheus histogram kept by the pipeline, read at scrape time."""

    __slots__ = ("bounds", "buckets", "count", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = (*bounds, float("inf"))
        self.buckets = [0] * len(self.bounds)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.buckets[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """(le, observations at or below it), as the exposition format wants."""
        out = []
        running = 0
        for bound, count in zip(self.bounds, self.buckets, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return out


#: Bucket bounds, seconds: from a 1 ms helper to a build of hours.
LIFETIME_BOUNDS: Final = (0.001, 0.01, 0.1, 1.0, 10.0, 60.0, 600.0, 3600.0)
CPU_BOUNDS: Final = (0.001, 0.01, 0.1, 1.0, 10.0, 60.0, 600.0)


class MetricsObserver(LifecycleCounter):
    """Pipeline observer: events by type, lost events, and per command name
    process starts (new processes, by the name they are born with: their
    parent's), execs (by the program's name) and failures (a non-zero
    status or a signal, by the name at exit)."""

    def __init__(self) -> None:
        super().__init__()
        self.events.update(dict.fromkeys(EVENT_NAMES, 0))  # every type exposed, seen or not
        self.starts = CommandCounter()
        self.execs = CommandCounter()
        self.exits = CommandCounter()
        self.failures = CommandCounter()
        self.lifetimes = Histogram(LIFETIME_BOUNDS)
        #: Only exits with a taskstats record (run as root, --no-costs not given).
        self.cpu = Histogram(CPU_BOUNDS)

    def forked(self, info: Mapping[str, Any]) -> None:
        self.starts.add(info.get("comm"))

    def execed(self, info: Mapping[str, Any]) -> None:
        self.execs.add(info.get("comm"))

    def exited(self, event: Exit, info: Mapping[str, Any]) -> None:
        comm = info.get("comm")
        self.exits.add(comm)
        if event.exit_code:
            self.failures.add(comm)
        duration = info.get("duration")
        if duration is not None:
            self.lifetimes.observe(duration)
        cpu = exit_cpu(info)
        if cpu is not None:
            self.cpu.observe(cpu)


class _Drops(Protocol):
    rcvbuf: int

    def drops(self) -> int: ...


class _Writer(Protocol):
    events_written: int
    commits: int
    pending: list[tuple[Any, ...]]


class Collector:
    """The prometheus_client collector: reads the observer (and the socket,
    the process table and the store, when given) at scrape time."""

    def __init__(
        self,
        observer: MetricsObserver,
        *,
        top: int = DEFAULT_TOP,
        connector: _Drops | None = None,
        table: Sized | None = None,
        writer: _Writer | None = None,
    ) -> None:
        self.observer = observer
        self.connector = connector
        self.table = table
        self.writer = writer
        self.labels = {name: LabelSet(top) for name in ("starts", "execs", "exits", "failures")}
        self._lock = threading.Lock()
        self._drops = 0

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        with self._lock:  # scrapes may overlap (one thread per request)
            yield from self._collect()

    def _collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        obs = self.observer
        events = CounterMetricFamily("procevents_events", "Process events received, by type", labels=["type"])
        counts = dict(obs.events)
        for name in EVENT_NAMES:
            if name != "lost":
                events.add_metric([name], counts.get(name, 0))
        yield events
        yield CounterMetricFamily(
            "procevents_events_lost", "Events the kernel could not deliver (reported in-band)", value=obs.lost
        )
        families: list[tuple[str, str, str, CommandCounter]] = [
            ("starts", "procevents_process_starts", "New processes, by command name at birth", obs.starts),
            ("execs", "procevents_process_execs", "Programs executed, by command name", obs.execs),
            ("exits", "procevents_process_exits", "Processes that exited, by command name", obs.exits),
            ("failures", "procevents_process_failures",
             "Processes that exited with a non-zero status or a signal, by command name", obs.failures),
        ]
        for key, metric, doc, counter in families:
            family = CounterMetricFamily(metric, doc, labels=["command"])
            for command, value in self.labels[key].export(counter.snapshot()):
                family.add_metric([command], value)
            yield family
        for name, doc, histogram in (
            ("procevents_process_lifetime_seconds", "How long processes lived, fork to exit", obs.lifetimes),
            ("procevents_process_cpu_seconds", "CPU time (user and system) of processes that exited, from "
             "taskstats", obs.cpu),
        ):
            yield HistogramMetricFamily(name, doc, buckets=histogram.cumulative(), sum_value=histogram.total)
        if self.table is not None:
            yield GaugeMetricFamily(
                "procevents_processes_alive", "Processes in the process table", value=len(self.table)
            )
        if self.connector is not None:
            drops = self.connector.drops()
            self._drops = max(self._drops, drops)  # 0 once the socket is closed
            yield CounterMetricFamily(
                "procevents_receive_buffer_drops",
                "Events the kernel dropped because the socket's receive buffer was full",
                value=self._drops,
            )
            yield GaugeMetricFamily(
                "procevents_receive_buffer_bytes", "Size of the socket's receive buffer", value=self.connector.rcvbuf
            )
        if self.writer is not None:
            yield CounterMetricFamily(
                "procevents_store_events", "Events committed to the database", value=self.writer.events_written
            )
            yield CounterMetricFamily(
                "procevents_store_commits", "Transactions committed to the database", value=self.writer.commits
            )
            yield GaugeMetricFamily(
                "procevents_store_pending_events", "Events waiting for the next commit",
                value=len(self.writer.pending),
            )


class MetricsServer:
    """``/metrics`` over HTTP on a daemon thread."""

    def __init__(self, host: str, port: int, collector: Collector) -> None:
        try:
            from prometheus_client import CollectorRegistry
            from prometheus_client.exposition import MetricsHandler
        except ImportError:
            raise MetricsError(
                "--metrics needs the prometheus_client package: pip install 'procevents[metrics]'"
            ) from None
        import socket
        from http.server import ThreadingHTTPServer

        registry = CollectorRegistry(auto_describe=False)
        registry.register(collector)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET

        class Handler(MetricsHandler.factory(registry)):  # type: ignore[misc]
            timeout = CLIENT_TIMEOUT  # an idle client does not hold a thread for long

            def log_message(self, format: str, *args: object) -> None:
                pass  # no line per scrape on our stderr

        class Server(ThreadingHTTPServer):
            address_family = family
            daemon_threads = True
            slots = threading.BoundedSemaphore(MAX_CLIENTS)

            def process_request(self, request: Any, client_address: Any) -> None:
                if not self.slots.acquire(blocking=False):
                    self.shutdown_request(request)  # too many at once: refused, not queued
                    return
                try:
                    super().process_request(request, client_address)
                except BaseException:
                    self.slots.release()
                    raise

            def process_request_thread(self, request: Any, client_address: Any) -> None:
                try:
                    super().process_request_thread(request, client_address)
                finally:
                    self.slots.release()

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that went away mid-answer: nothing to say

        try:
            self.server: ThreadingHTTPServer = Server((host, port), Handler)
        except OSError as exc:
            shown = f"[{host}]" if ":" in host else host
            raise MetricsError(f"cannot serve metrics on {shown}:{port}: {exc.strerror or exc}") from None
        self.host = str(self.server.server_address[0])
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, name="procevents-metrics", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{shown}:{self.port}/metrics"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def serve(
    address: tuple[str, int],
    observer: MetricsObserver,
    *,
    connector: _Drops | None = None,
    table: Sized | None = None,
    writer: _Writer | None = None,
    top: int = DEFAULT_TOP,
) -> MetricsServer:
    """Start serving; raise :class:`MetricsError` with a reason."""
    collector = Collector(observer, top=top, connector=connector, table=table, writer=writer)
    return MetricsServer(address[0], address[1], collector)

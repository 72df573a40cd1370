"""Prometheus metrics: counted in the pipeline, served over HTTP.

The counting (:class:`MetricsObserver`, a pipeline observer) is plain Python
on the pipeline's thread.  prometheus_client, an optional extra
(``pip install 'procevents[metrics]'``), is imported only when the server
starts; it serves ``/metrics`` from a daemon thread, which reads the counts
when scraped.

Labels by command name are bounded: each family gives its own label to at
most ``top`` command names, chosen at scrape time among those whose count
rose since the last scrape, the biggest rise first, while slots are free;
everything else is ``command="other"``.  A slot whose command has not risen
for ``RECLAIM_AFTER`` seconds goes, least recently risen first, to such a
command when none is free, so a burst of made-up names (any user can exec
``/tmp/x`` under a thousand names) holds slots only while it goes on.
Every series only ever grows: a command's series always shows its full
count (when it is given a slot again too), and ``other`` adds what the
commands without a slot added meanwhile (what a command added there before
it had a slot stays there).

The server is one thread and a selector, not a thread per client: every
connection has REQUEST_DEADLINE seconds for its whole request and answer,
however slowly its bytes come (a client sending a byte a second is cut off
then, not kept alive by each byte), and at most MAX_CLIENTS connections are
open at once, the oldest one closed for a new one; so clients that trickle
cost a few bytes each and a scraper is always answered.
"""

from __future__ import annotations

import bisect
import contextlib
import selectors
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence, Sized
from typing import TYPE_CHECKING, Any, Final, Protocol

from .costs import exit_cpu
from .escape import escape
from .events import EVENT_NAMES, Exit
from .stats import LifecycleCounter

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric


#: Command names given their own label, per metric family.
DEFAULT_TOP: Final = 20
OTHER: Final = "other"
#: Distinct command names counted one by one (memory bound); beyond, they count as OTHER.
MAX_TRACKED: Final = 10_000
_OVERFLOW: Final = "\0other"  # never a comm: comm cannot hold NUL
DEFAULT_HOST: Final = "127.0.0.1"


#: Seconds a connection has for its whole request and answer (a scraper
#: sends its request in one packet; a page is a few kB).
REQUEST_DEADLINE: Final = 5.0
#: Connections open at once; a new one beyond closes the oldest.
MAX_CLIENTS: Final = 64
#: Bytes a request line and headers may have.
MAX_HEAD: Final = 8192
#: Seconds a command's label is kept after its count last rose, before
#: another command may be given that slot.
RECLAIM_AFTER: Final = 300.0


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
    """A label value any scrape can encode and show: a name is escaped as
    the terminal shows it, control characters (ESC, \\r...), backslashes
    and bytes that are not valid UTF-8 (any process may call itself
    b"x\\xff" or b"\\x1b[31m") included; prometheus_client then escapes
    the quote, backslash and newline the text format reserves."""
    if not name:
        return "?"
    return escape(name)


class LabelSet:
    """The bounded choice of command labels for one family (module doc)."""

    __slots__ = ("labelled", "other", "previous", "reclaim_after", "top")

    def __init__(self, top: int, reclaim_after: float = RECLAIM_AFTER) -> None:
        self.top = top
        self.reclaim_after = reclaim_after
        #: Labelled command -> when its count last rose (time.monotonic()).
        self.labelled: dict[str, float] = {}
        #: What the commands had at the last export.
        self.previous: dict[str, int] = {}
        #: What commands added while they had no label.
        self.other = 0

    def export(self, counts: Mapping[str, int], now: float | None = None) -> list[tuple[str, int]]:
        """(command, value) pairs, "other" last.  Every value is at least what
        it was at the previous export (a command may have lost its label)."""
        now = time.monotonic() if now is None else now
        labelled = self.labelled
        previous = self.previous
        rising: dict[str, int] = {}
        for name, count in counts.items():
            rise = count - previous.get(name, 0)
            if rise <= 0:
                continue
            if name in labelled:
                labelled[name] = now
            elif name in (_OVERFLOW, OTHER):  # a command named "other" is counted there
                self.other += rise
            else:
                rising[name] = rise
        self.previous = dict(counts)
        free = self.top - len(labelled)
        idle = sorted((when, name) for name, when in labelled.items() if now - when >= self.reclaim_after)
        idle.reverse()  # least recently risen last, for pop()
        for name in sorted(rising, key=lambda n: (-rising[n], -counts[n], n)):
            if free > 0:
                free -= 1
            elif idle:
                del labelled[idle.pop()[1]]
            else:
                break
            labelled[name] = now
            del rising[name]  # its own series shows this rise
        self.other += sum(rising.values())
        out = sorted((name, counts.get(name, 0)) for name in labelled)
        out.append((OTHER, self.other))
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


class _Client:
    """One connection: its request head as it comes, then its answer."""

    __slots__ = ("answer", "deadline", "head", "sock")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.head = bytearray()
        self.answer: memoryview | None = None


class MetricsServer:
    """``/metrics`` over HTTP on a daemon thread (the module doc says how
    slow and many clients are bounded)."""

    def __init__(self, host: str, port: int, collector: Collector) -> None:
        try:
            from prometheus_client import CollectorRegistry
            from prometheus_client.exposition import choose_encoder
        except ImportError:
            raise MetricsError(
                "--metrics needs the prometheus_client package: pip install 'procevents[metrics]'"
            ) from None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        self._choose_encoder = choose_encoder
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((host, port))
            listener.listen(128)
        except OSError as exc:
            listener.close()
            shown = f"[{host}]" if ":" in host else host
            raise MetricsError(f"cannot serve metrics on {shown}:{port}: {exc.strerror or exc}") from None
        listener.setblocking(False)
        self.listener = listener
        self.host = str(listener.getsockname()[0])
        self.port = int(listener.getsockname()[1])
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector = selectors.DefaultSelector()
        self._selector.register(listener, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        #: Open connections, oldest (the first to reach its deadline) first.
        self._clients: dict[socket.socket, _Client] = {}
        self.thread = threading.Thread(target=self._run, name="procevents-metrics", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{shown}:{self.port}/metrics"

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        self.thread.join(5)
        for client in list(self._clients.values()):
            self._drop(client)
        for sock in (self.listener, self._wake_r, self._wake_w):
            sock.close()
        self._selector.close()

    # -- the serving thread --

    def _run(self) -> None:
        while True:
            clients = self._clients
            now = time.monotonic()
            while clients:  # deadlines are in accept order: the first is the soonest
                oldest = next(iter(clients.values()))
                if oldest.deadline > now:
                    break
                self._drop(oldest)
            timeout = min(1.0, next(iter(clients.values())).deadline - now) if clients else None
            for key, _mask in self._selector.select(timeout):
                if key.fileobj is self._wake_r:
                    return
                if key.fileobj is self.listener:
                    self._accept()
                    continue
                client = clients.get(key.fileobj)  # type: ignore[call-overload]
                if client is None:
                    continue  # dropped meanwhile
                try:
                    if client.answer is None:
                        self._read(client)
                    else:
                        self._write(client)
                except OSError:  # reset, or gone mid-answer: nothing to say
                    self._drop(client)

    def _accept(self) -> None:
        for _ in range(MAX_CLIENTS):  # then back to the others
            try:
                sock, _address = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # out of file descriptors, aborted: the next one may do
                return
            if len(self._clients) >= MAX_CLIENTS:
                self._drop(next(iter(self._clients.values())))
            sock.setblocking(False)
            client = _Client(sock, time.monotonic() + REQUEST_DEADLINE)
            self._clients[sock] = client
            self._selector.register(sock, selectors.EVENT_READ, None)

    def _read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(MAX_HEAD)
        except (BlockingIOError, InterruptedError):
            return
        if not data:
            self._drop(client)
            return
        client.head += data
        end = client.head.find(b"\r\n\r\n")
        if end < 0:
            end = client.head.find(b"\n\n")
        if end > MAX_HEAD or (end < 0 and len(client.head) > MAX_HEAD):
            client.answer = memoryview(_response(431, "text/plain", b"request too large\n"))
        elif end < 0:
            return  # more to come, within the deadline
        else:
            client.answer = memoryview(self._answer(bytes(client.head[:end])))
        self._selector.modify(client.sock, selectors.EVENT_WRITE, None)
        self._write(client)

    def _write(self, client: _Client) -> None:
        assert client.answer is not None
        try:
            sent = client.sock.send(client.answer)
        except (BlockingIOError, InterruptedError):
            return
        client.answer = client.answer[sent:]
        if not client.answer:
            self._drop(client)

    def _drop(self, client: _Client) -> None:
        if self._clients.pop(client.sock, None) is None:
            return
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(client.sock)
        client.sock.close()

    def _answer(self, head: bytes) -> bytes:
        """The response to a request head: the page for a GET (of any path,
        as prometheus_client's own server; ``name[]`` selects families)."""
        from urllib.parse import parse_qs, urlsplit

        lines = head.decode("latin-1").replace("\r\n", "\n").split("\n")
        parts = lines[0].split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return _response(400, "text/plain", b"bad request\n")
        method, target = parts[0], parts[1]
        if method not in ("GET", "HEAD"):
            return _response(405, "text/plain", b"only GET\n", extra="Allow: GET, HEAD\r\n")
        accept = ""
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "accept":
                accept = value.strip()
        try:
            encoder, content_type = self._choose_encoder(accept)
            names = parse_qs(urlsplit(target).query).get("name[]")
            registry: Any = self.registry.restricted_registry(names) if names else self.registry
            page: bytes = encoder(registry)
        except Exception:  # a page that cannot be made: the scrape fails, the program goes on
            return _response(500, "text/plain", b"cannot make the page\n")
        return _response(200, content_type, page, head_only=method == "HEAD")


_REASONS: Final = {200: "OK", 400: "Bad Request", 405: "Method Not Allowed", 431: "Request Header Fields Too Large",
                   500: "Internal Server Error"}


def _response(status: int, content_type: str, body: bytes, *, extra: str = "", head_only: bool = False) -> bytes:
    head = (
        f"HTTP/1.0 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n{extra}\r\n"
    )
    return head.encode("latin-1") + (b"" if head_only else body)


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

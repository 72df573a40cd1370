"""The only socket code: subscribe, receive, account for loss, unsubscribe.

The kernel keeps a global count of proc connector listeners and builds a
message for every fork/exec/exit on the machine while it is above zero.
Closing the socket does not lower it: only PROC_CN_MCAST_IGNORE does.  So a
:class:`Connector` sends IGNORE exactly once on every way out: ``close()``,
the end of a ``with`` block, an exception, garbage collection, interpreter
exit, and every catchable terminating signal (turned into
:class:`Terminated` while a connector is open, where the program has not set
its own handler; see :mod:`procevents.exits`).  With ``guard=True`` a
guardian process sends it even after a kill -9 (:mod:`procevents.guardian`).
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import time
import weakref
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Final

from . import exits, procfs, wire
from .events import Ack, Event, Lost, event_mask, parse_event_names
from .exits import Terminated
from .guardian import Guardian
from .guardian import start as start_guardian
from .host import NETWORK_NAMESPACE_PROBLEM, bind_refusal, kernel_supports_filter, namespace_problem
from .loss import LossTracker
from .senders import KERNEL_PORT, Refusals
from .subscription import Subscription


def _warn(message: str, *args: object) -> None:
    try:  # imported on the rare warning: logging costs every start 15 ms
        import logging

        logging.getLogger("procevents").warning(message, *args)
    except ImportError:  # at interpreter exit: the warning is lost
        pass


SOL_NETLINK: Final = 270
NETLINK_NO_ENOBUFS: Final = 5
SO_MEMINFO: Final = 55
SK_MEMINFO_DROPS: Final = 8
SO_RCVBUFFORCE: Final = getattr(socket, "SO_RCVBUFFORCE", 33)

#: Requested receive buffer (the kernel doubles it for bookkeeping).  A queued
#: event costs about 832 bytes, so this holds about 160,000 events: enough to
#: ride out a long burst of process creation while the reader catches up.
#: Only a backlog uses the memory.
DEFAULT_RCVBUF: Final = 64 * 1024 * 1024
#: Upper bound on events returned by one read_batch().
MAX_BATCH: Final = 4096
#: Upper bound on datagrams one peek() reads ahead.
PEEK_LIMIT: Final = 8192
_RECV_SIZE: Final = 16384  # CONNECTOR_MAX_MSG_SIZE: room for any datagram
#: Poll the drop counter at least this often during a storm (events).
_DROPS_POLL_EVERY: Final = 8192
#: ... and when the queue runs dry, at most this often.
_DROPS_POLL_INTERVAL_NS: Final = 200_000_000
#: With a linger, the spacing of reads after a quiet spell (then doubled).
_FIRST_GAP_NS: Final = 10_000_000


class ConnectorError(OSError):
    """The proc connector could not be used; ``str()`` is one line for a user."""


#: A request the proc connector ignores on every kernel (its payload is
#: neither a 4-byte op nor a struct proc_input): sent only to learn whether
#: the kernel's connector socket is there to receive it.
_IGNORED_REQUEST: Final = wire.NLMSG_HDR.pack(
    wire.NLMSG_HDR.size + wire.CN_MSG.size, wire.NLMSG_DONE, 0, 0, 0
) + wire.CN_MSG.pack(wire.CN_IDX_PROC, wire.CN_VAL_PROC, 0, 0, 0, 0)


def _connector_socket() -> socket.socket:
    """A NETLINK_CONNECTOR socket, after the namespaces the kernel ignores
    subscriptions from are ruled out (the first cause to name: in a user
    namespace the bind below fails too, for that reason)."""
    problem = namespace_problem()
    if problem:
        raise ConnectorError(errno.EPERM, problem)
    try:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, wire.NETLINK_CONNECTOR)
    except OSError as exc:
        if exc.errno in (errno.EPROTONOSUPPORT, errno.EAFNOSUPPORT):
            raise ConnectorError(exc.errno, "this kernel has no netlink connector (CONFIG_CONNECTOR is off)") from None
        raise ConnectorError(exc.errno, f"cannot open a netlink connector socket: {exc.strerror}") from None


def _in_foreign_network_namespace() -> bool:
    """Whether the kernel's connector is missing from this network namespace,
    found by sending it, from a socket of its own, a request it ignores
    (ECONNREFUSED: nobody is there)."""
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, wire.NETLINK_CONNECTOR) as sock:
            sock.send(_IGNORED_REQUEST)
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    return False


def _join_group(sock: socket.socket) -> None:
    """Bind to the proc connector's multicast group, or say why the kernel refused."""
    try:
        sock.bind((0, wire.CN_IDX_PROC))
    except PermissionError:
        if _in_foreign_network_namespace():
            raise ConnectorError(errno.ECONNREFUSED, NETWORK_NAMESPACE_PROBLEM) from None
        raise ConnectorError(errno.EPERM, bind_refusal()) from None
    except OSError as exc:
        raise ConnectorError(exc.errno, f"cannot bind the proc connector group: {exc.strerror}") from None


def probe() -> ConnectorError | None:
    """Whether this process may subscribe, found by trying what
    :meth:`Connector.open` does short of subscribing: the namespaces, a bind
    to the group, and a request every kernel ignores (refused from a
    non-initial network namespace).  None when it may; else the error
    ``open()`` would raise, worded the same.  Sends no LISTEN, so it owes
    the kernel no IGNORE."""
    try:
        sock = _connector_socket()
    except ConnectorError as exc:
        return exc
    try:
        _join_group(sock)
        if _in_foreign_network_namespace():
            return ConnectorError(errno.ECONNREFUSED, NETWORK_NAMESPACE_PROBLEM)
    except ConnectorError as exc:
        return exc
    finally:
        sock.close()
    return None


def _send_ignore(sock: socket.socket, subscription: Subscription) -> None:
    """Send IGNORE if this process owes it (see Subscription.ignore_due)."""
    request = subscription.ignore_due(os.getpid())
    if request is None:
        return
    try:
        sock.send(request)
        subscription.record(request)
    except OSError as exc:  # nothing better to do on the way out
        _warn("could not send PROC_CN_MCAST_IGNORE: %s", exc)


def _shutdown(sock: socket.socket, subscription: Subscription, guards: list[Guardian]) -> None:
    """Finalizer: IGNORE if still needed, release the guardian, close.  Runs at most once."""
    try:
        _send_ignore(sock, subscription)
        _release(guards)
    finally:
        sock.close()


def _release(guards: list[Guardian]) -> None:
    while guards:
        guards.pop().release()


class Connector:
    """A subscription to the kernel's process events.

    ``events`` is a set of names (see :data:`procevents.EVENT_NAMES`) or a
    comma-separated string; None means all.  A subset is filtered in the
    kernel when it supports it (6.6+) and always in userspace too.

    Use it as a context manager, or call :meth:`open` and :meth:`close`.
    Iterating yields events; :class:`~procevents.events.Lost` events appear
    in the stream wherever the kernel dropped some.
    """

    def __init__(
        self,
        events: Iterable[str] | str | None = None,
        *,
        rcvbuf: int = DEFAULT_RCVBUF,
        ack_timeout: float = 1.0,
        kernel_filter: bool = True,
        handle_signals: bool = True,
        guard: bool = False,
    ) -> None:
        self.wanted: frozenset[str] | None = (
            None if events is None else parse_event_names(events if isinstance(events, str) else list(events))
        )
        self.rcvbuf_requested = rcvbuf
        self.ack_timeout = ack_timeout
        self.use_kernel_filter = kernel_filter
        self.handle_signals = handle_signals
        #: Fork a guardian that sends IGNORE should this process be killed
        #: (kill -9, the OOM killer): see :mod:`procevents.guardian`.
        self.guard = guard
        self._guards: list[Guardian] = []
        #: Effective receive buffer size in bytes, as the kernel reports it.
        self.rcvbuf = 0
        #: True when the kernel drops unwanted events before they are queued.
        self.kernel_filtered = False
        self._subscription = Subscription((os.getpid() ^ int(time.monotonic_ns())), os.getpid())
        #: Datagrams skipped because they failed to decode.
        self.malformed = 0
        #: Datagrams dropped unread because the kernel did not send them.
        self.refused = Refusals()
        self.last_decode_error: wire.DecodeError | None = None
        self._sock: socket.socket | None = None
        self._finalizer: weakref.finalize[[socket.socket, Subscription, list[Guardian]], Connector] | None = None
        self._tracker = LossTracker(track_seq=True)
        self._buf = bytearray(_RECV_SIZE)
        self._pending: list[Event] = []
        self._since_drops_poll = 0
        self._last_drops_poll = 0
        self._drops_poll_due = False
        self._poller = select.poll()
        self._wake_fd: int | None = None
        self._last_read_ns = 0
        self._gap_ns = _FIRST_GAP_NS
        self._wake_poller: select.poll | None = None
        self._emptied = False

    # -- lifecycle -------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._finalizer is None or not self._finalizer.alive

    @property
    def opened(self) -> bool:
        """True once :meth:`open` has made the socket (closed or not since)."""
        return self._sock is not None

    @property
    def lost(self) -> int:
        """Running total of events reported lost."""
        return self._tracker.reported

    def fileno(self) -> int:
        if self._sock is None:
            raise ValueError("connector is not open")
        return self._sock.fileno()

    def open(self) -> Connector:
        """Open, subscribe and confirm; raise :class:`ConnectorError` with a reason."""
        if self._sock is not None:
            raise ValueError("connector already opened")
        self._sock = self._open_socket()
        self._poller.register(self._sock, select.POLLIN)
        self._subscription.owner_pid = os.getpid()
        self._finalizer = weakref.finalize(self, _shutdown, self._sock, self._subscription, self._guards)
        exits.register(self)
        if self.handle_signals:
            exits.install_signal_handlers()
        try:
            self._subscribe()
            self._confirm()
            if self.guard:
                self._start_guardian()
        except BaseException:
            self.close()
            raise
        return self

    def _start_guardian(self) -> None:
        assert self._sock is not None
        guardian = start_guardian(self._sock.fileno())
        if guardian is None:
            return
        self._guards.append(guardian)
        if guardian.pidfd >= 0:
            self._poller.register(guardian.pidfd, select.POLLIN)

    def _check_guardian(self, fd: int) -> bool:
        """``fd`` woke the wait: if it is a guardian's pidfd and that guardian
        died while we are subscribed, start another (with a notice), so a
        later kill -9 still ends with IGNORE.  Whether ``fd`` was a guardian's."""
        for guardian in self._guards:
            if guardian.pidfd != fd:
                continue
            self._poller.unregister(fd)
            if guardian.ended():
                self._guards.remove(guardian)
                if self.subscribed:
                    self._start_guardian()
                    replaced = f"pid {self._guards[-1].pid} took its place" if self._guards else "none could be started"
                    _warn("the guardian (pid %d) ended while subscribed; %s", guardian.pid, replaced)
            return True
        return False

    def unsubscribe(self) -> None:
        """Send IGNORE now but keep the socket, so what is already queued can
        still be read (``read_batch(0)``) before :meth:`close`."""
        if self._sock is not None and not self.closed:
            _send_ignore(self._sock, self._subscription)
            for guardian in self._guards:
                if guardian.pidfd >= 0:
                    self._poller.unregister(guardian.pidfd)
            _release(self._guards)

    @property
    def subscribed(self) -> bool:
        return not self.closed and not self._subscription.ignored

    @property
    def sent(self) -> list[bytes]:
        """Requests sent on the socket, in order (what ``close`` sent included)."""
        return self._subscription.sent

    def close(self) -> None:
        """Send PROC_CN_MCAST_IGNORE (exactly once over the life of this object) and close."""
        if self._finalizer is not None:
            self._finalizer()
        exits.unregister(self)
        if self.handle_signals:
            exits.restore_signal_handlers()

    def __enter__(self) -> Connector:
        if self._sock is None:
            self.open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _open_socket(self) -> socket.socket:
        sock = _connector_socket()
        try:
            self.rcvbuf = self._size_buffer(sock)
            try:
                sock.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)
            except OSError:
                pass  # old kernel: ENOBUFS will be reported and handled instead
            _join_group(sock)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    def _size_buffer(self, sock: socket.socket) -> int:
        want = self.rcvbuf_requested
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, want)
        except OSError:
            # Without CAP_NET_ADMIN: SO_RCVBUF, which the kernel caps at
            # net.core.rmem_max; ask for the most it will grant.
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, min(want, procfs.rmem_max()))
            except OSError:
                pass
        return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))

    def _send(self, request: bytes) -> None:
        assert self._sock is not None
        try:
            self._sock.send(request)
        except ConnectionRefusedError:
            raise ConnectorError(errno.ECONNREFUSED, NETWORK_NAMESPACE_PROBLEM) from None
        except OSError as exc:
            raise ConnectorError(exc.errno, f"cannot send a subscription request: {exc.strerror}") from None
        self._subscription.record(request)

    def _subscribe(self) -> None:
        mask = None
        if self.wanted is not None and self.use_kernel_filter and kernel_supports_filter():
            mask = event_mask(self.wanted)
        for request in self._subscription.listen_requests(mask):
            self._send(request)
        if mask is not None:
            self.kernel_filtered = True
            self._tracker.track_seq = False  # the filter makes gaps that are not losses

    def _confirm(self) -> None:
        """Wait for our ack; keep every event that arrives meanwhile."""
        assert self._sock is not None
        deadline = time.monotonic() + self.ack_timeout
        poller = select.poll()
        poller.register(self._sock, select.POLLIN)
        while True:
            for item in self._drain(keep_acks=True):
                if isinstance(item, Ack) and self._subscription.confirms(item):
                    if item.err:
                        raise ConnectorError(item.err, f"the kernel refused the subscription: {os.strerror(item.err)}")
                    self._pending = [ev for ev in self._pending if not isinstance(ev, Ack)]
                    return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ConnectorError(
                    errno.ETIMEDOUT,
                    f"no answer from the proc connector within {self.ack_timeout:g} s: the kernel may lack "
                    "CONFIG_PROC_EVENTS, or procevents runs in a container/namespace the kernel ignores",
                )
            poller.poll(remaining * 1000)

    # -- receiving -------------------------------------------------------

    def _drain(self, keep_acks: bool = False, limit: int = MAX_BATCH) -> list[Event]:
        """Read what is queued, without blocking; decoded events go to _pending.

        Returns the events read by this call (acks included when asked).
        """
        sock = self._sock
        assert sock is not None
        recvfrom_into = sock.recvfrom_into
        buf = self._buf
        decode = wire.decode
        on_event = self._tracker.on_event
        wanted = self.wanted
        pending = self._pending
        start = len(pending)
        got = 0
        self._emptied = False
        while got < limit:
            try:
                size, (sender, _groups) = recvfrom_into(buf)
            except BlockingIOError:
                self._emptied = True
                # The drop counter shows a tail loss no later event will:
                # read it when the queue runs dry, at most every interval.
                if time.monotonic_ns() - self._last_drops_poll >= _DROPS_POLL_INTERVAL_NS:
                    self._poll_drops()
                else:
                    self._drops_poll_due = True
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self._poll_drops("enobufs")
                    continue
                raise
            got += 1
            if sender != KERNEL_PORT:
                # Another process (root can) wrote to our port: never an event.
                self.refused.note(sender)
                continue
            try:
                event = decode(buf, size)
            except wire.DecodeError as exc:
                self._note_malformed(exc, buf, size)
                continue
            # Acks (ours and other listeners') take a number from the same
            # per-CPU counter as events, so they count for gap tracking.
            lost = on_event(event)
            if lost is not None:
                pending.append(lost)
            if type(event) is Ack:
                if keep_acks:
                    pending.append(event)
                continue
            if wanted is None or event.name in wanted:
                pending.append(event)
        else:
            self._since_drops_poll += got
            if self._since_drops_poll >= _DROPS_POLL_EVERY:
                self._poll_drops()
        return pending[start:]

    def _note_malformed(self, exc: wire.DecodeError, buf: bytearray, size: int) -> None:
        self.malformed += 1
        self.last_decode_error = exc
        if self.malformed <= 10:
            _warn("skipped a malformed datagram (%s): %s", exc, bytes(buf[: min(size, 96)]).hex())

    def drops(self) -> int:
        """The socket's cumulative drop counter (SO_MEMINFO), 0 if unavailable."""
        if self._sock is None:
            return 0
        try:
            raw = self._sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 4 * (SK_MEMINFO_DROPS + 1))
        except OSError:
            return 0
        return int(struct.unpack_from("<I", raw, 4 * SK_MEMINFO_DROPS)[0])

    def poll_drops(self) -> None:
        """Read the drop counter now; a loss it shows is queued as Lost."""
        if self._sock is not None and not self.closed:
            self._poll_drops()

    def _poll_drops(self, reason: str = "drops") -> None:
        self._since_drops_poll = 0
        self._drops_poll_due = False
        self._last_drops_poll = time.monotonic_ns()
        lost = self._tracker.on_drops(self.drops(), time.monotonic_ns(), reason)
        if lost is not None:
            self._pending.append(lost)

    def peek(self, limit: int = PEEK_LIMIT) -> tuple[list[Event], bool]:
        """Every event queued after the last batch, read from the socket now
        if need be, without consuming them (they stay pending for the next
        :meth:`read_batch`; the list must not be changed).

        Also returns whether that is everything generated so far (the socket's
        queue was emptied): False when ``limit`` events are already pending,
        so memory stays bounded when the reader falls far behind."""
        if self._sock is None:
            raise ValueError("connector is not open")
        room = limit - len(self._pending)
        if room <= 0:
            return self._pending, False
        self._drain(limit=room)
        return self._pending, self._emptied

    def wake_on(self, fd: int | None) -> None:
        """Also return from a wait in :meth:`read_batch` when ``fd`` becomes
        readable (a pipe given to :func:`signal.set_wakeup_fd`), and empty it
        then; None stops watching it."""
        if self._wake_fd is not None:
            try:
                self._poller.unregister(self._wake_fd)
            except KeyError:
                pass
        self._wake_fd = fd
        self._wake_poller = None
        if fd is not None:
            self._poller.register(fd, select.POLLIN)
            self._wake_poller = select.poll()
            self._wake_poller.register(fd, select.POLLIN)

    def read_batch(self, timeout: float | None = None, *, linger: float = 0.0) -> list[Event]:
        """Wait up to ``timeout`` seconds (None: forever) for events, then
        return everything queued (at most MAX_BATCH).  [] on timeout, or
        when the :meth:`wake_on` descriptor woke the wait.

        ``linger``: while events keep coming, reads are spaced out up to
        this many seconds, so that one wakeup takes many (the kernel queues
        them meanwhile).  The spacing starts small after a quiet spell and
        doubles with each read, so the first events are read at once.  Only
        for readers that do not race the processes."""
        if self._sock is None:
            raise ValueError("connector is not open")
        if not self._pending:
            wait_ms = None if timeout is None else max(0, int(timeout * 1000))
            if self._drops_poll_due:
                # Come back in time for the drop-counter read we skipped.
                due = _DROPS_POLL_INTERVAL_NS // 1_000_000
                wait_ms = due if wait_ms is None else min(wait_ms, due)
            if wait_ms == 0:
                self._drain()  # a recv costs no more than a poll
            else:
                readable = False
                for fd, _mask in self._poller.poll(wait_ms):
                    if fd == self._wake_fd:
                        self._clear_wake()
                        linger = 0.0  # a signal: answer it now
                    elif not self._guards or not self._check_guardian(fd):
                        readable = True
                if readable:
                    if linger > 0.0:
                        self._space_out(int(linger * 1e9))
                    self._drain()
                elif self._drops_poll_due:
                    self._poll_drops()
        pending = self._pending
        if len(pending) <= MAX_BATCH:
            self._pending = []
            return pending
        # Far behind (peek() read ahead): hand out a batch at a time, so the
        # work on each (and what it buffers) stays bounded.
        batch, self._pending = pending[:MAX_BATCH], pending[MAX_BATCH:]
        return batch

    def _space_out(self, longest_ns: int) -> None:
        now = time.monotonic_ns()
        if now - self._last_read_ns >= longest_ns:
            self._gap_ns = _FIRST_GAP_NS  # after a quiet spell: read now
        else:
            early = self._last_read_ns + self._gap_ns - now
            if early > 0:
                self._linger(early / 1e9)
            self._gap_ns = min(longest_ns, self._gap_ns * 2)
        self._last_read_ns = time.monotonic_ns()

    def _linger(self, seconds: float) -> None:
        if self._wake_poller is None:
            time.sleep(seconds)
        elif self._wake_poller.poll(int(seconds * 1000)):
            self._clear_wake()

    def _clear_wake(self) -> None:
        assert self._wake_fd is not None
        try:
            while os.read(self._wake_fd, 512):
                pass
        except OSError:  # BlockingIOError: emptied
            pass

    def __iter__(self) -> Iterator[Event]:
        if self._sock is None:
            self.open()
        while True:
            yield from self.read_batch()

    # -- asyncio -----------------------------------------------------------

    async def read_batch_async(self) -> list[Event]:
        """Like :meth:`read_batch`, waiting on the event loop instead of blocking."""
        import asyncio  # here, not at the top: it costs 30 ms at startup

        if self._sock is None:
            raise ValueError("connector is not open")
        while not self._pending:
            self._drain()
            if self._pending:
                break
            loop = asyncio.get_running_loop()
            ready = loop.create_future()
            fd = self._sock.fileno()
            loop.add_reader(fd, ready.set_result, None)
            try:
                await ready
            finally:
                loop.remove_reader(fd)
        batch, self._pending = self._pending, []
        return batch


def listen(
    events: Iterable[str] | str | None = None,
    *,
    rcvbuf: int = DEFAULT_RCVBUF,
    ack_timeout: float = 1.0,
    kernel_filter: bool = True,
) -> Connector:
    """Subscribe to process events; use as ``with listen(...) as stream``.

    >>> with procevents.listen(events={"exec", "exit"}) as stream:  # doctest: +SKIP
    ...     for event in stream:
    ...         print(event)
    """
    return Connector(events, rcvbuf=rcvbuf, ack_timeout=ack_timeout, kernel_filter=kernel_filter).open()


__all__ = ["DEFAULT_RCVBUF", "Connector", "ConnectorError", "Lost", "Terminated", "listen"]

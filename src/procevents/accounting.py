"""The taskstats socket: what each task cost, read at its exit.

A second netlink socket (generic netlink, family TASKSTATS) registered for
every possible CPU; the kernel sends it one record per exiting task.  Like
the proc connector's subscription, the registration is undone on every way
out: :meth:`ExitCosts.close`, garbage collection, and the finalizers that
run on a terminating signal.  Should the process be killed outright, the
kernel drops the listener itself the next time a send to the closed socket
is refused, so nothing lingers.  The decoding is in :mod:`procevents.taskstats`.
"""

from __future__ import annotations

import errno
import os
import socket
import time
import weakref
from collections.abc import Sequence
from typing import Final

from . import exits, taskstats
from .costs import CostJoin, TaskCost
from .senders import KERNEL_PORT, Refusals

#: Receive buffer asked for: a build's burst of exits between two reads.
DEFAULT_RCVBUF: Final = 32 * 1024 * 1024
_RECV_SIZE: Final = 8192
_SO_RCVBUFFORCE: Final = 33
_ANSWER_TIMEOUT: Final = 1.0
_NO_ANSWER: Final = "the kernel did not answer the taskstats registration"
#: Datagrams read per collect() at most: exits that keep coming while we
#: read must not keep the loop from its events (the rest waits its turn).
MAX_COLLECT: Final = 8192


class CostsUnavailable(OSError):
    """Taskstats cannot be used here; ``str()`` is one line for a user."""


def _kernel_answer(sock: socket.socket) -> bytes:
    """The next datagram the kernel sent (another process's are skipped);
    TimeoutError past the socket's timeout."""
    while True:
        answer, (sender, _groups) = sock.recvfrom(_RECV_SIZE)
        if sender == KERNEL_PORT:
            return answer


def probe() -> CostsUnavailable | None:
    """Whether taskstats answers this process, found by trying: register
    for every possible CPU, then deregister at once.  None when it does;
    else why not, worded as :meth:`ExitCosts.open` words it."""
    costs = ExitCosts(rcvbuf=0)
    try:
        costs.open()
    except CostsUnavailable as exc:
        return exc
    costs.close()
    return None


def _deregister(sock: socket.socket, request: bytes, owner_pid: int) -> None:
    """Finalizer: tell the kernel to stop sending, then close (only the
    process that registered: a forked child must not undo its parent's)."""
    try:
        if os.getpid() == owner_pid:
            try:
                sock.send(request)
            except OSError:
                pass  # closing below makes the kernel drop us at its next send
    finally:
        sock.close()


class ExitCosts:
    """Taskstats records, joined to exit events by :class:`~procevents.costs.CostJoin`.

    ``open()`` raises :class:`CostsUnavailable` with the reason (no taskstats
    in this kernel, not permitted, not the initial namespaces); callers say
    so once and go on without figures.
    """

    def __init__(self, *, rcvbuf: int = DEFAULT_RCVBUF) -> None:
        self.rcvbuf_requested = rcvbuf
        self.join = CostJoin()
        #: Times the socket overflowed (records lost: those exits get no figures).
        self.overruns = 0
        #: Records read.
        self.records = 0
        self.malformed = 0
        #: Datagrams dropped unread because the kernel did not send them.
        self.refused = Refusals()
        self._sock: socket.socket | None = None
        self._finalizer: weakref.finalize[[socket.socket, bytes, int], ExitCosts] | None = None
        self._buf = bytearray(_RECV_SIZE)
        self.cpus = ""
        self.family = 0

    @property
    def closed(self) -> bool:
        return self._finalizer is None or not self._finalizer.alive

    def fileno(self) -> int:
        if self._sock is None:
            raise ValueError("not open")
        return self._sock.fileno()

    def open(self, cpus: Sequence[int] | None = None) -> ExitCosts:
        if self._sock is not None:
            raise ValueError("already opened")
        if cpus is None:
            from .capture import cpu_set

            cpus = cpu_set("possible")
        self.cpus = taskstats.cpu_list(cpus)
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, taskstats.NETLINK_GENERIC)
        except OSError as exc:
            raise CostsUnavailable(exc.errno, f"no generic netlink socket: {exc.strerror}") from None
        try:
            sock.bind((0, 0))
            sock.settimeout(_ANSWER_TIMEOUT)
            self.family = self._family(sock)
            self._size_buffer(sock)
            self._ask(sock, taskstats.encode_cpumask(self.family, self.cpus, register=True, seq=2), seq=2)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        request = taskstats.encode_cpumask(self.family, self.cpus, register=False, seq=3)
        self._finalizer = weakref.finalize(self, _deregister, sock, request, os.getpid())
        exits.register(self)
        return self

    def close(self) -> None:
        """Deregister and close (once)."""
        if self._finalizer is not None:
            self._finalizer()
        exits.unregister(self)

    def __enter__(self) -> ExitCosts:
        if self._sock is None:
            self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _family(sock: socket.socket) -> int:
        sock.send(taskstats.encode_get_family(seq=1))
        try:
            answer = _kernel_answer(sock)
        except TimeoutError:
            raise CostsUnavailable(errno.ETIMEDOUT, "the kernel did not answer for taskstats") from None
        try:
            return taskstats.decode_family_id(answer)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                raise CostsUnavailable(exc.errno, "this kernel has no taskstats (CONFIG_TASKSTATS is off)") from None
            raise CostsUnavailable(exc.errno, f"cannot find taskstats: {os.strerror(exc.errno or 0)}") from None
        except taskstats.DecodeError as exc:
            raise CostsUnavailable(errno.EPROTO, f"cannot find taskstats: {exc}") from None

    def _size_buffer(self, sock: socket.socket) -> None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, self.rcvbuf_requested)
        except OSError:
            pass  # registering needs CAP_NET_ADMIN anyway; it will say so

    @staticmethod
    def _ask(sock: socket.socket, request: bytes, seq: int) -> None:
        """Send ``request`` and wait for its own acknowledgement (an earlier
        request's, such as the family lookup's, may still be queued)."""
        sock.send(request)
        deadline = time.monotonic() + _ANSWER_TIMEOUT
        while True:
            try:
                answer = _kernel_answer(sock)
            except TimeoutError:
                raise CostsUnavailable(errno.ETIMEDOUT, _NO_ANSWER) from None
            for kind, answer_seq, start, end in taskstats.iter_messages(answer):
                if kind != taskstats.NLMSG_ERROR or answer_seq != seq:
                    continue  # the lookup's ack, or an exit record already: ours follows
                err = taskstats.error_code(answer, start, end)
                if err == 0:
                    return
                if err == errno.EPERM:
                    raise CostsUnavailable(err, "taskstats needs root or CAP_NET_ADMIN")
                if err == errno.EINVAL:
                    raise CostsUnavailable(
                        err, "taskstats refuses listeners outside the host's user and pid namespaces"
                    )
                raise CostsUnavailable(err, f"taskstats refused the registration: {os.strerror(err)}")
            if time.monotonic() > deadline:
                raise CostsUnavailable(errno.ETIMEDOUT, _NO_ANSWER)

    def collect(self, now_ns: int | None = None) -> int:
        """Read every record queued; return how many."""
        sock = self._sock
        if sock is None or self.closed:
            return 0
        buf = self._buf
        recvfrom_into = sock.recvfrom_into
        costs: list[TaskCost] = []
        for _ in range(MAX_COLLECT):
            try:
                size, (sender, _groups) = recvfrom_into(buf)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self.overruns += 1
                    continue
                raise
            if sender != KERNEL_PORT:
                self.refused.note(sender)  # another process's forged figures
                continue
            try:
                costs += taskstats.decode_datagram(buf, size)
            except taskstats.DecodeError:
                self.malformed += 1
        # Stamped once all are read: a record can only be of a life that began
        # before it was read, so this is the bound CostJoin checks it against.
        received = time.monotonic_ns() if now_ns is None else now_ns
        if costs:
            self.records += len(costs)
            self.join.add(costs, received)
        self.join.expire(received)
        return len(costs)

    def take(self, pid: int, start_ns: int | None, end_ns: int) -> TaskCost | None:
        return self.join.take(pid, start_ns, end_ns)

    def describe(self) -> str:
        return f"exit costs: taskstats on cpu {self.cpus}"

    def problems(self) -> str | None:
        """One line on what went wrong, if anything (said at the end)."""
        parts = []
        if self.overruns:
            parts.append(f"its socket overflowed {self.overruns} times (some exits have no figures)")
        if self.malformed:
            parts.append(f"{self.malformed} malformed records skipped")
        return f"exit costs: {'; '.join(parts)}" if parts else None

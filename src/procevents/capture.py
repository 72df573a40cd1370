"""Synchronous exec capture: one exec-only reader per CPU, pinned, realtime.

The kernel sends an EXEC event from the exec'ing task itself, after its new
memory is installed and before it returns to user space.  A reader woken on
that same CPU at SCHED_FIFO priority preempts the task right there, and so
reads its argv (and name, exe, cwd) while it is held, however short its
life.  A classic BPF socket filter gives each reader exactly its
own CPU's execs, so no reader is woken for nothing.

Readers are forked processes, not threads: a thread would first have to take
the GIL, and meanwhile the held process runs on.  Each reader has its own
connector socket, so it sends its own LISTEN and IGNORE; it sends IGNORE on
every way out, and ends by itself when the process that started it goes
away (its lifeline pipe closes, which sends it SIGIO), even after a kill -9.
A reader sleeps in one blocking recv between two execs: one system call of
waiting per exec, no poll.

A capture is "held" when its event was sent while the reader was waiting
(the event's timestamp is after the reader went back to recv): a reader
that was busy or blocked meanwhile (a full pipe, a slow /proc read) read
it late, so the main process checks it for pid reuse like an async read.

Each result is framed on a pipe to the main process and joined to the EXEC
event of the main stream exactly, by (cpu, seq): the kernel numbers one
datagram per event and every listener gets the same numbers.
"""

from __future__ import annotations

import array
import errno
import fcntl
import gc
import os
import select
import signal
import socket
import struct
import time
import weakref
from typing import Final

from . import wire
from .connector import NETLINK_NO_ENOBUFS, SO_RCVBUFFORCE, SOL_NETLINK
from .events import Exec
from .frames import (
    CAPTURE,
    FAILED,
    FLAG_COMM,
    FLAG_LATE,
    FLAG_REALTIME,
    READY,
    REFUSED,
    U32,
    U32_AT,
    Frame,
    encode_frame,
    exec_filter,
    seq_after,
    split_frames,
)
from .procfs import ARGV_CUT_LIMIT, ARGV_LIMIT, RawExec, read_exec_raw
from .senders import KERNEL_PORT, Refusals
from .snapshot import ExecSnapshot

#: SCHED_FIFO priority of the readers: above every normal task, far below
#: the kernel's own realtime threads.
DEFAULT_PRIORITY: Final = 10
#: Default bound on a captured environment (``--env``).
ENV_LIMIT: Final = 32 * 1024
#: How long the main process waits for a capture its reader has not sent yet.
WAIT_SECONDS: Final = 0.25
#: Captures kept for events the main stream has not shown yet, per CPU.
MAX_PENDING: Final = 65536
#: ... and the bytes of argv and environment they may hold, per CPU; past
#: it, each new capture's text is cut to ARGV_CUT_LIMIT (and marked so),
#: and past twice it the oldest captures are dropped, so what any user execs
#: cannot grow the main process without bound.
PENDING_BYTES: Final = 8 * 1024 * 1024

_SO_ATTACH_FILTER: Final = 26
_READER_RCVBUF: Final = 8 * 1024 * 1024
_PIPE_SIZE: Final = 1024 * 1024
_F_SETPIPE_SZ: Final = 1031

# Fields of an event datagram the reader needs (offsets: kernel-interface.md).
_SEQ_OFFSET: Final = 24
_TIMESTAMP_OFFSET: Final = 44
_TGID_OFFSET: Final = 56
_U64_AT: Final = struct.Struct("<Q")
_I32_AT: Final = struct.Struct("<i")
_READER_SIGNALS: Final = tuple(
    sig
    for sig in (
        signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM,
        signal.SIGXCPU, signal.SIGXFSZ, signal.SIGVTALRM, signal.SIGPROF, signal.SIGIO,
    )
)


def _attach_filter(sock: socket.socket, program: bytes) -> None:
    # struct sock_fprog {unsigned short len; struct sock_filter *filter;}:
    # the kernel copies the program during the call.
    code = array.array("B", program)
    address, _ = code.buffer_info()
    sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, struct.pack("@HP", len(program) // 8, address))


class _Stop(Exception):
    pass


def _raise_stop(_signum: int, _frame: object) -> None:
    raise _Stop


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _reader_main(cpu: int, out_fd: int, lifeline_fd: int, priority: int, env_limit: int, paths: bool) -> None:
    """Body of one reader process: never returns normally (the caller _exits)."""
    signal.set_wakeup_fd(-1)  # the main process's, inherited: not ours to write
    for sig in _READER_SIGNALS:
        signal.signal(sig, _raise_stop)
    # Terminal signals are for the main process, which then stops us
    # through the lifeline; SIGPIPE becomes EPIPE.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    flags = 0
    sock: socket.socket | None = None
    subscribed = False
    try:
        os.sched_setaffinity(0, {cpu})
        if priority > 0:
            try:
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
                flags |= FLAG_REALTIME
            except OSError:
                pass  # no CAP_SYS_NICE or RLIMIT_RTPRIO: pinned at normal priority
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, wire.NETLINK_CONNECTOR)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, _READER_RCVBUF)
        except OSError:
            pass
        try:
            sock.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)
        except OSError:
            pass
        _attach_filter(sock, exec_filter(cpu))
        sock.bind((0, wire.CN_IDX_PROC))
        ack_seq = (os.getpid() << 8 | cpu) & 0x7FFFFFFF
        sock.send(wire.encode_request(wire.PROC_CN_MCAST_LISTEN, seq=ack_seq, ack=ack_seq))
        subscribed = True
        _await_ack(sock, (ack_seq + 1) & U32, lifeline_fd, cpu, out_fd)
        _watch_lifeline(lifeline_fd)
        _write_all(out_fd, encode_frame(READY, cpu, 0, os.getpid(), flags=flags))
        _read_execs(sock, cpu, out_fd, env_limit, paths)
    except _Stop:
        pass
    except OSError as exc:
        if exc.errno != errno.EPIPE:
            message = f"cpu {cpu}: {exc.strerror or exc}".encode()
            try:
                _write_all(out_fd, encode_frame(FAILED, cpu, 0, os.getpid(), RawExec(None, message)))
            except OSError:
                pass
    finally:
        # Exactly one IGNORE for our one LISTEN, whatever ended the loop.
        for sig in _READER_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        if sock is not None:
            if subscribed:
                try:
                    sock.send(wire.encode_request(wire.PROC_CN_MCAST_IGNORE))
                except OSError:
                    pass
            sock.close()


def _watch_lifeline(fd: int) -> None:
    """SIGIO (a stop signal) when the lifeline's writer closes it: the main
    process closed it, exited or was killed."""
    fcntl.fcntl(fd, fcntl.F_SETOWN, os.getpid())
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_ASYNC | os.O_NONBLOCK)
    try:
        if not os.read(fd, 1):
            raise _Stop  # closed before we watched it
    except BlockingIOError:
        pass


def _await_ack(sock: socket.socket, want_ack: int, lifeline_fd: int, cpu: int, out_fd: int) -> None:
    deadline = time.monotonic() + 2.0
    buf = bytearray(wire.EVENT_SIZE * 4)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise OSError(errno.ETIMEDOUT, "no ack from the proc connector")
        ready, _, _ = select.select([sock.fileno(), lifeline_fd], [], [], left)
        if lifeline_fd in ready:
            raise _Stop
        if ready:
            size, (sender, _groups) = sock.recvfrom_into(buf)
            if sender != KERNEL_PORT:
                _write_all(out_fd, encode_frame(REFUSED, cpu, 0, sender))
                continue
            is_ack = size >= wire.EVENT_SIZE and U32_AT.unpack_from(buf, 36)[0] == 0
            if is_ack and U32_AT.unpack_from(buf, 28)[0] == want_ack:
                err = U32_AT.unpack_from(buf, 52)[0]
                if err:
                    raise OSError(err, os.strerror(err))
                return


def _read_execs(sock: socket.socket, cpu: int, out_fd: int, env_limit: int, paths: bool) -> None:
    sock.setblocking(True)
    recvfrom_into = sock.recvfrom_into
    buf = bytearray(16384)
    u32_at = U32_AT.unpack_from
    u64_at = _U64_AT.unpack_from
    tgid_at = _I32_AT.unpack_from
    read = read_exec_raw
    clock = time.monotonic_ns
    waiting_since = clock()
    while True:
        try:
            # A stop signal (SIGIO from the lifeline too) raises _Stop here.
            size, (sender, _groups) = recvfrom_into(buf)
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:
                continue
            raise
        if sender != KERNEL_PORT:
            # Another process wrote to our port: read nothing for it, tell the main process.
            _write_all(out_fd, encode_frame(REFUSED, cpu, 0, sender))
            waiting_since = clock()
            continue
        if size < wire.EVENT_SIZE or u32_at(buf, 36)[0] != 2:  # what != EXEC
            continue  # an ack: nothing to read
        # On our CPU nothing runs while we do (realtime, pinned): an exec
        # sent after we began waiting has its process held now.
        late = u64_at(buf, _TIMESTAMP_OFFSET)[0] < waiting_since
        tgid = tgid_at(buf, _TGID_OFFSET)[0]
        # Where exe and cwd are wanted (JSON, the store, -c, --container), so
        # is the cgroup: read while held, it names the container the program
        # runs in even when it was moved there just before its exec.
        raw = read(tgid, argv_limit=ARGV_LIMIT, env_limit=env_limit, comm_only=not late, paths=paths, cgroup=paths)
        flags = FLAG_LATE if late else FLAG_COMM
        _write_all(out_fd, encode_frame(CAPTURE, cpu, u32_at(buf, _SEQ_OFFSET)[0], tgid, raw, flags=flags))
        waiting_since = clock()


def online_cpus() -> list[int]:
    """CPUs that can run tasks, hence generate events."""
    return cpu_set("online")


def cpu_set(which: str) -> list[int]:
    """/sys/devices/system/cpu/{online,possible} as a list of CPU numbers."""
    try:
        with open(f"/sys/devices/system/cpu/{which}") as f:
            text = f.read().strip()
    except OSError:
        return list(range(os.cpu_count() or 1))
    cpus: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        cpus.extend(range(int(low), int(high or low) + 1))
    return cpus


class _Reader:
    __slots__ = ("buffer", "cpu", "done_seq", "fd", "pending", "pending_bytes", "pid")

    def __init__(self, cpu: int, pid: int, fd: int) -> None:
        self.cpu = cpu
        self.pid = pid
        self.fd = fd
        self.buffer = bytearray()
        #: seq -> capture, in the order read (seq order).
        self.pending: dict[int, Frame] = {}
        #: Their argv and environment bytes (PENDING_BYTES bounds it).
        self.pending_bytes = 0
        #: seq of the newest capture read; None before the first.
        self.done_seq: int | None = None


class ExecCapture:
    """The per-CPU readers, seen from the main process.

    ``start()`` forks them and waits until each one is subscribed;
    ``take(exec_event)`` returns that exec's snapshot (or None when no
    reader has it); ``close()`` stops them and waits for them.
    """

    def __init__(
        self, *, priority: int = DEFAULT_PRIORITY, env_limit: int = 0, cpus: list[int] | None = None,
        wait: float = WAIT_SECONDS, boot_offset_ns: int | None = None, paths: bool = True,
    ) -> None:
        self.priority = priority
        self.env_limit = env_limit
        #: Read exe and cwd too (two /proc lookups per exec).
        self.paths = paths
        self.wanted_cpus = online_cpus() if cpus is None else list(cpus)
        self.wait = wait
        if boot_offset_ns is None:
            boot_offset_ns = time.clock_gettime_ns(time.CLOCK_BOOTTIME) - time.monotonic_ns()
        self.boot_offset_ns = boot_offset_ns
        self.readers: dict[int, _Reader] = {}
        #: True when every reader runs at SCHED_FIFO (the process is held).
        self.realtime = False
        #: Why some or all readers are missing or not realtime ("" if none).
        self.problems: list[str] = []
        self.captured = 0
        self.missed = 0
        #: Captures read after their reader was busy (not surely held).
        self.late = 0
        #: Datagrams the readers dropped unread because the kernel did not send them.
        self.refused = Refusals()
        #: Write ends of the readers' lifeline pipes (one each: SIGIO goes
        #: to a single owner per pipe).
        self._lifelines: list[int] = []
        self._started = False
        self._finalizer: weakref.finalize[[list[int]], ExecCapture] | None = None
        self._closed = False
        self._owner = os.getpid()

    # -- lifecycle -----------------------------------------------------

    @property
    def started(self) -> bool:
        return self._started or self._closed

    def start(self, timeout: float = 3.0) -> ExecCapture:
        """Fork the readers and wait until each is subscribed (at most once)."""
        if self.started:
            return self
        self._started = True
        # Dropped without close(): the readers still end (and unsubscribe).
        self._finalizer = weakref.finalize(self, _close_all, self._lifelines)
        realtime_all = True
        lifeline_r = -1
        try:
            for cpu in self.wanted_cpus:
                lifeline_r, lifeline_w = os.pipe2(os.O_CLOEXEC)
                self._lifelines.append(lifeline_w)
                out_r, out_w = os.pipe2(os.O_CLOEXEC)
                try:
                    fcntl.fcntl(out_r, _F_SETPIPE_SZ, _PIPE_SIZE)
                except OSError:
                    pass
                pid = os.fork()
                if pid == 0:  # pragma: no cover - the reader process
                    status = 0
                    try:
                        # A collection would touch, and so copy, every inherited page.
                        gc.disable()
                        # Hold no one's terminal or pipe: a reader that
                        # outlived us must not keep `| head` waiting.
                        devnull = os.open(os.devnull, os.O_RDWR)
                        os.dup2(devnull, 0)
                        os.dup2(devnull, 1)
                        os.close(devnull)
                        keep = sorted((out_w, lifeline_r))
                        os.closerange(3, keep[0])
                        os.closerange(keep[0] + 1, keep[1])
                        os.closerange(keep[1] + 1, 1 << 20)
                        _reader_main(cpu, out_w, lifeline_r, self.priority, self.env_limit, self.paths)
                    except BaseException:
                        status = 1
                    finally:
                        os._exit(status)
                os.close(out_w)
                os.close(lifeline_r)
                lifeline_r = -1
                os.set_blocking(out_r, False)
                self.readers[cpu] = _Reader(cpu, pid, out_r)
        finally:
            if lifeline_r >= 0:
                os.close(lifeline_r)
        # Wait for every reader's READY (or FAILED) frame.
        deadline = time.monotonic() + timeout
        waiting = dict(self.readers)
        while waiting:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([r.fd for r in waiting.values()], [], [], max(0.0, left))
            if not ready:
                break
            for reader in [r for r in waiting.values() if r.fd in ready]:
                for frame in self._read(reader):
                    if frame.kind == READY:
                        waiting.pop(reader.cpu, None)
                        realtime_all = realtime_all and bool(frame.flags & FLAG_REALTIME)
                    elif frame.kind == FAILED:
                        waiting.pop(reader.cpu, None)
                        self.problems.append(frame.cmdline.decode("utf-8", "replace"))
                        self._drop(reader)
                    else:
                        self._keep(reader, frame)
                if reader.fd < 0:
                    waiting.pop(reader.cpu, None)
        for reader in waiting.values():
            self.problems.append(f"cpu {reader.cpu}: reader not ready in {timeout:g} s")
            self._drop(reader)
        self.realtime = bool(self.readers) and realtime_all
        if self.readers and not realtime_all:
            self.problems.append("no CAP_SYS_NICE or RLIMIT_RTPRIO: readers at normal priority")
        return self

    @property
    def active(self) -> bool:
        return bool(self.readers)

    def describe(self) -> str:
        """For the startup notice."""
        if not self.readers:
            return "argv capture: async (" + ("; ".join(self.problems) or "no reader") + ")"
        cpus = sorted(self.readers)
        how = "realtime" if self.realtime else "normal-priority"
        text = f"argv capture: sync, {len(cpus)} {how} reader{'s' if len(cpus) != 1 else ''} on cpu {_ranges(cpus)}"
        if self.problems:
            text += " (" + "; ".join(self.problems) + ")"
        return text

    def close(self, timeout: float = 2.0) -> None:
        """Stop every reader (they send IGNORE) and reap it."""
        if os.getpid() != self._owner:
            return  # a forked child must not stop its parent's readers
        self._closed = True
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        _close_all(self._lifelines)
        readers = list(self.readers.values())
        self.readers.clear()
        for reader in readers:
            _close_fd(reader)
        deadline = time.monotonic() + timeout
        for reader in readers:
            _reap(reader.pid, deadline)

    def __enter__(self) -> ExecCapture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- joining ---------------------------------------------------------

    def take(self, event: Exec, argv_limit: int = ARGV_LIMIT) -> ExecSnapshot | None:
        """The snapshot of exactly this exec, waiting briefly for its reader;
        its argv cut to ``argv_limit`` bytes (the caller's budget)."""
        reader = self.readers.get(event.cpu)
        if reader is None:
            return None
        seq = event.seq
        frame = self._pop(reader, seq)
        if frame is None:
            deadline = 0.0
            while True:
                self._collect(reader)
                frame = self._pop(reader, seq)
                if frame is not None or reader.fd < 0:
                    break
                if reader.done_seq is not None and seq_after(reader.done_seq, seq):
                    break  # the reader is past it: it never saw this exec
                now = time.monotonic()
                if not deadline:
                    deadline = now + self.wait
                elif now >= deadline:
                    break
                select.select([reader.fd], [], [], deadline - now)
        self._forget_before(reader, seq)
        if frame is None:
            self.missed += 1
            return None
        self.captured += 1
        frame.cut(argv_limit)
        snapshot = frame.snapshot(self.boot_offset_ns)
        if frame.flags & FLAG_LATE:
            self.late += 1
        snapshot.held = self.realtime and not frame.flags & FLAG_LATE
        return snapshot

    def collect(self) -> None:
        """Move every reader's finished captures into memory, so that a main
        process that has fallen behind never leaves a reader blocked on a
        full pipe (it would stop reading, and holding, new execs)."""
        for reader in list(self.readers.values()):
            self._collect(reader)

    @staticmethod
    def _pop(reader: _Reader, seq: int) -> Frame | None:
        frame = reader.pending.pop(seq, None)
        if frame is not None:
            reader.pending_bytes -= frame.text_bytes
        return frame

    def _forget_before(self, reader: _Reader, seq: int) -> None:
        # Captures of execs the main stream never showed (it lost them).
        pending = reader.pending
        while pending:
            oldest = next(iter(pending))
            if not seq_after(seq, oldest):
                break
            self._pop(reader, oldest)

    def _collect(self, reader: _Reader) -> None:
        for frame in self._read(reader):
            self._keep(reader, frame)

    def _keep(self, reader: _Reader, frame: Frame) -> None:
        if frame.kind == CAPTURE:
            if reader.pending_bytes + frame.text_bytes > PENDING_BYTES:
                frame.cut(ARGV_CUT_LIMIT)  # the main process is far behind: keep the event, cut its text
            self._pop(reader, frame.seq)  # a seq seen again (wrapped): the older capture goes
            reader.pending[frame.seq] = frame
            reader.pending_bytes += frame.text_bytes
            reader.done_seq = frame.seq
            # Cut ones add up too: past twice the budget the oldest go (their
            # execs are read from /proc instead, or shown as gone).
            while len(reader.pending) > MAX_PENDING or reader.pending_bytes > 2 * PENDING_BYTES:
                self._pop(reader, next(iter(reader.pending)))
        elif frame.kind == REFUSED:
            self.refused.note(frame.pid)

    def _read(self, reader: _Reader) -> list[Frame]:
        if reader.fd < 0:
            return []
        # One pipe's worth at a time: a realtime reader refills its pipe as
        # fast as we empty it, so reading until it is empty could gather
        # without bound before a single frame is parsed (and cut to budget).
        while len(reader.buffer) < _PIPE_SIZE:
            try:
                chunk = os.read(reader.fd, _PIPE_SIZE)
            except BlockingIOError:
                break
            if not chunk:  # the reader ended
                _close_fd(reader)
                break
            reader.buffer += chunk
        return split_frames(reader.buffer)

    def _drop(self, reader: _Reader) -> None:
        self.readers.pop(reader.cpu, None)
        _close_fd(reader)
        _reap(reader.pid, time.monotonic() + 2.0)


def _close_all(fds: list[int]) -> None:
    while fds:
        try:
            os.close(fds.pop())
        except OSError:
            pass


def _close_fd(reader: _Reader) -> None:
    if reader.fd >= 0:
        os.close(reader.fd)
        reader.fd = -1


def _reap(pid: int, deadline: float) -> None:
    """Wait for a reader; SIGTERM (it still sends IGNORE) if it lingers."""
    termed = False
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done:
            return
        if time.monotonic() >= deadline:
            if termed:
                return
            termed = True
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + 1.0
        time.sleep(0.002)


def _ranges(numbers: list[int]) -> str:
    parts = []
    start = prev = numbers[0]
    for n in [*numbers[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        parts.append(f"{start}" if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return ",".join(parts)

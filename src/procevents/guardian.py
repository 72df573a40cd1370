"""A guardian for what no signal handler can catch: kill -9, the OOM killer.

A small forked process that shares the subscribed socket and waits on a
pipe from its owner.  When the owner unsubscribed itself, it writes one byte
and the guardian ends silently; when the owner is gone without that byte
(the pipe closed by the kernel as it died), the guardian sends
PROC_CN_MCAST_IGNORE on the shared socket, so the kernel's listener count
comes back down, then ends.  It runs in its own process group, ignores the
terminal's signals, and holds no other descriptor than those two.
"""

from __future__ import annotations

import os
import signal
import socket
from typing import Final

from . import procfs, wire

_RELEASED: Final = b"r"
_IGNORE: Final = wire.encode_request(wire.PROC_CN_MCAST_IGNORE)
#: Its name in ps and top (/proc/PID/comm, at most 15 bytes).
NAME: Final = "procevents-grd"


class Guardian:
    """The owner's end: ``release()`` once IGNORE was sent (or never will be needed).

    ``pidfd`` becomes readable when the guardian ends: one that dies while
    its owner is still subscribed (killed by someone, the OOM killer) leaves
    the subscription unguarded, so the owner watches it and starts another
    (:meth:`procevents.connector.Connector.read_batch`)."""

    __slots__ = ("owner", "pid", "pidfd", "pipe")

    def __init__(self, pid: int, pipe: int) -> None:
        self.pid = pid
        self.pipe = pipe
        self.owner = os.getpid()
        try:
            self.pidfd = os.pidfd_open(pid)
        except OSError:  # before Linux 5.3: its death goes unnoticed
            self.pidfd = -1

    def release(self) -> None:
        """Tell the guardian its job is done, and reap it (once; not from a forked child)."""
        if self.pipe < 0 or os.getpid() != self.owner:
            return
        try:
            os.write(self.pipe, _RELEASED)
        except OSError:
            pass  # it is gone already
        os.close(self.pipe)
        self.pipe = -1
        self._close_pidfd()
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass  # reaped by someone else (a SIGCHLD handler)

    def _close_pidfd(self) -> None:
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1

    def ended(self) -> bool:
        """Whether the guardian is gone (reaped here if so); its pipe is then closed."""
        if self.pipe < 0 or os.getpid() != self.owner:
            return False
        try:
            done, _ = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            done = self.pid
        if not done:
            return False
        os.close(self.pipe)
        self.pipe = -1
        self._close_pidfd()
        return True


def start(sock_fd: int) -> Guardian | None:
    """Fork a guardian for the subscribed socket ``sock_fd``; None if fork fails."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.fork()
    except OSError:
        os.close(read_end)
        os.close(write_end)
        return None
    if pid == 0:  # pragma: no cover - the guardian process
        status = 0
        try:
            _guard(sock_fd, read_end)
        except BaseException:
            status = 1
        finally:
            os._exit(status)
    os.close(read_end)
    return Guardian(pid, write_end)


def _guard(sock_fd: int, pipe: int) -> None:
    signal.set_wakeup_fd(-1)  # the owner's, inherited: not ours to write
    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTSTP):
        signal.signal(sig, signal.SIG_IGN)  # the terminal's signals are for the owner
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    procfs.name_self(NAME)
    keep = sorted((sock_fd, pipe))
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        if fd not in keep:
            os.dup2(devnull, fd)
    for start, stop in ((3, keep[0]), (keep[0] + 1, keep[1]), (keep[1] + 1, 1 << 20)):
        if start < stop:
            os.closerange(start, stop)
    try:
        said = os.read(pipe, 1)  # b"" once the owner is gone
    except OSError:
        said = b""
    if said != _RELEASED:
        try:
            socket.socket(fileno=sock_fd).send(_IGNORE)
        except OSError:
            pass

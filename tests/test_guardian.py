"""The guardian (guardian.py), a forked process sharing the subscribed
socket: when its owner is gone without a word (the pipe closed, as the
kernel closes it on kill -9) it sends IGNORE on that socket once; released,
it ends silently.  Seen here on the other end of a socketpair; it is named
in ps, in its own process group, and holds nothing but its two descriptors.
Through the command line with kill -9, seen by strace: test_unsubscribe.py."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import wait_until

from procevents import guardian, wire


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """The socket the guardian shares (the first), and where what it sends arrives."""
    mine, far = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    yield mine, far
    mine.close()
    far.close()


@pytest.fixture
def started() -> Iterator[list[guardian.Guardian]]:
    """Guardians a test started; one a failed test left running is ended
    (SIGTERM: not one of the signals it ignores)."""
    guardians: list[guardian.Guardian] = []
    yield guardians
    for grd in guardians:
        try:
            os.kill(grd.pid, signal.SIGTERM)
            os.waitpid(grd.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def _waiting(pid: int, fds: set[int]) -> bool:
    """Named, and down to these descriptors: it has reached its wait."""
    try:
        named = Path(f"/proc/{pid}/comm").read_text() == guardian.NAME + "\n"
        return named and {int(fd) for fd in os.listdir(f"/proc/{pid}/fd")} == fds
    except OSError:
        return False


def _at_its_wait(pid: int, sock_fd: int) -> bool:
    """Down to 0-2, the socket and its pipe's read end (it closes the rest as it starts)."""
    try:
        return _waiting(pid, {0, 1, 2, sock_fd, _read_end(pid, sock_fd)})
    except OSError:  # a descriptor closed between listing and reading it: not there yet
        return False


def test_owner_gone_without_a_word_means_ignore_once(
    pair: tuple[socket.socket, socket.socket], started: list[guardian.Guardian]
) -> None:
    mine, far = pair
    grd = guardian.start(mine.fileno())
    assert grd is not None
    started.append(grd)
    wait_until(lambda: _at_its_wait(grd.pid, mine.fileno()), "the guardian at its wait")
    assert os.getpgid(grd.pid) == grd.pid != os.getpgid(0)  # a group kill of its owner spares it
    os.close(grd.pipe)  # what the kernel does when the owner dies
    _, status = os.waitpid(grd.pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    far.setblocking(False)
    assert far.recv(4096) == wire.encode_request(wire.PROC_CN_MCAST_IGNORE)
    with pytest.raises(BlockingIOError):  # once
        far.recv(4096)


def test_released_it_ends_silently(pair: tuple[socket.socket, socket.socket], started: list[guardian.Guardian]) -> None:
    mine, far = pair
    grd = guardian.start(mine.fileno())
    assert grd is not None
    started.append(grd)
    grd.release()  # reaps it
    with pytest.raises(ChildProcessError):
        os.waitpid(grd.pid, os.WNOHANG)
    far.setblocking(False)
    with pytest.raises(BlockingIOError):
        far.recv(4096)
    grd.release()  # twice: nothing more to do


def _read_end(pid: int, sock_fd: int) -> int:
    """The guardian's end of its pipe: the one descriptor it keeps besides the socket and 0-2."""
    for fd in os.listdir(f"/proc/{pid}/fd"):
        if int(fd) not in (0, 1, 2, sock_fd) and os.readlink(f"/proc/{pid}/fd/{fd}").startswith("pipe:"):
            return int(fd)
    return -1


def test_its_death_is_seen_on_its_pidfd_and_reaped_once(
    pair: tuple[socket.socket, socket.socket], started: list[guardian.Guardian]
) -> None:
    """What lets the owner replace a guardian someone killed: the pidfd
    becomes readable, ended() reaps it and closes both its descriptors; a
    live one is not ended, and a released one is not watched any more."""
    import select

    mine, far = pair
    grd = guardian.start(mine.fileno())
    assert grd is not None
    started.append(grd)
    assert grd.pidfd >= 0
    assert not grd.ended()
    os.kill(grd.pid, signal.SIGKILL)
    assert select.select([grd.pidfd], [], [], 15.0)[0] == [grd.pidfd]
    pidfd, pipe = grd.pidfd, grd.pipe
    assert grd.ended()
    assert (grd.pidfd, grd.pipe) == (-1, -1)
    for fd in (pidfd, pipe):
        with pytest.raises(OSError):
            os.fstat(fd)  # closed (nothing else opened meanwhile in this thread)
    with pytest.raises(ChildProcessError):
        os.waitpid(grd.pid, os.WNOHANG)  # reaped
    far.setblocking(False)
    with pytest.raises(BlockingIOError):
        far.recv(64)  # killed, it sent nothing
    assert not grd.ended()  # once

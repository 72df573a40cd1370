"""The only module that reads /proc.

Read the way psutil does: whole-file reads with os.open/os.read, the stat
line split at the *last* ')' (comm may hold spaces and parentheses), and a
process that vanished, a zombie with an empty cmdline, or a permission
refusal turned into a typed :class:`Unavailable` value, never an exception.

Reads can be pinned to one process: :meth:`ProcFS.open_process` opens the
``/proc/PID`` directory, and every read through that handle fails (GONE)
once that process is gone, even if its pid has been reused meanwhile.  The
root is configurable so tests can point it at a fixture tree.
"""

from __future__ import annotations

import enum
import errno
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeVar

_BUFSIZE: Final = 65536
_O_RDONLY: Final = os.O_RDONLY | os.O_CLOEXEC
_O_DIR: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_GONE_ERRNOS: Final = frozenset({errno.ENOENT, errno.ESRCH, errno.ENOTDIR})
#: argv text beyond this is cut (and marked so), on every read path: bounded
#: work and memory per exec, whatever a program passes.
ARGV_LIMIT: Final = 256 * 1024
#: What argv is cut to once a byte budget (pending captures, a batch) is
#: spent: the event is still shown, its argv marked as cut.
ARGV_CUT_LIMIT: Final = 4 * 1024


_DENIED_ERRNOS: Final = frozenset({errno.EACCES, errno.EPERM})
_UID_LINE: Final = re.compile(rb"^Uid:\s+(\d+)\s+(\d+)", re.M)
_GID_LINE: Final = re.compile(rb"^Gid:\s+(\d+)\s+(\d+)", re.M)
_T = TypeVar("_T")
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class Unavailable(enum.Enum):
    """Why a /proc value could not be had: all expected, none an error."""

    GONE = "gone"  # the process exited (or its pid now names another one)
    DENIED = "denied"  # not allowed to read it
    EMPTY = "empty"  # a zombie or a kernel thread: no cmdline

    def __bool__(self) -> bool:
        return False


GONE: Final = Unavailable.GONE
DENIED: Final = Unavailable.DENIED
EMPTY: Final = Unavailable.EMPTY


def _classify(exc: OSError) -> Unavailable:
    if exc.errno in _DENIED_ERRNOS:
        return DENIED
    return GONE


@dataclass(frozen=True, slots=True)
class Stat:
    """The fields of /proc/PID/stat we use."""

    comm: str
    state: str
    ppid: int
    pgrp: int
    session: int
    tty_nr: int
    starttime: int  # clock ticks after boot
    num_threads: int

    @property
    def start_boottime_ns(self) -> int:
        """Start time in CLOCK_BOOTTIME nanoseconds."""
        return self.starttime * 1_000_000_000 // CLOCK_TICKS


@dataclass(frozen=True, slots=True)
class Creds:
    ruid: int
    euid: int
    rgid: int
    egid: int


def parse_stat(data: bytes) -> Stat:
    """Parse a /proc/PID/stat line.  Raises ValueError if it is not one."""
    open_paren = data.index(b"(")
    close_paren = data.rindex(b")")
    comm = data[open_paren + 1 : close_paren].decode("utf-8", "surrogateescape")
    fields = data[close_paren + 2 :].split()
    # fields[0] is field 3 (state) of proc(5)
    return Stat(
        comm=comm,
        state=fields[0].decode("ascii", "replace"),
        ppid=int(fields[1]),
        pgrp=int(fields[2]),
        session=int(fields[3]),
        tty_nr=int(fields[4]),
        starttime=int(fields[19]),
        num_threads=int(fields[17]),
    )


def parse_cmdline(data: bytes) -> list[str] | Unavailable:
    """argv from /proc/PID/cmdline: NUL-separated, surrogate-escaped str."""
    if not data:
        return EMPTY
    if data.endswith(b"\0"):
        data = data[:-1]
    return [arg.decode("utf-8", "surrogateescape") for arg in data.split(b"\0")]


def parse_creds(data: bytes) -> Creds:
    """Real and effective uid and gid from /proc/PID/status."""
    uid = _UID_LINE.search(data)
    gid = _GID_LINE.search(data)
    if uid is None or gid is None:
        raise ValueError("no Uid:/Gid: lines")
    return Creds(int(uid[1]), int(uid[2]), int(gid[1]), int(gid[2]))


def parse_cgroup(data: bytes) -> str:
    """The cgroup v2 path ("0::/..."), else (v1, or a hybrid host whose v2
    path is the root while a v1 hierarchy places the process deeper, as
    docker's cgroupfs driver does) the name=systemd path, else the first
    v1 path below the root.

    Lines end at ``\n`` only: the kernel refuses that one byte in a cgroup
    name but allows every other, so a name holding ``\r`` (or any other
    line break ``str.splitlines`` knows) must not start a forged line."""
    unified: str | None = None
    systemd: str | None = None
    first: str | None = None
    for line in data.decode("utf-8", "surrogateescape").split("\n"):
        if not line:
            continue
        hier, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hier == "0":
            unified = path
        elif "name=systemd" in controllers.split(","):
            systemd = path
        elif first is None or (first == "/" and path != "/"):
            first = path
    found = [path for path in (unified, systemd, first) if path is not None]
    for path in found:
        if path != "/":
            return path
    return found[0] if found else ""


def _read_fd_all(fd: int) -> bytes:
    chunks = []
    while True:
        chunk = os.read(fd, _BUFSIZE)
        if not chunk:
            break
        chunks.append(chunk)
        if len(chunk) < 4096:
            # A short read below a page only happens at end of file here;
            # skipping the read that would return b"" saves a syscall.
            break
    return b"".join(chunks)


class ProcessHandle:
    """Reads pinned to one process through an open /proc/PID directory."""

    __slots__ = ("fd", "pid")

    def __init__(self, pid: int, fd: int) -> None:
        self.pid = pid
        self.fd = fd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> ProcessHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, name: str) -> bytes | Unavailable:
        try:
            fd = os.open(name, _O_RDONLY, dir_fd=self.fd)
        except OSError as exc:
            return _classify(exc)
        try:
            return _read_fd_all(fd)
        except OSError as exc:
            return _classify(exc)
        finally:
            os.close(fd)

    def readlink(self, name: str) -> str | Unavailable:
        try:
            return os.readlink(name, dir_fd=self.fd)
        except OSError as exc:
            return _classify(exc)

    def owner(self) -> tuple[int, int] | Unavailable:
        """(euid, egid) of the process: the owner of its /proc directory.

        One fstat on the pinned directory; a process that is not dumpable
        (e.g. after a setuid exec) shows as root, which its euid then is."""
        try:
            st = os.fstat(self.fd)
        except OSError as exc:
            return _classify(exc)
        return st.st_uid, st.st_gid

    def read_bounded(self, name: str, limit: int) -> tuple[bytes, bool] | Unavailable:
        """Up to ``limit`` bytes of a file, and whether there was more."""
        try:
            return _read_bounded(name.encode(), self.fd, limit)
        except OSError as exc:
            return _classify(exc)

    def cmdline(self, limit: int = ARGV_LIMIT) -> list[str] | Unavailable:
        """argv, its text cut at ``limit`` bytes (:meth:`argv` says whether it was)."""
        return self.argv(limit)[0]

    def argv(self, limit: int = ARGV_LIMIT) -> tuple[list[str] | Unavailable, bool]:
        """argv, cut at ``limit`` bytes of text, and whether it was cut:
        the same bound on every path that reads it (the readers' too)."""
        read = self.read_bounded("cmdline", limit)
        if isinstance(read, Unavailable):
            return read, False
        data, cut = read
        return parse_cmdline(data), cut

    def comm(self) -> str | Unavailable:
        data = self.read("comm")
        if isinstance(data, Unavailable):
            return data
        # The kernel appends one newline; a comm may itself end in one.
        if data.endswith(b"\n"):
            data = data[:-1]
        return data.decode("utf-8", "surrogateescape")

    def exe(self) -> str | Unavailable:
        return self.readlink("exe")

    def cwd(self) -> str | Unavailable:
        return self.readlink("cwd")

    def stat(self) -> Stat | Unavailable:
        data = self.read("stat")
        if isinstance(data, Unavailable):
            return data
        try:
            return parse_stat(data)
        except (ValueError, IndexError):
            return GONE

    def creds(self) -> Creds | Unavailable:
        data = self.read("status")
        if isinstance(data, Unavailable):
            return data
        try:
            return parse_creds(data)
        except ValueError:
            return GONE

    def cgroup(self) -> str | Unavailable:
        data = self.read("cgroup")
        if isinstance(data, Unavailable):
            return data
        return parse_cgroup(data)


class ProcFS:
    """Readers for one /proc tree (``root``, "/proc" by default)."""

    def __init__(self, root: str = "/proc") -> None:
        self.root = root.rstrip("/") or "/"

    def open_process(self, pid: int) -> ProcessHandle | Unavailable:
        """Pin ``pid``: later reads through the handle see this process or GONE."""
        try:
            return ProcessHandle(pid, os.open(f"{self.root}/{pid}", _O_DIR))
        except OSError as exc:
            return _classify(exc)

    def pids(self) -> list[int]:
        """Every process id listed in the root (threads are not listed)."""
        try:
            names = os.listdir(self.root)
        except OSError:
            return []
        return sorted(int(name) for name in names if name.isdigit())

    def _read(self, pid: int, read: Callable[[ProcessHandle], _T]) -> _T | Unavailable:
        handle = self.open_process(pid)
        if isinstance(handle, Unavailable):
            return handle
        with handle:
            return read(handle)

    def cmdline(self, pid: int) -> list[str] | Unavailable:
        return self._read(pid, ProcessHandle.cmdline)

    def comm(self, pid: int) -> str | Unavailable:
        return self._read(pid, ProcessHandle.comm)

    def exe(self, pid: int) -> str | Unavailable:
        return self._read(pid, ProcessHandle.exe)

    def cwd(self, pid: int) -> str | Unavailable:
        return self._read(pid, ProcessHandle.cwd)

    def stat(self, pid: int) -> Stat | Unavailable:
        return self._read(pid, ProcessHandle.stat)

    def creds(self, pid: int) -> Creds | Unavailable:
        return self._read(pid, ProcessHandle.creds)

    def cgroup(self, pid: int) -> str | Unavailable:
        return self._read(pid, ProcessHandle.cgroup)

    def boottime_offset_ns(self) -> int:
        """CLOCK_BOOTTIME minus CLOCK_MONOTONIC (time spent suspended), to
        the millisecond: beyond that it is the noise of two clock reads, and
        rounded, every process of one boot finds the same offset (so computes
        the same process identities, see procevents.identity)."""
        raw = time.clock_gettime_ns(time.CLOCK_BOOTTIME) - time.monotonic_ns()
        return round(raw / 1_000_000) * 1_000_000


@dataclass(slots=True)
class RawExec:
    """What an exec's /proc directory held, undecoded: the capture readers'
    unit, as little work as possible while the process is held."""

    missing: Unavailable | None
    cmdline: bytes = b""
    stat: bytes = b""
    exe: bytes = b""
    cwd: bytes = b""
    owner: tuple[int, int] | None = None
    environ: bytes | None = None
    argv_truncated: bool = False
    env_truncated: bool = False
    #: /proc/PID/cgroup as read (None: not asked for, or unreadable).
    cgroup: bytes | None = None


def _read_bounded(name: bytes, dir_fd: int, limit: int) -> tuple[bytes, bool]:
    """Up to ``limit`` bytes of a file; also whether there was more."""
    fd = os.open(name, _O_RDONLY, dir_fd=dir_fd)
    try:
        chunks: list[bytes] = []
        size = 0
        while size < limit:
            chunk = os.read(fd, min(_BUFSIZE, limit - size))
            if not chunk:
                return b"".join(chunks), False
            chunks.append(chunk)
            size += len(chunk)
            if len(chunk) < 4096:
                return b"".join(chunks), False
        return b"".join(chunks), bool(os.read(fd, 1))
    finally:
        os.close(fd)


def read_exec_raw(
    pid: int, *, argv_limit: int, env_limit: int = 0, comm_only: bool = False, paths: bool = True,
    cgroup: bool = False, root: str = "/proc",
) -> RawExec:
    """argv first, then stat, exe, cwd, owner (and environ, cgroup), pinned
    to ``pid`` by its directory so that every read is of the same process.
    A read that fails after the argv leaves its field empty.  ``comm_only``:
    the ``stat`` field holds /proc/PID/comm instead (cheaper, for a process
    known to be the one exec'd, whose start time is not needed); without
    ``paths``, exe and cwd are left empty."""
    try:
        dir_fd = os.open(f"{root}/{pid}", _O_DIR)
    except OSError as exc:
        return RawExec(_classify(exc))
    try:
        try:
            cmdline, argv_truncated = _read_bounded(b"cmdline", dir_fd, argv_limit)
        except OSError as exc:
            return RawExec(_classify(exc))
        raw = RawExec(None if cmdline else EMPTY, cmdline, argv_truncated=argv_truncated)
        try:
            raw.stat = _read_bounded(b"comm" if comm_only else b"stat", dir_fd, 4096)[0]
        except OSError:
            pass
        if paths:
            try:
                raw.exe = os.readlink(b"exe", dir_fd=dir_fd)
            except OSError:
                pass
            try:
                raw.cwd = os.readlink(b"cwd", dir_fd=dir_fd)
            except OSError:
                pass
        try:
            st = os.fstat(dir_fd)
            raw.owner = (st.st_uid, st.st_gid)
        except OSError:
            pass
        if env_limit:
            try:
                raw.environ, raw.env_truncated = _read_bounded(b"environ", dir_fd, env_limit)
            except OSError:
                pass
        if cgroup:
            try:
                raw.cgroup = _read_bounded(b"cgroup", dir_fd, _BUFSIZE)[0]
            except OSError:
                pass
        return raw
    finally:
        os.close(dir_fd)


def boot_id(root: str = "/proc") -> str | None:
    """This boot's random id (sys/kernel/random/boot_id), None if unreadable."""
    try:
        with open(f"{root}/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return None


def namespace_inode(kind: str, root: str = "/proc") -> int | None:
    """The inode of this process's ``kind`` namespace (``pid``, ``user``...)."""
    try:
        link = os.readlink(f"{root}/self/ns/{kind}")
    except OSError:
        return None
    try:
        return int(link[link.index("[") + 1 : link.index("]")])
    except ValueError:
        return None


def rmem_max(root: str = "/proc") -> int:
    """net.core.rmem_max: the largest receive buffer an unprivileged socket gets."""
    try:
        with open(f"{root}/sys/net/core/rmem_max", "rb") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 212992


def pid_exists(pid: int, root: str = "/proc") -> bool:
    return os.path.exists(f"{root}/{pid}")


def name_self(name: str, root: str = "/proc") -> bool:
    """Give this process ``name`` in ps and top (its comm: the kernel keeps
    15 bytes); False where /proc refuses."""
    try:
        with open(f"{root}/self/comm", "w") as comm:
            comm.write(name)
    except OSError:
        return False
    return True

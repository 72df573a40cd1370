"""What the host says about a process: CPU and memory (/proc/PID/stat,
status, smaps_rollup), its connector sockets' queue and drops
(/proc/net/netlink), its process tree, other subscribers; and waiting for,
reaping and stopping processes."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from pathlib import Path

from . import BenchError

CLK_TCK = os.sysconf("SC_CLK_TCK")
NETLINK_CONNECTOR = 11


# -- one process ------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/PID/stat (after the comm), or None when gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process, from /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


def status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def smaps_kib(pid: int) -> dict[str, int]:
    """The kiB fields of /proc/PID/smaps_rollup (Rss, Pss, Private_Clean, ...)."""
    out: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return out
    for line in text.splitlines()[1:]:
        key, _, value = line.partition(":")
        parts = value.split()
        if len(parts) == 2 and parts[1] == "kB":
            out[key] = int(parts[0])
    return out


def proc_start(pid: int) -> int | None:
    """Start time (clock ticks since boot) of a live process: with the pid, it
    names the process even if the pid is handed out again."""
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[19])  # field 22 of stat(5)


def proc_state(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return None if fields is None else fields[0]


def proc_ppid(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[1])


def proc_comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def online_cpus() -> list[int]:
    """/sys/devices/system/cpu/online: procevents starts one reader per CPU listed there."""
    cpus: list[int] = []
    for part in Path("/sys/devices/system/cpu/online").read_text().strip().split(","):
        low, _, high = part.partition("-")
        cpus.extend(range(int(low), int(high or low) + 1))
    return cpus


@contextlib.contextmanager
def pinned(cpu: int) -> Iterator[None]:
    """This process (and the children it starts meanwhile) on ``cpu`` only."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


# -- connector sockets ----------------------------------------------------------------


def _connector_sockets() -> Iterator[list[str]]:
    """The columns of each NETLINK_CONNECTOR socket in /proc/net/netlink:
    sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode."""
    for line in Path("/proc/net/netlink").read_text().splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 10 and int(cols[1]) == NETLINK_CONNECTOR:
            yield cols


def socket_stats(pid: int) -> tuple[int, int] | None:
    """(Rmem, Drops) of /proc/net/netlink, summed over pid's connector sockets."""
    inodes: set[int] = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    total: tuple[int, int] | None = None
    for cols in _connector_sockets():
        if int(cols[9]) in inodes:
            rmem, drops = total or (0, 0)
            total = (rmem + int(cols[4]), drops + int(cols[8]))
    return total


def queue_bytes(pid: int) -> int | None:
    """Bytes queued on the connector socket(s) of ``pid`` (None: no socket, or gone)."""
    try:
        stats = socket_stats(pid)
    except OSError:
        return None
    return None if stats is None else stats[0]


def other_subscribers(exclude: set[int]) -> str:
    """Processes outside ``exclude`` holding a connector socket bound to the
    proc events group (Groups bit 1 in /proc/net/netlink): other
    subscribers on the host, which slow every fork/exec/exit too."""
    inodes = {int(cols[9]) for cols in _connector_sockets() if int(cols[3], 16) & 1}
    found: Counter[str] = Counter()
    if inodes:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in exclude:
                continue
            try:
                fds = os.listdir(entry / "fd")
            except OSError:
                continue
            for fd in fds:
                try:
                    target = os.readlink(entry / "fd" / fd)
                except OSError:
                    continue
                if target.startswith("socket:[") and int(target[8:-1]) in inodes:
                    found[proc_comm(int(entry.name))] += 1
                    break
    if not found:
        return "none"
    return ", ".join(f"{n} {comm}" for comm, n in sorted(found.items()))


# -- files ------------------------------------------------------------------------------


def count_lines(path: Path) -> int:
    try:
        with path.open("rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    except FileNotFoundError:
        return 0


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


# -- process trees ------------------------------------------------------------------------


def children_of(pid: int) -> list[int]:
    """Children of ``pid``: /proc/PID/task/*/children, else a scan of /proc/*/stat."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return []  # gone
    kids: list[int] = []
    if tasks and (tasks[0] / "children").exists():  # CONFIG_PROC_CHILDREN
        for task in tasks:
            with contextlib.suppress(OSError):
                kids.extend(int(c) for c in (task / "children").read_text().split())
        return kids
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and int(fields[1]) == pid:
                kids.append(int(entry.name))
    return kids


def process_tree(pid: int, skip: Collection[int] = ()) -> list[int]:
    """``pid`` and all its descendants, ``pid`` first; not those in ``skip``, nor theirs."""
    tree = [pid]
    for p in tree:
        tree.extend(c for c in children_of(p) if c not in skip)
    return tree


# -- waiting for and stopping processes -----------------------------------------------------


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen[bytes]) -> None:
    """Poll ``predicate`` until it holds; BenchError if procevents (``proc``) exits or time runs out."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise BenchError(f"procevents exited (status {proc.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


def reap(pid: int, timeout: float) -> tuple[int, resource.struct_rusage | None]:
    """waitpid with a deadline: (wait status, rusage), or (-1, None) on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        wpid, status, usage = os.wait4(pid, os.WNOHANG)
        if wpid == pid:
            return status, usage
        time.sleep(0.02)
    return -1, None


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    """SIGTERM (every tool here stops cleanly on it), then SIGKILL if it hangs."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode is not None
    return proc.returncode


def stop_tree(proc: subprocess.Popen[bytes], tree: list[tuple[int, int]] | None = None,
              timeout: float = 30.0, skip: Collection[int] = ()) -> tuple[int, list[str]]:
    """SIGTERM the main process (stop_process); then every other process of
    its tree (``tree``: (pid, start time) pairs, else read now, without
    ``skip`` and their descendants) must end by
    itself within 3 s: procevents' readers follow their lifeline pipe.  One
    that does not is described, and killed by its pid.  Returns (exit status
    of the main process, descriptions)."""
    if tree is None:
        tree = [(p, s) for p in process_tree(proc.pid, skip) if (s := proc_start(p)) is not None]
    status = stop_process(proc, timeout)
    deadline = time.monotonic() + 3.0
    rest = [(pid, start) for pid, start in tree if pid != proc.pid]
    while rest:
        rest = [(pid, start) for pid, start in rest if proc_start(pid) == start and proc_state(pid) != "Z"]
        if not rest or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    leftover = []
    for pid, _start in rest:
        leftover.append(f"pid {pid} ({proc_comm(pid)}, state {proc_state(pid)}, parent {proc_ppid(pid)}) still "
                        f"running 3 s after its main process {proc.pid} exited (status {status}); killed")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return status, leftover

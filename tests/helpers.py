"""Helpers shared by tests in several files (tests/README.md: the naming rule).

Real processes, real files, the real kernel: the CLI runs as a subprocess,
workloads are real children, and every wait is for progress (a line, a
committed row, an exit), with a generous deadline only as a failure bound.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import IO, Any

import pytest
from conftest import CLI, kernel_version, session_tmp

import procevents
from procevents import wire
from procevents.capture import online_cpus
from procevents.events import (
    Ack,
    Comm,
    Coredump,
    Event,
    Exec,
    Exit,
    Fork,
    Gid,
    Lost,
    Ptrace,
    Sid,
    Uid,
    Unknown,
)
from procevents.guardian import NAME as GUARDIAN
from procevents.procfs import (
    CLOCK_TICKS,
    ProcFS,
)
from procevents.proctable import Proc
from procevents.snapshot import ExecSnapshot
from procevents.store import StoreSink, StoreWriter
from procevents.store.schema import APPLICATION_ID

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
BENCH = REPO / "bench"
TIMEOUT = 15.0
LISTENING = b"procevents: listening"
ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="needs root (realtime readers, other users' processes)")
SH = os.path.realpath(shutil.which("sh") or "/bin/sh")
TRUE = "/bin/true"
ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


def skip_unless_connector() -> None:
    if os.geteuid() != 0:
        pytest.skip("these tests run processes as root and read every process's /proc: run them as root")
    try:
        with procevents.listen():
            pass
    except procevents.ConnectorError as exc:
        pytest.skip(f"the proc connector is not usable here: {exc}")


def env() -> dict[str, str]:
    out = dict(os.environ)
    out["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), out.get("PYTHONPATH", "")) if p)
    out["COLUMNS"] = "200"
    # A warning on stderr would be a line no test expects.
    out.pop("PYTHONWARNINGS", None)
    return out


def cli_argv() -> list[str]:
    return list(CLI)


def _default_signals() -> None:
    # A test runner started from a non-interactive shell in the background
    # inherits SIGINT and SIGQUIT ignored (and SIGHUP under nohup); a child
    # would then never see Ctrl-C, and a test's SIGQUIT would never end it.
    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_DFL)


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = TIMEOUT, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout:g} s")
        time.sleep(every)


class Lines:
    """A pipe's lines, collected in a thread; with ``close_after``, the pipe
    is closed after that many lines (the reader of a pipe going away)."""

    def __init__(self, stream: IO[bytes], close_after: int | None = None) -> None:
        self.lines: list[bytes] = []
        self.eof = False
        self.close_after = close_after
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._thread.start()

    def _run(self, stream: IO[bytes]) -> None:
        try:
            for line in stream:
                with self._cond:
                    self.lines.append(line)
                    self._cond.notify_all()
                if self.close_after is not None and len(self.lines) >= self.close_after:
                    break
        finally:
            if self.close_after is not None:
                stream.close()
            with self._cond:
                self.eof = True
                self._cond.notify_all()

    def wait_for(self, pred: Callable[[bytes], bool], timeout: float = TIMEOUT) -> bytes:
        deadline = time.monotonic() + timeout
        with self._cond:
            checked = 0
            while True:
                for line in self.lines[checked:]:
                    if pred(line):
                        return line
                checked = len(self.lines)
                left = deadline - time.monotonic()
                if self.eof or left <= 0:
                    raise AssertionError(f"no matching line within {timeout:g} s; got:\n{self.text}")
                self._cond.wait(left)

    def join(self) -> None:
        self._thread.join(TIMEOUT)

    @property
    def data(self) -> bytes:
        with self._cond:
            return b"".join(self.lines)

    @property
    def text(self) -> str:
        return self.data.decode(errors="replace")


class Cli:
    """One procevents process, its stdout and stderr read in threads."""

    def __init__(self, args: Sequence[str], cwd: Path | None = None, environ: dict[str, str] | None = None) -> None:
        self.args = list(args)
        self.proc = subprocess.Popen(
            [*cli_argv(), *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=env() if environ is None else environ, preexec_fn=_default_signals, start_new_session=True, cwd=cwd,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.out = Lines(self.proc.stdout)
        self.err = Lines(self.proc.stderr)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_listening(self) -> None:
        self.err.wait_for(lambda line: line.startswith(LISTENING))

    def wait(self, timeout: float = TIMEOUT) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"procevents {self.args} did not end; stderr:\n{self.err.text}") from None
        self.out.join()
        self.err.join()
        return rc

    def stop(self, sig: int = signal.SIGINT) -> int:
        self.proc.send_signal(sig)
        return self.wait()

    def json(self) -> list[dict[str, Any]]:
        events = []
        for raw in self.out.lines:
            assert raw.endswith(b"\n"), raw
            events.append(json.loads(raw.decode("utf-8")))  # strict UTF-8
        return events

    def wait_json(self, pred: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        line = self.out.wait_for(lambda raw: pred(json.loads(raw)))
        return json.loads(line)  # type: ignore[no-any-return]

    def cleanup(self) -> None:
        # SIGTERM, not SIGKILL: a subscriber killed outright cannot unsubscribe.
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def cli_processes() -> Iterator[Callable[..., Cli]]:
    """Body of a ``cli`` fixture: start procevents processes, stop them after the test."""
    started: list[Cli] = []

    def start(*args: str, cwd: Path | None = None) -> Cli:
        c = Cli(args, cwd)
        started.append(c)
        return c

    yield start
    for c in started:
        c.cleanup()


def run_cli(
    *args: str, timeout: float = TIMEOUT, argv0: Sequence[str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """procevents ARGS to its end; ``argv0`` runs it another way than ``python -m procevents``."""
    return subprocess.run(
        [*(argv0 or cli_argv()), *args], capture_output=True, env=env(), timeout=timeout,
        stdin=subprocess.DEVNULL, check=False,
    )


class Gated:
    """A child that execs and then waits for a line on stdin: its exec is
    certainly seen with its argv, and it ends when the test says so."""

    def __init__(self, argv: Sequence[str | bytes], cwd: Path | None = None) -> None:
        self.proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE, cwd=cwd)
        self.pid = self.proc.pid

    def release(self) -> int:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(b"go\n")
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        return self.proc.wait(TIMEOUT)

    def kill(self, sig: int = signal.SIGKILL) -> int:
        self.proc.send_signal(sig)
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        return self.proc.wait(TIMEOUT)

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def gated_processes() -> Iterator[Callable[..., Gated]]:
    """Body of a ``gated`` fixture: start :class:`Gated` children, kill what is left after the test."""
    kids: list[Gated] = []

    def start(argv: list[str | bytes], cwd: Path | None = None) -> Gated:
        kid = Gated(argv, cwd)
        kids.append(kid)
        return kid

    yield start
    for kid in kids:
        kid.cleanup()


def db_rows(path: Path, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Read committed rows (read-only), [] while the file does not exist yet."""
    if not path.exists():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError:  # schema not there yet
        return []
    finally:
        conn.close()


def wait_rows(path: Path, sql: str, params: Sequence[Any], want: int, what: str) -> None:
    """Until ``sql`` (a count) says ``want`` rows are committed."""

    def ready() -> bool:
        rows = db_rows(path, sql, params)
        return bool(rows) and rows[0][0] >= want

    wait_until(ready, what)


def committed_events(path: Path, event: str, pids: Sequence[int]) -> int:
    marks = ", ".join("?" * len(pids))
    rows = db_rows(path, f"SELECT count(*) FROM events WHERE event = ? AND tgid IN ({marks})", [event, *pids])
    return rows[0][0] if rows else 0


def scrape(url: str) -> dict[str, Any]:
    """GET /metrics and parse it with prometheus_client's parser: name -> family."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        text = response.read().decode("utf-8")
    return {family.name: family for family in text_string_to_metric_families(text)}


def sample(families: dict[str, Any], family: str, name: str, **labels: str) -> float:
    """One sample's value (0 when absent)."""
    for s in families[family].samples:
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
            return float(s.value)
    return 0.0


def metrics_url(c: Cli) -> str:
    line = c.err.wait_for(lambda line: b"metrics at http://" in line).decode()
    return line[line.index("http://") :].strip()


def gated_children_script(children: Sequence[tuple[str, str]]) -> str:
    """A shell script for a :class:`Gated` root: after the first line on its
    stdin it starts every (program, body) child in the background, each one
    running ``program -c body`` (program: a link to sh), waiting for its own
    line of the same stdin first; then it waits for them all and exits 0.

    Each child waits after its exec, so its /proc is certainly read while it
    lives: no race decides what it is called."""
    lines = ["read _", "exec 3<&0"]
    for program, body in children:
        quoted = "'" + f"read _; {body}".replace("'", "'\\''") + "'"
        lines.append(f"{program} -c {quoted} <&3 &")
    lines += ["wait", "exit 0"]
    return "\n".join(lines)


def json_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    data = path.read_bytes()
    return [json.loads(line) for line in data[: data.rfind(b"\n") + 1].splitlines()]


def links_to(directory: Path, name: str, target: str) -> str:
    """A symlink NAME -> TARGET: exec'ing it gives the process the comm NAME."""
    path = directory / name
    path.symlink_to(shutil.which(target) or target)
    return str(path)


# -- a crash without leaving the kernel's listener count raised ----------------------------

_SYS_PIDFD_GETFD = 438  # the same on every architecture


def socket_fds(pid: int) -> dict[int, int]:
    """inode -> fd of every socket ``pid`` holds."""
    inodes: dict[int, int] = {}
    for entry in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{entry}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes[int(target[8:-1])] = int(entry)
    return inodes


def netlink_connector_fds(pid: int) -> list[int]:
    """The fds of ``pid`` that are NETLINK_CONNECTOR sockets."""
    inodes = socket_fds(pid)
    found = []
    with open("/proc/net/netlink") as f:
        for line in f.read().splitlines()[1:]:
            cols = line.split()
            if len(cols) >= 10 and int(cols[1]) == wire.NETLINK_CONNECTOR and int(cols[9]) in inodes:
                found.append(inodes[int(cols[9])])
    return found


def steal_connector_socket(pid: int) -> socket.socket:
    """A duplicate of ``pid``'s proc connector socket (pidfd_getfd(2)).

    Killing a subscriber with SIGKILL leaves the kernel's global listener
    count raised until reboot: it cannot send PROC_CN_MCAST_IGNORE.  Holding
    the same socket lets the test send it on the dead process's behalf.
    """
    fds = netlink_connector_fds(pid)
    assert len(fds) == 1, f"expected one connector socket in {pid}, found {fds}"
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        fd = libc.syscall(_SYS_PIDFD_GETFD, pidfd, fds[0], 0)
        if fd < 0:
            err = ctypes.get_errno()
            pytest.skip(f"pidfd_getfd failed: {os.strerror(err)}")
    finally:
        os.close(pidfd)
    return socket.socket(fileno=fd)


def send_ignore(sock: socket.socket) -> None:
    sock.send(wire.encode_request(wire.PROC_CN_MCAST_IGNORE))
    sock.close()


# -- bench/burst.c, the storm generator with exact ground truth --------------------------------


def bench_module(name: str) -> ModuleType:
    """bench/benchlib/NAME.py, the benchmarks' shared code (``build``: burst.c and
    tiny.c; ``truth``: burst's pid file as ground truth).  The one place tests
    import bench code from."""
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module(f"benchlib.{name}")
    finally:
        sys.path.remove(str(BENCH))


def burst_tools() -> tuple[Path, Path]:
    """(burst, tiny), compiled by bench/benchlib once per session into its
    scratch directory (never bench/.build); skip without a compiler."""
    build = bench_module("build")
    try:
        tools: tuple[Path, Path] = build.build_all(session_tmp() / "bench")
    except build.BenchError as exc:
        pytest.skip(str(exc))
    return tools


# -- the live view: its summary line, its JSON, short-lived children ------------------------------

#: The exit summary: (shown, by type, lost); "of N events received" when some were not shown.
SUMMARY = re.compile(
    r"^procevents: (\d+) events? (?:received|shown)(?: \(([^)]*)\))?(?: of \d+ events? received)?, (\d+) events? lost$"
)
COMMON_KEYS = ("event", "time", "timestamp_ns", "cpu", "pid", "tgid")


def spawn(argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.Popen(argv, **kwargs)


def run_child(argv: Sequence[str]) -> int:
    child = spawn(argv)
    child.wait(TIMEOUT)
    return child.pid


def exit_of(pid: int) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["event"] == "exit" and e["tgid"] == pid and e["pid"] == pid


def summary(err: str) -> re.Match[str]:
    lines = err.splitlines()
    assert lines, "no summary on stderr"
    m = SUMMARY.match(lines[-1])
    assert m, f"last stderr line is not the summary: {lines[-1]!r}"
    return m


# -- a fixture /proc tree and synthetic events (the procfs, proctable, snapshot and enrich tests) ---

#: CLOCK_BOOTTIME - CLOCK_MONOTONIC used by the fixture ProcFS, so start
#: times computed from a fixture stat are exact.
BOOT_OFFSET_NS = 7_000_000_000


def stat_line(
    pid: int,
    comm: bytes | str,
    *,
    state: str = "S",
    ppid: int = 1,
    pgrp: int | None = None,
    session: int | None = None,
    tty_nr: int = 0,
    num_threads: int = 1,
    starttime: int = 1000,
) -> bytes:
    """A complete 52-field /proc/PID/stat line, as the kernel writes it."""
    raw_comm = comm.encode("utf-8", "surrogateescape") if isinstance(comm, str) else comm
    pgrp = pid if pgrp is None else pgrp
    session = pid if session is None else session
    # fields 3..52 of proc(5); field N sits at index N - 3
    fields: list[str] = [state, str(ppid), str(pgrp), str(session), str(tty_nr)]
    fields += ["-1", "4194560", "100", "0", "0", "0", "3", "1", "0", "0", "20", "0"]  # 8..19
    fields += [str(num_threads), "0", str(starttime)]  # 20 num_threads, 21 itrealvalue, 22 starttime
    fields += ["2654208"] * (52 - 22)  # 23..52: vsize, rss, ... (values do not matter)
    assert len(fields) == 50
    return b"%d (%s) %s\n" % (pid, raw_comm, " ".join(fields).encode())


def status_text(name: str, ruid: int, euid: int, rgid: int, egid: int) -> bytes:
    return (
        f"Name:\t{name}\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t1\nNgid:\t0\nPid:\t1\nPPid:\t0\n"
        f"TracerPid:\t0\nUid:\t{ruid}\t{euid}\t{euid}\t{euid}\nGid:\t{rgid}\t{egid}\t{egid}\t{egid}\n"
        "FDSize:\t64\nGroups:\t\nVmPeak:\t   1000 kB\nThreads:\t1\n"
    ).encode()


class FixtureProc:
    """Writes fake /proc/<pid>/ directories under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def add(
        self,
        pid: int,
        *,
        comm: str = "proc",
        cmdline: bytes | None = None,
        ppid: int = 1,
        uid: int = 0,
        euid: int | None = None,
        gid: int = 0,
        egid: int | None = None,
        starttime: int = 1000,
        state: str = "S",
        exe: str | None = "/usr/bin/proc",
        cwd: str | None = "/",
        cgroup: bytes = b"0::/system.slice/fixture.service\n",
        stat: bytes | None = None,
        status: bytes | None = None,
    ) -> Path:
        d = self.root / str(pid)
        d.mkdir()
        raw_comm = comm.encode("utf-8", "surrogateescape")
        (d / "comm").write_bytes(raw_comm + b"\n")
        (d / "cmdline").write_bytes(raw_comm + b"\0" if cmdline is None else cmdline)
        (d / "stat").write_bytes(
            stat_line(pid, raw_comm, ppid=ppid, starttime=starttime, state=state) if stat is None else stat
        )
        (d / "status").write_bytes(
            status_text(comm, uid, uid if euid is None else euid, gid, gid if egid is None else egid)
            if status is None
            else status
        )
        (d / "cgroup").write_bytes(cgroup)
        if exe is not None:
            os.symlink(exe, d / "exe")
        if cwd is not None:
            os.symlink(cwd, d / "cwd")
        return d


class FixedOffsetProcFS(ProcFS):
    """A ProcFS whose boot-time offset is a constant (exact start times)."""

    def boottime_offset_ns(self) -> int:
        return BOOT_OFFSET_NS


@pytest.fixture
def fx(tmp_path: Path) -> FixtureProc:
    return FixtureProc(tmp_path)


@pytest.fixture
def procfs(tmp_path: Path) -> ProcFS:
    return FixedOffsetProcFS(root=str(tmp_path))


def start_ns(starttime: int) -> int:
    """The CLOCK_MONOTONIC start time the table should derive from a stat starttime."""
    return starttime * 1_000_000_000 // CLOCK_TICKS - BOOT_OFFSET_NS


SEQ = iter(range(1, 1 << 30))


def fork(parent: int, child: int, ts: int = 1_000, *, thread_of: int | None = None) -> Fork:
    """A process fork (or, with ``thread_of``, a new thread ``child`` in process ``thread_of``)."""
    tgid = child if thread_of is None else thread_of
    return Fork(0, next(SEQ), ts, parent, parent, child, tgid)


def exec_(pid: int, ts: int = 2_000) -> Exec:
    return Exec(0, next(SEQ), ts, pid, pid)


def exit_(pid: int, ts: int = 3_000, *, code: int = 0, parent: int = 0, tgid: int | None = None) -> Exit:
    return Exit(0, next(SEQ), ts, pid, pid if tgid is None else tgid, code, 17, parent, parent)


def comm_event(pid: int, name: bytes, ts: int = 2_500, *, tgid: int | None = None) -> Comm:
    return Comm(0, next(SEQ), ts, pid, pid if tgid is None else tgid, name)


def uid_event(pid: int, ruid: int, euid: int, ts: int = 2_500) -> Uid:
    return Uid(0, next(SEQ), ts, pid, pid, ruid, euid)


def snap(argv: list[str] | None, comm: str | None = "prog", missing: str | None = None) -> ExecSnapshot:
    return ExecSnapshot(
        argv=argv,
        comm=comm,
        exe="/usr/bin/prog" if argv is not None else None,
        cwd="/tmp" if argv is not None else None,
        owner=(1000, 1000) if argv is not None else None,
        missing=missing,
    )


TS = 2_000_000_123_456_789


def all_events() -> list[Event]:
    return [
        Fork(1, 2, TS, 10, 11, 12, 13),
        Exit(1, 2, TS, 10, 10, 139, 17, 1, 1),
        Exec(1, 2, TS, 10, 10),
        Sid(1, 2, TS, 10, 10),
        Uid(1, 2, TS, 10, 10, 4294967294, 0),
        Gid(1, 2, TS, 10, 10, 1000, 0),
        Ptrace(1, 2, TS, 10, 10, 20, 20),
        Comm(1, 2, TS, 10, 10, b"\xff\x1b[2J"),
        Comm(1, 2, TS, 10, 10, "é中\u202e".encode()),
        Coredump(1, 2, TS, 10, 10, 1, 1),
        Lost(-1, 0, TS, 5, "drops"),
        Unknown(1, 2, TS, 0x400, b"\x01\x02"),
        Ack(1, 2, TS, 0, 1),
    ]


# -- databases for the store tests ------------------------------------------------------------------


def digest(path: str | Path) -> str:
    """A file's SHA-256: equal before and after means nothing wrote to it."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def lost_rows_db(path: Path) -> Path:
    writer = StoreWriter(str(path))
    for i in range(2000):  # enough rows for several pages
        writer.add_event((None, i, i, "lost", -1, 0, 0, 0, i, None, None, None, "drops",
                          None, None, None, None, None, None, None, None))
    writer.close()
    return path


def record_synthetic(tmp_path: Path, events: list[tuple[Event, Proc]], retain_ns: int | None = None) -> StoreWriter:
    writer = StoreWriter(str(tmp_path / "synthetic.db"), retain_ns=retain_ns)
    sink = StoreSink(writer)
    for event, proc in events:
        sink.emit(event, proc, {"comm": proc.comm, "duration": 1.0} if type(event) is Exit else {"comm": proc.comm})
    writer.commit()
    return writer


#: An exit's taskstats figures (procevents.costs.COST_KEYS), as the enricher gives them.
COSTS: dict[str, Any] = {
    "utime": 0.25, "stime": 0.05, "max_rss": 1000 * 1024, "rchar": 4096, "wchar": 512, "read_bytes": 0,
    "write_bytes": 0, "cpu_delay": 0.001, "io_delay": 0.0, "mem_delay": 0.0,
}

#: (host, event, process, enrichment): one event as a recorder on that host hands it to its sink.
Step = tuple[str, Event, Proc, dict[str, Any]]


def lifetime_steps(
    host: str, pid: int, argv: list[str], *, code: int = 0, ppid: int = 1, start: int | None = None,
    lasting: int = 2_000_000, cgroup: str | None = None,
) -> list[Step]:
    """A process's fork, exec and exit (wait status ``code``, with its costs)
    on ``host``, started ``start`` (CLOCK_MONOTONIC ns; default a minute ago)
    and ended ``lasting`` ns later."""
    if start is None:
        start = time.monotonic_ns() - 60 * 10**9
    comm = os.path.basename(argv[0])[:15]
    proc = Proc(pid=pid, ppid=ppid, start_ns=start, comm=comm, argv=argv, cwd="/", ruid=0, euid=0, cgroup=cgroup)
    ran = {"cmdline": argv, "exe": None, "cwd": "/", "ppid": ppid, "uid": 0, "user": "root", "comm": comm,
           "cgroup": cgroup}
    ended = {"comm": comm, "cmdline": argv, "duration": lasting / 1e9, "ppid": ppid, "uid": 0, "user": "root", **COSTS}
    return [
        (host, fork(ppid, pid, start), proc, {"comm": comm, "ppid": ppid}),
        (host, exec_(pid, start + 1_000), proc, ran),
        (host, exit_(pid, start + lasting, code=code, parent=ppid), proc, ended),
    ]


#: A container id, as docker names one.
CONTAINER_ID = "3f2a9c1b" + "0" * 56


def two_hosts_build() -> list[Step]:
    """The same failed build on web-1 and web-2 (make, then cc1 under it), the
    same pids on both, the hosts' events interleaved as collect receives them;
    web-2's cc1 runs in a docker container (CONTAINER_ID)."""
    start = time.monotonic_ns() - 60 * 10**9
    per_host = []
    for host in ("web-1", "web-2"):
        make = lifetime_steps(host, 600, ["make", "-k", f"{host}.mk"], code=2 << 8, start=start, lasting=10**7)
        cgroup = f"/system.slice/docker-{CONTAINER_ID}.scope" if host == "web-2" else None
        cc1 = lifetime_steps(host, 601, ["cc1", f"{host}.c"], code=1 << 8, ppid=600, start=start + 10**6,
                             cgroup=cgroup)
        per_host.append([*make[:2], *cc1, make[2]])
    return [step for pair in zip(*per_host, strict=True) for step in pair]


def collected_store(tmp_path: Path, steps: Sequence[Step]) -> Path:
    """A central store as ``collect`` writes it (fleet/collector.py's
    CentralStore, without a server): each host records into its own store,
    ``tmp_path/HOST.db`` (a StoreSink, as ``record --host HOST``; parents
    linked by pid, as the enricher's table does), and its outbox is shipped
    after every step, so the hosts' rows interleave in the order given."""
    from procevents.fleet.collector import CentralStore
    from procevents.fleet.messages import decode
    from procevents.fleet.outbox import Outbox

    path = tmp_path / "central.db"
    central = CentralStore(str(path))
    hosts: dict[str, tuple[StoreWriter, StoreSink, Outbox, dict[int, Proc]]] = {}
    for host, event, proc, info in steps:
        if host not in hosts:
            local = str(tmp_path / f"{host}.db")
            writer = StoreWriter(local, host=host)
            procs: dict[int, Proc] = {}
            hosts[host] = (writer, StoreSink(writer, procs.get), Outbox(local, "S", "procevents", host), procs)
        writer, sink, outbox, procs = hosts[host]
        procs[proc.pid] = proc
        sink.emit(event, proc, info)
        writer.commit()
        found = outbox.read()
        central.write([decode(m.payload) for m in found.messages])
        outbox.advance(found.cursor)
    for writer, _, outbox, _ in hosts.values():
        outbox.close()
        writer.close()
    central.close()
    return path


# -- a file of schema 1, as procevents 0.1 wrote it ---------------------------------------------

#: The schema procevents 0.1 wrote (schema 1), as it was: no cost columns.
SCHEMA_1 = """
CREATE TABLE sessions (
    id INTEGER PRIMARY KEY,
    started_wall INTEGER NOT NULL,   -- ns since the epoch
    clock_offset INTEGER NOT NULL,   -- wall-clock ns minus CLOCK_MONOTONIC ns
    boot_id TEXT,
    hostname TEXT,
    recorder_pid INTEGER,
    version TEXT,
    ended TEXT,                      -- clean, error; NULL: never closed (killed, power loss)
    ended_wall INTEGER
);
CREATE TABLE procs (                 -- one row per process lifetime
    id INTEGER PRIMARY KEY,
    session INTEGER NOT NULL,
    pid INTEGER NOT NULL,
    ppid INTEGER,
    parent INTEGER,                  -- procs.id of the parent's lifetime
    start_ns INTEGER,                -- CLOCK_MONOTONIC
    start_wall INTEGER,              -- ns since the epoch
    forked INTEGER NOT NULL,         -- 1: its fork was recorded; 0: running when first seen
    end_ns INTEGER,
    end_wall INTEGER,
    comm TEXT,
    exe TEXT,
    argv BLOB,                       -- NUL-terminated arguments
    cwd TEXT,
    uid INTEGER,
    user TEXT,
    execs INTEGER NOT NULL,
    exit_code INTEGER,               -- raw wait status
    duration REAL                    -- seconds
);
CREATE INDEX procs_start ON procs(start_wall);
CREATE INDEX procs_end ON procs(end_wall);
CREATE INDEX procs_comm ON procs(comm);
CREATE INDEX procs_user ON procs(user);
CREATE INDEX procs_parent ON procs(parent);
CREATE TABLE events (                -- one row per event, in arrival order
    id INTEGER PRIMARY KEY,
    proc INTEGER,                    -- procs.id
    ts INTEGER NOT NULL,             -- timestamp_ns, CLOCK_MONOTONIC
    wall INTEGER NOT NULL,           -- ns since the epoch
    event TEXT NOT NULL,
    cpu INTEGER,
    seq INTEGER,
    pid INTEGER,                     -- for fork: the child
    tgid INTEGER,
    a INTEGER,                       -- per type, see the events_named view
    b INTEGER,
    c INTEGER,
    d INTEGER,
    data BLOB,
    comm TEXT,                       -- enrichment, as shown live
    ppid INTEGER,
    uid INTEGER,
    argv BLOB,
    exe TEXT,
    cwd TEXT
);
CREATE INDEX events_wall ON events(wall);
CREATE VIEW events_named AS SELECT
    id, proc, ts, wall, event, cpu, seq, pid, tgid,
    CASE WHEN event IN ('fork', 'exit', 'coredump') THEN a END AS parent_pid,
    CASE WHEN event IN ('fork', 'exit', 'coredump') THEN b END AS parent_tgid,
    CASE WHEN event = 'exit' THEN c END AS exit_code,
    CASE WHEN event = 'exit' THEN d END AS exit_signal,
    CASE WHEN event = 'uid' THEN a END AS ruid,
    CASE WHEN event = 'uid' THEN b END AS euid,
    CASE WHEN event = 'gid' THEN a END AS rgid,
    CASE WHEN event = 'gid' THEN b END AS egid,
    CASE WHEN event = 'ptrace' THEN a END AS tracer_pid,
    CASE WHEN event = 'ptrace' THEN b END AS tracer_tgid,
    CASE WHEN event = 'comm' THEN data END AS new_comm,
    CASE WHEN event = 'lost' THEN a END AS count,
    CASE WHEN event = 'lost' THEN CAST(data AS TEXT) END AS reason,
    CASE WHEN event = 'exec' THEN CAST(data AS TEXT) END AS missing,
    CASE WHEN event = 'unknown' THEN a END AS what,
    comm, ppid, uid, argv, exe, cwd
FROM events;
CREATE VIEW lifetimes AS SELECT
    procs.*,
    CASE WHEN exit_code & 127 = 0 THEN (exit_code >> 8) & 255 END AS status,
    CASE WHEN exit_code & 127 != 0 THEN exit_code & 127 END AS signal,
    CASE WHEN exit_code IS NOT NULL THEN exit_code & 127 != 0 AND exit_code & 128 != 0 END AS core_dumped,
    exit_code != 0 AS failed,
    strftime('%Y-%m-%dT%H:%M:%fZ', start_wall / 1e9, 'unixepoch') AS start_time,
    strftime('%Y-%m-%dT%H:%M:%fZ', end_wall / 1e9, 'unixepoch') AS end_time
FROM procs;
"""


def make_schema_1(path: Path) -> None:
    """A schema-1 file at PATH: one session and one ended lifetime (pid 4242, comm 'old')."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(
        f"BEGIN; {SCHEMA_1}; PRAGMA application_id={APPLICATION_ID}; PRAGMA user_version=1; COMMIT;"
    )
    conn.execute(
        "INSERT INTO sessions (started_wall, clock_offset) VALUES (1, 0)"
    )
    conn.execute(
        "INSERT INTO procs (id, session, pid, start_wall, end_wall, forked, execs, comm, exit_code, duration) "
        "VALUES (1, 1, 4242, 1000, 2000, 1, 1, 'old', 0, 0.5)"
    )
    conn.close()
    path.chmod(0o600)  # as procevents made its files


# -- a real nats-server (the fleet tests) ------------------------------------------------------

NATS_SERVER = shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin:/usr/local/sbin")


class NatsServer:
    """A nats-server on 127.0.0.1, its JetStream store in a directory that
    outlives a restart.  ``config`` is the text of a configuration file
    (authorization users and permissions...) it is started with;
    ``jetstream=False``: a server without JetStream."""

    def __init__(self, store: Path, config: str | None = None, *, jetstream: bool = True) -> None:
        assert NATS_SERVER is not None
        self.store = store
        self.config: Path | None = None
        if config is not None:
            store.parent.mkdir(parents=True, exist_ok=True)
            self.config = store.parent / "nats-server.conf"
            self.config.write_text(config)
        self.jetstream = jetstream
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def url_of(self, user: str, password: str) -> str:
        return self.url.replace("nats://", f"nats://{user}:{password}@")

    def start(self) -> None:
        argv = [NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port)]
        if self.config is not None:
            argv += ["-c", str(self.config)]
        if self.jetstream:
            argv += ["-js", "-sd", str(self.store)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + TIMEOUT
        while True:  # ready once it answers on its port
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as conn:
                    if conn.recv(4).startswith(b"INFO"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError("nats-server did not start")
            time.sleep(0.05)

    def publish(
        self, messages: Sequence[tuple[str, bytes, str | None]], url: str | None = None, *, create: bool = True,
        stream: str = "PROCEVENTS",
    ) -> list[Any]:
        """Publish (subject, payload, message id or None) to JetStream as
        another publisher would (at ``url``: a user's), the stream created
        first if missing and ``create`` (subjects procevents.>); each one's
        PubAck, or the exception."""
        import asyncio

        import nats as nats_py

        async def go() -> list[Any]:
            nc = await nats_py.connect(url or self.url, allow_reconnect=False)
            try:
                js = nc.jetstream(timeout=TIMEOUT)
                if create:
                    try:
                        await js.stream_info(stream)
                    except nats_py.js.errors.NotFoundError:
                        await js.add_stream(name=stream, subjects=["procevents.>"], duplicate_window=120.0)
                acks: list[Any] = []
                for subject, payload, msg_id in messages:
                    try:
                        headers = {"Nats-Msg-Id": msg_id} if msg_id else None
                        acks.append(await js.publish(subject, payload, headers=headers))
                    except Exception as exc:
                        acks.append(exc)
                return acks
            finally:
                await nc.close()

        return asyncio.run(go())

    def consumer(self, durable: str, url: str | None = None, stream: str = "PROCEVENTS") -> tuple[int, int, int]:
        """(messages not delivered yet, delivered and not acknowledged, redelivered) of a durable consumer."""
        import asyncio

        import nats as nats_py

        async def ask() -> tuple[int, int, int]:
            nc = await nats_py.connect(url or self.url, allow_reconnect=False)
            try:
                info = await nc.jetstream().consumer_info(stream, durable)
                return int(info.num_pending or 0), int(info.num_ack_pending or 0), int(info.num_redelivered or 0)
            finally:
                await nc.close()

        return asyncio.run(ask())

    def stream_messages(self, url: str | None = None, stream: str = "PROCEVENTS") -> list[Any]:
        """Every message the stream holds (an ephemeral consumer reads them all)."""
        import asyncio

        import nats as nats_py

        async def read() -> list[Any]:
            nc = await nats_py.connect(url or self.url, allow_reconnect=False)
            try:
                js = nc.jetstream()
                total = (await js.stream_info(stream)).state.messages
                sub = await js.pull_subscribe("procevents.>", stream=stream)
                got: list[Any] = []
                while len(got) < total:
                    got += await sub.fetch(total - len(got), timeout=TIMEOUT)
                return got
            finally:
                await nc.close()

        return asyncio.run(read())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(TIMEOUT)
        self.proc = None


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[NatsServer]:
    if NATS_SERVER is None:
        pytest.skip("nats-server is not installed (scripts/test installs it)")
    server = NatsServer(tmp_path / "jetstream")
    yield server
    server.stop()


# -- children for the connector's own tests ------------------------------------------------------


def forker(count: int) -> tuple[int, int, int]:
    """A child that, once released (a byte on the first fd), forks ``count``
    children that exit at once, and writes their pids to the second fd."""
    go_r, go_w = os.pipe()
    pids_r, pids_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(go_w)
            os.close(pids_r)
            os.read(go_r, 1)
            born = []
            for _ in range(count):
                child = os.fork()
                if child == 0:
                    os._exit(0)
                born.append(child)
            for child in born:
                os.waitpid(child, 0)
            os.write(pids_w, " ".join(map(str, born)).encode())
        finally:
            os._exit(0)
    os.close(go_r)
    os.close(pids_w)
    return pid, go_w, pids_r


# -- procevents as a subprocess writing files (the enrichment and capture tests) ---------------------

#: For anything a watcher shows to show up; normally milliseconds.
WATCH_TIMEOUT = 60.0


def nonce() -> str:
    return uuid.uuid4().hex[:10]


def proc_state(pid: int) -> str:
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return "?"
    return data[data.rindex(b")") + 2 :].split()[0].decode()


def asleep_in_syscall(pid: int) -> bool:
    """Whether ``pid`` sleeps inside a system call (waiting for its socket,
    say), rather than running or stopped."""
    if proc_state(pid) != "S":
        return False
    try:
        number = Path(f"/proc/{pid}/syscall").read_text().split()[0]  # "running" when it is not in one
    except (OSError, IndexError):
        return False
    return number.isdigit()


class Watcher:
    """A running ``procevents`` whose stdout goes to a file, read as it grows."""

    def __init__(self, args: list[str], workdir: Path, name: str) -> None:
        self.args = args
        self.out_path = workdir / f"{name}.out"
        self.err_path = workdir / f"{name}.err"
        self._out = open(self.out_path, "wb")  # noqa: SIM115 - closed in stop()
        self._err = open(self.err_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [*CLI, *args], stdout=self._out, stderr=self._err, stdin=subprocess.DEVNULL
        )
        self.pid = self.proc.pid
        self.lines: list[bytes] = []
        self._offset = 0
        self._partial = b""
        self.returncode: int | None = None

    # reading

    def stderr(self) -> str:
        return self.err_path.read_bytes().decode("utf-8", "replace")

    def wait_listening(self, timeout: float = WATCH_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while b"listening" not in self.err_path.read_bytes():
            if self.proc.poll() is not None:
                raise AssertionError(f"procevents {self.args} exited {self.proc.returncode}: {self.stderr()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"procevents {self.args} never said 'listening': {self.stderr()}")
            time.sleep(0.02)

    def poll(self) -> list[bytes]:
        """Read lines written since the last call."""
        with open(self.out_path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        self._offset += len(data)
        data = self._partial + data
        *complete, self._partial = data.split(b"\n")
        self.lines.extend(complete)
        self._on_lines(complete)
        return complete

    def _on_lines(self, lines: list[bytes]) -> None:
        pass

    def wait_for(self, predicate: Callable[[], bool], what: str, timeout: float = WATCH_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            if predicate():
                return
            if self.proc.poll() is not None:
                self.poll()
                if predicate():
                    return
                raise AssertionError(f"procevents exited ({self.proc.returncode}) before {what}: {self.stderr()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout:g} s ({len(self.lines)} lines): {self.stderr()}")
            time.sleep(0.05)

    # controlling

    def pause(self) -> None:
        """SIGSTOP procevents and wait until it really is stopped."""
        os.kill(self.pid, signal.SIGSTOP)
        deadline = time.monotonic() + WATCH_TIMEOUT
        while proc_state(self.pid) not in ("T", "t"):
            assert time.monotonic() < deadline, f"procevents did not stop (state {proc_state(self.pid)})"
            time.sleep(0.001)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def stop(self, timeout: float = WATCH_TIMEOUT) -> int:
        if self.returncode is not None:
            return self.returncode
        if self.proc.poll() is None:
            try:
                os.kill(self.pid, signal.SIGCONT)
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.returncode = self.proc.returncode
        self._out.close()
        self._err.close()
        self.poll()
        return self.returncode


class JsonWatcher(Watcher):
    def __init__(self, args: list[str], workdir: Path, name: str) -> None:
        self.events: list[dict[str, Any]] = []
        super().__init__(["--json", *args], workdir, name)

    def _on_lines(self, lines: list[bytes]) -> None:
        for line in lines:
            if line:
                self.events.append(json.loads(line))

    def of(self, pid: int, kind: str | None = None) -> list[dict[str, Any]]:
        return [ev for ev in self.events if ev["tgid"] == pid and (kind is None or ev["event"] == kind)]

    def has_exit(self, pid: int, parent: int | None = None) -> bool:
        """Whether the exit of the last process ``pid`` forked by ``parent`` was seen
        (any process ``pid`` when ``parent`` is None and procevents saw no fork of it)."""
        lives = lifetimes(self.events, pid, parent)
        if lives:
            last = lives[-1][-1]
            return last["event"] == "exit" and last["pid"] == pid
        return parent is None and any(ev["event"] == "exit" and ev["pid"] == pid for ev in self.of(pid))

    def wait_exit(self, pid: int, parent: int | None = -1, timeout: float = WATCH_TIMEOUT) -> None:
        """Wait for the exit of ``pid``; by default of the one this test process forked."""
        parent = os.getpid() if parent == -1 else parent
        self.wait_for(lambda: self.has_exit(pid, parent), f"exit event of pid {pid}", timeout)


@pytest.fixture
def watch(tmp_path: Path) -> Iterator[Callable[..., Watcher]]:
    """Start procevents (text, or JSON with as_json=True) and wait for 'listening'."""
    started: list[Watcher] = []

    def start(*args: str, as_json: bool = False, listening: bool = True) -> Any:
        name = f"procevents-{len(started)}"
        w: Watcher = JsonWatcher(list(args), tmp_path, name) if as_json else Watcher(list(args), tmp_path, name)
        started.append(w)
        if listening:
            w.wait_listening()
        return w

    yield start
    for w in started:
        w.stop()


@pytest.fixture
def reaper() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Popen objects appended here are killed and reaped after the test."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


def lifetimes(events: list[dict[str, Any]], pid: int, parent: int | None = None) -> list[list[dict[str, Any]]]:
    """The events of each process that had ``pid``, from its fork (by ``parent``) to its exit."""
    lives: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] | None = None
    for ev in events:
        kind = ev["event"]
        if kind == "lost":
            continue
        if kind == "fork" and ev["child_pid"] == pid and ev["child_tgid"] == pid:
            if parent is None or ev["parent_tgid"] == parent:
                current = [ev]
                lives.append(current)
            else:
                current = None
            continue
        if current is not None and ev["tgid"] == pid:
            current.append(ev)
            if kind == "exit" and ev["pid"] == pid:
                current = None
    return lives


def one(events: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [ev for ev in events if ev["event"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {found}"
    return found[0]


# -- a command under strace: the proc connector requests it sent (the IGNORE tests) --------------

STRACE = shutil.which("strace")
LISTEN = wire.PROC_CN_MCAST_LISTEN
IGNORE = wire.PROC_CN_MCAST_IGNORE
#: Capture readers the CLI starts by default (one per online CPU).
CPUS = len(online_cpus())


@dataclass(frozen=True)
class Request:
    """One proc connector request as the traced process sent it."""

    pid: int
    fd: int
    op: int
    mask: int | None
    seq: int
    ack: int
    length: int
    result: int | None


@dataclass(frozen=True)
class Marker:
    pid: int


_LINE = re.compile(r"^(?P<pid>\d+)\s+(?P<call>sendto|sendmsg|kill)\((?P<args>.*)\)\s+=\s+(?P<ret>-?\d+|\?)")
_NLMSG = re.compile(
    r"\{nlmsg_len=(?P<len>\d+), nlmsg_type=(?P<type>[^,]+), nlmsg_flags=(?P<flags>[^,]+), "
    r"nlmsg_seq=(?P<seq>\d+), nlmsg_pid=(?P<pid>\d+)\}, \"(?P<data>(?:\\x[0-9a-f]{2})*)\""
)
_STRING = re.compile(r"\"(?P<data>(?:\\x[0-9a-f]{2})*)\"")
_NLMSG_TYPES = {"NLMSG_NOOP": 1, "NLMSG_ERROR": 2, "NLMSG_DONE": 3, "NLMSG_OVERRUN": 4}
_NLM_FLAGS = {"NLM_F_REQUEST": 1, "NLM_F_MULTI": 2, "NLM_F_ACK": 4, "NLM_F_ECHO": 8, "NLM_F_DUMP_INTR": 16}


def _xlat(text: str, table: dict[str, int]) -> int:
    """``NLMSG_DONE``, ``0x3``, ``0x3 /* NLMSG_DONE */``, ``NLM_F_REQUEST|NLM_F_ACK``."""
    text = text.split("/*", 1)[0].strip()
    value = 0
    for token in text.split("|"):
        token = token.strip()
        value |= table[token] if token in table else int(token, 0)
    return value


def _unhex(escaped: str) -> bytes:
    return bytes.fromhex(escaped.replace("\\x", ""))


def _payloads(args: str) -> list[bytes]:
    """The datagrams a sendto/sendmsg line shows (strace -xx)."""
    found = []
    matched = False
    for m in _NLMSG.finditer(args):
        matched = True
        kind = m["type"].split("/*", 1)[0].strip()
        if kind not in _NLMSG_TYPES and not kind.startswith("0x"):
            continue  # a generic netlink family's (nlctrl, TASKSTATS: the exit costs socket), not the connector's
        header = struct.pack(
            "<IHHII",
            int(m["len"]),
            _xlat(m["type"], _NLMSG_TYPES),
            _xlat(m["flags"], _NLM_FLAGS),
            int(m["seq"]),
            int(m["pid"]),
        )
        found.append(header + _unhex(m["data"]))
    if not matched:
        # strace did not decode the netlink header: the buffer is one string.
        plain = _STRING.search(args)
        if plain:
            found.append(_unhex(plain["data"]))
    return found


def _merge_unfinished(lines: Sequence[str]) -> list[str]:
    pending: dict[str, str] = {}
    merged = []
    for line in lines:
        pid = line.split(None, 1)[0] if line.strip() else ""
        if line.endswith("<unfinished ...>"):
            pending[pid] = line[: -len("<unfinished ...>")].rstrip()
            continue
        resumed = re.search(r"<\.\.\. \w+ resumed>", line)
        if resumed and pid in pending:
            line = pending.pop(pid) + line[resumed.end() :]
        merged.append(line)
    return merged


def parse_trace(path: Path) -> list[Request | Marker]:
    """Proc connector requests and ``kill(pid, 0)`` markers, in order."""
    items: list[Request | Marker] = []
    for line in _merge_unfinished(path.read_text(errors="replace").splitlines()):
        m = _LINE.match(line)
        if not m:
            continue
        pid = int(m["pid"])
        args = m["args"]
        if m["call"] == "kill":
            if re.fullmatch(r"\d+, 0", args.strip()):
                items.append(Marker(pid))
            continue
        ret = None if m["ret"] == "?" else int(m["ret"])
        fd_match = re.match(r"(\d+)", args)
        fd = int(fd_match[1]) if fd_match else -1
        for data in _payloads(args):
            try:
                op, mask, seq, ack = wire.decode_request(data)
            except wire.DecodeError:
                continue  # not a proc connector request
            items.append(Request(pid, fd, op, mask, seq, ack, len(data), ret))
    return items


def describe_requests(items: Sequence[Request | Marker]) -> str:
    out = []
    for item in items:
        if isinstance(item, Marker):
            out.append(f"  [pid {item.pid}] marker")
        else:
            name = {LISTEN: "LISTEN", IGNORE: "IGNORE"}.get(item.op, f"op {item.op}")
            mask = "" if item.mask is None else f" mask 0x{item.mask:08x}"
            out.append(f"  [pid {item.pid} fd {item.fd}] {name}{mask} -> {item.result}")
    return "\n".join(out) or "  (nothing)"


def assert_ignored_once(
    items: Sequence[Request | Marker],
    *,
    mask: int | None = None,
    ignore_before_marker: bool | None = None,
    readers: int = 0,
) -> None:
    """The request sequence rule, for every socket that subscribed.

    ``mask``: the filter LISTEN expected on the main socket (None: none).
    ``readers``: how many capture readers (their own sockets, in forked
    processes) must have subscribed beside the main socket.
    ``ignore_before_marker``: True if the main socket's IGNORE must precede
    the script's marker (sent by close/with/GC), False if it must follow it
    (atexit).
    """
    requests = [item for item in items if isinstance(item, Request)]
    seen = "requests sent:\n" + describe_requests(items)
    assert requests, seen
    sockets: dict[tuple[int, int], list[Request]] = {}
    for r in requests:
        sockets.setdefault((r.pid, r.fd), []).append(r)
    assert len(sockets) == 1 + readers, f"expected {1 + readers} subscribed sockets, got {len(sockets)}\n{seen}"
    with_mask = [sent for sent in sockets.values() if any(r.mask is not None for r in sent)]
    assert len(with_mask) == (mask is not None), f"expected a filter on the main socket only\n{seen}"
    for sent in sockets.values():
        first = sent[0]
        assert (first.op, first.mask) == (LISTEN, None), f"first request is not LISTEN (all events)\n{seen}"
        assert [r for r in sent if r.op == LISTEN and r.mask is None] == [first], seen
        masked = [r for r in sent if r.op == LISTEN and r.mask is not None]
        if masked:
            assert [r.mask for r in masked] == [mask], seen
            assert sent.index(masked[0]) == 1, seen
        ignores = [r for r in sent if r.op == IGNORE]
        assert len(ignores) == 1, f"expected exactly one IGNORE, got {len(ignores)}\n{seen}"
        assert sent[-1] is ignores[0], f"IGNORE is not the last request\n{seen}"
        assert len(sent) == 2 + len(masked), seen
    assert all(r.result == r.length for r in requests), f"a request failed or was short\n{seen}"
    if ignore_before_marker is not None:
        markers = [i for i, item in enumerate(items) if isinstance(item, Marker)]
        assert len(markers) == 1, seen
        # The main socket is the one of the process that wrote the marker.
        marker = items[markers[0]]
        mains = [sent for (pid, _fd), sent in sockets.items() if pid == marker.pid]
        assert len(mains) == 1, seen
        where = items.index(mains[0][-1])
        if ignore_before_marker:
            assert where < markers[0], f"IGNORE was sent only after the marker\n{seen}"
        else:
            assert where > markers[0], f"IGNORE was sent before the marker\n{seen}"


class Traced:
    """A command running under strace; stderr always read, stdout on request."""

    def __init__(
        self,
        argv: Sequence[str],
        tmp_path: Path,
        *,
        stdout: int = subprocess.PIPE,
        close_stdout_after: int | None = None,
    ) -> None:
        assert STRACE is not None
        self.trace = tmp_path / "strace.txt"
        cmd = [
            STRACE, "-f", "-qq", "-e", "trace=sendto,sendmsg,kill", "-e", "signal=none",
            "-xx", "-s", "256", "-o", str(self.trace), *argv,
        ]
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.PIPE,
            env=env(),
            preexec_fn=_default_signals,
            start_new_session=True,
        )
        assert self.proc.stderr is not None
        self.err = Lines(self.proc.stderr)
        self.out = (
            Lines(self.proc.stdout, close_after=close_stdout_after) if self.proc.stdout is not None else None
        )
        self.argv = list(argv)
        self._tracee: int | None = None

    def tracee(self) -> int:
        """The pid of the traced command: strace's child running our argv.

        Not simply strace's first child: strace forks short-lived probes of
        its own at startup (their cmdline is strace's, which ends with our
        argv).  A ``#!`` script runs as [interpreter, *argv].
        """
        if self._tracee is None:
            deadline = time.monotonic() + TIMEOUT
            while self._tracee is None:
                for pid in child_pids(self.proc.pid):
                    cmdline = _cmdline(pid)
                    if cmdline in (self.argv, cmdline[:1] + self.argv):
                        self._tracee = pid
                        break
                else:
                    if time.monotonic() > deadline or self.proc.poll() is not None:
                        raise AssertionError(f"strace is not running {self.argv}")
                    time.sleep(0.01)
        return self._tracee

    def signal(self, sig: int) -> None:
        os.kill(self.tracee(), sig)

    def wait(self, timeout: float = TIMEOUT) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"the traced process did not end within {timeout} s; stderr:\n{self.err.text}"
            ) from None
        self.err.join()
        if self.out is not None:
            self.out.join()
        return rc

    def requests(self) -> list[Request | Marker]:
        return parse_trace(self.trace)

    def cleanup(self) -> None:
        """Never leave a subscriber behind: SIGTERM the tracee so it can send
        IGNORE; SIGKILL only as a last resort."""
        if self.proc.poll() is not None:
            return
        tracee = None
        with contextlib.suppress(AssertionError):
            tracee = self.tracee()
        for sig in (signal.SIGTERM, signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(OSError):
                # Without a known tracee, SIGTERM strace: it passes that
                # signal on to the command it started, then detaches.
                os.kill(tracee if tracee is not None else self.proc.pid, sig)
            try:
                self.proc.wait(TIMEOUT / 2)
                return
            except subprocess.TimeoutExpired:
                continue
        self.proc.kill()
        self.proc.wait(TIMEOUT)


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [os.fsdecode(arg) for arg in f.read().split(b"\0")[:-1]]
    except OSError:
        return []


def child_pids(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        pass
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry))
    return kids


def guardians_of(pid: int, expected: int = 1) -> list[int]:
    """``pid``'s guardian children, once ``expected`` of them have named
    themselves (a forked guardian renames itself right after the fork)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        found = [child for child in child_pids(pid) if comm_of(child) == GUARDIAN]
        if len(found) >= expected or time.monotonic() > deadline:
            return found
        time.sleep(0.01)


def readers_of(pid: int) -> list[int]:
    """The capture readers among ``pid``'s children (not its guardian)."""
    guardians = set(guardians_of(pid))
    return [child for child in child_pids(pid) if child not in guardians]


Start = Callable[..., "Traced"]


@pytest.fixture
def traced(tmp_path: Path) -> Iterator[Start]:
    started: list[Traced] = []

    def start(argv: Sequence[str], *, stdout: int = subprocess.PIPE, close_stdout_after: int | None = None) -> Traced:
        t = Traced(argv, tmp_path, stdout=stdout, close_stdout_after=close_stdout_after)
        started.append(t)
        return t

    yield start
    for t in started:
        t.cleanup()


def comm_of(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


# -- what the kernel lets another user do, asked the way procevents asks it -------------------

_PROBE_SCRIPT = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from procevents import accounting, connector

def said(problem):
    return None if problem is None else {"errno": problem.errno, "message": problem.strerror}

print(json.dumps({"subscribe": said(connector.probe()), "taskstats": said(accounting.probe())}))
"""


def as_user(uid: int, *, caps: Sequence[str] = ()) -> list[str]:
    """A setpriv prefix that runs a command as ``uid`` (its own group, no
    others), with ``caps`` (e.g. ``["net_admin"]``) kept as ambient capabilities."""
    prefix = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
    if caps:
        listed = ",".join(f"+{cap}" for cap in caps)
        prefix += [f"--inh-caps={listed}", f"--ambient-caps={listed}"]
    return [*prefix, "--"]


def probe_as(python: str, uid: int, *, caps: Sequence[str] = ()) -> dict[str, dict[str, Any] | None]:
    """What this kernel lets ``uid`` do, found by procevents' own trial
    (connector.probe, accounting.probe): for "subscribe" and "taskstats",
    None when allowed, else ``{"errno": ..., "message": ...}``."""
    done = subprocess.run(
        [*as_user(uid, caps=caps), python, "-c", _PROBE_SCRIPT, str(SRC)],
        capture_output=True, text=True, timeout=TIMEOUT, cwd="/",
    )
    assert done.returncode == 0, done.stderr
    probed: dict[str, dict[str, Any] | None] = json.loads(done.stdout)
    return probed


def unprivileged_refusal(release: str | None = None) -> str:
    """The one line procevents gives a user the kernel will not let join the
    proc connector's group, as the README quotes it (the release only words it)."""
    release = release or os.uname().release
    if kernel_version(release) >= (6, 6):
        return (
            f"this kernel ({release}) refuses unprivileged subscribers to the proc connector "
            "(upstream allows them since 6.6): run procevents as root or with CAP_NET_ADMIN"
        )
    return (
        f"kernels before 6.6 (this one is {release}) let only root or CAP_NET_ADMIN subscribe "
        "to the proc connector: run procevents as root (sudo)"
    )


TASKSTATS_REFUSAL = "taskstats needs root or CAP_NET_ADMIN"

#!/usr/bin/env python3
"""Benchmark suite: procevents beside forkstat and forkstat -r, on the same load, at the same time.

One command, one report per load shape:

  .venv/bin/python bench/suite.py                      # N=100,000, 3 rounds, shapes exec,mixed
  .venv/bin/python bench/suite.py --quick              # N=20,000, 1 round
  .venv/bin/python bench/suite.py --n 20000 --runs 3 --shapes exec,mixed
  .venv/bin/python bench/suite.py --long               # procevents' RSS across 1,000,000 events

Tools: ``procevents --json`` (synchronous exec capture, the default: one
realtime reader process per CPU), ``procevents --json --capture async``,
``forkstat``, ``forkstat -r`` (realtime), and on request ``procevents
--no-enrich``, ``extrace`` and (``--modes``) procevents' other output modes
and commands: the live text view, ``--tree``, ``record`` (SQLite) and
``trace`` (which runs the load itself: the load waits at a FIFO until every
tool was measured, and again after it ended).  A round runs one load per
*setup*:

* head-to-head: each procevents mode with every selected peer (forkstat,
  forkstat -r, extrace), all subscribed together.  No two procevents modes
  share a run: the sync readers hold every exec'ing process for a
  moment, which helps every other tool that reads /proc in the same run.
* alone: no monitor at all, then each tool by itself: the load's own rate
  and the slowdown each monitor causes, and each tool's argv capture with
  no one else's help.

The setups of a round run in an order rotated by one each round.  Loads:

* fork   bench/burst.c: N children, fork() + _exit(0) + waitpid()
* exec   bench/burst.c: N children, vfork() + execve(bench/tiny.c, {"tiny", "burst-<i>"})
* mixed  ``make -j4`` of N/50 targets, each ``echo x | tr x y | wc -c > $@``
         (per target: /bin/sh, a subshell for echo, tr and wc: 4 processes, 3 execs)

Ground truth is exact and comes from the kernel or the generator, never from
a subscriber: burst records every child's pid and lifetime (CLOCK_MONOTONIC);
for the mixed load, the kernel's sched_process_fork/exec/exit tracepoints
(a private tracefs instance, mono clock) give the make process tree.  The
same tracepoint record, which holds every fork/exec/exit on the host during
the load, is also the time line onto which the text lines of forkstat and
extrace (which carry no kernel timestamp) are placed, by kind, pid and the
time each line was written (their output files' sizes are sampled every
20 ms); procevents' JSON has the event's own timestamp_ns.

A tool's CPU and memory are those of its whole process tree (procevents'
main process and its reader children): utime+stime summed from
/proc/PID/stat, Pss and Private_* summed from /proc/PID/smaps_rollup.
See bench/README.md for the columns.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import re
import shlex
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from queue import Empty, Queue
from typing import Any

from burst import (
    BURST_FLAGS,
    LISTENING,
    NETLINK_CONNECTOR,
    SUMMARY_RE,
    TINY_FLAGS,
    BenchError,
    build,
    cpu_seconds,
    procevents_command,
    socket_stats,
    status_kib,
)

HERE = Path(__file__).resolve().parent
TRACEFS = Path("/sys/kernel/tracing")
KINDS = ("fork", "exec", "exit")
#: Which generated process an event (pid, CLOCK_MONOTONIC ns) is about: the
#: life of that pid that started last, at most START_SLACK_NS after the event
#: (the connector stamps a fork before the fork tracepoint fires, and a task
#: can be preempted in between), if the event is before the next fork of the
#: same pid by anyone (from the tracepoints) and at most EXIT_SLACK_NS after
#: the life's end (the connector stamps an exit after the parent was woken,
#: and after the exit tracepoint).  A pid is handed out again only after the
#: allocator went round all of pid_max, which takes far longer than either.
START_SLACK_NS = 100_000_000
EXIT_SLACK_NS = 1_000_000_000
#: How often the size of a text output is sampled, to know when each line
#: was written (an event happened before its line was written).
SAMPLE_S = 0.02
#: A text line is matched only to an event at most this long before it was
#: written (further capped at half the time the pid allocator takes to hand
#: the same pid out again, so that the match is unique).
MAX_LAG_NS = 2_000_000_000
#: ... and at most this long after: the connector sends a fork event before
#: the fork tracepoint fires (1.5 ms apart was seen under load).
AHEAD_NS = 100_000_000
MIXED_RECIPE = "echo x | tr x y | wc -c > $@"
ARGV_PREFIX = "burst-"


# -- tools ----------------------------------------------------------------------


@dataclass(frozen=True)
class ToolSpec:
    name: str
    label: str
    #: event kinds the tool reports: its lost % is over these
    kinds: tuple[str, ...]
    #: exec events can carry the command line
    argv: bool
    #: "procevents", "forkstat" or "extrace": how it is started, checked and parsed
    family: str
    #: extrace and procevents --tree report the exit only of a process whose exec they reported
    exits_of_execs_only: bool = False
    #: how a procevents mode's output is read: "json" (JSON Lines), "text" (the
    #: live text view), "tree" (--tree) or "db" (record's SQLite database)
    output: str = ""
    #: the argv capture mode a procevents mode must run: "sync" (one reader
    #: per CPU), "async", or "" (none: --no-enrich)
    capture: str = ""
    #: procevents trace: runs the load itself, so it is started with it
    runs_load: bool = False

    @property
    def timestamped(self) -> bool:
        """Does each event carry its own time?  (Else its lines are placed on
        the tracepoint record by the time they were written.)"""
        return self.output in ("json", "text", "db")


TOOLS: dict[str, ToolSpec] = {
    "procevents": ToolSpec("procevents", "procevents --json (sync)", KINDS, argv=True, family="procevents",
                           output="json", capture="sync"),
    "procevents-async": ToolSpec("procevents-async", "procevents --json --capture async", KINDS, argv=True,
                                 family="procevents", output="json", capture="async"),
    "procevents-no-enrich": ToolSpec("procevents-no-enrich", "procevents --json --no-enrich", KINDS, argv=False,
                                     family="procevents", output="json"),
    "procevents-text": ToolSpec("procevents-text", "procevents (live text view, sync)", KINDS, argv=True,
                                family="procevents", output="text", capture="sync"),
    "procevents-tree": ToolSpec("procevents-tree", "procevents --tree (sync; execs and their exits)",
                                ("exec", "exit"), argv=True, family="procevents", exits_of_execs_only=True,
                                output="tree", capture="sync"),
    "procevents-record": ToolSpec("procevents-record", "procevents record --db FILE (sync, SQLite)", KINDS,
                                  argv=True, family="procevents", output="db", capture="sync"),
    "procevents-trace": ToolSpec("procevents-trace", "procevents trace --json -- LOAD (sync; runs the load)", KINDS,
                                 argv=True, family="procevents", output="json", capture="sync", runs_load=True),
    "forkstat": ToolSpec("forkstat", "forkstat -l -e fork,exec,exit", KINDS, argv=True, family="forkstat"),
    "forkstat-r": ToolSpec("forkstat-r", "forkstat -r -l -e fork,exec,exit", KINDS, argv=True, family="forkstat"),
    "extrace": ToolSpec("extrace", "extrace -f -t (exec+exit)", ("exec", "exit"), argv=True, family="extrace",
                        exits_of_execs_only=True),
}
DEFAULT_TOOLS = ("procevents", "procevents-async", "forkstat", "forkstat-r")
#: --modes: procevents' other output modes and commands (off by default)
MODES = {"text": "procevents-text", "tree": "procevents-tree", "record": "procevents-record",
         "trace": "procevents-trace"}
#: tool -> (program, Debian package)
PEERS = {"forkstat": ("forkstat", "forkstat"), "forkstat-r": ("forkstat", "forkstat"),
         "extrace": ("extrace", "extrace")}


@dataclass(frozen=True)
class Setup:
    """What runs beside one load: nothing, one tool, or a head-to-head group."""

    key: str
    label: str
    tools: tuple[str, ...]
    head_to_head: bool = False


def make_setups(names: Sequence[str], alone: bool) -> list[Setup]:
    """Head-to-head groups: each procevents mode with every peer (never two
    procevents modes in one run: the sync readers hold each exec'ing process,
    which helps every /proc reader beside them).  Then, with ``alone``, no
    monitor and each tool by itself."""
    modes = [n for n in names if TOOLS[n].family == "procevents"]
    peers = [n for n in names if TOOLS[n].family != "procevents"]
    setups: list[Setup] = []
    groups = [(m, *peers) for m in modes] if peers else []
    if not modes and len(peers) > 1:
        groups = [tuple(peers)]
    for tools in groups:
        setups.append(Setup("+".join(tools), " + ".join(tools), tools, head_to_head=True))
    if alone or not setups:
        setups.append(Setup("none", "no monitor", ()))
        setups.extend(Setup(n, f"{n} alone", (n,)) for n in names)
    return setups


@dataclass(slots=True)
class ToolEvent:
    kind: str
    pid: int
    ts: int | None  # CLOCK_MONOTONIC ns, when the tool prints it
    argv: str | None = None  # the command line, arguments joined by one space
    end: int = 0  # text outputs: byte offset of the end of its line
    written: int = 0  # text outputs: CLOCK_MONOTONIC ns by which the line was written


@dataclass
class ToolOutput:
    events: list[ToolEvent] = field(default_factory=list)
    reported_lost: str = ""  # what the tool itself says about loss
    unparsed: int = 0


class SizeSampler:
    """Samples the sizes of growing files every SAMPLE_S seconds, in a thread,
    to tell by when each of their lines had been written."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.samples: dict[Path, tuple[array[int], array[int]]] = {p: (array("q"), array("q")) for p in paths}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sizes", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            now = time.monotonic_ns()
            for path, (times, sizes) in self.samples.items():
                try:
                    size = os.stat(path).st_size
                except FileNotFoundError:
                    size = 0
                if not sizes or size != sizes[-1]:
                    times.append(now)
                    sizes.append(size)
            if self._stop.wait(SAMPLE_S):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def stamp(self, path: Path, events: Sequence[ToolEvent]) -> None:
        """Set ``written`` of each event: the first sample that saw its line
        (1 << 62 when the line was written after sampling stopped)."""
        times, sizes = self.samples.get(path, (array("q"), array("q")))
        for e in events:
            i = bisect_left(sizes, e.end)
            e.written = times[i] if i < len(times) else 1 << 62


def output_path(workdir: Path, spec: ToolSpec) -> Path:
    return workdir / f"{spec.name}.{'db' if spec.output == 'db' else 'out'}"


class Running:
    """One subscriber of a run, with its process tree (procevents: the main
    process and its per-CPU reader children)."""

    def __init__(self, spec: ToolSpec, cmd: list[str], workdir: Path) -> None:
        self.spec = spec
        self.out = output_path(workdir, spec)
        self.err = workdir / f"{spec.name}.err"
        for stale in (self.out, *self.sidecars):  # procevents appends to -o FILE, record to --db
            stale.unlink(missing_ok=True)
        stdout: Any = subprocess.DEVNULL
        if spec.family == "forkstat":
            stdout = self.out.open("wb")
        with self.err.open("wb") as err:
            # procevents trace: its own session, so that the load it runs can
            # be killed whole if the run fails
            self.proc: subprocess.Popen[bytes] = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=stdout, stderr=err, start_new_session=spec.runs_load)
        if stdout is not subprocess.DEVNULL:
            stdout.close()
        #: processes below the main one that are not the tool's (procevents
        #: trace: the shell running the load): left out of its tree
        self.skip: set[int] = set()
        #: (pid, start time in clock ticks) of the tree, main process first
        self.tree: list[tuple[int, int]] = []
        self.cpu_before: dict[int, float] = {}
        self.cpu_after: dict[int, float] = {}
        self.pss_kib: dict[int, int] = {}
        self.uss_kib: dict[int, int] = {}
        self.hwm_kib = 0  # VmHWM summed over the tree
        self.notes: list[str] = []
        self.leftover: list[str] = []
        self.exit_status: int | None = None
        self.empty_at: float | None = None
        self.size_at_empty = -1

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def text(self) -> str:
        try:
            return self.out.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def err_text(self) -> str:
        try:
            return self.err.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def sidecars(self) -> list[Path]:
        """record's SQLite write-ahead log and shared-memory index."""
        if self.spec.output != "db":
            return []
        return [self.out.with_name(self.out.name + "-wal"), self.out.with_name(self.out.name + "-shm")]

    def size(self) -> int:
        """Bytes written so far (record: the database and its write-ahead log)."""
        total = 0
        for path in (self.out, *self.sidecars[:1]):
            with contextlib.suppress(FileNotFoundError):
                total += path.stat().st_size
        return total

    def ready(self) -> bool:
        """Subscribed?  procevents says so (after its readers are subscribed);
        forkstat prints its heading after LISTEN; extrace sends LISTEN right
        after bind, so a bound socket will do."""
        if self.spec.family == "procevents":
            return LISTENING in self.err_text()
        if self.spec.family == "forkstat":
            return self.text().startswith("Time")
        return queue_bytes(self.pid) is not None

    def shows(self, pid: int) -> bool:
        """Is there an exec or exit line (record: row) about ``pid`` in the output?"""
        if self.spec.output == "db":
            return record_shows(self.out, pid)
        text = self.text()
        if self.spec.output == "json":
            return f'"pid":{pid},' in text
        if self.spec.output == "tree":
            return re.search(rf"^ *{pid} ", text, re.MULTILINE) is not None
        if self.spec.family in ("forkstat", "procevents"):  # procevents: the live text view
            return re.search(rf"^\S+ (?:exec|exit) +{pid} ", text, re.MULTILINE) is not None
        return re.search(rf"^{pid}[+-] ", text, re.MULTILINE) is not None

    @property
    def helpers(self) -> list[int]:
        """The tree's processes other than the main one (procevents' readers)."""
        return [pid for pid, _ in self.tree[1:]]

    def measure_before(self) -> None:
        """Note the tree and its CPU times, just before the load."""
        self.tree = [(pid, start) for pid in process_tree(self.pid, self.skip)
                     if (start := proc_start(pid)) is not None]
        self.cpu_before = {pid: cpu_seconds(pid) for pid, _ in self.tree}

    def measure_after(self) -> None:
        """CPU times, PSS/USS and VmHWM of the tree noted before the load,
        once the tool has caught up."""
        for pid, start in self.tree:
            if proc_start(pid) != start:
                self.notes.append(f"{self.spec.name}: process {pid} of its tree exited during the run")
                continue
            self.cpu_after[pid] = cpu_seconds(pid)
            mem = smaps_kib(pid)
            self.pss_kib[pid] = mem.get("Pss", 0)
            self.uss_kib[pid] = mem.get("Private_Clean", 0) + mem.get("Private_Dirty", 0)
            self.hwm_kib += status_kib(pid, "VmHWM")
        now = set(process_tree(self.pid, self.skip))
        new = now - {pid for pid, _ in self.tree}
        if new:
            self.notes.append(f"{self.spec.name}: {len(new)} process(es) joined its tree during the run "
                              f"(not counted): {sorted(new)}")

    def cpu_s(self, pids: Iterable[int] | None = None) -> float:
        wanted = self.cpu_after if pids is None else pids
        return sum(self.cpu_after[p] - self.cpu_before[p] for p in wanted if p in self.cpu_after)

    def stop(self) -> None:
        """Stop the tool and check that its whole tree ended (stop_tree)."""
        self.exit_status, self.leftover = stop_tree(self.proc, self.tree or None, skip=self.skip)


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


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/PID/stat (after the comm), or None when gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()


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


def other_subscribers(exclude: set[int]) -> str:
    """Processes outside ``exclude`` holding a connector socket bound to the
    proc events group (Groups bit 1 in /proc/net/netlink): other
    subscribers on the host, which slow every fork/exec/exit too."""
    inodes = set()
    for line in Path("/proc/net/netlink").read_text().splitlines()[1:]:
        cols = line.split()
        # sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode
        if len(cols) >= 10 and int(cols[1]) == NETLINK_CONNECTOR and int(cols[3], 16) & 1:
            inodes.add(int(cols[9]))
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


def online_cpus() -> list[int]:
    """/sys/devices/system/cpu/online: procevents starts one reader per CPU listed there."""
    cpus: list[int] = []
    for part in Path("/sys/devices/system/cpu/online").read_text().strip().split(","):
        low, _, high = part.partition("-")
        cpus.extend(range(int(low), int(high or low) + 1))
    return cpus


def process_tree(pid: int, skip: Collection[int] = ()) -> list[int]:
    """``pid`` and all its descendants, ``pid`` first; not those in ``skip``, nor theirs."""
    tree = [pid]
    for p in tree:
        tree.extend(c for c in children_of(p) if c not in skip)
    return tree


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


def queue_bytes(pid: int) -> int | None:
    """Bytes queued on the connector socket(s) of ``pid`` (None: no socket, or gone)."""
    try:
        stats = socket_stats(pid)
    except OSError:
        return None
    return None if stats is None else stats[0]


def tool_command(name: str, out: Path, procevents: list[str]) -> list[str]:
    if name == "procevents":
        return [*procevents, "--json", "-o", str(out)]  # --capture sync is the default
    if name == "procevents-async":
        return [*procevents, "--json", "--capture", "async", "-o", str(out)]
    if name == "procevents-no-enrich":
        return [*procevents, "--json", "--no-enrich", "-o", str(out)]
    if name == "procevents-text":
        return [*procevents, "-o", str(out)]
    if name == "procevents-tree":
        return [*procevents, "--tree", "-o", str(out)]
    if name == "procevents-record":
        # not -q: its "listening" notice tells that it is subscribed, its summary what it lost
        return [*procevents, "record", "--db", str(out)]
    if name == "procevents-trace":
        return [*procevents, "trace", "--json", "-o", str(out), "--"]  # the load follows (Gate.wrap)
    if name == "forkstat":
        # -l: line-buffered stdout, so the output can be followed (and a
        # terminal sees the same); full command lines are the default
        return ["forkstat", "-l", "-e", "fork,exec,exit"]
    if name == "forkstat-r":
        # -r: SCHED_FIFO (priority 99, seen with chrt -p)
        return ["forkstat", "-r", "-l", "-e", "fork,exec,exit"]
    return ["extrace", "-f", "-t", "-o", str(out)]


def ensure_peer(program: str, package: str) -> str | None:
    """Path of a peer tool, installing its Debian package if we are root."""
    found = shutil.which(program)
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print(f"suite: {program} is missing: apt-get install -y {package}", file=sys.stderr)
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", package]
    if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, stdout=subprocess.DEVNULL)
        subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL)
    return shutil.which(program)


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


# -- parsing the tools' outputs -------------------------------------------------------


def parse_procevents(path: Path, err: str) -> ToolOutput:
    out = ToolOutput()
    lost = 0
    with contextlib.suppress(FileNotFoundError), path.open("rb") as f:
        for raw in f:
            try:
                ev = json.loads(raw)
            except ValueError:
                out.unparsed += 1
                continue
            name = ev.get("event")
            if name == "fork":
                if ev["child_pid"] == ev["child_tgid"]:
                    out.events.append(ToolEvent("fork", ev["child_pid"], ev["timestamp_ns"]))
            elif name in ("exec", "exit"):
                if ev["pid"] == ev["tgid"]:
                    argv = ev.get("cmdline") if name == "exec" else None
                    out.events.append(ToolEvent(name, ev["pid"], ev["timestamp_ns"],
                                                " ".join(argv) if isinstance(argv, list) else None))
            elif name == "lost":
                lost += ev["count"]
    out.reported_lost = f"in-band lost {lost:,}" + stderr_summary(err)
    return out


TEXT_RE = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d{3}) (\w+) +(\d*) +(\d*) ?(.*)$")
TEXT_USER_RE = re.compile(r"^user \S+(?:  |$)")
TEXT_LOST_RE = re.compile(r" (\d+) events lost")


def local_day_start_ns(ref_ns: int) -> int:
    """Local midnight (ns since the epoch) of the day of ``ref_ns``."""
    tm = time.localtime(ref_ns // 1_000_000_000)
    return int(time.mktime((tm.tm_year, tm.tm_mon, tm.tm_mday, 0, 0, 0, 0, 0, -1))) * 1_000_000_000


def text_argv(details: str) -> str | None:
    """The command line of a text or tree exec line (arguments shell-quoted;
    ``[comm]``, ``?`` or nothing when procevents had no argv)."""
    if not details or details == "?" or (details.startswith("[") and details.endswith("]")):
        return None
    try:
        return " ".join(shlex.split(details))
    except ValueError:
        return details


def parse_text(path: Path, err: str) -> ToolOutput:
    """procevents' live text view: ``HH:MM:SS.mmm event PID PPID details``,
    the time local and to the millisecond: it is turned back into
    CLOCK_MONOTONIC (the middle of that millisecond) with this host's clock
    offset, which is what procevents used.  A fork names the child (``child
    N``; ``thread N in M`` is a thread); an exec's details are ``user NAME
    ARGV`` with each argument shell-quoted, ``[comm]`` when it had no argv."""
    out = ToolOutput()
    lost = 0
    ref = time.time_ns()
    offset = ref - time.monotonic_ns()
    day = local_day_start_ns(ref)
    with contextlib.suppress(FileNotFoundError), path.open("rb") as f:
        for raw in f:
            line = raw.decode(errors="replace").rstrip("\n")
            m = TEXT_RE.match(line)
            if not m:
                if line and not line.startswith("TIME "):
                    out.unparsed += 1
                continue
            kind, details = m[5], m[8]
            if kind == "lost":  # no pid, no ppid: the count may land in either column
                lm = TEXT_LOST_RE.search(line)
                lost += int(lm[1]) if lm else 0
                continue
            if kind not in KINDS or not m[6]:
                continue
            if details.startswith("thread "):  # a thread's fork or exit
                continue
            wall = day + ((int(m[1]) * 60 + int(m[2])) * 60 + int(m[3])) * 1_000_000_000 + int(m[4]) * 1_000_000
            wall += 500_000
            if wall - ref > 43_200_000_000_000:  # before midnight
                wall -= 86_400_000_000_000
            elif ref - wall > 43_200_000_000_000:
                wall += 86_400_000_000_000
            argv = None
            if kind == "exec":
                argv = text_argv(TEXT_USER_RE.sub("", details, count=1))
            out.events.append(ToolEvent(kind, int(m[6]), wall - offset, argv))
    out.reported_lost = f"in-band lost {lost:,}" + stderr_summary(err)
    return out


TREE_RE = re.compile(r"^ *(\d+) (.*)$")
TREE_EXIT_RE = re.compile(r"^exit (?:status \d+|killed by )")
TREE_LOST_RE = re.compile(r"^!! (\d+) events lost")


def parse_tree(path: Path, err: str) -> ToolOutput:
    """procevents --tree: ``<indent>PID ARGV`` per exec (each argument
    shell-quoted; ``[comm]`` or ``?`` without argv), ``<indent>PID exit
    status N ...`` per exit of a process whose exec it showed.  No time:
    the lines are placed on the tracepoint record as forkstat's are."""
    out = ToolOutput()
    lost = 0
    end = 0
    with contextlib.suppress(FileNotFoundError), path.open("rb") as f:
        for raw in f:
            end += len(raw)
            line = raw.decode(errors="replace").rstrip("\n")
            m = TREE_RE.match(line)
            if not m:
                lm = TREE_LOST_RE.match(line)
                if lm:
                    lost += int(lm[1])
                elif line:
                    out.unparsed += 1
                continue
            pid, rest = int(m[1]), m[2]
            if TREE_EXIT_RE.match(rest):
                out.events.append(ToolEvent("exit", pid, None, end=end))
            else:
                out.events.append(ToolEvent("exec", pid, None, text_argv(rest), end=end))
    out.reported_lost = f"in-band lost {lost:,}" + stderr_summary(err)
    return out


def db_uri(path: Path) -> str:
    return f"{path.as_uri()}?mode=ro"


def record_shows(path: Path, pid: int) -> bool:
    """Has procevents record committed an exec or exit of ``pid``?  (A
    read-only query; the recorder writes in WAL mode, so it is not blocked.)"""
    if not path.exists():
        return False
    try:
        with contextlib.closing(sqlite3.connect(db_uri(path), uri=True, timeout=1.0)) as conn:
            row = conn.execute("SELECT 1 FROM events WHERE pid = ? AND event IN ('exec', 'exit') LIMIT 1",
                               (pid,)).fetchone()
    except sqlite3.Error:
        return False  # not created yet
    return row is not None


def parse_record(path: Path, err: str) -> ToolOutput:
    """procevents record's database, once it stopped: the ``events`` table
    (ts is the event's CLOCK_MONOTONIC timestamp; for a fork, pid and tgid
    are the child's; argv NUL-terminated arguments; a lost row's count in a)."""
    out = ToolOutput()
    lost = 0
    try:
        with contextlib.closing(sqlite3.connect(db_uri(path), uri=True, timeout=5.0)) as conn:
            rows = conn.execute("SELECT event, pid, tgid, ts, argv, a FROM events "
                                "WHERE event IN ('fork', 'exec', 'exit', 'lost') ORDER BY id").fetchall()
    except sqlite3.Error as exc:
        out.reported_lost = f"database not readable: {exc}" + stderr_summary(err)
        return out
    for event, pid, tgid, ts, blob, count in rows:
        if event == "lost":
            lost += count or 0
        elif pid == tgid:
            argv = None
            if event == "exec" and isinstance(blob, bytes):
                argv = " ".join(a.decode(errors="replace") for a in blob.removesuffix(b"\0").split(b"\0"))
            out.events.append(ToolEvent(event, pid, ts, argv))
    recorded = [ln.strip() for ln in err.splitlines() if " events recorded" in ln]
    out.reported_lost = f"in-band lost {lost:,}" + (f"; stderr: {recorded[-1]}" if recorded else "") \
        + stderr_summary(err).replace("; stderr: ", "; ", 1 if recorded else 0)
    return out


def stderr_summary(err: str) -> str:
    """procevents' summary line at exit ("N events received (...), M events lost")."""
    summary = [ln.strip() for ln in err.splitlines() if SUMMARY_RE.search(ln)]
    return f"; stderr: {summary[-1]}" if summary else "; no summary"


FORKSTAT_RE = re.compile(r"^\d\d:\d\d:\d\d (fork|exec|exit|clone) +(-?\d+) (.*)$")


def parse_forkstat(path: Path) -> ToolOutput:
    """forkstat's text lines.  The process name starts 16 columns after the
    pid; from /proc/PID/cmdline it is the arguments joined by spaces with a
    trailing space, else comm (no trailing space), else ``<unknown>``.  A fork
    prints two lines; the ``child`` one names the new process."""
    out = ToolOutput()
    nobufs = 0
    end = 0
    with contextlib.suppress(FileNotFoundError), path.open("rb") as f:
        for raw in f:
            end += len(raw)
            line = raw.decode(errors="replace").rstrip("\n")
            if line.startswith("Time ") or not line:
                continue
            if " recv ----- nobufs" in line:
                nobufs += 1
                continue
            m = FORKSTAT_RE.match(line)
            if not m:
                out.unparsed += 1
                continue
            kind, pid, rest = m[1], int(m[2]), m[3]
            name = rest[16:]
            if kind == "clone":  # a new thread (only shown with -e clone)
                continue
            if kind == "fork":
                if rest.startswith("parent"):  # the other line names the child
                    continue
                out.events.append(ToolEvent("fork", pid, None, end=end))
            elif kind == "exec":
                argv = None if name == "<unknown>" else name.removesuffix(" ")
                out.events.append(ToolEvent("exec", pid, None, argv, end=end))
            else:
                out.events.append(ToolEvent("exit", pid, None, end=end))
    out.reported_lost = f"{nobufs:,} 'nobufs' (ENOBUFS) lines"
    return out


EXTRACE_RE = re.compile(r"^(\d+)([+-]) (.*)$")


def parse_extrace(path: Path, err: str) -> ToolOutput:
    """extrace -f -t: ``PID+ argv...`` per exec (shell-quoted; ``''`` when the
    command line was empty), ``PID- name exited status=...`` per exit."""
    out = ToolOutput()
    end = 0
    with contextlib.suppress(FileNotFoundError), path.open("rb") as f:
        for raw in f:
            end += len(raw)
            m = EXTRACE_RE.match(raw.decode(errors="replace").rstrip("\n"))
            if not m:
                out.unparsed += 1
                continue
            pid = int(m[1])
            if m[2] == "-":
                out.events.append(ToolEvent("exit", pid, None, end=end))
                continue
            try:
                words = shlex.split(m[3])
            except ValueError:
                words = m[3].split(" ")
            argv = " ".join(words) if any(words) else None
            out.events.append(ToolEvent("exec", pid, None, argv, end=end))
    counts: Counter[str] = Counter()
    for line in err.splitlines():
        if "vanished" in line:
            counts["execs dropped as 'vanished'"] += 1
        elif "out of order" in line:
            counts["'out of order' (seq gap) warnings"] += 1
    out.reported_lost = "; ".join(f"{v:,} {k}" for k, v in sorted(counts.items())) or "nothing on stderr"
    return out


# -- tracefs: the kernel's own record -------------------------------------------------


@dataclass
class Reference:
    """Every sched_process_fork/exec/exit during the load, in time order."""

    kinds: bytearray = field(default_factory=bytearray)  # b"f", b"e", b"x"
    pids: array[int] = field(default_factory=lambda: array("i"))
    ts: array[int] = field(default_factory=lambda: array("q"))
    #: fork: parent pid; exec: filename; exit: None
    extra: list[int | str | None] = field(default_factory=list)
    lost: int = 0  # events the ring buffer dropped
    index: dict[tuple[int, int], list[int]] = field(default_factory=dict)
    #: how long before a line was written its event may be (see align):
    #: MAX_LAG_NS, or less for a pid forked more than once during the load
    pid_lag: dict[int, int] = field(default_factory=dict)
    #: the smallest of those, and (pid, ns between its two forks) that set it
    max_lag: int = MAX_LAG_NS
    shortest: tuple[int, int] | None = None

    def add(self, kind: int, pid: int, ts: int, extra: int | str | None) -> None:
        self.index.setdefault((kind, pid), []).append(len(self.kinds))
        self.kinds.append(kind)
        self.pids.append(pid)
        self.ts.append(ts)
        self.extra.append(extra)

    def finish(self) -> None:
        """The same pid forks again only after the pid allocator went all the
        way round: within half the shortest time between two forks of that
        pid, an event of a given kind and pid is unique."""
        ts = self.ts
        for (kind, pid), idx in self.index.items():
            if kind != ord("f") or len(idx) < 2:
                continue
            gap = min(ts[b] - ts[a] for a, b in pairwise(idx))
            lag = max(0, min(MAX_LAG_NS, gap // 2 - AHEAD_NS))
            if lag < MAX_LAG_NS:
                self.pid_lag[pid] = lag
            if self.shortest is None or gap < self.shortest[1]:
                self.shortest = (pid, gap)
                self.max_lag = min(self.max_lag, lag)

    def lag_limit(self, pid: int) -> int:
        return self.pid_lag.get(pid, MAX_LAG_NS)


KIND_CODE = {"fork": ord("f"), "exec": ord("e"), "exit": ord("x")}
CODE_KIND = {v: k for k, v in KIND_CODE.items()}
FORK_RE = re.compile(r" pid=(-?\d+) child_comm=.* child_pid=(\d+)$")
EXEC_RE = re.compile(r"^filename=(.*) pid=(\d+) old_pid=\d+$")
EXIT_RE = re.compile(r" pid=(\d+) prio=-?\d+(?: group_dead=\w+)?$")


class TraceInstance:
    """A private tracefs instance recording the three sched_process_* events."""

    def __init__(self, buffer_kb: int) -> None:
        self.mounted = False
        if not (TRACEFS / "instances").is_dir():
            proc = subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACEFS)], capture_output=True, text=True)
            if proc.returncode != 0:
                raise BenchError(f"tracefs not available (mount: {proc.stderr.strip()})")
            self.mounted = True
        self.dir = TRACEFS / "instances" / f"procevents-suite-{os.getpid()}"
        self.dir.mkdir()
        try:
            self._write("tracing_on", "0")
            self._write("trace_clock", "mono")  # CLOCK_MONOTONIC, the connector's clock
            self._write("buffer_size_kb", str(buffer_kb))
            self._write("options/overwrite", "0")  # drop new events when full, and count them
            for ev in ("fork", "exec", "exit"):
                self._write(f"events/sched/sched_process_{ev}/enable", "1")
        except BaseException:
            self.close()
            raise

    def _write(self, name: str, value: str) -> None:
        (self.dir / name).write_text(value + "\n")

    def start(self) -> None:
        with (self.dir / "trace").open("w"):  # O_TRUNC clears the buffer
            pass
        self._write("tracing_on", "1")

    def stop(self) -> None:
        self._write("tracing_on", "0")

    def lost(self) -> int:
        total = 0
        for stats in (self.dir / "per_cpu").glob("cpu*/stats"):
            for line in stats.read_text().splitlines():
                key, _, value = line.partition(":")
                if key in ("overrun", "dropped events"):
                    total += int(value)
        return total

    def read(self) -> Reference:
        ref = Reference()
        f_code, e_code, x_code = KIND_CODE["fork"], KIND_CODE["exec"], KIND_CODE["exit"]
        with (self.dir / "trace").open(errors="replace") as f:
            for line in f:
                if line.startswith("#"):
                    continue
                head, sep, tail = line.rstrip("\n").partition(": sched_process_")
                if not sep:
                    continue
                sec, _, usec = head.rsplit(None, 1)[-1].partition(".")
                ts = int(sec) * 1_000_000_000 + int(usec) * 1000
                kind, _, rest = tail.partition(": ")
                if kind == "fork":
                    m = FORK_RE.search(rest)
                    if m:
                        ref.add(f_code, int(m[2]), ts, int(m[1]))
                elif kind == "exec":
                    m = EXEC_RE.match(rest)
                    if m:
                        ref.add(e_code, int(m[2]), ts, m[1])
                elif kind == "exit":
                    m = EXIT_RE.search(rest)
                    if m:
                        ref.add(x_code, int(m[1]), ts, None)
        ref.lost = self.lost()
        ref.finish()
        return ref

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._write("tracing_on", "0")
        for ev in ("fork", "exec", "exit"):
            with contextlib.suppress(OSError):
                self._write(f"events/sched/sched_process_{ev}/enable", "0")
        for _ in range(50):
            try:
                self.dir.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.1)
        if self.mounted:
            subprocess.run(["umount", str(TRACEFS)], capture_output=True)


def align(lines: Sequence[tuple[int, int, int]], ref: Reference) -> list[int]:
    """Place the lines of a timestamp-less output on the tracepoint record.

    ``lines`` are (kind code, pid, written): a line was written at or before
    ``written`` (from the sampled file size), so its event is the last one of
    the same kind and pid at or before then (give or take AHEAD_NS: the
    tracepoint may fire after the connector sent the event), if that is at
    most ``ref.lag_limit(pid)`` earlier: the same pid comes back only after
    the pid allocator went round, which takes more than twice that, so the
    match is unique.  forkstat and
    extrace keep the kernel's default socket buffer (about 256 events): they
    never hold an event long before printing it (the lags are reported).
    Returns the index in ``ref`` of each line's event, or -1.
    """
    index = ref.index
    ts = ref.ts
    limit = ref.lag_limit
    out: list[int] = []
    for kind, pid, written in lines:
        idx = index.get((kind, pid))
        if not idx:
            out.append(-1)
            continue
        j = bisect_right(idx, written + AHEAD_NS, key=ts.__getitem__) - 1
        out.append(idx[j] if j >= 0 and written - ts[idx[j]] <= limit(pid) else -1)
    return out


# -- ground truth ----------------------------------------------------------------------


@dataclass(slots=True)
class Life:
    """One generated process: pid, CLOCK_MONOTONIC lifetime, events expected."""

    id: int
    pid: int
    start: int
    end: int
    execs: int = 0
    #: the next fork of the same pid by anyone, after this life ended
    limit: int = 1 << 62
    #: what a real command line looks like: the exact string, or a pattern
    argv: list[str | re.Pattern[str]] = field(default_factory=list)

    def argv_ok(self, text: str) -> bool:
        return any(a == text if isinstance(a, str) else a.fullmatch(text) is not None for a in self.argv)


class Truth:
    def __init__(self, lives: Iterable[Life]) -> None:
        self.by_pid: dict[int, list[Life]] = {}
        for life in lives:
            self.by_pid.setdefault(life.pid, []).append(life)
        self.starts: dict[int, list[int]] = {}
        for pid, ls in self.by_pid.items():
            ls.sort(key=lambda lf: lf.start)
            self.starts[pid] = [lf.start for lf in ls]
        self.lives = [lf for ls in self.by_pid.values() for lf in ls]

    def set_limits(self, ref: Reference) -> None:
        """Bound each life by the next fork of its pid in the tracepoint record."""
        forks: dict[int, list[int]] = {}
        f_code = KIND_CODE["fork"]
        by_pid = self.by_pid
        for kind, pid, ts in zip(ref.kinds, ref.pids, ref.ts, strict=True):
            if kind == f_code and pid in by_pid:
                forks.setdefault(pid, []).append(ts)
        for pid, ls in by_pid.items():
            times = forks.get(pid, [])
            for life in ls:
                j = bisect_right(times, life.end)
                life.limit = times[j] if j < len(times) else 1 << 62

    def find(self, pid: int, ts: int) -> Life | None:
        starts = self.starts.get(pid)
        if starts is None:
            return None
        i = bisect_right(starts, ts + START_SLACK_NS) - 1
        if i < 0:
            return None
        life = self.by_pid[pid][i]
        if ts <= life.end + EXIT_SLACK_NS and ts < life.limit:
            return life
        return None

    def expected(self, spec: ToolSpec) -> dict[str, int]:
        exp = {"fork": len(self.lives), "exec": sum(lf.execs for lf in self.lives), "exit": len(self.lives)}
        if spec.exits_of_execs_only:
            exp["exit"] = sum(1 for lf in self.lives if lf.execs)
        return {k: exp[k] for k in spec.kinds}


def burst_truth(pidfile: Path, exec_shape: bool) -> tuple[Truth, float, set[int]]:
    """Lives from burst's pid file: (truth, generation seconds, worker pids)."""
    lives: list[Life] = []
    workers: set[int] = set()
    elapsed = 0.0
    i = -1  # child index: its argv is burst-<i>
    with pidfile.open() as f:
        for line in f:
            if line.startswith("#"):
                header = dict(kv.split("=", 1) for kv in line.split()[2:])
                elapsed = int(header["elapsed_ns"]) / 1e9
            elif line.startswith("W "):
                workers.add(int(line[2:]))
            else:
                pid, start, end = map(int, line.split())
                i += 1
                if pid > 0:  # 0: that fork failed
                    lives.append(Life(i, pid, start, end, execs=int(exec_shape),
                                      argv=[f"tiny {ARGV_PREFIX}{i}"] if exec_shape else []))
    return Truth(lives), elapsed, workers


MIXED_ARGV: dict[str, str | re.Pattern[str]] = {
    "sh": re.compile(r"/bin/sh -c " + re.escape(MIXED_RECIPE.replace("$@", "")) + r"t\d+"),
    "tr": "tr x y",
    "wc": "wc -c",
}


def mixed_argv(filename: str) -> str | re.Pattern[str]:
    base = os.path.basename(filename)
    expected = MIXED_ARGV.get(base)
    if expected is not None:
        return expected
    # anything else: argv[0] names the file that was executed
    return re.compile(rf"(?:\S*/)?{re.escape(base)}(?: .*)?")


def tree_truth(ref: Reference, parent: int, root: int) -> tuple[Truth, int]:
    """The descendants of ``root`` (forked by ``parent``), from the tracepoints,
    and the ns from the fork of ``root`` to its exit."""
    alive: dict[int, Life | None] = {}  # pid -> its life (None: the root)
    lives: list[Life] = []
    span = [0, 0]
    f_code, e_code = KIND_CODE["fork"], KIND_CODE["exec"]
    for i in range(len(ref.kinds)):
        kind, pid, ts = ref.kinds[i], ref.pids[i], ref.ts[i]
        if kind == f_code:
            parent_pid = ref.extra[i]
            if pid == root and parent_pid == parent and not alive:
                alive[pid] = None
                span[0] = ts
            elif parent_pid in alive:
                child = Life(len(lives), pid, ts, 1 << 62)
                lives.append(child)
                alive[pid] = child
        elif pid in alive:
            life = alive[pid]
            if kind == e_code:
                if life is not None:
                    life.execs += 1
                    life.argv.append(mixed_argv(str(ref.extra[i])))
            else:
                del alive[pid]
                if life is not None:
                    life.end = ts
                else:
                    span[1] = ts
                    if not alive:
                        break  # make exited and everything below it too
    if not lives:
        raise BenchError(f"no descendants of make (pid {root}) in the tracepoint record")
    return Truth(lives), span[1] - span[0] if span[1] > span[0] else 0


# -- analysis ------------------------------------------------------------------------


@dataclass
class ToolResult:
    spec: ToolSpec
    expected: dict[str, int]
    received: dict[str, int]
    extra: int
    exec_received: int
    exec_real_argv: int
    cpu_s: float  # the whole tree
    helper_cpu_s: float  # the processes other than the main one (procevents' readers)
    pss_kib: int  # the whole tree
    helper_pss_kib: list[int]  # each helper process
    helper_uss_kib: list[int]
    hwm_kib: int  # VmHWM summed over the tree
    exit_status: int | None
    reported_lost: str
    unmatched_lines: int  # text lines that found no tracepoint event (outside the window, background)
    unparsed: int
    leftover: list[str]  # processes of its tree still running after it was stopped
    capture: str  # procevents' "argv capture: ..." notice

    @property
    def total_expected(self) -> int:
        return sum(self.expected.values())

    @property
    def total_received(self) -> int:
        return sum(self.received.values())

    def metrics(self) -> dict[str, float | None]:
        exp, got = self.total_expected, self.total_received
        helpers = len(self.helper_pss_kib)
        return {
            "lost": 100 * (exp - got) / exp if exp else None,
            "argv": 100 * self.exec_real_argv / self.exec_received
            if self.spec.argv and self.exec_received else None,
            "argv_all": 100 * self.exec_real_argv / self.expected["exec"]
            if self.spec.argv and self.expected.get("exec") else None,
            "cpu": 1e6 * self.cpu_s / got if got else None,
            "helper_cpu": 1e6 * self.helper_cpu_s / got if got and helpers else None,
            "pss": self.pss_kib / 1024 if self.pss_kib else None,
            "helper_pss": sum(self.helper_pss_kib) / helpers / 1024 if helpers else None,
            "helper_uss": sum(self.helper_uss_kib) / helpers / 1024 if helpers else None,
            "rss": self.hwm_kib / 1024 if self.hwm_kib else None,
        }


def analyse(spec: ToolSpec, output: ToolOutput, truth: Truth, ref: Reference) -> tuple[dict[str, int], int, int,
                                                                                            int, int]:
    """(received per kind, extra events, exec events received, with the real argv, unmatched lines)."""
    events = output.events
    unmatched = 0
    if events and events[0].ts is None:
        placed = align([(KIND_CODE[e.kind], e.pid, e.written) for e in events], ref)
        for e, i in zip(events, placed, strict=True):
            if i < 0:
                unmatched += 1
            else:
                e.ts = ref.ts[i]
    got: dict[str, Counter[int]] = {k: Counter() for k in KINDS}
    real: Counter[int] = Counter()
    lives_by_id: dict[int, Life] = {}
    for e in events:
        if e.ts is None:
            continue
        life = truth.find(e.pid, e.ts)
        if life is None:
            continue
        lives_by_id[life.id] = life
        got[e.kind][life.id] += 1
        if e.kind == "exec" and e.argv is not None and life.argv_ok(e.argv):
            real[life.id] += 1
    received: dict[str, int] = {}
    extra = 0
    for kind in spec.kinds:
        n = 0
        for lid, count in got[kind].items():
            life = lives_by_id[lid]
            if kind == "exec":
                want = life.execs
            elif kind == "exit" and spec.exits_of_execs_only:
                want = 1 if life.execs else 0
            else:
                want = 1
            n += min(count, want)
            extra += max(0, count - want)
        received[kind] = n
    exec_received = received.get("exec", 0)
    exec_real = sum(min(c, lives_by_id[lid].execs, got["exec"][lid]) for lid, c in real.items())
    return received, extra, exec_received, exec_real, unmatched


def alignment_check(spec: ToolSpec, output: ToolOutput, truth: Truth, ref: Reference) -> str:
    """Place procevents' events (any mode: only kind, pid and timestamp are
    used) the way the forkstat and extrace lines are placed -- kind, pid and
    a time by which the line was written, here the event's timestamp plus 0
    to 200 ms (pseudo-random) -- and compare with placing them by their
    timestamps: all of them, and with every third chunk of 2,000 left out
    (loss as an overflowing socket makes it)."""
    events = [e for e in output.events if e.ts is not None]
    lossy = [e for j, e in enumerate(events) if (j // 2000) % 3 != 1]
    verdicts = []
    for what, subset in (("all", events), ("chunks left out", lossy)):
        by_ts = analyse(spec, ToolOutput([ToolEvent(e.kind, e.pid, e.ts) for e in subset]), truth, ref)[0]
        bare = [ToolEvent(e.kind, e.pid, None,
                          written=(e.ts or 0) + j * 2_654_435_761 % (min(200_000_000, ref.lag_limit(e.pid)) + 1))
                for j, e in enumerate(subset)]
        by_align = analyse(spec, ToolOutput(bare), truth, ref)[0]
        if by_ts == by_align:
            verdicts.append(f"{what}: same counts ({sum(by_ts.values()):,})")
        else:
            verdicts.append(f"{what}: MISMATCH " + ", ".join(f"{k} {by_align[k]:,} vs {by_ts[k]:,}" for k in by_ts))
    return (f"alignment self-check, {spec.name}'s events placed as forkstat's and extrace's lines are "
            "(kind, pid, written 0-200 ms later) vs by their timestamps: " + "; ".join(verdicts))


def lag_limits(ref: Reference) -> str:
    text = f"{MAX_LAG_NS / 1e6:.0f} ms"
    if ref.pid_lag and ref.shortest is not None:
        pid, gap = ref.shortest
        text += (f", less for {len(ref.pid_lag):,} pids forked again sooner; least {ref.max_lag / 1e6:.0f} ms: "
                 f"pid {pid} forked twice {gap / 1e6:.1f} ms apart")
    return text


def lag_note(name: str, events: Sequence[ToolEvent], window: tuple[int, int], ref: Reference) -> str:
    """How long after its event each line was written, and lines written
    during the load that found no event (written too late to be placed)."""
    lags = sorted(e.written - e.ts for e in events if e.ts is not None)
    unplaced = [e.written for e in events if e.ts is None and window[0] <= e.written <= window[1]]
    if not lags:
        return f"{name}: no line placed on the tracepoint record"
    early = sum(1 for w in unplaced if w < window[0] + 1_000_000_000)
    return (f"{name}: lines written {lags[len(lags) // 2] / 1e6:.0f} ms (median), {lags[-1] / 1e6:.0f} ms (max) "
            f"after their event (limit {lag_limits(ref)}); {len(unplaced):,} lines written during the load "
            f"not placed" + (f" ({early:,} in its first second: events from before the recording started?)"
                             if early else ""))


# -- one run -----------------------------------------------------------------------------


@dataclass
class RunResult:
    shape: str
    index: int  # the round
    setup: Setup
    load: float
    others: str  # other subscribers on the host at the start
    gen_s: float  # burst: starting gun to last worker; make: its fork to its exit (tracepoints)
    processes: int  # generated processes (make's tree without make)
    expected_desc: str
    tools: dict[str, ToolResult]
    truth_check: str
    notes: list[str]

    @property
    def rate(self) -> float | None:
        return self.processes / self.gen_s if self.gen_s > 0 else None


def wait_until(pred: Callable[[], bool], timeout: float, what: str, tools: Sequence[Running]) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        for t in tools:
            if not t.alive():
                raise BenchError(f"{t.spec.name} exited (status {t.proc.returncode}) while waiting for {what}: "
                                 f"{t.err_text().strip()[-300:]}")
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


def settle(tools: Sequence[Running], grace: float, limit: float) -> float:
    """Wait until every tool has caught up: its socket queue seen empty, then
    ``grace`` seconds to write what it read, and its output no longer growing
    (or 5 x grace).  Returns the seconds waited."""
    start = time.monotonic()
    for t in tools:
        t.empty_at = None
        t.size_at_empty = -1
    pending = list(tools)
    while pending:
        now = time.monotonic()
        for t in list(pending):
            if not t.alive():
                raise BenchError(f"{t.spec.name} exited (status {t.proc.returncode}) during the run")
            if t.empty_at is None:
                if not queue_bytes(t.pid):
                    t.empty_at = now
                    t.size_at_empty = t.size()
            elif now - t.empty_at >= grace:
                size = t.size()
                if size == t.size_at_empty or now - t.empty_at >= 5 * grace:
                    pending.remove(t)
                else:
                    t.size_at_empty = size
        if now - start > limit:
            raise BenchError(f"{', '.join(t.spec.name for t in pending)} had not caught up after {limit:g} s")
        time.sleep(0.1)
    return time.monotonic() - start


def spawn_tiny(tiny: Path, arg: str) -> int:
    proc = subprocess.Popen(["tiny", arg], executable=str(tiny))
    proc.wait()
    return proc.pid


def run_load(cmd: list[str], pids: list[int] | None = None) -> tuple[int, str, str]:
    """Run a load generator in its own process group, killed whole if we are
    interrupted (burst's workers and make's jobs would go on otherwise)."""
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    if pids is not None:
        pids.append(proc.pid)
    try:
        out, err = proc.communicate()
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, out, err


def write_makefile(directory: Path, targets: int) -> None:
    names = " ".join(f"t{i}" for i in range(1, targets + 1))
    (directory / "Makefile").write_text(f"all: {names}\nt%:\n\t{MIXED_RECIPE}\n")


def load_command(shape: str, args: argparse.Namespace, bins: dict[str, Path], rundir: Path) -> list[str]:
    """burst (its pid file: rundir/pids.txt), or make in rundir/make."""
    if shape in ("fork", "exec"):
        return [str(bins["burst"]), "-o", str(rundir / "pids.txt"), "-m", shape, "-n", str(args.n), "-p",
                str(args.workers), "-t", str(bins["tiny"]), "-a", ARGV_PREFIX]
    mkdir = rundir / "make"
    mkdir.mkdir(exist_ok=True)
    write_makefile(mkdir, mixed_targets(args.n))
    return ["make", "-r", "-R", "-s", "-j4", "-C", str(mkdir)]


class Gate:
    """The load as ``procevents trace`` runs it: a shell that writes its pid,
    waits at a FIFO for the starting signal, runs the load (a child of the
    shell, as make or burst is a child of this script otherwise), writes its
    exit status, and waits at a second FIFO until every tool has caught up
    and was measured.  So procevents trace is measured around the load only,
    as the other tools are, and before it exits (it exits once its command
    has).  The shell's own fork, exec and exit are not in the load's
    expected events; neither are make's (as in every run)."""

    SCRIPT = ('d=$1; shift; echo $$ > "$d/pid"; read _ < "$d/go"; "$@"; echo $? > "$d/status"; '
              'read _ < "$d/done"')

    def __init__(self, directory: Path) -> None:
        directory.mkdir(exist_ok=True)
        self.dir = directory
        for name in ("go", "done", "pid", "status"):
            (directory / name).unlink(missing_ok=True)
        os.mkfifo(directory / "go")
        os.mkfifo(directory / "done")
        self._go = -1
        self.fired = False
        self.released = False

    def wrap(self, load: list[str]) -> list[str]:
        return ["/bin/sh", "-c", self.SCRIPT, "sh", str(self.dir), *load]

    def _open(self, name: str) -> int:
        """The FIFO opened for writing, or -1 while the shell is not (yet) opening it to read."""
        try:
            return os.open(self.dir / name, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                return -1
            raise

    def arm(self) -> bool:
        """Is the shell waiting for the starting signal?  (The FIFO is then held open until fire.)"""
        if self._go < 0:
            self._go = self._open("go")
        return self._go >= 0

    @property
    def shell(self) -> int:
        return int((self.dir / "pid").read_text())

    def fire(self) -> None:
        os.write(self._go, b"go\n")
        self.fired = True
        self.close()

    def status(self) -> int | None:
        """The load's exit status, once it has ended."""
        try:
            text = (self.dir / "status").read_text()
        except FileNotFoundError:
            return None
        return int(text) if text.endswith("\n") else None

    def release(self) -> bool:
        """Let the shell exit (and so procevents trace), once it waits for that."""
        fd = self._open("done")
        if fd < 0:
            return False
        try:
            os.write(fd, b"done\n")
        finally:
            os.close(fd)
        self.released = True
        return True

    def close(self) -> None:
        """Close the starting FIFO.  Only once the shell is gone, or fired: an
        end of file lets it start the load too."""
        if self._go >= 0:
            os.close(self._go)
            self._go = -1


def run_once(shape: str, index: int, setup: Setup, args: argparse.Namespace, bins: dict[str, Path],
             trace: TraceInstance, workdir: Path) -> RunResult:
    rundir = workdir / f"{shape}-{index}-{setup.key}"
    rundir.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    procevents = procevents_command(args.procevents)
    tools: list[Running] = []
    sampler: SizeSampler | None = None
    gate: Gate | None = None
    tracer: Running | None = None
    me = os.getpid()
    load_cmd = load_command(shape, args, bins, rundir)
    make_parent = me  # the process that forks make
    try:
        for name in setup.tools:
            spec = TOOLS[name]
            if not spec.runs_load:
                tools.append(Running(spec, tool_command(name, output_path(rundir, spec), procevents), rundir))
        wait_until(lambda: all(t.ready() for t in tools), 20, "every tool to subscribe", tools)
        # a warm-up process every tool must show: they are all listening and writing
        for k in range(5 if tools else 0):
            warm = spawn_tiny(bins["tiny"], f"warmup-{k}")

            def shown(pid: int = warm) -> bool:
                return all(t.shows(pid) for t in tools)

            try:
                wait_until(shown, 5, "the warm-up process", tools)
                break
            except BenchError:
                if k == 4:
                    raise
        # procevents trace subscribes and starts its readers before it starts
        # its command: the shell waiting at the gate means it is ready
        for name in setup.tools:
            spec = TOOLS[name]
            if spec.runs_load:
                gate = Gate(rundir / "gate")
                cmd = [*tool_command(name, output_path(rundir, spec), procevents), *gate.wrap(load_cmd)]
                tracer = Running(spec, cmd, rundir)
                tools.append(tracer)
                wait_until(gate.arm, 20, f"{name} to start the load (its shell at the gate)", tools)
                tracer.skip = {gate.shell}
                make_parent = gate.shell
        settle(tools, 0.3, 60)

        load = os.getloadavg()[0]
        for t in tools:
            t.measure_before()
        others = other_subscribers({me, *(pid for t in tools for pid, _ in t.tree)})
        sampler = SizeSampler([t.out for t in tools if not t.spec.timestamped])
        trace.start()
        window_start = time.monotonic_ns()
        t0 = time.monotonic()
        roots: list[int] = []
        if gate is not None:
            gate.fire()
            wait_until(lambda: gate.status() is not None, 3600, "the load under procevents trace to end", tools)
            status = gate.status()
            assert tracer is not None
            gen_err = tracer.err_text()  # the load's stderr went there
        else:
            status, _, gen_err = run_load(load_cmd, roots)
        trace.stop()
        window_end = time.monotonic_ns()
        if status != 0:
            raise BenchError(f"{Path(load_cmd[0]).name} failed (status {status}): {gen_err.strip()[-300:]}")
        root = roots[0] if roots else 0
        gen_s = time.monotonic() - t0
        if tools:
            waited = settle(tools, args.grace, args.drain_limit)
            sampler.stop()
            notes.append(f"all tools caught up {waited:.1f} s after the load")
            for t in tools:
                t.measure_after()
        if gate is not None and tracer is not None:
            wait_until(gate.release, 20, "the shell to wait for the end (procevents trace)", tools)
            try:
                tracer.proc.wait(60)
            except subprocess.TimeoutExpired:
                raise BenchError(f"{tracer.spec.name} had not exited 60 s after its command did") from None
    finally:
        for t in tools:
            t.stop()
        if gate is not None:
            gate.close()
            if tracer is not None and not gate.released:
                # the run failed: what is left of the load (procevents is stopped)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(tracer.pid, signal.SIGKILL)
        if sampler is not None:
            sampler.stop()

    ref = trace.read() if tools or shape == "mixed" else Reference()
    if args.keep and (tools or shape == "mixed"):
        with (rundir / "tracepoints.tsv").open("w") as f:
            for kind, pid, ts, extra in zip(ref.kinds, ref.pids, ref.ts, ref.extra, strict=True):
                f.write(f"{CODE_KIND[kind]}\t{pid}\t{ts}\t{'' if extra is None else extra}\n")
    if ref.lost:
        notes.append(f"the tracepoint buffer dropped {ref.lost:,} events: alignment and ground truth may be short")
    if shape in ("fork", "exec"):
        truth, burst_s, _workers = burst_truth(rundir / "pids.txt", shape == "exec")
        gen_s = burst_s
        if tools:
            truth.set_limits(ref)
            f_code = KIND_CODE["fork"]
            seen = len({life.id for kind, pid, ts in zip(ref.kinds, ref.pids, ref.ts, strict=True)
                        if kind == f_code and (life := truth.find(pid, ts)) is not None})
            truth_check = f"tracepoints saw {seen:,} of the {len(truth.lives):,} forks burst recorded"
        else:
            truth_check = "- (not read: no tool to check)"
        if len(truth.lives) != args.n:
            notes.append(f"burst created {len(truth.lives):,} of {args.n:,} children")
    else:
        if gate is not None:  # make is the gate's shell's only child
            f_code = KIND_CODE["fork"]
            root = next((pid for kind, pid, extra in zip(ref.kinds, ref.pids, ref.extra, strict=True)
                         if kind == f_code and extra == make_parent), 0)
        truth, span = tree_truth(ref, make_parent, root)
        if span:
            gen_s = span / 1e9
        else:
            notes.append("make's fork or exit is not in the tracepoint record: load time is the wall time")
        truth.set_limits(ref)
        truth_check = (f"make tree from tracepoints: {len(truth.lives):,} processes, "
                       f"{sum(lf.execs for lf in truth.lives):,} execs")

    results: dict[str, ToolResult] = {}
    checked = False
    for t in tools:
        name = t.spec.name
        output = parse_output(t)
        if not t.spec.timestamped:
            assert sampler is not None
            sampler.stamp(t.out, output.events)
        received, extra, exec_got, exec_real, unmatched = analyse(t.spec, output, truth, ref)
        if not t.spec.timestamped:
            notes.append(lag_note(name, output.events, (window_start, window_end), ref))
            if args.keep:
                with (rundir / f"{name}.placed.tsv").open("w") as f:
                    f.write("kind\tpid\tline_end_offset\twritten_by_ns\tevent_ts_ns\n")
                    for e in output.events:
                        f.write(f"{e.kind}\t{e.pid}\t{e.end}\t{e.written}\t{'' if e.ts is None else e.ts}\n")
        capture = ""
        if t.spec.family == "procevents" and not t.spec.runs_load:  # trace prints no notices
            capture = next((ln.removeprefix("procevents: ").strip() for ln in t.err_text().splitlines()
                            if "argv capture:" in ln), "no 'argv capture' notice")
            want = {"sync": f"sync, {len(online_cpus())} realtime readers", "async": "async"}.get(t.spec.capture)
            if want is not None and want not in capture:
                notes.append(f"{name}: UNEXPECTED capture mode: {capture!r} (expected {want!r})")
        if t.spec.capture == "sync" and len(t.helpers) != len(online_cpus()):
            notes.append(f"{name}: {len(t.helpers)} reader processes, {len(online_cpus())} CPUs online")
        helpers = [p for p in t.helpers if p in t.cpu_after]
        results[name] = ToolResult(
            spec=t.spec, expected=truth.expected(t.spec), received=received, extra=extra,
            exec_received=exec_got, exec_real_argv=exec_real, cpu_s=t.cpu_s(), helper_cpu_s=t.cpu_s(helpers),
            pss_kib=sum(t.pss_kib.values()), helper_pss_kib=[t.pss_kib[p] for p in helpers],
            helper_uss_kib=[t.uss_kib[p] for p in helpers], hwm_kib=t.hwm_kib,
            exit_status=t.exit_status, reported_lost=output.reported_lost,
            unmatched_lines=unmatched, unparsed=output.unparsed, leftover=t.leftover, capture=capture)
        notes.extend(t.notes)
        if t.exit_status not in (0, None) and not (name == "extrace" and t.exit_status == -signal.SIGTERM):
            notes.append(f"{name} exit status {t.exit_status}: {t.err_text().strip()[-200:]}")
        if t.spec.timestamped and not checked and any(not u.spec.timestamped for u in tools):
            notes.append(alignment_check(t.spec, output, truth, ref))
            checked = True
    exp = truth.expected(TOOLS["procevents"])
    desc = f"{sum(exp.values()):,} events (" + ", ".join(f"{k} {v:,}" for k, v in exp.items()) + ")"
    if not args.keep:
        shutil.rmtree(rundir, ignore_errors=True)
    return RunResult(shape, index, setup, load, others, gen_s, len(truth.lives), desc, results, truth_check, notes)


def parse_output(t: Running) -> ToolOutput:
    """The events in a stopped tool's output."""
    out = {"json": parse_procevents, "text": parse_text, "tree": parse_tree, "db": parse_record}.get(t.spec.output)
    if out is not None:
        output = out(t.out, t.err_text())
        if t.spec.runs_load:
            output.reported_lost = output.reported_lost.replace("; no summary", "; no summary (trace prints none)")
        return output
    return parse_forkstat(t.out) if t.spec.family == "forkstat" else parse_extrace(t.out, t.err_text())


def mixed_targets(n: int) -> int:
    return max(20, n // 50)


# -- startup timings -------------------------------------------------------------------------


def help_time(cmd: list[str], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([*cmd, "--help"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        out.append(time.perf_counter() - t0)
    return out


def interpreter_time(runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        out.append(time.perf_counter() - t0)
    return out


def first_event_time(cmd: list[str], timeout: float = 10.0) -> tuple[float, float | None, list[str]]:
    """Start ``procevents --json`` while /bin/true is spawned every ~2 ms;
    seconds from the start until (its first line about one of those
    processes, its 'listening' notice), and processes of its tree still
    running after it was stopped."""
    spawned: set[int] = set()
    lock = threading.Lock()
    stop = threading.Event()

    def spawner() -> None:
        while not stop.is_set():
            pid = os.posix_spawn("/bin/true", ["true", "first-event"], os.environ)
            with lock:
                spawned.add(pid)
            os.waitpid(pid, 0)
            time.sleep(0.002)

    lines: Queue[tuple[float, bytes]] = Queue()
    listening: list[float] = []
    spawn_thread = threading.Thread(target=spawner, daemon=True)
    spawn_thread.start()
    time.sleep(0.05)
    t0 = time.perf_counter()
    proc = subprocess.Popen([*cmd, "--json"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)

    def read_out() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put((time.perf_counter(), line))

    def read_err() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if LISTENING.encode() in line and not listening:
                listening.append(time.perf_counter())

    readers = [threading.Thread(target=read_out, daemon=True), threading.Thread(target=read_err, daemon=True)]
    for r in readers:
        r.start()
    seen: list[tuple[float, int]] = []
    found: float | None = None
    try:
        deadline = time.monotonic() + timeout
        while found is None and time.monotonic() < deadline:
            try:
                at, raw = lines.get(timeout=0.1)
                ev = json.loads(raw)
                pid = ev.get("child_pid") if ev.get("event") == "fork" else ev.get("pid")
                if isinstance(pid, int):
                    seen.append((at, pid))
            except Empty:
                pass
            except ValueError:
                continue
            with lock:
                hits = [at for at, pid in seen if pid in spawned]
            if hits:
                found = min(hits)
    finally:
        stop.set()
        _status, leftover = stop_tree(proc, None, 10)
        spawn_thread.join(5)
        for r in readers:
            r.join(5)
    if found is None:
        raise BenchError(f"procevents showed none of the spawned processes within {timeout:g} s")
    return found - t0, (listening[0] - t0 if listening else None), leftover


# -- long run ---------------------------------------------------------------------------------


def long_run(args: argparse.Namespace, bins: dict[str, Path], workdir: Path) -> int:
    target = args.long_events
    children = -(-target // 3)
    out = workdir / "long.jsonl"
    err = workdir / "long.err"
    cmd = [*procevents_command(args.procevents), "--json", "-o", str(out)]
    print(f"long run: {shlex.join(cmd)}; burst exec {children:,} children (~{3 * children:,} events); "
          f"VmRSS sampled every second; load average {os.getloadavg()[0]:.2f}", flush=True)
    with err.open("wb") as err_f:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err_f)
    samples: list[tuple[float, int, int, int]] = []  # (t, lines, VmRSS kiB, VmHWM kiB)
    gen: subprocess.Popen[bytes] | None = None
    try:
        wait_until(lambda: LISTENING in err.read_text(errors="replace"), 20, "procevents to subscribe", [])
        t0 = time.monotonic()
        gen = subprocess.Popen([str(bins["burst"]), "-o", str(workdir / "long-pids.txt"), "-m", "exec", "-n",
                                str(children), "-p", str(args.workers), "-t", str(bins["tiny"])],
                               stdout=subprocess.DEVNULL, start_new_session=True)
        lines = 0
        pos = 0
        caught_up_at: float | None = None
        while True:
            time.sleep(1.0)
            if proc.poll() is not None:
                raise BenchError(f"procevents exited (status {proc.returncode}) during the long run")
            with out.open("rb") as f:
                f.seek(pos)
                while chunk := f.read(1 << 22):
                    lines += chunk.count(b"\n")
                    pos += len(chunk)
            samples.append((time.monotonic() - t0, lines, status_kib(proc.pid, "VmRSS"),
                            status_kib(proc.pid, "VmHWM")))
            if gen.poll() is not None and not queue_bytes(proc.pid):
                if caught_up_at is None:
                    caught_up_at = time.monotonic()
                elif time.monotonic() - caught_up_at > 2 * args.grace:
                    break
            if time.monotonic() - t0 > args.drain_limit + 600:
                raise BenchError("the long run did not finish")
    finally:
        if gen is not None and gen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(gen.pid, signal.SIGKILL)  # burst and its workers
            gen.wait()
        status = stop_process(proc)
    summary = [ln.strip() for ln in err.read_text(errors="replace").splitlines() if SUMMARY_RE.search(ln)]
    out.unlink(missing_ok=True)
    if not samples:
        raise BenchError("no samples")
    warm = next((s for s in samples if s[1] >= 0.1 * target), samples[0])
    end = samples[-1]
    print(f"{'t (s)':>7}  {'events written':>14}  {'VmRSS MiB':>9}  {'VmHWM MiB':>9}")
    step = max(1, len(samples) // 12)
    shown = sorted({*range(0, len(samples), step), samples.index(warm), len(samples) - 1})
    for i in shown:
        t, n, rss, hwm = samples[i]
        tag = "  <- warm-up (10% of the events)" if samples[i] is warm else ("  <- end" if i == len(samples) - 1
                                                                              else "")
        print(f"{t:7.0f}  {n:14,}  {rss / 1024:9.1f}  {hwm / 1024:9.1f}{tag}")
    print(f"VmRSS warm-up {warm[2] / 1024:.1f} MiB -> end {end[2] / 1024:.1f} MiB "
          f"({(end[2] - warm[2]) / 1024:+.1f} MiB after {end[1] - warm[1]:,} more events); "
          f"peak RSS (VmHWM) {end[3] / 1024:.1f} MiB; procevents exit status {status}")
    if summary:
        print(summary[-1])
    return 0


# -- report -----------------------------------------------------------------------------------


METRICS = (
    ("lost", "lost %", 3),
    ("argv", "argv % shown", 2),
    ("argv_all", "argv % all", 2),
    ("cpu", "CPU ms/1k", 1),
    ("helper_cpu", "readers ms/1k", 1),
    ("pss", "PSS MiB", 1),
    ("helper_pss", "PSS/reader", 2),
    ("helper_uss", "USS/reader", 2),
    ("rss", "RSS sum MiB", 1),
)
#: procevents' synchronous capture: the real argv of at least this share of
#: all generated execs (%), per shape
ARGV_TARGET = {"exec": 99.5, "mixed": 99.9}


def spread(values: Sequence[float | None], digits: int) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "-"
    med = statistics.median(vals)
    if len(vals) == 1:
        return f"{med:.{digits}f}"
    sep = " to " if min(vals) < 0 else "-"
    return f"{med:.{digits}f} [{min(vals):.{digits}f}{sep}{max(vals):.{digits}f}]"


def print_table(rows: list[list[str]], header: list[str], left: int = 1) -> None:
    """Columns before ``left`` are left-justified, the others right-justified."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)

    def fmt(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i < left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    print(line)
    print(fmt(header))
    print(line)
    for r in rows:
        print(fmt(r))
    print(line)


def report_shape(shape: str, runs: list[RunResult], setups: Sequence[Setup], args: argparse.Namespace) -> list[str]:
    """Print one shape's tables; returns the problems seen (for the summary)."""
    what = {
        "fork": f"N={args.n:,} x fork()+_exit()",
        "exec": f"N={args.n:,} x vfork()+execve(tiny, {{tiny, burst-<i>}})",
        "mixed": f"make -j4, {mixed_targets(args.n):,} targets of '{MIXED_RECIPE}'",
    }[shape]
    rounds = sorted({r.index for r in runs})
    by_setup = {s.key: [r for r in runs if r.setup.key == s.key] for s in setups}
    by_round = {(r.index, r.setup.key): r for r in runs}
    problems: list[str] = []
    print()
    print(f"== shape {shape}: {what}; {len(rounds)} round(s) of {len(setups)} setups; median [min-max] over rounds")
    print("-- runs, in the order they ran")
    rows = []
    for r in runs:
        rows.append([f"{r.index}", r.setup.label, f"{r.load:.2f}", r.others, f"{r.gen_s:.2f}", f"{r.processes:,}",
                     f"{r.rate:,.0f}" if r.rate else "-", r.expected_desc, r.truth_check])
    print_table(rows, ["round", "setup", "load avg 1m", "other subscribers", "load s", "processes", "processes/s",
                       "expected (ground truth)", "cross-check"], left=2)

    print("-- the load's own rate (generated processes per second) beside each setup")
    rows = []
    for st in setups:
        rates = [r.rate for r in by_setup[st.key]]
        slow: list[float | None] = []
        vs_forkstat: list[float | None] = []
        for r in by_setup[st.key]:
            base = by_round.get((r.index, "none"))
            if base is not None and base.rate and r.rate:
                slow.append(100 * (1 - r.rate / base.rate))
            beside = by_round.get((r.index, "forkstat"))
            if beside is not None and beside.rate and r.rate:
                vs_forkstat.append(r.rate / beside.rate)
        rows.append([st.label, spread(rates, 0), spread(slow, 1), spread(vs_forkstat, 3)])
    print_table(rows, ["setup", "processes/s", "slowdown % vs no monitor (same round)",
                       "rate / rate beside forkstat alone (same round)"])

    print("-- each tool, by setup (indented: ratio of two tools' values in the same run, median [min-max])")
    rows = []
    for st in setups:
        if not st.tools:
            continue
        for name in st.tools:
            res = [r.tools[name] for r in by_setup[st.key] if name in r.tools]
            if not res:
                continue
            rows.append([st.label, name,
                         *(spread([x.metrics()[key] for x in res], d) for key, _, d in METRICS)])
        if not st.head_to_head:
            continue
        for name in st.tools:
            if TOOLS[name].family != "procevents":
                continue
            for peer in st.tools:
                if TOOLS[peer].family != "forkstat":
                    continue
                cells = []
                for key, _, _ in METRICS:
                    ratios = []
                    for r in by_setup[st.key]:
                        if name in r.tools and peer in r.tools:
                            a, b = r.tools[name].metrics()[key], r.tools[peer].metrics()[key]
                            if a is not None and b:
                                ratios.append(a / b)
                    cells.append(spread(ratios, 3))
                rows.append([st.label, f"  {name} / {peer}", *cells])
    print_table(rows, ["setup", "tool", *(label for _, label, _ in METRICS)], left=2)

    # what the brief asks to watch
    for r in runs:
        for name, t in r.tools.items():
            for left in t.leftover:
                problems.append(f"{shape} round {r.index} [{r.setup.label}] {name}: {left}")
            if name == "procevents" and shape in ARGV_TARGET:
                m = t.metrics()["argv_all"]
                if m is not None and m < ARGV_TARGET[shape]:
                    problems.append(f"{shape} round {r.index} [{r.setup.label}] procevents (sync) real argv of all "
                                    f"execs {m:.3f}% < {ARGV_TARGET[shape]}%")
        problems.extend(f"{shape} round {r.index} [{r.setup.label}] {n}" for n in r.notes
                        if "UNEXPECTED" in n or "MISMATCH" in n or "exited during" in n or "exit status" in n)

    print("-- per run: received/expected per event kind; what each tool itself reported about loss")
    for r in runs:
        head = f"  round {r.index} [{r.setup.label}]"
        if not r.tools:
            print(f"{head} no monitor: {r.processes:,} processes in {r.gen_s:.2f} s")
        for name, t in r.tools.items():
            kinds = ", ".join(f"{k} {t.received[k]:,}/{t.expected[k]:,}" for k in t.spec.kinds if t.expected[k])
            kinds = kinds or "nothing expected"
            extra = []
            if t.extra:
                extra.append(f"{t.extra:,} events beyond those expected (duplicates, or e.g. extrace exits of "
                             "processes whose exec it did not show)")
            if t.unparsed:
                extra.append(f"{t.unparsed:,} unparsed lines")
            if t.spec.argv and t.expected.get("exec"):
                kinds += f"; real argv {t.exec_real_argv:,}"
            mem = f"PSS {t.pss_kib / 1024:.1f} MiB"
            if t.helper_pss_kib:
                mem += (f" (readers: PSS {', '.join(f'{k / 1024:.2f}' for k in t.helper_pss_kib)} MiB, "
                        f"USS {', '.join(f'{k / 1024:.2f}' for k in t.helper_uss_kib)} MiB; "
                        f"CPU {t.helper_cpu_s:.2f} s)")
            if t.capture:
                extra.append(t.capture)
            extra.extend(f"LEFT RUNNING: {x}" for x in t.leftover)
            print(f"{head} {name}: {kinds}; CPU {t.cpu_s:.2f} s; {mem}; {t.reported_lost}; "
                  f"exit status {t.exit_status}" + ("; " + "; ".join(extra) if extra else ""))
        for note in r.notes:
            print(f"{head} note: {note}")
    return problems


# -- main ---------------------------------------------------------------------------------------


def parse_list(value: str, allowed: Sequence[str], what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        raise argparse.ArgumentTypeError(f"{what}: choose from {','.join(allowed)}")
    return items


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=None, help="children per fork/exec load; mixed uses N/50 make "
                        "targets (default 100000; --quick 20000)")
    parser.add_argument("--runs", type=int, default=None, help="rounds per shape, each runs every setup once "
                        "(default 3; --quick 1)")
    parser.add_argument("--shapes", type=lambda v: parse_list(v, ("fork", "exec", "mixed"), "--shapes"),
                        default=["exec", "mixed"], help="comma-separated: fork,exec,mixed (default exec,mixed)")
    parser.add_argument("--tools", type=lambda v: parse_list(v, tuple(TOOLS), "--tools"), default=list(DEFAULT_TOOLS),
                        help=f"comma-separated: {','.join(TOOLS)} (default {','.join(DEFAULT_TOOLS)})")
    parser.add_argument("--modes", type=lambda v: parse_list(v, (*MODES, "all"), "--modes"), default=[],
                        help="add procevents' other output modes and commands to --tools, each head-to-head "
                        f"with the peers: comma-separated {','.join(MODES)} (procevents-<mode>), or all")
    parser.add_argument("--alone", action=argparse.BooleanOptionalAction, default=True,
                        help="also run the load with no monitor and beside each tool alone (default: yes)")
    parser.add_argument("--quick", action="store_true", help="N=20000, 1 round, 5 startup samples")
    parser.add_argument("--long", action="store_true",
                        help="only the long run: procevents' RSS across --long-events events")
    parser.add_argument("--long-events", type=int, default=1_000_000, help="events for --long (default 1000000)")
    parser.add_argument("--startup-runs", type=int, default=None, help="samples of --help and first-event "
                        "time (default 10; --quick 5; 0 skips)")
    parser.add_argument("--workers", type=int, default=2, help="burst worker processes (default 2)")
    parser.add_argument("--procevents", metavar="CMD", help="command to run instead of this venv's procevents")
    parser.add_argument("--grace", type=float, default=1.0,
                        help="after a tool's queue was seen empty, time to write what it read (s)")
    parser.add_argument("--drain-limit", type=float, default=300.0, help="give up waiting for the tools after (s)")
    parser.add_argument("--keep", metavar="DIR", help="keep every output in DIR")
    args = parser.parse_args(argv)
    args.n = args.n or (20_000 if args.quick else 100_000)
    args.runs = args.runs or (1 if args.quick else 3)
    if args.startup_runs is None:
        args.startup_runs = 5 if args.quick else 10
    if args.n <= 0 or args.runs <= 0 or args.workers <= 0:
        parser.error("--n, --runs and --workers must be positive")
    if os.geteuid() != 0:
        print("suite.py: needs root (tracefs, forkstat)", file=sys.stderr)
        return 1

    # The tools are stopped with SIGTERM; a caught signal is reset to the
    # default at exec, an ignored one (as from `cmd &` in a script) is not.
    def terminate(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)

    try:
        bins = {"tiny": build("tiny", TINY_FLAGS), "burst": build("burst", BURST_FLAGS)}
    except BenchError as exc:
        print(f"suite.py: {exc}", file=sys.stderr)
        return 1
    procevents = procevents_command(args.procevents)

    with contextlib.ExitStack() as stack:
        if args.keep:
            workdir = Path(args.keep)
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="procevents-suite-")))
        if args.long:
            try:
                return long_run(args, bins, workdir)
            except BenchError as exc:
                print(f"suite.py: long run failed: {exc}", file=sys.stderr)
                return 1

        modes = list(MODES) if "all" in args.modes else args.modes
        names = list(dict.fromkeys([*args.tools, *(MODES[m] for m in modes)]))
        for name in list(names):
            if name in PEERS and ensure_peer(*PEERS[name]) is None:
                print(f"suite.py: {PEERS[name][0]} is not installed and could not be installed: {name} left out",
                      file=sys.stderr)
                names.remove(name)
        if not names:
            return 1
        setups = make_setups(names, args.alone)
        print(f"suite: {shlex.join(procevents)} ({source_version()}); kernel {os.uname().release}; "
              f"{os.cpu_count()} CPUs; pid_max {Path('/proc/sys/kernel/pid_max').read_text().strip()}; "
              f"N={args.n:,}; rounds={args.runs}; shapes={','.join(args.shapes)}; tools={','.join(names)}; "
              f"load average {os.getloadavg()[0]:.2f}", flush=True)
        print("tools: " + "; ".join(f"{n} = {TOOLS[n].label}" for n in names), flush=True)
        print("setups (each round runs every one, in an order rotated by one per round): "
              + "; ".join(st.label for st in setups), flush=True)

        problems: list[str] = []
        if args.startup_runs and any(TOOLS[n].family == "procevents" for n in names):
            problems.extend(report_startup(procevents, args.startup_runs))

        buffer_kb = min(1 << 20, max(16384, 64 * 4 * args.n // 1024 * 3 // 2))
        try:
            trace = TraceInstance(buffer_kb)
        except (BenchError, OSError) as exc:
            print(f"suite.py: {exc}", file=sys.stderr)
            return 1
        stack.callback(trace.close)
        failed = 0
        for shape in args.shapes:
            runs: list[RunResult] = []
            for i in range(1, args.runs + 1):
                k = (i - 1) % len(setups)
                for setup in setups[k:] + setups[:k]:
                    try:
                        r = run_once(shape, i, setup, args, bins, trace, workdir)
                    except BenchError as exc:
                        failed += 1
                        msg = f"shape {shape} round {i} [{setup.label}] FAILED: {exc}"
                        print(f"suite.py: {msg}", file=sys.stderr, flush=True)
                        problems.append(msg)
                        continue
                    runs.append(r)
                    brief = ", ".join(
                        f"{n} lost {m['lost']:.2f}%" + (f" argv {m['argv_all']:.2f}%" if m["argv_all"] is not None
                                                        else "")
                        for n in r.tools if (m := r.tools[n].metrics())["lost"] is not None)
                    print(f"shape {shape} round {i} [{setup.label}]: load {r.load:.2f}, "
                          f"{r.rate or 0:,.0f} processes/s" + (f"; {brief}" if brief else ""), flush=True)
            problems.extend(report_shape(shape, runs, setups, args))
        print()
        print(f"== checks: {len(problems)} problem(s)" + ("" if problems else " (procevents' processes all ended "
                                                         "when it was stopped; sync argv capture at or above "
                                                         + ", ".join(f"{v}% in {k}" for k, v in ARGV_TARGET.items())
                                                         + "; no failed run)"))
        for line in problems:
            print(f"  {line}")
    return 1 if failed else 0


def source_version() -> str:
    """The commit of the source tree procevents runs from (an editable install), and
    how many of its files differ from it."""
    root = HERE.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "src"],
                               capture_output=True, text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "source version unknown"
    return f"git {head}" + (f", {len(dirty)} file(s) in src/ modified or new" if dirty else ", src/ clean")


def report_startup(procevents: list[str], runs: int) -> list[str]:
    """Start-up times, per capture mode; returns the problems seen (processes left running)."""
    helps = help_time(procevents, runs)
    bare = interpreter_time(runs)
    problems: list[str] = []
    measured: dict[str, tuple[list[float], list[float]]] = {}
    for mode in ("sync", "async"):
        firsts: list[float] = []
        notices: list[float] = []
        for _ in range(runs):
            first, notice, leftover = first_event_time([*procevents, "--capture", mode])
            problems.extend(f"startup: procevents --json --capture {mode}: {x}" for x in leftover)
            firsts.append(first)
            if notice is not None:
                notices.append(notice)
        measured[mode] = (firsts, notices)
    print()
    print(f"== startup: median [min-max] of {runs} runs; load average {os.getloadavg()[0]:.2f}")
    rows = [
        ["procevents --help (console script, wall ms)", spread([1000 * v for v in helps], 1)],
        ["  for scale: python -c pass (same interpreter)", spread([1000 * v for v in bare], 1)],
    ]
    for mode, (firsts, notices) in measured.items():
        rows.append([f"procevents --json --capture {mode}: start -> 'listening' notice (ms)",
                     spread([1000 * v for v in notices], 1)])
        rows.append([f"procevents --json --capture {mode}: start -> first event line (ms)",
                     spread([1000 * v for v in firsts], 1)])
    print_table(rows, ["measure", "value"])
    for mode, (firsts, _) in measured.items():
        med = 1000 * statistics.median(firsts)
        print(f"time to first event, --capture {mode}: median {med:.1f} ms, target < 100 ms: "
              f"{'met' if med < 100 else 'NOT met'}")
    for line in problems:
        print(f"  {line}")
    return problems


if __name__ == "__main__":
    sys.exit(main())

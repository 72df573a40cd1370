"""The monitors under test: procevents (each output mode and command),
forkstat, forkstat -r and extrace: how each is started, known to be
subscribed, measured (its process tree's CPU and memory), stopped and
read."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import BenchError
from .host import (
    cpu_seconds,
    proc_start,
    process_tree,
    queue_bytes,
    smaps_kib,
    status_kib,
    stop_tree,
)
from .outputs import (
    KINDS,
    LISTENING,
    ToolOutput,
    parse_extrace,
    parse_forkstat,
    parse_procevents,
    parse_record,
    parse_text,
    parse_tree,
    record_shows,
)


def procevents_command(override: str | None = None) -> list[str]:
    """``override`` split as a shell would, else this venv's procevents console script."""
    if override:
        return shlex.split(override)
    script = Path(sys.executable).parent / "procevents"
    return [str(script)] if script.exists() else [sys.executable, "-m", "procevents"]


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
    "procevents-no-costs": ToolSpec("procevents-no-costs", "procevents --json --no-costs (sync, no taskstats)",
                                    KINDS, argv=True, family="procevents", output="json", capture="sync"),
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
        self._helpers: list[int] = []
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
        """procevents' capture readers: the tree's processes other than the
        main one and its guardian (which counts in the tree's totals only)."""
        return self._helpers

    def measure_before(self) -> None:
        """Note the tree and its CPU times, just before the load."""
        self.tree = [(pid, start) for pid in process_tree(self.pid, self.skip)
                     if (start := proc_start(pid)) is not None]
        # Named now, while they run (the guardian renames itself after its fork).
        self._helpers = [pid for pid, _ in self.tree[1:] if _comm(pid) != GUARDIAN_COMM]
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


def tool_command(name: str, out: Path, procevents: list[str]) -> list[str]:
    if name == "procevents":
        return [*procevents, "--json", "-o", str(out)]  # --capture sync is the default
    if name == "procevents-async":
        return [*procevents, "--json", "--capture", "async", "-o", str(out)]
    if name == "procevents-no-costs":
        return [*procevents, "--json", "--no-costs", "-o", str(out)]
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


def parse_output(t: Running) -> ToolOutput:
    """The events in a stopped tool's output."""
    out = {"json": parse_procevents, "text": parse_text, "tree": parse_tree, "db": parse_record}.get(t.spec.output)
    if out is not None:
        output = out(t.out, t.err_text())
        if t.spec.runs_load:
            output.reported_lost = output.reported_lost.replace("; no summary", "; no summary (trace prints none)")
        return output
    return parse_forkstat(t.out) if t.spec.family == "forkstat" else parse_extrace(t.out, t.err_text())


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


#: procevents' guardian names itself so (src/procevents/guardian.py).
GUARDIAN_COMM = "procevents-grd"


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""

"""Reading what each tool wrote: procevents' JSON Lines, live text view,
--tree and record database, forkstat's and extrace's text lines, and what
each says about loss; following a growing output, and telling by when each
line of a timestamp-less output was written."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import sqlite3
import threading
import time
from array import array
from bisect import bisect_left
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

KINDS = ("fork", "exec", "exit")
#: procevents' notice on stderr once it is subscribed
LISTENING = "procevents: listening"
#: procevents' summary line at exit ("N events received (...), M events lost")
SUMMARY_RE = re.compile(r"(\d+) events? (?:received|shown).*?, (\d+) events? lost")
#: How often the size of a text output is sampled, to know when each line
#: was written (an event happened before its line was written).
SAMPLE_S = 0.02


@dataclass(slots=True)
class ToolEvent:
    kind: str
    pid: int
    ts: int | None  # CLOCK_MONOTONIC ns, when the tool prints it
    argv: str | None = None  # the command line, arguments joined by one space
    end: int = 0  # text outputs: byte offset of the end of its line
    written: int = 0  # text outputs: CLOCK_MONOTONIC ns by which the line was written
    parent: int | None = None  # procevents' JSON: parent_tgid of a fork or exit


@dataclass
class ToolOutput:
    """The process events (pid == tgid) a tool wrote: fork by the child's pid, exec and exit."""

    events: list[ToolEvent] = field(default_factory=list)
    reported_lost: str = ""  # what the tool itself says about loss
    unparsed: int = 0


@dataclass
class JsonOutput(ToolOutput):
    """procevents' JSON Lines: the process events, and every event's (cpu,
    seq) and in-band lost record, to count loss by seq gaps."""

    lines: int = 0  # event lines, "lost" records not included (any event, threads' too)
    lost: int = 0  # the sum of the in-band lost records' counts
    lost_lines: int = 0
    lost_by_reason: Counter[str] = field(default_factory=Counter)
    seqs: dict[int, set[int]] = field(default_factory=dict)  # cpu -> seqs in the output
    seq_lines: Counter[int] = field(default_factory=Counter)  # cpu -> event lines (duplicates too)


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


def parse_procevents(path: Path, err: str = "") -> JsonOutput:
    """procevents' JSON Lines (``--json``, ``trace --json``, ``replay --json``);
    ``err``: its stderr, for the summary line."""
    out = JsonOutput()
    events, seqs, seq_lines = out.events, out.seqs, out.seq_lines
    with contextlib.suppress(FileNotFoundError), path.open("rb") as f:
        for raw in f:
            try:
                ev = json.loads(raw)
            except ValueError:
                out.unparsed += 1
                continue
            name = ev.get("event")
            if name == "lost":
                out.lost += ev["count"]
                out.lost_lines += 1
                out.lost_by_reason[str(ev.get("reason"))] += ev["count"]
                continue
            out.lines += 1
            cpu = ev.get("cpu")
            if cpu is not None:
                cpu_seqs = seqs.get(cpu)
                if cpu_seqs is None:
                    cpu_seqs = seqs[cpu] = set()
                cpu_seqs.add(ev["seq"])
                seq_lines[cpu] += 1
            if name == "fork":
                if ev["child_pid"] == ev["child_tgid"]:
                    events.append(ToolEvent("fork", ev["child_pid"], ev["timestamp_ns"],
                                            parent=ev.get("parent_tgid")))
            elif name in ("exec", "exit") and ev["pid"] == ev["tgid"]:
                argv = ev.get("cmdline") if name == "exec" else None
                events.append(ToolEvent(name, ev["pid"], ev["timestamp_ns"],
                                        " ".join(argv) if isinstance(argv, list) else None,
                                        parent=ev.get("parent_tgid") if name == "exit" else None))
    out.reported_lost = f"in-band lost {out.lost:,}" + stderr_summary(err)
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


# -- following procevents' JSON output while it grows -----------------------------------


class ExitWatcher:
    """Follows procevents' JSON output file, noting the (pid, parent tgid) of every process exit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pos = 0
        self.partial = b""
        self.lines = 0
        self.exits: set[tuple[int, int]] = set()

    def poll(self) -> None:
        try:
            with self.path.open("rb") as f:
                f.seek(self.pos)
                data = f.read()
        except FileNotFoundError:
            return
        self.pos += len(data)
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        self.lines += len(lines)
        for line in lines:
            if b'"exit"' in line:
                with contextlib.suppress(ValueError):
                    ev = json.loads(line)
                    if ev.get("event") == "exit" and ev.get("pid") == ev.get("tgid"):
                        self.exits.add((ev["pid"], ev.get("parent_tgid") or 0))

    def seen(self, pids: set[int], parent: int) -> bool:
        """Have all ``pids`` exited (as children of ``parent``; 0 when already reaped)?"""
        return all((pid, parent) in self.exits or (pid, 0) in self.exits for pid in pids)

"""The kernel's own record of every fork, exec and exit on the host: the
sched_process_fork/exec/exit tracepoints in a private tracefs instance
(CLOCK_MONOTONIC, the connector's clock); and placing the lines of an output
that carries no timestamp (forkstat, extrace, procevents --tree) on it."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from array import array
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

from . import BenchError
from .outputs import ToolEvent

TRACEFS = Path("/sys/kernel/tracing")
#: A text line is matched only to an event at most this long before it was
#: written (further capped at half the time the pid allocator takes to hand
#: the same pid out again, so that the match is unique).
MAX_LAG_NS = 2_000_000_000
#: ... and at most this long after: the connector sends a fork event before
#: the fork tracepoint fires (1.5 ms apart was seen under load).
AHEAD_NS = 100_000_000


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

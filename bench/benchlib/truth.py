"""Ground truth: which generated process each event is about, never taken
from a subscriber.  Two, for two different questions:

* ``GroundTruth``: burst's pid file on its own (burst.py, record_bench.py,
  the tests).  burst records every child's pid and CLOCK_MONOTONIC lifetime;
  an event is child i's if its pid matches and it is stamped within i's
  lifetime, an exit up to EXIT_SLACK_NS later.  No other record is needed,
  so the slack is kept tight: pids come back once the allocator went round.
* ``TracedTruth``: lives bounded by the kernel's tracepoint record
  (suite.py), built from burst's pid file (``from_burst``, which reads it
  through ``GroundTruth.load``: one reader of that file) or, for the make
  load, from the tracepoints alone (``from_tracepoints``).  As the record
  holds every fork on the host, a life is bounded by the next fork of its
  pid, so it can be given wider slacks (START_SLACK_NS before its start,
  TRACED_EXIT_SLACK_NS after its end) without taking the events of the next
  process with that pid.

Both count a tool's events against the truth: ``analyse_burst`` (procevents'
JSON, with loss by seq gaps) and ``analyse_tool`` (any tool's events).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import BenchError
from .outputs import KINDS, ToolEvent, ToolOutput, parse_procevents
from .tracefs import KIND_CODE, Reference, align

if TYPE_CHECKING:
    from .tools import ToolSpec

# -- burst's pid file on its own --------------------------------------------------------

#: How long after its waitpid returned a child's exit event may be stamped
#: (the kernel builds it after waking the parent).  Far below the time the
#: cyclic pid allocator takes to hand the same pid out again.
EXIT_SLACK_NS = 50_000_000


@dataclass
class GroundTruth:
    """burst's pid file: ``# burst mode=M n=N workers=W elapsed_ns=T
    failures=F``, ``W PID`` per worker, ``PID START_NS END_NS`` per child in
    the order they were made (pid 0: that fork failed)."""

    shape: str
    n: int
    elapsed_s: float
    failures: int
    workers: set[int]
    #: pid -> [(start_ns, end_ns), ...] of each generated child with that pid, sorted
    lives: dict[int, list[tuple[int, int]]]
    #: (pid, start_ns, end_ns) of each child line, in the file's order: child
    #: i's argv is {"tiny", "PREFIX<i>"} under ``burst -a PREFIX``
    order: list[tuple[int, int, int]] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> GroundTruth:
        workers: set[int] = set()
        lives: dict[int, list[tuple[int, int]]] = {}
        order: list[tuple[int, int, int]] = []
        header: dict[str, str] = {}
        with path.open() as f:
            for line in f:
                if line.startswith("#"):
                    header = dict(kv.split("=", 1) for kv in line.split()[2:])
                elif line.startswith("W "):
                    workers.add(int(line[2:]))
                else:
                    pid, start, end = map(int, line.split())
                    order.append((pid, start, end))
                    if pid > 0:
                        lives.setdefault(pid, []).append((start, end))
        for spans in lives.values():
            spans.sort()
        return cls(
            shape=header["mode"],
            n=int(header["n"]),
            elapsed_s=int(header["elapsed_ns"]) / 1e9,
            failures=int(header["failures"]),
            workers=workers,
            lives=lives,
            order=order,
        )

    @property
    def children(self) -> int:
        return sum(len(spans) for spans in self.lives.values())

    def life(self, pid: int, ts: int) -> int | None:
        """Index of the generated child ``pid`` that was alive at ``ts`` (ns), or None.

        The exit event may be stamped a little after waitpid returned (EXIT_SLACK_NS).
        """
        spans = self.lives.get(pid)
        if spans is None:
            return None
        i = bisect_right(spans, (ts, 1 << 62)) - 1
        if i >= 0 and ts <= spans[i][1] + EXIT_SLACK_NS:
            return i
        return None

    @property
    def kinds(self) -> tuple[str, ...]:
        return ("fork", "exec", "exit") if self.shape == "exec" else ("fork", "exit")


@dataclass
class BurstAnalysis:
    """procevents' JSON output against burst's pid file."""

    expected: dict[str, int] = field(default_factory=dict)
    received: dict[str, int] = field(default_factory=dict)
    extra: int = 0  # events matched to a generated child beyond the expected ones
    odd_parent: int = 0  # matched forks/exits whose parent was not a burst worker
    total_events: int = 0  # every non-"lost" line
    lost_inband: int = 0
    lost_lines: int = 0
    lost_by_reason: Counter[str] = field(default_factory=Counter)
    seq_loss: int = 0
    seq_loss_by_cpu: dict[int, int] = field(default_factory=dict)
    malformed_lines: int = 0
    exit_parent0: int = 0  # generated children's exits that carried parent 0
    seq_min: dict[int, int] = field(default_factory=dict)
    seq_max: dict[int, int] = field(default_factory=dict)
    seqs: dict[int, set[int]] = field(default_factory=dict)  # cpu -> seqs in the output


def analyse_burst(out_path: Path, truth: GroundTruth) -> BurstAnalysis:
    """Count procevents' JSON output (``--json``, ``replay --json``) against
    burst's pid file: events per kind, in-band lost records, loss by seq gaps."""
    output = parse_procevents(out_path)
    # (pid, life index) of every generated child an event was matched to, per kind:
    # the child's lifetime from burst's pid file says whose event it is, even
    # after pids wrapped around and other processes reused them.
    got: dict[str, Counter[tuple[int, int]]] = {kind: Counter() for kind in KINDS}
    workers = truth.workers
    lives = truth.lives
    life = truth.life
    a = BurstAnalysis(
        total_events=output.lines, lost_inband=output.lost, lost_lines=output.lost_lines,
        lost_by_reason=output.lost_by_reason, malformed_lines=output.unparsed, seqs=output.seqs,
    )
    for e in output.events:
        pid = e.pid
        if pid not in lives or e.ts is None:
            continue
        i = life(pid, e.ts)
        if i is None:
            continue
        got[e.kind][pid, i] += 1
        if e.kind == "fork" and e.parent not in workers:
            a.odd_parent += 1
        elif e.kind == "exit":
            # parent 0: the worker reaped the child before the kernel built the
            # event (a race in do_exit: proc_exit_connector runs after exit_notify)
            if e.parent == 0:
                a.exit_parent0 += 1
            elif e.parent not in workers:
                a.odd_parent += 1
    for kind in truth.kinds:
        a.expected[kind] = truth.children
        a.received[kind] = len(got[kind])
        a.extra += sum(got[kind].values()) - len(got[kind])
    if truth.shape != "exec":
        a.extra += sum(got["exec"].values())
    for cpu, count in output.seq_lines.items():
        seqs = output.seqs[cpu]
        a.seq_min[cpu], a.seq_max[cpu] = min(seqs), max(seqs)
        span = a.seq_max[cpu] - a.seq_min[cpu] + 1
        if span > 1 << 31:
            raise BenchError(f"cpu {cpu}: seq wrapped around during the run; cannot count loss by seq")
        a.seq_loss_by_cpu[cpu] = span - count
        a.seq_loss += span - count
    return a


# -- lives bounded by the tracepoint record -------------------------------------------------

#: Which generated process an event (pid, CLOCK_MONOTONIC ns) is about: the
#: life of that pid that started last, at most START_SLACK_NS after the event
#: (the connector stamps a fork before the fork tracepoint fires, and a task
#: can be preempted in between), if the event is before the next fork of the
#: same pid by anyone (from the tracepoints) and at most TRACED_EXIT_SLACK_NS
#: after the life's end (the connector stamps an exit after the parent was
#: woken, and after the exit tracepoint).  A pid is handed out again only
#: after the allocator went round all of pid_max, which takes far longer than
#: either.
START_SLACK_NS = 100_000_000
TRACED_EXIT_SLACK_NS = 1_000_000_000


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


class TracedTruth:
    """The generated processes' lives, each bounded by the next fork of its
    pid in the tracepoint record (``set_limits``)."""

    def __init__(self, lives: Iterable[Life]) -> None:
        self.by_pid: dict[int, list[Life]] = {}
        for life in lives:
            self.by_pid.setdefault(life.pid, []).append(life)
        self.starts: dict[int, list[int]] = {}
        for pid, ls in self.by_pid.items():
            ls.sort(key=lambda lf: lf.start)
            self.starts[pid] = [lf.start for lf in ls]
        self.lives = [lf for ls in self.by_pid.values() for lf in ls]

    @classmethod
    def from_burst(cls, burst: GroundTruth, argv_prefix: str) -> TracedTruth:
        """burst's children (run with ``-a argv_prefix`` in the exec shape)."""
        exec_shape = burst.shape == "exec"
        return cls(Life(i, pid, start, end, execs=int(exec_shape),
                        argv=[f"tiny {argv_prefix}{i}"] if exec_shape else [])
                   for i, (pid, start, end) in enumerate(burst.order) if pid > 0)  # 0: that fork failed

    @classmethod
    def from_tracepoints(cls, ref: Reference, parent: int, root: int,
                         expected_argv: Callable[[str], str | re.Pattern[str]]) -> tuple[TracedTruth, int]:
        """The descendants of ``root`` (forked by ``parent``), from the tracepoints,
        and the ns from the fork of ``root`` to its exit.  ``expected_argv``:
        what the command line of an exec of that file looks like."""
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
                        life.argv.append(expected_argv(str(ref.extra[i])))
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
        return cls(lives), span[1] - span[0] if span[1] > span[0] else 0

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
        if ts <= life.end + TRACED_EXIT_SLACK_NS and ts < life.limit:
            return life
        return None

    def expected(self, spec: ToolSpec) -> dict[str, int]:
        exp = {"fork": len(self.lives), "exec": sum(lf.execs for lf in self.lives), "exit": len(self.lives)}
        if spec.exits_of_execs_only:
            exp["exit"] = sum(1 for lf in self.lives if lf.execs)
        return {k: exp[k] for k in spec.kinds}


def analyse_tool(spec: ToolSpec, output: ToolOutput, truth: TracedTruth,
                 ref: Reference) -> tuple[dict[str, int], int, int, int, int]:
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


def alignment_check(spec: ToolSpec, output: ToolOutput, truth: TracedTruth, ref: Reference) -> str:
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
        by_ts = analyse_tool(spec, ToolOutput([ToolEvent(e.kind, e.pid, e.ts) for e in subset]), truth, ref)[0]
        bare = [ToolEvent(e.kind, e.pid, None,
                          written=(e.ts or 0) + j * 2_654_435_761 % (min(200_000_000, ref.lag_limit(e.pid)) + 1))
                for j, e in enumerate(subset)]
        by_align = analyse_tool(spec, ToolOutput(bare), truth, ref)[0]
        if by_ts == by_align:
            verdicts.append(f"{what}: same counts ({sum(by_ts.values()):,})")
        else:
            verdicts.append(f"{what}: MISMATCH " + ", ".join(f"{k} {by_align[k]:,} vs {by_ts[k]:,}" for k in by_ts))
    return (f"alignment self-check, {spec.name}'s events placed as forkstat's and extrace's lines are "
            "(kind, pid, written 0-200 ms later) vs by their timestamps: " + "; ".join(verdicts))

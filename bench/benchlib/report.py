"""The suite's results and their tables: one run's figures per tool, the
per-shape report (medians and [min-max] over rounds, ratios within a run),
and the start-up section."""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .loads import MIXED_RECIPE, mixed_targets
from .startup import first_event_time, help_time, interpreter_time
from .table import print_table, spread
from .tools import TOOLS, ToolSpec

if TYPE_CHECKING:
    import argparse


@dataclass(frozen=True)
class Setup:
    """What runs beside one load: nothing, one tool, or a head-to-head group."""

    key: str
    label: str
    tools: tuple[str, ...]
    head_to_head: bool = False


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


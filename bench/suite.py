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
See bench/README.md for the columns.  The shared code (building, the tools,
parsing their outputs, the tracepoint record, ground truth) is in
bench/benchlib/.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchlib import BenchError
from benchlib.build import build_all, burst_command
from benchlib.host import online_cpus, other_subscribers, queue_bytes, status_kib, stop_process
from benchlib.loads import (
    ARGV_PREFIX,
    Gate,
    load_command,
    mixed_argv,
    run_load,
    spawn_tiny,
)
from benchlib.outputs import LISTENING, SUMMARY_RE, SizeSampler
from benchlib.report import ARGV_TARGET, RunResult, Setup, ToolResult, report_shape, report_startup
from benchlib.tools import (
    DEFAULT_TOOLS,
    MODES,
    PEERS,
    TOOLS,
    Running,
    ensure_peer,
    output_path,
    parse_output,
    procevents_command,
    settle,
    tool_command,
    wait_until,
)
from benchlib.tracefs import CODE_KIND, KIND_CODE, Reference, TraceInstance, lag_note
from benchlib.truth import GroundTruth, TracedTruth, alignment_check, analyse_tool

HERE = Path(__file__).resolve().parent


# -- setups and results ----------------------------------------------------------


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


# -- one run -----------------------------------------------------------------------------


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
    load_cmd = load_command(shape, args.n, args.workers, bins, rundir)
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
        burst = GroundTruth.load(rundir / "pids.txt")
        truth = TracedTruth.from_burst(burst, ARGV_PREFIX)
        gen_s = burst.elapsed_s
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
        truth, span = TracedTruth.from_tracepoints(ref, make_parent, root, mixed_argv)
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
        received, extra, exec_got, exec_real, unmatched = analyse_tool(t.spec, output, truth, ref)
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
        gen = subprocess.Popen(burst_command(bins["burst"], bins["tiny"], workdir / "long-pids.txt", "exec",
                                             children, args.workers),
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
        burst, tiny = build_all()
    except BenchError as exc:
        print(f"suite.py: {exc}", file=sys.stderr)
        return 1
    bins = {"tiny": tiny, "burst": burst}
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


if __name__ == "__main__":
    sys.exit(main())

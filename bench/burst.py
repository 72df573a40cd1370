#!/usr/bin/env python3
"""Burst benchmark: how many process events does ``procevents --json`` keep under load?

Starts ``procevents --json -o OUT`` (the console script of this interpreter's
venv), waits until it is subscribed, runs ``burst`` (bench/burst.c), which
creates N children as fast as it can and records every child pid, waits until
procevents has caught up (the burst workers' exits are in the output, or its
socket queue was seen empty: on a busy host the output never stops growing),
stops procevents with SIGINT and compares.

* expected: per child pid one fork + one exec + one exit (``--shape exec``,
  vfork+execve of bench/tiny.c) or one fork + one exit (``--shape fork``);
* received: those events found in the output.  burst records each child's pid
  and lifetime (CLOCK_MONOTONIC, the clock of the events' timestamp_ns); an
  event is that child's if its pid matches and it is stamped within that
  lifetime (an exit up to EXIT_SLACK_NS later), so other processes that reuse
  a generated pid (pids wrap at kernel.pid_max) are never counted, and an
  event counts even when the child's other events were lost;
* reported lost: the sum of procevents' in-band ``{"event":"lost"}`` counts,
  and the loss in its stderr summary line;
* true loss by seq: per CPU, (max seq - min seq + 1) - events received on that
  CPU, summed, less the acks among those gaps.  Exact with an all-events
  subscription (the default): acks (the kernel's answers to any program's
  LISTEN/IGNORE) take seq numbers too and procevents does not write them, so a
  second subscriber in this script records every ack's (cpu, seq)
  (--no-ack-listener turns it off).  A loss at the very end of a CPU's stream
  is invisible, so before stopping, the script runs one tiny process pinned to
  each CPU to close every CPU's tail;
* kernel drops: the Drops column of /proc/net/netlink for procevents' socket,
  read just before stopping it: the kernel's count since the socket was made.
  It differs from the seq count when loss goes on until the stop (on a busy
  host with a small buffer), as procevents still reads events after it.

Usage:
  .venv/bin/python bench/burst.py                    # N=100,000, default buffer, 1 run
  .venv/bin/python bench/burst.py --runs 3
  .venv/bin/python bench/burst.py --buffer 64K       # forced loss
  .venv/bin/python bench/burst.py --shape fork --n 50000

The shared code (building burst.c, the pid file's ground truth, parsing the
output, the second subscriber, /proc readers) is in bench/benchlib/.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchlib import BenchError
from benchlib.build import build_all, burst_command
from benchlib.connector import RefListener
from benchlib.host import count_lines, cpu_seconds, pinned, reap, socket_stats, status_kib, wait_for
from benchlib.outputs import LISTENING, SUMMARY_RE, ExitWatcher
from benchlib.table import print_table
from benchlib.tools import procevents_command
from benchlib.truth import BurstAnalysis, GroundTruth, analyse_burst

# -- one run ------------------------------------------------------------------


@dataclass
class RunResult:
    index: int
    buffer: str
    truth: GroundTruth
    analysis: BurstAnalysis
    summary_line: str
    summary_received: int | None
    summary_lost: int | None
    kernel_drops: int | None
    load: float  # 1-minute load average when the run started
    acks_in_gaps: int | None  # seq gaps that were acks, not loss (None: not measured)
    acks_seen: int | None
    ref_only: int | None  # seq gaps the reference listener received: events procevents lost
    neither: int | None  # seq gaps neither listener received
    ref_drops: int | None
    cpu_window_s: float
    window_events: int
    cpu_total_s: float
    hwm_kib: int
    exit_status: int
    notes: list[str]

    @property
    def expected(self) -> int:
        return sum(self.analysis.expected.values())

    @property
    def received(self) -> int:
        return sum(self.analysis.received.values())

    @property
    def missing(self) -> int:
        return self.expected - self.received

    @property
    def true_loss(self) -> int:
        """Seq gaps in the output, less those that were acks (when counted)."""
        return self.analysis.seq_loss - (self.acks_in_gaps or 0)


def drain(
    watcher: ExitWatcher, proc: subprocess.Popen[bytes], pids: set[int], parent: int, grace: float, limit: float
) -> tuple[float, str]:
    """Wait until procevents has written everything generated so far.

    Done when the exits of ``pids`` (the last processes we made) are in the
    output, or else (they may be lost) once procevents' socket queue has been
    seen empty and ``grace`` seconds have passed for it to write what it read.
    Waiting for the output to stop growing does not work on a busy host: other
    programs' events never stop.  Returns (seconds waited, how it ended).
    """
    start = time.monotonic()
    empty_at: float | None = None
    while True:
        watcher.poll()
        now = time.monotonic()
        if watcher.seen(pids, parent):
            return now - start, "exits seen"
        if empty_at is None:
            stats = socket_stats(proc.pid)
            if stats is None or stats[0] == 0:
                empty_at = now
        elif now - empty_at >= grace:
            return now - start, "queue empty"
        if proc.poll() is not None:
            raise BenchError(f"procevents exited (status {proc.returncode}) during the run")
        if now - start > limit:
            raise BenchError(f"procevents had not caught up {limit:g} s after the burst")
        time.sleep(0.05)


def run_once(
    index: int, args: argparse.Namespace, tiny: Path, burst: Path, workdir: Path
) -> RunResult:
    out = workdir / f"events-{index}.jsonl"
    err = workdir / f"stderr-{index}.txt"
    pidfile = workdir / f"pids-{index}.txt"
    for p in (out, err, pidfile):
        p.unlink(missing_ok=True)
    cmd = [*procevents_command(args.procevents), "--json", "-o", str(out)]
    if args.buffer:
        cmd += ["--buffer", args.buffer]
    notes: list[str] = []
    load = os.getloadavg()[0]
    acks = RefListener() if args.ack_listener else None
    try:
        with err.open("wb") as err_f:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err_f)
    except BaseException:
        if acks is not None:
            acks.close()
        raise
    stopped = False
    try:
        # 1. subscribed: the "listening" notice, then a warm-up child seen in the output.
        wait_for(lambda: LISTENING in err.read_text(errors="replace"), 15, "the listening notice", proc)
        watcher = ExitWatcher(out)
        me = os.getpid()
        warm = subprocess.Popen([str(tiny)])
        warm.wait()

        def warmed_up() -> bool:
            watcher.poll()
            return watcher.seen({warm.pid}, me)

        wait_for(warmed_up, 15, "the warm-up child's exit in the output", proc)

        # 2. the burst
        lines_before = count_lines(out)
        cpu_before = cpu_seconds(proc.pid)
        gen = subprocess.Popen(
            burst_command(burst, tiny, pidfile, args.shape, args.n, args.workers),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        gen_out, gen_err = gen.communicate()
        if gen.returncode != 0:
            raise BenchError(f"burst failed (status {gen.returncode}): {gen_err.strip() or gen_out}")
        truth = GroundTruth.load(pidfile)

        # 3. drain (the workers' exits come after all their children's events), then
        #    close every CPU's seq tail with one pinned child each, and drain again
        drain_s, how = drain(watcher, proc, truth.workers, gen.pid, args.grace, args.drain_limit)
        notes.append(f"caught up {drain_s:.1f} s after the burst ({how})")
        tails: set[int] = set()
        for cpu in sorted(os.sched_getaffinity(0)):
            with pinned(cpu):
                child = subprocess.Popen([str(tiny)])
                child.wait()
                tails.add(child.pid)
        drain(watcher, proc, tails, me, args.grace, args.drain_limit)

        # 4. measure, stop
        cpu_after = cpu_seconds(proc.pid)
        hwm = status_kib(proc.pid, "VmHWM")
        stats = socket_stats(proc.pid)
        drops = None if stats is None else stats[1]
        window_events = count_lines(out) - lines_before
        proc.send_signal(signal.SIGINT)
        status, usage = reap(proc.pid, args.stop_timeout)
        if usage is None:
            notes.append(f"procevents did not exit within {args.stop_timeout:g} s of SIGINT; sent SIGTERM")
            proc.terminate()
            status, usage = reap(proc.pid, 10)
        if usage is None:
            notes.append("procevents did not exit on SIGTERM either; sent SIGKILL (no IGNORE was sent!)")
            proc.kill()
            status, usage = reap(proc.pid, 5)
        stopped = True
        proc.returncode = os.waitstatus_to_exitcode(status) if status >= 0 else -9
    finally:
        if not stopped and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if acks is not None:
            acks.close()

    stderr_text = err.read_text(errors="replace")
    summary_line = ""
    s_recv = s_lost = None
    for line in stderr_text.splitlines():
        m = SUMMARY_RE.search(line)
        if m:
            summary_line = line.strip()
            s_recv, s_lost = int(m[1]), int(m[2])
    other = [ln for ln in stderr_text.splitlines() if ln.strip() and ln.strip() != summary_line
             and not ln.startswith(LISTENING)]
    if other:
        notes.append("procevents stderr: " + " | ".join(other[:5]))
    if proc.returncode != 0:
        notes.append(f"procevents exit status {proc.returncode}")

    analysis = analyse_burst(out, truth)
    acks_in_gaps = ref_only = neither = None
    if acks is not None:
        acks_in_gaps, ref_only, neither = acks.explain_gaps(analysis)
        acks.events.clear()
        if acks.drops:
            notes.append(f"the reference listener itself dropped {acks.drops} datagrams: "
                         "its ack count may be short")
    analysis.seqs.clear()  # large; not needed any more
    if truth.failures:
        notes.append(f"burst: {truth.failures} children failed")
    if analysis.malformed_lines:
        notes.append(f"{analysis.malformed_lines} output lines were not valid JSON")
    if analysis.extra:
        notes.append(f"{analysis.extra} events matched a generated child beyond the expected ones")
    if analysis.odd_parent:
        notes.append(f"{analysis.odd_parent} matched forks/exits named a parent that is not a burst worker")
    if s_recv is not None and s_recv != analysis.total_events:
        notes.append(f"stderr summary says {s_recv} received, output file has {analysis.total_events}")
    if s_lost is not None and s_lost != analysis.lost_inband:
        notes.append(f"stderr summary says {s_lost} lost, in-band lost records sum to {analysis.lost_inband}")

    if not args.keep:
        for p in (out, err, pidfile):
            p.unlink(missing_ok=True)
    assert usage is not None
    return RunResult(
        index=index,
        buffer=args.buffer or "default",
        truth=truth,
        analysis=analysis,
        summary_line=summary_line,
        summary_received=s_recv,
        summary_lost=s_lost,
        kernel_drops=drops,
        load=load,
        acks_in_gaps=acks_in_gaps,
        acks_seen=None if acks is None else len(acks.acks),
        ref_only=ref_only,
        neither=neither,
        ref_drops=None if acks is None else acks.drops,
        cpu_window_s=cpu_after - cpu_before,
        window_events=window_events,
        cpu_total_s=usage.ru_utime + usage.ru_stime,
        hwm_kib=hwm,
        exit_status=proc.returncode,
        notes=notes,
    )


# -- report -------------------------------------------------------------------


def fmt_int(v: int | None) -> str:
    return "-" if v is None else f"{v:,}"


def ratio(a: int, b: int) -> str:
    if b == 0:
        return "n/a (no loss)" if a == 0 else "inf"
    return f"{a / b:.4f}"


def print_results(results: list[RunResult]) -> None:
    rows: list[list[str]] = []

    def row(label: str, values: list[str]) -> None:
        rows.append([label, *values])

    row("shape / workers", [f"{r.truth.shape} / {len(r.truth.workers)}" for r in results])
    row("children (N)", [fmt_int(r.truth.n) for r in results])
    row("buffer requested", [r.buffer for r in results])
    row("events expected", [fmt_int(r.expected) for r in results])
    for kind in results[0].truth.kinds:
        row(f"  {kind} received/expected",
            [f"{r.analysis.received[kind]:,}/{r.analysis.expected[kind]:,}" for r in results])
    row("events received", [fmt_int(r.received) for r in results])
    row("events missing", [fmt_int(r.missing) for r in results])
    row("missing %", [f"{100 * r.missing / r.expected:.3f}%" for r in results])
    row("reported lost (in-band)", [fmt_int(r.analysis.lost_inband) for r in results])
    row("reported lost (stderr summary)", [fmt_int(r.summary_lost) for r in results])
    row("seq gaps, all events", [fmt_int(r.analysis.seq_loss) for r in results])
    row("  of which acks (not loss)", [fmt_int(r.acks_in_gaps) for r in results])
    row("true loss by seq (gaps - acks)", [fmt_int(r.true_loss) for r in results])
    row("  received by 2nd listener", [fmt_int(r.ref_only) for r in results])
    row("  received by neither", [fmt_int(r.neither) for r in results])
    row("kernel socket drops before stop", [fmt_int(r.kernel_drops) for r in results])
    row("reported / true loss", [ratio(r.analysis.lost_inband, r.true_loss) for r in results])
    row("all events in output", [fmt_int(r.analysis.total_events) for r in results])
    row("burst time (s)", [f"{r.truth.elapsed_s:.3f}" for r in results])
    row("generation rate (events/s)", [f"{r.expected / r.truth.elapsed_s:,.0f}" for r in results])
    row("generation rate (children/s)", [f"{r.truth.n / r.truth.elapsed_s:,.0f}" for r in results])
    row("procevents CPU s (burst+drain)", [f"{r.cpu_window_s:.2f}" for r in results])
    row("procevents CPU s (whole life)", [f"{r.cpu_total_s:.2f}" for r in results])
    row("CPU s per 1,000 events", [
        f"{1000 * r.cpu_window_s / r.window_events:.4f}" if r.window_events else "-" for r in results
    ])
    # VmHWM, not wait4's ru_maxrss: that one also counts the RSS of the forking
    # parent (this script) before procevents was exec'd.
    row("peak RSS (VmHWM, MiB)", [f"{r.hwm_kib / 1024:.1f}" for r in results])
    row("procevents exit status", [str(r.exit_status) for r in results])
    row("host load average at start", [f"{r.load:.2f}" for r in results])

    print_table(rows, ["", *(f"run {r.index}" for r in results)])


def print_loss_check(r: RunResult) -> None:
    a = r.analysis
    true = r.true_loss
    print(f"run {r.index}: stderr summary: {r.summary_line or '(none)'}")
    per_cpu = ", ".join(f"cpu{c} {n:,}" for c, n in sorted(a.seq_loss_by_cpu.items()))
    acks = "not counted (--no-ack-listener)" if r.acks_in_gaps is None else (
        f"{r.acks_in_gaps:,} of them acks ({r.acks_seen:,} acks seen in all)")
    if r.ref_only is not None:
        acks += (f"; of the rest {r.ref_only:,} reached the 2nd listener, {r.neither:,} neither "
                 f"(2nd listener drops {fmt_int(r.ref_drops)})")
    print(f"run {r.index}: seq gaps {a.seq_loss:,} ({per_cpu}), {acks}: true loss by seq {true:,}; "
          f"reported lost {a.lost_inband:,} in {a.lost_lines:,} lost records "
          f"({', '.join(f'{k} {v:,}' for k, v in sorted(a.lost_by_reason.items())) or 'none'}); "
          f"kernel socket drops {fmt_int(r.kernel_drops)}; ratio reported/true {ratio(a.lost_inband, true)}")
    if true == 0 and a.lost_inband == 0:
        verdict = "no loss, none reported"
    elif a.lost_inband == true:
        verdict = "MATCH: reported lost equals true loss by seq"
    else:
        verdict = f"MISMATCH: reported - true = {a.lost_inband - true:+,}"
    if r.kernel_drops is not None:
        verdict += "; kernel drops agree" if a.lost_inband == r.kernel_drops else (
            f"; reported - kernel drops = {a.lost_inband - r.kernel_drops:+,}")
    if true or r.missing:
        verdict += (f"; generated pids' missing events {r.missing:,} (the rest of the true loss, "
                    f"{true - r.missing:,}, were other processes' events)")
    print(f"run {r.index}: {verdict}")
    if a.exit_parent0:
        print(f"run {r.index}: {a.exit_parent0:,} of the children's exit events had parent_pid 0 "
              "(child reaped before the kernel built the event)")
    for note in r.notes:
        print(f"run {r.index}: note: {note}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=100_000, help="children to create (default 100000)")
    parser.add_argument("--buffer", metavar="SIZE", help="passed to procevents --buffer, e.g. 64K")
    parser.add_argument("--runs", type=int, default=1, help="repeat the run K times (default 1)")
    parser.add_argument("--shape", choices=("exec", "fork"), default="exec",
                        help="exec: vfork+execve+wait; fork: fork+_exit+wait (default exec)")
    parser.add_argument("--workers", type=int, default=2, help="parallel burst workers (default 2)")
    parser.add_argument("--procevents", metavar="CMD",
                        help="command to run instead of this venv's procevents script")
    parser.add_argument("--no-ack-listener", dest="ack_listener", action="store_false",
                        help="do not run the second subscriber that counts acks (seq gaps that are no loss) "
                        "and records what the kernel delivered")
    parser.add_argument("--keep", metavar="DIR", help="keep outputs (events, stderr, pids) in DIR")
    parser.add_argument("--grace", type=float, default=1.0,
                        help="after procevents' queue was seen empty, time to write what it read (s)")
    parser.add_argument("--drain-limit", type=float, default=300.0,
                        help="give up waiting for procevents to catch up after (s)")
    parser.add_argument("--stop-timeout", type=float, default=30.0, help="SIGINT to exit limit (s)")
    args = parser.parse_args(argv)
    if args.n <= 0 or args.runs <= 0 or args.workers <= 0:
        parser.error("--n, --runs and --workers must be positive")

    # Children must not inherit an ignored SIGINT (as from `cmd &` in a script):
    # procevents is stopped with SIGINT.  A caught signal is reset at exec.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        burst, tiny = build_all()
    except BenchError as exc:
        print(f"burst.py: {exc}", file=sys.stderr)
        return 1

    print(f"procevents: {shlex.join(procevents_command(args.procevents))}; kernel {os.uname().release}; "
          f"{os.cpu_count()} CPUs; pid_max {Path('/proc/sys/kernel/pid_max').read_text().strip()}")
    results: list[RunResult] = []
    with contextlib.ExitStack() as stack:
        if args.keep:
            workdir = Path(args.keep)
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="procevents-bench-")))
        for i in range(1, args.runs + 1):
            try:
                r = run_once(i, args, tiny, burst, workdir)
            except BenchError as exc:
                print(f"run {i}: FAILED: {exc}", file=sys.stderr)
                return 1
            results.append(r)
            print(f"run {i}: {r.expected:,} expected, {r.received:,} received, {r.missing:,} missing, "
                  f"{r.analysis.lost_inband:,} reported lost, {r.analysis.seq_loss:,} lost by seq",
                  flush=True)
    print()
    print_results(results)
    print()
    for r in results:
        print_loss_check(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())

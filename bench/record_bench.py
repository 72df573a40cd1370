#!/usr/bin/env python3
"""Recorder benchmark: events/s ``procevents record`` sustains without loss, bytes per event,
and whether its /metrics page agrees with the ground truth.

Per run: a root shell waits on a pipe; ``procevents record --db DB --metrics 0
-p ROOT`` starts (it receives and enriches every event on the host, and
records the root's tree: the storm); once it listens, the root execs
bench/burst.c, which creates N children as fast as it can (the same storm
shapes as bench/burst.py).  While the storm runs, /metrics is scraped
(counters must only grow) and the recorder's socket queue is sampled.  When
the recorder has counted the storm's last exit (or, after loss, its queue was
seen empty), /metrics is scraped once more and the recorder is stopped with
SIGINT.  Then:

* ground truth vs database: the database is replayed as JSON Lines
  (``procevents replay --json``) and analysed with burst.py's exact
  matcher (benchlib.truth: per child pid and lifetime); lost events recorded
  in-band, seq gaps;
* ground truth vs /metrics: with ``-p`` the counters must equal the storm
  exactly (fork N+workers, exec N+1, exit N+workers+1, starts by "burst"
  N+workers, execs N+1, failures 0);
* bytes per event: the database file (after the clean close checkpointed
  the WAL) over the events in it;
* the recorder's CPU seconds over the storm and drain, per 1,000 events.

"Sustained without loss" is the generation rate of a run with no event
missing, none reported lost and no seq gap.

Usage:
  .venv/bin/python bench/record_bench.py                        # N=100,000, exec and fork, 1 run each
  .venv/bin/python bench/record_bench.py --shape exec --n 300000 --runs 3
  .venv/bin/python bench/record_bench.py --buffer 1M            # smaller buffer: where does loss start?
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from benchlib import BenchError
from benchlib.build import build_all, burst_command
from benchlib.host import cpu_seconds, file_size, socket_stats, wait_for
from benchlib.outputs import LISTENING, SUMMARY_RE
from benchlib.table import print_table
from benchlib.tools import procevents_command
from benchlib.truth import EXIT_SLACK_NS, BurstAnalysis, GroundTruth, analyse_burst

METRICS_RE = re.compile(r"metrics at (http://\S+)")
EVENT_BYTES = 832  # receive-buffer cost of one queued event (docs/kernel-interface.md)


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """/metrics parsed with prometheus_client's parser: (sample name, labels) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name, tuple(sorted(s.labels.items()))] = s.value
    return out


def value(page: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return page.get((name, tuple(sorted(labels.items()))), 0.0)


def by_label(page: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> dict[str, float]:
    return {dict(labels).get("command", ""): v for (n, labels), v in page.items() if n == name}


def committed_exits(db: Path, truth: GroundTruth) -> int:
    """The storm children's exits committed so far (for --all, where /metrics counts the host)."""
    last = max(end for spans in truth.lives.values() for _, end in spans)
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT pid, ts FROM events WHERE event = 'exit' AND pid = tgid AND ts >= ?",
                            (min(start for spans in truth.lives.values() for start, _ in spans),)).fetchall()
    finally:
        conn.close()
    return sum(1 for pid, ts in rows if ts <= last + EXIT_SLACK_NS and truth.life(pid, ts) is not None)


@dataclass
class Run:
    index: int
    shape: str
    truth: GroundTruth
    analysis: BurstAnalysis
    db_bytes: int
    db_events: int
    db_lost: int
    db_lifetimes: int
    summary: str
    cpu_s: float
    peak_queue_bytes: int
    scrapes: int
    monotonic: bool
    scoped: bool
    metrics_checks: list[tuple[str, float, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def expected(self) -> int:
        return sum(self.analysis.expected.values())

    @property
    def received(self) -> int:
        return sum(self.analysis.received.values())

    @property
    def rate(self) -> float:
        return self.expected / self.truth.elapsed_s

    @property
    def lossless(self) -> bool:
        # The recorder subscribes to every event, so its in-band loss count
        # covers the whole stream, whatever -p filtered out of the database.
        return self.received == self.expected and self.db_lost == 0


def run_once(index: int, args: argparse.Namespace, shape: str, tools: tuple[Path, Path], work: Path) -> Run:
    burst_bin, tiny = tools
    db = work / f"events-{shape}-{index}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    pidfile = work / f"pids-{shape}-{index}.txt"
    err_path = work / f"stderr-{shape}-{index}.txt"
    gen = burst_command(burst_bin, tiny, pidfile, shape, args.n, args.workers)
    root = subprocess.Popen(["sh", "-c", 'read _; exec "$@"', "sh", *gen], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL)
    cmd = [*procevents_command(args.procevents), "record", "--db", str(db), "--metrics", "0"]
    if not args.all:
        cmd += ["-p", str(root.pid)]
    if args.buffer:
        cmd += ["--buffer", args.buffer]
    with err_path.open("wb") as err_f:
        rec = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err_f)
    notes: list[str] = []
    try:
        wait_for(lambda: LISTENING in err_path.read_text(errors="replace"), 15, "listening", rec)
        match = METRICS_RE.search(err_path.read_text())
        assert match, err_path.read_text()
        url = match[1]
        pages = [scrape(url)]
        cpu_before = cpu_seconds(rec.pid)
        assert root.stdin is not None
        root.stdin.write(b"go\n")
        root.stdin.close()
        peak = 0
        while root.poll() is None:  # during the storm
            stats = socket_stats(rec.pid)
            if stats is not None:
                peak = max(peak, stats[0])
            pages.append(scrape(url))
            time.sleep(args.scrape_every)
        if root.returncode != 0:
            raise BenchError(f"burst failed with status {root.returncode}")
        truth = GroundTruth.load(pidfile)
        workers = len(truth.workers)
        want = {"fork": truth.children + workers, "exec": (truth.children if shape == "exec" else 0) + 1,
                "exit": truth.children + workers + 1}
        # Drain: every exit counted, or (after loss) the queue seen empty.
        deadline = time.monotonic() + args.drain_limit
        empty_since: float | None = None
        while True:
            page = scrape(url)
            stats = socket_stats(rec.pid)
            if stats is not None:
                peak = max(peak, stats[0])
            if args.all:
                watcher_done = committed_exits(db, truth) >= truth.children
            else:
                watcher_done = value(page, "procevents_events_total", type="exit") >= want["exit"]
            if watcher_done:
                break
            now = time.monotonic()
            if stats is not None and stats[0] == 0:
                empty_since = empty_since or now
                if value(page, "procevents_events_lost_total") and now - empty_since > 1.0:
                    notes.append("drain ended on an empty queue after loss")
                    break
            else:
                empty_since = None
            if now > deadline:
                raise BenchError("the recorder did not catch up")
            time.sleep(0.05)
        cpu_s = cpu_seconds(rec.pid) - cpu_before
        final = scrape(url)
        pages.append(final)
        rec.send_signal(signal.SIGINT)
        rec.wait(60)
    finally:
        for p in (root, rec):
            if p.poll() is None:
                p.send_signal(signal.SIGINT if p is rec else signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(30)
    stderr = err_path.read_text(errors="replace")
    summary = next((line for line in stderr.splitlines() if SUMMARY_RE.search(line)), "(no summary)")
    if rec.returncode != 0:
        notes.append(f"recorder exit status {rec.returncode}: {stderr.strip().splitlines()[-1:]}")

    # every counter only grows
    names = sorted({key for page in pages for key in page if key[0].endswith("_total")})
    monotonic = all(
        later.get(key, 0) >= earlier.get(key, 0) for earlier, later in itertools.pairwise(pages) for key in names
    )
    lost = value(final, "procevents_events_lost_total")
    checks = [(f"events_total{{type={kind}}}", value(final, "procevents_events_total", type=kind), float(n))
              for kind, n in want.items()]
    checks.append(("process_starts_total{command=burst}",
                   value(final, "procevents_process_starts_total", command="burst"), float(truth.children + workers)))
    execs = by_label(final, "procevents_process_execs_total")
    checks.append(("sum(process_execs_total)", sum(execs.values()), float(want["exec"])))
    checks.append(("sum(process_failures_total)", sum(by_label(final, "procevents_process_failures_total").values()),
                   0.0))
    checks.append(("events_lost_total", lost, 0.0))

    out = work / f"replay-{shape}-{index}.jsonl"
    with out.open("wb") as f:
        subprocess.run([*procevents_command(args.procevents), "replay", "--db", str(db), "--json", "-q"],
                       stdout=f, check=True)
    analysis = analyse_burst(out, truth)
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    db_events, db_lost = conn.execute(
        "SELECT count(*), coalesce(sum(CASE WHEN event = 'lost' THEN a END), 0) FROM events"
    ).fetchone()
    db_lifetimes = conn.execute("SELECT count(*) FROM procs").fetchone()[0]
    conn.close()
    db_bytes = file_size(db) + file_size(Path(f"{db}-wal"))
    if not args.keep:
        for path in (out, pidfile, err_path, db):
            path.unlink(missing_ok=True)
    return Run(index, shape, truth, analysis, db_bytes, db_events, db_lost, db_lifetimes, summary, cpu_s, peak,
               len(pages), monotonic, not args.all, checks, notes)


def report(runs: list[Run]) -> None:
    rows: list[list[str]] = []

    def row(label: str, values: list[str]) -> None:
        rows.append([label, *values])

    row("shape / workers", [f"{r.shape} / {len(r.truth.workers)}" for r in runs])
    row("children (N)", [f"{r.truth.n:,}" for r in runs])
    row("storm events expected", [f"{r.expected:,}" for r in runs])
    row("  found in the database", [f"{r.received:,}" for r in runs])
    row("  missing", [f"{r.expected - r.received:,}" for r in runs])
    row("lost, recorded in-band", [f"{r.db_lost:,}" for r in runs])
    row("seq gaps in the database", [
        "n/a (-p)" if r.scoped else f"{r.analysis.seq_loss:,} (acks incl.)" for r in runs
    ])
    row("generation time (s)", [f"{r.truth.elapsed_s:.3f}" for r in runs])
    row("generation rate (events/s)", [f"{r.rate:,.0f}" for r in runs])
    row("sustained without loss", ["yes" if r.lossless else "NO" for r in runs])
    row("recorder CPU s (storm+drain)", [f"{r.cpu_s:.2f}" for r in runs])
    row("recorder CPU s / 1,000 events", [
        f"{1000 * r.cpu_s / r.analysis.total_events:.4f}" if r.analysis.total_events else "-" for r in runs
    ])
    row("  = events per CPU second", [
        f"{r.analysis.total_events / r.cpu_s:,.0f}" if r.cpu_s else "-" for r in runs
    ])
    row("peak socket queue (events)", [f"{r.peak_queue_bytes // EVENT_BYTES:,}" for r in runs])
    row("database events (rows)", [f"{r.db_events:,}" for r in runs])
    row("database lifetimes (rows)", [f"{r.db_lifetimes:,}" for r in runs])
    row("database bytes", [f"{r.db_bytes:,}" for r in runs])
    row("bytes per event", [f"{r.db_bytes / r.db_events:.1f}" if r.db_events else "-" for r in runs])
    row("/metrics scrapes, all counters grew", [f"{r.scrapes}, {'yes' if r.monotonic else 'NO'}" for r in runs])
    row("/metrics == ground truth", [
        ("yes" if all(got == want for _, got, want in r.metrics_checks) else "NO") if r.scoped
        else ("yes (>=, whole host)" if all(got >= want for _, got, want in r.metrics_checks[:-2]) else "NO")
        for r in runs
    ])
    print_table(rows, ["", *(f"{r.shape} run {r.index}" for r in runs)])
    for r in runs:
        print(f"{r.shape} run {r.index}: recorder: {r.summary.strip()}")
        for name, got, want in r.metrics_checks:
            print(f"{r.shape} run {r.index}: /metrics {name} = {got:,.0f}, ground truth {want:,.0f}"
                  f"{'' if got == want else '  MISMATCH'}")
        for note in r.notes:
            print(f"{r.shape} run {r.index}: note: {note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=100_000, help="children per run (default 100000)")
    parser.add_argument("--shape", choices=("exec", "fork", "both"), default="both")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--buffer", metavar="SIZE", help="passed to procevents record --buffer")
    parser.add_argument("--procevents", metavar="CMD", help="command instead of this venv's procevents")
    parser.add_argument("--scrape-every", type=float, default=0.25, help="seconds between scrapes in the storm")
    parser.add_argument("--drain-limit", type=float, default=300.0)
    parser.add_argument("--keep", metavar="DIR", help="keep databases and outputs in DIR")
    parser.add_argument("--all", action="store_true",
                        help="record every event on the host (default: -p the storm's root, so the database "
                        "and /metrics hold exactly the storm)")
    args = parser.parse_args(argv)
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        print("record_bench.py: needs prometheus_client (pip install -e '.[metrics]')", file=sys.stderr)
        return 1
    try:
        tools = build_all()
    except BenchError as exc:
        print(f"record_bench.py: {exc}", file=sys.stderr)
        return 1
    shapes = ("exec", "fork") if args.shape == "both" else (args.shape,)
    print(f"procevents record: kernel {os.uname().release}; {os.cpu_count()} CPUs; N={args.n:,}; "
          f"buffer {args.buffer or 'default'}; load average {os.getloadavg()[0]:.2f}")
    runs: list[Run] = []
    with contextlib.ExitStack() as stack:
        if args.keep:
            work = Path(args.keep)
            work.mkdir(parents=True, exist_ok=True)
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="procevents-record-bench-")))
        for shape in shapes:
            for i in range(1, args.runs + 1):
                try:
                    r = run_once(i, args, shape, tools, work)
                except BenchError as exc:
                    print(f"{shape} run {i}: FAILED: {exc}", file=sys.stderr)
                    return 1
                runs.append(r)
                print(f"{shape} run {i}: {r.received:,}/{r.expected:,} storm events recorded, {r.db_lost:,} lost, "
                      f"{r.rate:,.0f} events/s, {r.db_bytes / max(r.db_events, 1):.0f} bytes/event", flush=True)
    print()
    report(runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Shipping benchmark: how fast ``record --nats`` ships an exec storm end to
end, how far shipping falls behind and how fast it catches up.

One run: a nats-server with JetStream on 127.0.0.1 (a temporary store), a
recorder ``procevents record --nats`` watching the whole host, a collector
``procevents collect`` into a second database; then bench/burst.c makes N
exec'ing children as fast as it can.  Every 0.1 s the bench reads three
numbers: the last event the recorder committed, the outbox cursor (the last
event the stream acknowledged) and the events the collector has committed.
With ``--outage SECONDS`` the server is stopped when the storm starts and
started again that much later: the backlog, and the rate it is shipped at.

Reported: the storm (events recorded, and the rate they were committed at),
shipping (events acknowledged per second while there was a backlog, the
largest backlog in events and in seconds of recording, how long after the
storm the cursor reached the last event), the collector (the same for the
central store), and whether the central store holds every event exactly once.

With ``--drain DB``, no storm: a copy of a recording DB, its outbox cursor
reset, is shipped by the shipper process alone and collected: how fast a
backlog goes when nothing else competes for the CPU.

Usage:
  .venv/bin/python bench/ship_bench.py                    # N=20,000 execs
  .venv/bin/python bench/ship_bench.py --n 50000 --outage 10
  .venv/bin/python bench/ship_bench.py --drain /var/lib/procevents/events.db
"""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib.build import build_all, burst_command
from benchlib.tools import procevents_command

POLL = 0.1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_nats(binary: str, port: int, store: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                if conn.recv(4).startswith(b"INFO"):
                    return proc
        except OSError:
            time.sleep(0.05)
    raise SystemExit("nats-server did not start")


def one(db: Path, sql: str) -> int:
    if not db.exists():
        return 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        row = conn.execute(sql).fetchone()
        return int(row[0] or 0) if row else 0
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


def wait_line(proc: subprocess.Popen[bytes], needle: bytes, seen: list[bytes]) -> None:
    assert proc.stderr is not None
    for line in proc.stderr:
        seen.append(line)
        if needle in line:
            return
    raise SystemExit(f"no {needle!r}: {b''.join(seen).decode(errors='replace')}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20_000, help="exec'ing children in the storm")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--outage", type=float, default=0.0, help="stop NATS this many seconds from the storm's start")
    parser.add_argument("--procevents", help="command to run procevents (default: this venv's)")
    parser.add_argument("--drain", metavar="DB", help="ship a copy of this recording's every event, and nothing else")
    args = parser.parse_args()
    if args.drain:
        return drain(Path(args.drain))
    binary = shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin")
    if binary is None:
        raise SystemExit("needs nats-server (apt-get install nats-server)")
    work = Path(tempfile.mkdtemp(prefix="ship-bench-"))
    burst, tiny = build_all(work / "bin")
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    server = start_nats(binary, port, work / "js")
    local, central = work / "local.db", work / "central.db"
    cmd = procevents_command(args.procevents)
    recorder = subprocess.Popen([*cmd, "record", "--db", str(local), "--nats", url], stderr=subprocess.PIPE)
    seen: list[bytes] = []
    wait_line(recorder, b"nats: shipping to", seen)
    collector = subprocess.Popen([*cmd, "collect", "--db", str(central), "--nats", url, "-q"])
    samples: list[tuple[float, int, int, int]] = []

    def sample() -> tuple[float, int, int, int]:
        now = time.monotonic()
        row = (now, one(local, "SELECT max(id) FROM events"), one(local, "SELECT max(events) FROM outbox"),
               one(central, "SELECT count(*) FROM events WHERE source IS NOT NULL"))
        samples.append(row)
        return row

    base = sample()
    storm = subprocess.Popen(burst_command(burst, tiny, work / "pids", "exec", args.n, args.workers),
                             stdout=subprocess.DEVNULL)
    start = time.monotonic()
    down_until = None
    if args.outage:
        server.send_signal(signal.SIGTERM)
        server.wait()
        down_until = start + args.outage
    storm_end = None
    while True:
        time.sleep(POLL)
        now, last, acked, collected = sample()
        if down_until is not None and now >= down_until:
            server = start_nats(binary, port, work / "js")
            down_until = None
        if storm_end is None and storm.poll() is not None:
            storm_end = now
        if storm_end is not None and down_until is None and now - storm_end > 1.0 and acked >= last \
                and collected >= last - base[1]:
            break
        if now - start > 600:
            print("gave up after 600 s", file=sys.stderr)
            break
    recorder.send_signal(signal.SIGINT)
    recorder.wait()
    collector.send_signal(signal.SIGINT)
    collector.wait()
    server.send_signal(signal.SIGTERM)
    server.wait()
    assert storm_end is not None
    # The storm's events: those committed after the first sample.
    total = samples[-1][1] - base[1]
    committed = [s for s in samples if s[1] < samples[-1][1]]
    recorded_by = committed[-1][0] if committed else storm_end
    caught = next(s[0] for s in samples if s[2] >= samples[-1][1])
    local_rows = one(local, "SELECT count(*) FROM events")
    collected_at = next((s[0] for s in samples if s[3] >= samples[-1][3]), samples[-1][0])
    backlog = max(s[1] - s[2] for s in samples)
    backlog_at = max(samples, key=lambda s: s[1] - s[2])[0]
    rate_recorded = total / max(1e-9, recorded_by - start)
    shipping_from = start + args.outage if args.outage else start
    rate_shipped = total / max(1e-9, caught - start)
    drained = [s for s in samples if s[0] >= shipping_from]
    rate_backlog = (drained[-1][2] - drained[0][2]) / max(1e-9, caught - drained[0][0]) if drained else 0.0
    distinct = one(central, "SELECT count(DISTINCT remote_id) FROM events WHERE source IS NOT NULL")
    everything = one(central, "SELECT count(*) FROM events WHERE source IS NOT NULL")
    print(f"storm: {args.n} execs, {total} events recorded in {recorded_by - start:.2f} s "
          f"({rate_recorded:,.0f} events/s committed)")
    if args.outage:
        print(f"NATS down for the first {args.outage:g} s")
    print(f"shipping: cursor at the last event {caught - start:.2f} s after the storm began, "
          f"{max(0.0, caught - recorded_by):.2f} s after the recorder's last commit: {rate_shipped:,.0f} events/s "
          f"end to end, {rate_backlog:,.0f} events/s while draining")
    print(f"largest backlog: {backlog} events ({backlog / max(1.0, rate_recorded):.2f} s of recording), "
          f"{backlog_at - start:.2f} s into the storm")
    print(f"collector: every event in the central store {collected_at - start:.2f} s after the storm began; "
          f"{everything} rows, {distinct} distinct ({everything - distinct} twice), "
          f"{local_rows - distinct} of the recorder's {local_rows} missing")
    shutil.rmtree(work, ignore_errors=True)
    return 0


def drain(source: Path) -> int:
    """Ship and collect a whole recording (a copy), timing both."""
    import json

    binary = shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin")
    if binary is None:
        raise SystemExit("needs nats-server (apt-get install nats-server)")
    work = Path(tempfile.mkdtemp(prefix="ship-drain-"))
    local, central = work / "local.db", work / "central.db"
    with sqlite3.connect(f"file:{source}?mode=ro", uri=True) as conn:
        conn.backup(copy := sqlite3.connect(local))
    copy.execute("DELETE FROM outbox")
    copy.commit()
    copy.close()
    total = one(local, "SELECT count(*) FROM events")
    last = one(local, "SELECT max(id) FROM events")
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    server = start_nats(binary, port, work / "js")
    settings = {"db": str(local), "host": "drain", "nats": {"url": url}}
    start = time.monotonic()
    shipper = subprocess.Popen([sys.executable, "-m", "procevents.fleet.shipper"], stdin=subprocess.PIPE,
                               cwd=Path(__file__).resolve().parents[1] / "src")
    assert shipper.stdin is not None
    shipper.stdin.write(json.dumps(settings).encode() + b"\n")
    shipper.stdin.flush()
    while one(local, "SELECT max(events) FROM outbox") < last:
        time.sleep(POLL)
    shipped = time.monotonic() - start
    shipper.stdin.close()
    shipper.wait()
    start = time.monotonic()
    collector = subprocess.Popen([*procevents_command(None), "collect", "--db", str(central), "--nats", url, "-q"])
    while one(central, "SELECT count(*) FROM events WHERE source IS NOT NULL") < total:
        time.sleep(POLL)
    collected = time.monotonic() - start
    collector.send_signal(signal.SIGINT)
    collector.wait()
    server.send_signal(signal.SIGTERM)
    server.wait()
    distinct = one(central, "SELECT count(DISTINCT remote_id) FROM events WHERE source IS NOT NULL")
    print(f"shipped {total} events in {shipped:.2f} s ({total / shipped:,.0f} events/s, lifetimes included); "
          f"collected in {collected:.2f} s ({total / collected:,.0f} events/s); {total - distinct} missing")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

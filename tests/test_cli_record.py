"""record (cli/record.py) against the real kernel, its recordings read back by query.

Workload children exec and then wait on stdin; the test releases them once
their exec is committed to the database (so argv is certainly captured),
which makes every answer exact.  Nothing waits on the clock: every wait is
for a line, a committed row or an exit.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    ISO,
    SH,
    TIMEOUT,
    Cli,
    Gated,
    NatsServer,
    bench_module,
    burst_tools,
    committed_events,
    db_rows,
    nats,
    run_cli,
    send_ignore,
    skip_unless_connector,
    steal_connector_socket,
    wait_rows,
    wait_until,
)

__all__ = ["nats"]  # the fixture, imported to be used here

SUMMARY = re.compile(rb"procevents: (\d+) events? received.*, (\d+) events? lost")


@pytest.fixture(scope="module", autouse=True)
def _usable() -> None:
    skip_unless_connector()




def _query(db: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    result = run_cli("query", "--db", str(db), *args)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result


def _query_json(db: Path, *args: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in _query(db, "--json", *args).stdout.splitlines()]


def _released_once_committed(db: Path, kids: list[Gated]) -> None:
    pids = [k.pid for k in kids]
    wait_until(lambda: committed_events(db, "exec", pids) == len(pids), "execs committed")


# -- record, then query -----------------------------------------------------------------------


def test_record_then_query_back_exactly(cli: Callable[..., Cli], gated: Callable[..., Gated], tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    work = tmp_path / "work dir"
    work.mkdir()
    rec = cli("record", "--db", str(db))
    rec.wait_listening()
    fail = gated([SH.encode(), b"-c", b"read _; exit 3", b"odd\xffarg"], cwd=work)
    ok = gated([SH, "-c", "read _; exit 0"], cwd=work)
    term = gated([SH, "-c", "read _; kill -TERM $$"], cwd=work)
    killed = gated(["sleep", "1000"], cwd=work)
    kids = [fail, ok, term, killed]
    _released_once_committed(db, kids)
    assert fail.release() == 3
    assert ok.release() == 0
    assert term.release() == -signal.SIGTERM
    assert killed.kill() == -signal.SIGKILL
    pids = [k.pid for k in kids]
    wait_until(lambda: committed_events(db, "exit", pids) == len(pids), "exits committed")
    assert rec.stop() == 0, rec.err.text
    assert stat_mode(db) == 0o600
    m = SUMMARY.search(rec.err.data)
    assert m, rec.err.text
    assert b"events recorded to" in rec.err.data

    expected = {
        fail.pid: ([SH, "-c", "read _; exit 3", "odd\ufffdarg"], 768, 3, None),
        ok.pid: ([SH, "-c", "read _; exit 0"], 0, 0, None),
        term.pid: ([SH, "-c", "read _; kill -TERM $$"], signal.SIGTERM, None, signal.SIGTERM),
        killed.pid: (["sleep", "1000"], signal.SIGKILL, None, signal.SIGKILL),
    }
    sleep_exe = os.path.realpath(shutil.which("sleep") or "/bin/sleep")
    for pid, (argv, code, status, sig) in expected.items():
        lives = _query_json(db, "--pid", str(pid))
        assert len(lives) == 1, lives
        life = lives[0]
        assert set(life) >= {
            "pid", "ppid", "cmdline", "exe", "cwd", "user", "status", "signal", "core_dumped", "duration",
            "start_time", "end_time",
        }
        assert life["pid"] == pid
        assert life["ppid"] == os.getpid()
        assert life["cmdline"] == argv
        assert life["exe"] == (sleep_exe if pid == killed.pid else SH)
        assert life["cwd"] == str(work)
        assert (life["uid"], life["user"]) == (0, "root")
        assert (life["exit_code"], life["status"], life["signal"], life["core_dumped"]) == (code, status, sig, False)
        assert life["execs"] == 1
        assert ISO.match(life["start_time"]) and ISO.match(life["end_time"])
        assert life["start_time"] < life["end_time"]
        assert life["duration"] > 0
    # Exact bytes of an argument that is not UTF-8, as in the live stream.
    import base64

    (fail_life,) = _query_json(db, "--pid", str(fail.pid))
    assert base64.b64decode(fail_life["cmdline_b64"]) == SH.encode() + b"\0-c\0read _; exit 3\0odd\xffarg"

    mine = {k.pid for k in kids}

    def pids_of(*args: str) -> set[int]:
        return {life["pid"] for life in _query_json(db, *args)} & mine

    assert pids_of("--failed") == {fail.pid, term.pid, killed.pid}
    assert pids_of("--command", "^sleep$") == {killed.pid}
    assert pids_of("--user", "root") == mine
    assert pids_of("--user", "0") == mine
    assert pids_of("--user", "nobody") == set()
    assert pids_of("--since", "10m") == mine
    assert pids_of("--until", "1h ago") == set()
    assert pids_of("--since", "10m", "--failed", "--command", "sleep|dash|sh") == {fail.pid, term.pid, killed.pid}
    # --pid: that process and its descendants
    assert pids_of("--pid", str(os.getpid())) == mine

    # The tree: what failed, under which parent (this test's process).
    tree = _query(db, "--since", "10m", "--failed", "--tree").stdout.decode()
    lines = tree.splitlines()
    me = [i for i, line in enumerate(lines) if re.search(rf"\s{os.getpid()} ", line)]
    assert me, tree
    parent_line = lines[me[0]]
    assert not parent_line.startswith("*"), "the parent did not fail: it is context"
    indent = _indent(parent_line)
    for pid in (fail.pid, term.pid, killed.pid):
        (line,) = [line for line in lines if re.search(rf"\s{pid} ", line)]
        assert line.startswith("*"), line
        assert _indent(line) == indent + 2, (parent_line, line)
        assert lines.index(line) > me[0]
    assert not [line for line in lines if re.search(rf"\s{ok.pid} ", line)]
    assert "status 3" in tree and "killed by SIGKILL" in tree and "killed by SIGTERM" in tree
    assert "odd\\xffarg" in tree  # escaped for the terminal

    # The table
    table = _query(db, "--pid", str(fail.pid)).stdout.decode().splitlines()
    # recorded with taskstats (root here): what each one cost, before its exit
    assert table[0].split() == ["START", "PID", "PPID", "USER", "DURATION", "CPU", "MAXRSS", "EXIT", "COMMAND"]
    assert f" {fail.pid} " in table[1] and "status 3" in table[1]

    # SQL passthrough, and it is read-only
    result = _query(db, "--sql", f"SELECT pid, status, signal FROM lifetimes WHERE pid = {killed.pid}")
    assert result.stdout.decode().splitlines() == ["pid\tstatus\tsignal", f"{killed.pid}\tNULL\t9"]
    rows = _query_json(db, "--sql", f"SELECT pid, argv FROM procs WHERE pid = {ok.pid}")
    assert rows == [{"pid": ok.pid, "argv": f"{SH}\0-c\0read _; exit 0\0"}]
    before = db.read_bytes()
    denied = run_cli("query", "--db", str(db), "--sql", "DELETE FROM events")
    assert denied.returncode == 1 and b"read-only" in denied.stderr
    assert len(denied.stderr.splitlines()) == 1
    assert db.read_bytes() == before


def test_sigusr1_commits_everything_so_far_then_says_so(cli: Callable[..., Cli], tmp_path: Path) -> None:
    """A query may lag a running recorder by up to MAX_LAG; a script that
    needs everything so far sends SIGUSR1 and waits for its answer, after
    which a process that ended before the signal is there (no sleep, no
    retry: the query runs once).  Twice, and the recorder goes on."""
    db = tmp_path / "events.db"
    rec = cli("record", "--db", str(db))
    rec.wait_listening()
    for round_ in (1, 2):
        marker = f"marker-{round_}"
        child = subprocess.Popen(["/bin/true", marker])
        assert child.wait(TIMEOUT) == 0  # ended before the signal
        os.kill(rec.pid, signal.SIGUSR1)
        wait_until(lambda n=round_: rec.err.text.count(" recorded to ") == n, f"answer {round_} to SIGUSR1")
        lives = _query_json(db, "--pid", str(child.pid))
        assert [life["cmdline"] for life in lives] == [["/bin/true", marker]], (lives, rec.err.text)
        assert lives[0]["status"] == 0 and lives[0]["end_time"] is not None
    assert rec.proc.poll() is None, "SIGUSR1 ended the recorder"
    answer = [line for line in rec.err.text.splitlines() if " recorded to " in line]
    assert re.fullmatch(rf"procevents: \d+ events recorded to {re.escape(str(db))} \([\d,]+ bytes\)", answer[0]), answer
    assert rec.stop() == 0, rec.err.text


def _indent(line: str) -> int:
    """Spaces between the start time and the pid in a tree line."""
    body = line[2:]  # mark
    rest = body.split("  ", 1)[1]  # after the time
    return len(rest) - len(rest.lstrip(" "))


def stat_mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


# -- crash safety -------------------------------------------------------------------------------


def test_kill_9_mid_storm_loses_only_the_uncommitted(cli: Callable[..., Cli], tmp_path: Path) -> None:
    burst, tiny = burst_tools()
    db = tmp_path / "events.db"
    rec = cli("record", "--db", str(db))
    rec.wait_listening()
    pidfile = tmp_path / "pids.txt"
    storm = subprocess.Popen(
        [str(burst), "-o", str(pidfile), "-m", "exec", "-n", "20000", "-p", "2", "-t", str(tiny)],
        stdout=subprocess.DEVNULL,
    )
    try:
        # Mid-storm: once some of its children (named tiny, read while held)
        # are committed, not just any process of the machine; more than the
        # 500 asserted below, as the last EXIT_SLACK_NS of them do not count.
        wait_rows(
            db, "SELECT count(*) FROM procs WHERE forked AND end_ns AND comm = 'tiny'", [], 1000,
            "storm lifetimes committed",
        )
        sock = steal_connector_socket(rec.pid)
        rec.proc.kill()
        rec.wait()
        send_ignore(sock)  # on the dead recorder's behalf: the kernel's listener count stays right
        assert storm.wait(120) == 0
    finally:
        if storm.poll() is None:
            storm.kill()
            storm.wait()
    assert Path(f"{db}-wal").exists()  # it really did not close cleanly
    assert db_rows(db, "SELECT ended FROM sessions") == [(None,)]  # how it ended: unknown

    conn = sqlite3.connect(db)  # read-write: recovers from the WAL
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    assert run_cli("query", "--db", str(db), "--since", "10m", "--failed").returncode == 0

    # Ground truth: every child of the storm, pid and lifetime.
    burst_module = bench_module("truth")
    truth = burst_module.GroundTruth.load(pidfile)
    rows = db_rows(db, "SELECT event, pid, tgid, ts FROM events ORDER BY id")
    assert not db_rows(db, "SELECT 1 FROM events WHERE event = 'lost'")
    last_ts = max(ts for _, _, _, ts in rows)
    seen: dict[str, set[tuple[int, int]]] = {"fork": set(), "exec": set(), "exit": set()}
    for event, pid, tgid, ts in rows:
        if event in seen and pid == tgid:
            life = truth.life(pid, ts)
            if life is not None:
                seen[event].add((pid, life))
    # Everything the kernel sent well before the last committed event is there:
    # the database is a prefix of the stream (arrival is causal; timestamps
    # across CPUs may differ by far less than the slack).
    slack = burst_module.EXIT_SLACK_NS
    complete = [
        (pid, i) for pid, spans in truth.lives.items() for i, (_start, end) in enumerate(spans)
        if end + slack < last_ts
    ]
    assert len(complete) >= 500
    for kind, got in seen.items():
        missing = [key for key in complete if key not in got]
        assert not missing, f"{len(missing)} {kind} events of completed children missing, e.g. {missing[:3]}"
    # ... and their lifetimes, written in the same transactions as their events
    # (tiny often exits before its /proc can be read: the name may be burst's).
    done = set()
    for pid, start_ns, end_ns, code in db_rows(db, "SELECT pid, start_ns, end_ns, exit_code FROM procs"):
        life = truth.life(pid, start_ns) if start_ns is not None else None
        if life is not None and end_ns is not None and code == 0:
            done.add((pid, life))
    assert set(complete) <= done
    assert len(complete) < truth.children, "the kill came after the storm; nothing was tested"


def test_lost_events_are_recorded(cli: Callable[..., Cli], tmp_path: Path) -> None:
    burst, _tiny = burst_tools()
    db = tmp_path / "events.db"
    rec = cli("record", "--db", str(db), "--buffer", "16K")
    rec.wait_listening()
    pidfile = tmp_path / "pids.txt"
    subprocess.run(
        [str(burst), "-o", str(pidfile), "-m", "fork", "-n", "20000", "-p", "2"], stdout=subprocess.DEVNULL,
        check=True, timeout=120,
    )
    # Stopping drains the queue and reads the socket's drop counter last.
    assert rec.stop(signal.SIGINT) == 0, rec.err.text
    m = SUMMARY.search(rec.err.data)
    assert m, rec.err.text
    reported = int(m[2])
    in_db = db_rows(db, "SELECT coalesce(sum(a), 0), count(*) FROM events WHERE event = 'lost'")[0]
    assert in_db[0] == reported
    named = db_rows(db, "SELECT sum(count) FROM events_named WHERE event = 'lost'")[0][0] or 0
    assert named == reported
    burst_module = bench_module("truth")
    truth = burst_module.GroundTruth.load(pidfile)
    got = 0
    for _event, pid, tgid, ts in db_rows(db, "SELECT event, pid, tgid, ts FROM events WHERE event != 'lost'"):
        if pid == tgid and truth.life(pid, ts) is not None:
            got += 1
    missing = 2 * truth.children - got
    assert reported >= missing  # no event goes missing without being counted as lost


# -- retention ----------------------------------------------------------------------------------


def test_retain_prunes_old_rows(cli: Callable[..., Cli], gated: Callable[..., Gated], tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    rec = cli("record", "--db", str(db))
    rec.wait_listening()
    old, new = gated([SH, "-c", "read _; exit 1"]), gated([SH, "-c", "read _; exit 2"])
    _released_once_committed(db, [old, new])
    old.release()
    new.release()
    wait_until(lambda: committed_events(db, "exit", [old.pid, new.pid]) == 2, "exits committed")
    assert rec.stop() == 0
    # Age one lifetime and its events by two days.
    two_days = 2 * 86400 * 10**9
    conn = sqlite3.connect(db)
    (life_id,) = conn.execute("SELECT id FROM procs WHERE pid = ?", (old.pid,)).fetchone()
    conn.execute("UPDATE events SET wall = wall - ? WHERE proc = ?", (two_days, life_id))
    conn.execute(
        "UPDATE procs SET start_wall = start_wall - ?, end_wall = end_wall - ? WHERE id = ?",
        (two_days, two_days, life_id),
    )
    conn.commit()
    conn.close()
    rec = cli("record", "--db", str(db), "--retain", "1d")
    rec.wait_listening()  # pruned before subscribing
    assert rec.stop() == 0
    assert db_rows(db, "SELECT count(*) FROM events WHERE proc = ?", [life_id]) == [(0,)]
    assert db_rows(db, "SELECT count(*) FROM procs WHERE pid = ?", [old.pid]) == [(0,)]
    assert db_rows(db, "SELECT count(*) FROM procs WHERE pid = ?", [new.pid]) == [(1,)]
    assert db_rows(db, "SELECT count(*) FROM events WHERE tgid = ?", [new.pid])[0][0] >= 3
    bad = run_cli("record", "--db", str(db), "--retain", "soon")
    assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 1


# -- errors -----------------------------------------------------------------------------------


def test_the_recorder_waits_out_a_foreign_lock(cli: Callable[..., Cli], tmp_path: Path) -> None:
    """Another program holds the write lock for a while (sqlite3's BEGIN
    IMMEDIATE): the recorder says so once, keeps the events in memory and
    writes them all once the lock is gone; nothing is lost."""
    db = tmp_path / "a.db"
    rec = cli("record", "--db", str(db))
    rec.wait_listening()
    wait_rows(db, "SELECT count(*) FROM sessions", [], 1, "the session row")
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # held, as by the sqlite3 shell
    try:
        rec.err.wait_for(lambda line: b"is locked by another program" in line)
        kids = [_run_child() for _ in range(5)]
        assert rec.proc.poll() is None, rec.err.text
    finally:
        other.execute("ROLLBACK")
        other.close()
    rec.err.wait_for(lambda line: b"unlocked: recording again" in line)
    assert rec.stop() == 0, rec.err.text
    assert committed_events(db, "exit", kids) == 5
    assert not db_rows(db, "SELECT 1 FROM events WHERE event = 'lost'")
    err = rec.err.text
    assert err.count("is locked by another program") == 1 and "error" not in err, err
    assert db_rows(db, "SELECT ended FROM sessions") == [("clean",)]


def _run_child() -> int:
    child = subprocess.Popen(["/bin/true"])
    child.wait()
    return child.pid


def test_rows_beyond_the_bound_are_dropped_and_recorded_as_lost(tmp_path: Path, monkeypatch: Any) -> None:
    from procevents.events import Exec
    from procevents.proctable import Proc
    from procevents.store import StoreSink, StoreWriter
    from procevents.store import writer as writer_module

    monkeypatch.setattr(writer_module, "MAX_WAITING", 10)
    monkeypatch.setattr(writer_module, "BUSY_RETRY", 0.0)
    db = tmp_path / "a.db"
    writer = StoreWriter(str(db))
    sink = StoreSink(writer)
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    for i in range(25):
        sink.emit(Exec(0, i, 1_000 + i, 100 + i, 100 + i), Proc(100 + i, 1), {"comm": "x"})
        writer.commit()  # blocked: kept in memory, at most 10
    assert writer.locked_since is not None and len(writer.pending) == 10 and writer.dropped == 15
    other.execute("ROLLBACK")
    other.close()
    writer.commit()
    writer.close()
    assert writer.locked_since is None and writer.events_written == 10
    lost = db_rows(db, "SELECT a, data FROM events WHERE event = 'lost'")
    assert lost == [(15, "store-locked")]
    assert [row[0] for row in db_rows(db, "SELECT pid FROM events WHERE event = 'exec' ORDER BY id")] == list(
        range(115, 125)
    )  # the newest kept, the oldest dropped


def test_rows_waiting_on_a_lock_have_a_byte_budget(tmp_path: Path, monkeypatch: Any) -> None:
    """Counted in argv bytes as well as rows: 400 execs of 256 KiB (100 MiB)
    wait within MAX_WAITING_BYTES; the oldest are dropped and recorded as lost."""
    from procevents.events import Exec
    from procevents.proctable import Proc
    from procevents.store import StoreSink, StoreWriter
    from procevents.store import writer as writer_module

    monkeypatch.setattr(writer_module, "BUSY_RETRY", 0.0)
    db = tmp_path / "a.db"
    writer = StoreWriter(str(db))
    sink = StoreSink(writer)
    argv = ["x" * (128 * 1024 - 1), "y" * (128 * 1024 - 1)]
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    for i in range(400):
        sink.emit(Exec(0, i, 1_000 + i, 100 + i, 100 + i), Proc(100 + i, 1), {"comm": "x", "cmdline": argv})
        if i % 20 == 19:
            writer.commit()  # blocked (each try waits BUSY_WAIT for the lock)
            assert writer.pending_bytes <= writer_module.MAX_WAITING_BYTES
    kept = len(writer.pending)
    assert writer.dropped == 400 - kept and kept == writer_module.MAX_WAITING_BYTES // (256 * 1024)
    other.execute("ROLLBACK")
    other.close()
    writer.close()
    assert db_rows(db, "SELECT a, data FROM events WHERE event = 'lost'") == [(400 - kept, "store-locked")]
    assert db_rows(db, "SELECT count(*) FROM events WHERE event = 'exec'") == [(kept,)]


# -- -D with --nats: the whole run ------------------------------------------------------------


def test_duration_bounds_the_whole_run_when_nats_is_down(cli: Callable[..., Cli], tmp_path: Path) -> None:
    """record -D N --nats URL, nothing listening at URL: the shipper gives up
    DURATION_DRAIN after the recording (a connection still being tried
    included), its 'cannot ship' comes before the recorder's summary, and
    the summary is the last word."""
    from procevents.fleet.shipper import DURATION_DRAIN

    db = tmp_path / "events.db"
    with socket.socket() as unused:  # bound, never listening: refused, and no one else can take it
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
        rec = cli("record", "--db", str(db), "-D", "1", "--nats", f"nats://127.0.0.1:{port}")
        rec.wait_listening()
        began = time.monotonic()
        assert rec.wait() == 0, rec.err.text
        took = time.monotonic() - began
    lines = rec.err.text.splitlines()

    def where(text: str) -> int:
        (index,) = [i for i, line in enumerate(lines) if text in line]
        return index

    cannot = where(f"procevents: nats: cannot ship to nats://127.0.0.1:{port} (")
    waiting = where(" not yet acknowledged (kept in the outbox)")
    recorded = where(" recorded to ")
    assert cannot < waiting < recorded == len(lines) - 2, lines
    assert SUMMARY.match(lines[-1].encode()), lines
    # Generous, as README.md states it: DURATION_DRAIN after -D, plus 2.5 s
    # for the readers and the shipper to end on a busy machine (before, the
    # first connection alone had FIRST_CONNECT_WAIT, 5 s, then the drain).
    assert took < 1 + DURATION_DRAIN + 2.5, (took, lines)


def test_duration_with_nats_up_ships_everything(cli: Callable[..., Cli], nats: NatsServer, tmp_path: Path) -> None:
    """The shorter drain after -D is enough for what the last commit wrote."""
    db = tmp_path / "events.db"
    rec = cli("record", "--db", str(db), "-D", "1", "--nats", nats.url)
    assert rec.wait() == 0, rec.err.text
    (last,) = db_rows(db, "SELECT max(id) FROM events")[0]
    assert db_rows(db, "SELECT events FROM outbox") == [(last,)], rec.err.text
    shipped = [line for line in rec.err.text.splitlines() if " shipped to stream " in line]
    assert shipped == [f"procevents: nats: {last} events and {shipped[0].split()[5]} lifetime updates shipped to"
                       " stream PROCEVENTS"], rec.err.text

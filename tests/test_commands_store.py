"""record, query, replay and top on the command line, against the real kernel.

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
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    TIMEOUT,
    Cli,
    Gated,
    bench_module,
    burst_tools,
    cli_argv,
    cli_processes,
    committed_events,
    db_rows,
    run_cli,
    send_ignore,
    skip_unless_connector,
    steal_connector_socket,
    wait_rows,
    wait_until,
)

SH = os.path.realpath(shutil.which("sh") or "/bin/sh")
ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
SUMMARY = re.compile(rb"procevents: (\d+) events? received.*, (\d+) events? lost")


@pytest.fixture(scope="module", autouse=True)
def _usable() -> None:
    skip_unless_connector()


@pytest.fixture
def cli() -> Iterator[Callable[..., Cli]]:
    yield from cli_processes()


@pytest.fixture
def gated() -> Iterator[Callable[..., Gated]]:
    kids: list[Gated] = []

    def start(argv: list[str | bytes], cwd: Path | None = None) -> Gated:
        kid = Gated(argv, cwd)
        kids.append(kid)
        return kid

    yield start
    for kid in kids:
        kid.cleanup()


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


def _indent(line: str) -> int:
    """Spaces between the start time and the pid in a tree line."""
    body = line[2:]  # mark
    rest = body.split("  ", 1)[1]  # after the time
    return len(rest) - len(rest.lstrip(" "))


def stat_mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


# -- replay ----------------------------------------------------------------------------------


def test_replay_equals_live_output(cli: Callable[..., Cli], gated: Callable[..., Gated], tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    live_json = tmp_path / "live.jsonl"
    # Everything this test starts from now on, forked while all three watch
    # (so each knows its start from its fork, not from /proc).
    me = str(os.getpid())
    rec = cli("record", "--db", str(db), "-p", me)
    live = cli("--json", "-p", me, "-o", str(live_json))
    live_text = cli("-p", me)
    for c in (rec, live, live_text):
        c.wait_listening()
    kid = gated([SH, "-c", "read _; printf x > /proc/$$/comm; exec sh -c 'read _; exit 7'"])

    def seen_by_both(execs: int) -> Callable[[], bool]:
        def check() -> bool:
            in_live = live_json.exists() and live_json.read_bytes().count(b'"event":"exec"') >= execs
            return in_live and committed_events(db, "exec", [kid.pid]) >= execs

        return check

    wait_until(seen_by_both(1), "the first exec in both outputs")
    assert kid.proc.stdin is not None
    kid.proc.stdin.write(b"one\n")
    kid.proc.stdin.flush()
    wait_until(seen_by_both(2), "the second exec in both outputs")
    assert kid.release() == 7
    exit_line = f'"pid":{kid.pid},"tgid":{kid.pid},"exit_code"'.encode()
    wait_until(lambda: exit_line in live_json.read_bytes(), "the live exit")
    wait_until(lambda: committed_events(db, "exit", [kid.pid]) == 1, "the recorded exit")
    live_text.out.wait_for(lambda line: line.split()[1:3] == [b"exit", str(kid.pid).encode()])
    for c in (rec, live, live_text):
        assert c.stop() == 0, c.err.text

    # The watchers' own exits are in some outputs (they are this test's
    # children too): compare the workload's events.
    def events(data: bytes) -> list[dict[str, Any]]:
        parsed = [json.loads(line) for line in data.splitlines()]
        assert not [e for e in parsed if e["event"] == "lost"]
        return [e for e in parsed if e["tgid"] == kid.pid]

    live_events = events(live_json.read_bytes())
    result = run_cli("replay", "--db", str(db), "--json")
    assert result.returncode == 0, result.stderr
    replayed = events(result.stdout)
    assert [e["event"] for e in live_events] == ["fork", "exec", "comm", "exec", "exit"]
    # Two processes, two reads of the wall clock: "time" may differ in the
    # last microsecond; everything else is the same, event for event.
    assert len(replayed) == len(live_events)
    for got, want in zip(replayed, live_events, strict=True):
        diff = {k: (got.get(k), want.get(k)) for k in set(got) | set(want) if k != "time" and got.get(k) != want.get(k)}
        assert not diff, (want["event"], diff)
    assert all(ISO.match(e["time"]) for e in replayed)
    # The text view too (the time column aside).
    result = run_cli("replay", "--db", str(db))
    assert result.returncode == 0

    def text(lines: list[bytes]) -> list[bytes]:
        return [line.split(b" ", 1)[1] for line in lines if line.split()[2:3] == [str(kid.pid).encode()]]

    assert text(result.stdout.splitlines(keepends=True)) == text(live_text.out.lines)
    assert len(text(live_text.out.lines)) == 5
    # Selection: -e and --since
    result = run_cli("replay", "--db", str(db), "--json", "-e", "exit", "--since", "10m")
    assert [e["event"] for e in events(result.stdout)] == ["exit"]
    replayed = rb"^procevents: \d+ events? replayed \(exit \d+\) of \d+ events read, 0 events lost$"
    assert re.search(replayed, result.stderr, re.M), result.stderr


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


@pytest.mark.parametrize("command", ["query", "replay", "record"])
def test_damaged_or_foreign_file_is_one_clear_line(command: str, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_bytes(b"hello\n" * 1000)
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    for path, message in ((text, b"not a procevents database"), (other, b"not a procevents one")):
        before = path.read_bytes()
        extra = ["-D", "1"] if command == "record" else []
        result = run_cli(command, "--db", str(path), *extra)
        assert result.returncode == 1, result.stderr
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and message in lines[0] and b"Traceback" not in result.stderr, result.stderr
        assert path.read_bytes() == before
    if command != "record":
        result = run_cli(command, "--db", str(tmp_path / "missing.db"))
        assert result.returncode == 1 and b"no database at" in result.stderr


def test_default_database_path_for_a_user(nobody_python: str, tmp_path: Path) -> None:
    code = "from procevents.store import default_db_path; print(default_db_path())"
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": src, "HOME": "/nonexistent", "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run(
        [nobody_python, "-c", code], user=65534, group=65534, extra_groups=[],
        env={**env, "XDG_DATA_HOME": "/xdg"}, capture_output=True, timeout=TIMEOUT, cwd="/",
    )
    assert result.stdout.decode().strip() == "/xdg/procevents/events.db", result.stderr
    result = subprocess.run(
        [nobody_python, "-c", code], user=65534, group=65534, extra_groups=[], env=env,
        capture_output=True, timeout=TIMEOUT, cwd="/",
    )
    assert result.stdout.decode().strip() == "/nonexistent/.local/share/procevents/events.db", result.stderr
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, timeout=TIMEOUT, env={**env, "HOME": "/root"}
    )
    assert result.stdout.decode().strip() == "/var/lib/procevents/events.db"


def test_usage_errors(tmp_path: Path) -> None:
    for args in (
        ["query", "--since", "yesterday-ish"],
        ["query", "--tree", "--json"],
        ["query", "--sql", "SELECT 1", "--failed"],
        ["replay", "--tree", "--json"],
        ["record", "-p", "999999999"],
        ["top", "--rows", "0"],
        # Beyond int64 nanoseconds (SQLite's INTEGER): one line, not an OverflowError.
        ["query", "--since", "9999-12-31T23:59"],
        ["query", "--since", "@-99999999999"],
        ["query", "--until", "@1e400"],
        ["replay", "--since", "@99999999999999"],
        ["record", "--retain", "99999999999999d"],
    ):
        result = run_cli(*args, "--db", str(tmp_path / "x.db")) if args[0] != "top" else run_cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert len(result.stderr.splitlines()) == 1, (args, result.stderr)


@pytest.mark.parametrize("command", [["query"], ["query", "--sql", "SELECT * FROM procs"], ["replay"]])
def test_an_unwritable_output_is_one_line(tmp_path: Path, command: list[str]) -> None:
    db = tmp_path / "a.db"
    assert run_cli("record", "--db", str(db), "-D", "0.3", "-q").returncode == 0
    result = run_cli(*command, "--db", str(db), "-o", "/dev/full")
    assert result.returncode == 1, result.stderr
    assert result.stderr.decode().splitlines()[0] == "procevents: error: writing output: No space left on device"
    assert b"Traceback" not in result.stderr and result.stderr.count(b"error") == 1, result.stderr


def test_ctrl_c_ends_a_runaway_sql_statement(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    assert run_cli("record", "--db", str(db), "-D", "0.3", "-q").returncode == 0
    forever = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    proc = subprocess.Popen(
        [*cli_argv(), "query", "--db", str(db), "--sql", forever], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        # The statement runs (the database open, CPU time used) before it is interrupted.
        wait_until(lambda: _opened(proc.pid, db) and _cpu_seconds(proc.pid) > 0.3, "the statement to run")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert err == b"procevents: interrupted\n" and out == b""


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _opened(pid: int, path: Path) -> bool:
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}") == str(path) for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


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


# -- top -------------------------------------------------------------------------------------


def test_top_shows_rates_and_spawners(cli: Callable[..., Cli], gated: Callable[..., Gated], tmp_path: Path) -> None:
    pytest.importorskip("rich")
    spawner = tmp_path / "pe-spawner"
    spawner.symlink_to(SH)
    # The children name themselves (a COMM event): no race with /proc decides it.
    root = gated([str(spawner), "-c", "read _; for i in 1 2 3 4 5 6; do sh -c 'printf pe-fail > /proc/$$/comm; "
                  "exit 1'; done; exit 0"])
    top = cli("top", "-p", str(root.pid), "--interval", "0.2")
    top.wait_listening()
    assert root.release() == 0
    # Stopping drains what the kernel queued before, so every event counts.
    assert top.stop() == 0, top.err.text
    out = top.out.text
    assert "procevents top" in out and "top spawners" in out, out
    (row,) = [line for line in out.splitlines() if line.strip().startswith("pe-spawner")]
    cells = row.split()
    assert cells[-3] == "6" and cells[-1] == "0", row  # 6 forks, no failure of its own
    rows = {line.split()[0]: line.split()[-3:] for line in out.splitlines() if line.strip()}
    assert rows["pe-fail"][0] == "0" and rows["pe-fail"][2] == "6", rows["pe-fail"]  # failed under its new name
    # Each exec is named as /proc showed it when read: before or after the rename.
    assert sum(int(rows[name][1]) for name in ("pe-spawner", "sh", "pe-fail") if name in rows) == 6, out
    assert re.search(r"fork +[\d.]+ +6\b", out) and re.search(r"comm +[\d.]+ +6\b", out), out


def test_top_without_rich_says_so(tmp_path: Path) -> None:
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "rich").mkdir()
    (shadow / "rich" / "__init__.py").write_text("raise ImportError('no rich here')\n")
    env = {**os.environ, "PYTHONPATH": f"{shadow}{os.pathsep}{Path(__file__).resolve().parents[1] / 'src'}"}
    result = subprocess.run(
        [sys.executable, "-m", "procevents", "top", "-D", "1"], capture_output=True, env=env, timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 1
    assert result.stderr.decode().strip() == (
        "procevents: error: procevents top needs the rich package: pip install 'procevents[top]'"
    )


# -- times ------------------------------------------------------------------------------------


def test_parse_times_and_durations() -> None:
    import datetime as dt

    from procevents.cli.options import parse_duration, parse_time

    assert parse_duration("90") == 90 and parse_duration("90s") == 90 and parse_duration("10m") == 600
    assert parse_duration("1.5h") == 5400 and parse_duration("7d") == 7 * 86400 and parse_duration("2w") == 14 * 86400
    for bad in ("", "m", "10x", "-5m", "1e3"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    now = 1_763_700_000 * 10**9
    assert parse_time("now", now) == now
    assert parse_time("10m", now) == now - 600 * 10**9
    assert parse_time("2h ago", now) == now - 7200 * 10**9
    assert parse_time("@1763700000.5", now) == 1_763_700_000_500_000_000
    assert parse_time("2026-11-21T10:40:01.250Z", now) == (
        int(dt.datetime(2026, 11, 21, 10, 40, 1, tzinfo=dt.UTC).timestamp()) * 10**9 + 250_000_000
    )
    utc = parse_time("2026-11-21T10:40:01+00:00", now)
    assert utc == int(dt.datetime(2026, 11, 21, 10, 40, 1, tzinfo=dt.UTC).timestamp()) * 10**9
    local = parse_time("2026-11-21 10:40", now)
    assert local == int(dt.datetime(2026, 11, 21, 10, 40).astimezone().timestamp()) * 10**9
    today = dt.datetime.fromtimestamp(now / 1e9).astimezone()
    half_past_two = today.replace(hour=14, minute=30, second=0, microsecond=0)
    assert parse_time("14:30", now) == int(half_past_two.timestamp()) * 10**9
    for bad in ("yesterday-ish", "25:00", "2026", "@x"):
        with pytest.raises(ValueError):
            parse_time(bad, now)

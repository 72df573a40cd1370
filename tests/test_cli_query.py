"""query (cli/query.py): an unwritable output is one line, Ctrl-C ends a
runaway --sql, the table fits the terminal (a long command line is cut on a
terminal; a pipe or file gets it whole, and --json always).  What a recording
holds, read back by query: test_cli_record.py."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    TIMEOUT,
    cli_argv,
    env,
    run_cli,
    skip_unless_connector,
    wait_until,
)

from procevents.cli.query import _table_lines
from procevents.store import Lifetime, StoreWriter


@pytest.fixture(scope="module", autouse=True)
def _usable() -> None:
    skip_unless_connector()


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


def _life(life_id: int, argv: list[str]) -> Lifetime:
    fields: dict[str, Any] = dict(
        id=life_id, session=1, pid=1000 + life_id, ppid=1, parent=None, start_ns=1, start_wall=1_700_000_000 * 10**9,
        forked=True, end_ns=2, end_wall=None, comm="sh", exe=None, argv=argv, cwd=None, uid=0, user="root",
        execs=1, exit_code=0, duration=0.5,
    )
    return Lifetime(**fields)


LONG = ["sh", "-c", "echo " + "x" * 2000]


def test_the_table_cuts_command_lines_to_the_width() -> None:
    lives = [_life(1, LONG), _life(2, ["true"])]
    lines = _table_lines(lives, width=100)
    assert all(len(line.rstrip("\n")) <= 100 for line in lines), lines
    assert lines[1].rstrip("\n").endswith("...") and lines[2].rstrip("\n").endswith(" true")
    whole = _table_lines(lives)
    assert whole[1].rstrip("\n").endswith("x" * 2000 + "'")
    # However narrow the terminal, some of the command shows.
    assert "sh -c 'echo xxxx" in _table_lines(lives, width=10)[1]


def test_query_on_a_terminal_cuts_on_a_pipe_does_not(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    StoreWriter(str(db)).close()  # an empty recording is enough to run query; rows come next
    import sqlite3

    conn = sqlite3.connect(db)
    conn.execute(
        "INSERT INTO procs (id, session, pid, ppid, start_wall, forked, argv, execs, comm) "
        "VALUES (1, 1, 4242, 1, ?, 1, ?, 1, 'sh')",
        (time.time_ns(), b"\0".join(a.encode() for a in LONG) + b"\0"),
    )
    conn.commit()
    conn.close()
    piped = subprocess.run([*cli_argv(), "query", "--db", str(db)], capture_output=True, env=env(), timeout=TIMEOUT)
    assert piped.returncode == 0, piped.stderr
    assert b"x" * 2000 in piped.stdout
    master, slave = os.openpty()
    try:
        proc = subprocess.Popen(
            [*cli_argv(), "query", "--db", str(db)], stdout=slave, stderr=subprocess.PIPE,
            env={**env(), "COLUMNS": "100"},
        )
        assert proc.wait(TIMEOUT) == 0
        screen = b""
        while select.select([master], [], [], 0)[0]:
            screen += os.read(master, 65536)
    finally:
        os.close(master)
        os.close(slave)
    rows = screen.decode().splitlines()
    assert len(rows) == 2 and all(len(row) <= 100 for row in rows), rows
    assert rows[1].endswith("...") and "4242" in rows[1]

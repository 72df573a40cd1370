"""query (cli/query.py): an unwritable output is one line, Ctrl-C ends a
runaway --sql, the table and the tree fit the terminal (a real pseudo-terminal
of 80 and 100 columns: a long command line is cut, never inside an escape or
a wide character; a pipe or file gets it whole, and --json always), a store
of several hosts says whose each line is, nothing matched is said so.  What a
recording holds, read back by query: test_cli_record.py."""

from __future__ import annotations

import itertools
import os
import re
import select
import signal
import subprocess
import time
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    CONTAINER_ID,
    TIMEOUT,
    Lines,
    Step,
    cli_argv,
    collected_store,
    env,
    lifetime_steps,
    run_cli,
    skip_unless_connector,
    two_hosts_build,
    wait_until,
)

from procevents.cli.query import _table_lines, _tree_lines
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


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_an_endless_sql_result_streams_and_ends_at_a_closed_pipe(tmp_path: Path, as_json: bool) -> None:
    """Rows are written as they come, not gathered: the reader sees the first
    ones at once, and the statement ends when the pipe closes (before, an
    endless result printed nothing and grew without bound)."""
    db = tmp_path / "a.db"
    assert run_cli("record", "--db", str(db), "-D", "0.3", "-q").returncode == 0
    endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c"
    argv = [*cli_argv(), "query", "--db", str(db), "--sql", endless, *(["--json"] if as_json else [])]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    head = Lines(proc.stdout, close_after=2)  # `| head -2`
    try:
        head.wait_for(lambda _line: len(head.lines) >= 2)
        assert proc.wait(TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert head.lines[:2] == ([b'{"x":1}\n', b'{"x":2}\n'] if as_json else [b"x\n", b"1\n"])
    assert proc.stderr.read() == b""


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
    # However narrow the terminal, the lines fit it (issue 22: they wrapped).
    assert all(len(line.rstrip("\n")) <= 10 for line in _table_lines(lives, width=10))


def test_deep_in_a_narrow_tree_each_line_keeps_its_outcome() -> None:
    chain = [_life(i, ["cc", "-o", "bad", "bad.c"]) for i in range(1, 13)]
    for parent, child in itertools.pairwise(chain):
        child.parent = parent.id
    lines = _tree_lines(chain, {life.id: life for life in chain}, width=80)
    assert len(lines) == 12
    for line in lines:
        assert len(line.rstrip("\n")) <= 80 and line.endswith("  (status 0 after 500.0ms)\n"), line
    assert " cc -o ba...  (" in lines[-1]  # the command line cut instead


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


def _on_terminal(args: Sequence[str], columns: int) -> list[str]:
    """procevents ARGS with stdout on a real pseudo-terminal ``columns`` wide
    (its window size set, as tmux sets it, and no $COLUMNS): the lines the
    terminal got."""
    import fcntl
    import struct
    import termios

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    run_env = env()
    del run_env["COLUMNS"]
    screen = b""
    try:
        proc = subprocess.Popen(
            [*cli_argv(), *args], stdout=slave, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=run_env
        )
        os.close(slave)
        slave = -1
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if not select.select([master], [], [], 0.5)[0]:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the last writer has closed its end
                break
            if not chunk:
                break
            screen += chunk
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    assert proc.returncode == 0, err
    return screen.decode().splitlines()


def _columns(text: str) -> int:
    """Display columns, as a terminal counts them (wide characters 2, combining ones 0)."""
    return sum(
        0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text
    )


#: The escapes procevents.escape writes: a line cut inside one would leave a lone backslash.
_ESCAPES = re.compile(r"\\(?:x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8}|[\\nrt'])")

#: A build that failed: process-controlled text in long command lines, a
#: terminal escape over and over, wide characters (2 columns each), costs.
COLOURS = "\x1b[31m" * 40
WIDE = "日本語のファイル名" * 12
BUILD: list[Step] = [
    *lifetime_steps("web-1", 599, ["bash", "-c", "make -k " + "--jobs=2 " * 30], ppid=1),
    *lifetime_steps("web-1", 600, ["make", "-k"], code=2 << 8, ppid=599),
    *lifetime_steps("web-1", 601, ["sh", "-c", f"printf '{COLOURS}'; cat '{WIDE}'"], code=1 << 8, ppid=600),
    *lifetime_steps("web-1", 602, ["cc1", "-quiet", WIDE + ".c", "-o", "/tmp/x" * 30], code=9, ppid=601),
]


@pytest.mark.parametrize("columns", [80, 100])
@pytest.mark.parametrize("view", [[], ["--tree"]], ids=["table", "tree"])
def test_the_table_and_the_tree_fit_a_real_terminal(tmp_path: Path, columns: int, view: list[str]) -> None:
    # Issue 22: at 80 and 100 columns, query --failed printed 109-character
    # rows (each wrapped) and --tree cut argv at a fixed 100 characters.
    collected_store(tmp_path, BUILD)
    args = ["query", "--db", str(tmp_path / "web-1.db"), "--failed", *view]
    lines = _on_terminal(args, columns)
    assert len(lines) == 4, lines  # the header, or bash as the failures' context
    for line in lines:
        assert _columns(line) <= columns, (columns, line)
        assert "\x1b" not in line and "\\" not in _ESCAPES.sub("", line), line  # no escape cut in two
    rows = [line for line in lines if any(f"{pid} " in line for pid in (599, 600, 601, 602))]
    assert len(rows) == len(lines) - (0 if view else 1)
    for command in ("sh -c 'printf", "cc1 -quiet"):  # the long ones: cut, with the marker
        (row,) = (line for line in rows if command in line)
        assert row.endswith("...") or "...  (" in row, row
    # In a pipe, the same lines whole: every argument and every outcome.
    piped = run_cli(*args)
    assert piped.returncode == 0, piped.stderr
    text = piped.stdout.decode()
    assert "\\x1b[31m" * 40 in text and text.count(WIDE) == 2 and "/tmp/x" * 30 in text
    assert "..." not in text and "(killed by SIGKILL after 2.0ms)" in text if view else "killed by SIGKILL" in text
    if view:  # the context too (it was cut at 100 characters)
        assert "bash -c 'make -k " + "--jobs=2 " * 29 + "--jobs=2 '" in text


@pytest.mark.parametrize("view", [[], ["--tree"], ["--json"]], ids=["table", "tree", "json"])
def test_nothing_matched_is_said_on_stderr_and_stdout_stays_empty(tmp_path: Path, view: list[str]) -> None:
    # Issue 22: a query with no match printed the table's header alone.
    collected_store(tmp_path, BUILD)
    db = str(tmp_path / "web-1.db")
    none = run_cli("query", "--db", db, "--command", "^no-such-program$", *view)
    assert (none.returncode, none.stdout, none.stderr) == (0, b"", b"procevents: no recorded process matched\n")
    found = run_cli("query", "--db", db, "--command", "^make$", *view)
    assert (found.returncode, found.stderr) == (0, b"") and b"make" in found.stdout, found


def test_a_store_of_several_hosts_says_whose_each_line_is(tmp_path: Path) -> None:
    # Issue 22: nothing told web-1's processes from web-2's (the same pids on both).
    central = str(collected_store(tmp_path, two_hosts_build()))
    table = run_cli("query", "--db", central).stdout.decode().splitlines()
    assert table[0].split()[:3] == ["START", "HOST", "PID"] and len(table) == 5, table
    for line in table[1:]:
        host = line.split()[2]  # after the date and the time
        assert host in ("web-1", "web-2") and f"{host}." in line, line
    tree = run_cli("query", "--db", central, "--tree", "--failed").stdout.decode().splitlines()
    assert len(tree) == 4, tree
    for line in tree:
        host = line.split()[1]
        assert host in ("web-1", "web-2") and f"{host}." in line, line
    # One host: no column, as in a recorder's own file.
    for args in (["--db", central, "--host", "web-2"], ["--db", str(tmp_path / "web-2.db")]):
        one = run_cli("query", *args).stdout.decode().splitlines()
        assert "HOST" not in one[0] and len(one) == 3 and all("web-2." in line for line in one[1:]), one
    # --container on the central store too.
    inside = run_cli("query", "--db", central, "--container", CONTAINER_ID[:8]).stdout.decode().splitlines()
    assert len(inside) == 2 and inside[1].endswith("cc1 web-2.c"), inside

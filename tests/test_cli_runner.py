"""The main loop (cli/runner.py) through the live view: -n, -o, -q, the exit
summary, signals, an unwritable output.

Output is read line by line in threads; a command that should end by itself
gets TIMEOUT seconds.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import (
    COMMON_KEYS,
    TIMEOUT,
    Cli,
    exit_of,
    lost_rows_db,
    run_child,
    run_cli,
    summary,
)

import procevents


@pytest.fixture(scope="module", autouse=True)
def _usable() -> None:
    try:
        with procevents.listen():
            pass
    except procevents.ConnectorError as exc:
        pytest.skip(f"the proc connector is not usable here: {exc}")



def _feed_until_exit(c: Cli) -> int:
    """Make events until procevents ends by itself; its exit status."""
    deadline = time.monotonic() + TIMEOUT
    while c.proc.poll() is None and time.monotonic() < deadline:
        run_child(["true"])
        time.sleep(0.02)
    return c.wait()


def test_count_stops_after_n_events(cli: Callable[..., Cli]) -> None:
    c = cli("--json", "-n", "3")
    assert _feed_until_exit(c) == 0, c.err.text
    events = c.json()
    assert len([e for e in events if e["event"] != "lost"]) == 3, events
    m = summary(c.err.text)
    assert int(m[1]) == 3
    assert int(m[3]) == sum(e["count"] for e in events if e["event"] == "lost")


def test_output_file(cli: Callable[..., Cli], tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text('{"event":"earlier"}\n')
    c = cli("--json", "-n", "3", "-o", str(path))
    assert _feed_until_exit(c) == 0, c.err.text
    assert c.out.data == b""
    lines = path.read_bytes().splitlines()
    assert lines[0] == b'{"event":"earlier"}'  # appended, not truncated
    events = [json.loads(line) for line in lines[1:]]
    assert len([e for e in events if e["event"] != "lost"]) == 3
    assert all(key in e for e in events for key in COMMON_KEYS)


def test_quiet_has_no_notice_or_summary(cli: Callable[..., Cli]) -> None:
    c = cli("-q", "-n", "3")
    assert _feed_until_exit(c) == 0
    assert c.err.data == b""
    assert len(c.out.lines) >= 3


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_signal_ends_cleanly_with_summary(cli: Callable[..., Cli], sig: signal.Signals) -> None:
    c = cli("--json")
    c.wait_listening()
    pid = run_child(["sh", "-c", "exit 3"])
    c.wait_json(exit_of(pid))
    assert c.stop(sig) == 0, c.err.text
    err = c.err.text
    assert "Traceback" not in err
    m = summary(err)
    events = c.json()
    shown = len([e for e in events if e["event"] != "lost"])
    # The signal may land between counting an event and writing it.
    assert shown <= int(m[1]) <= shown + 1, (m[0], shown)
    assert shown >= 3  # at least that shell's fork, exec, exit
    assert int(m[3]) == sum(e["count"] for e in events if e["event"] == "lost")
    assert "exit" in (m[2] or "")


@pytest.mark.parametrize(
    "args",
    [
        ["-o", "/dev/full", "-D", "0.5"],
        ["--json", "-o", "/dev/full", "-D", "0.5"],
        ["trace", "-o", "/dev/full", "--", "true"],
    ],
    ids=["text", "json", "trace"],
)
def test_an_unwritable_output_is_one_line(args: list[str]) -> None:
    result = run_cli(*args)
    err = result.stderr.decode()
    assert result.returncode == 1, err
    assert err.count("error: writing output: No space left on device") == 1, err
    assert "Traceback" not in err


@pytest.mark.parametrize("command", ["watch", "trace", "query", "replay"])
@pytest.mark.parametrize("where", ["missing directory", "directory"])
def test_an_output_that_cannot_be_opened_is_a_runtime_error(tmp_path: Path, command: str, where: str) -> None:
    """Good options, a file system that says no: status 1 (runtime), not 2
    (usage), in one line; trace runs nothing."""
    output = tmp_path / "no such dir" / "out" if where == "missing directory" else tmp_path
    ran = tmp_path / "ran"
    args = {
        "watch": ["-o", str(output), "-D", "5"],
        "trace": ["trace", "-o", str(output), "--", "touch", str(ran)],
        "query": ["query", "--db", str(lost_rows_db(tmp_path / "a.db")), "-o", str(output)],
        "replay": ["replay", "--db", str(lost_rows_db(tmp_path / "a.db")), "-o", str(output)],
    }[command]
    result = run_cli(*args)
    err = result.stderr.decode()
    assert result.returncode == 1, err
    assert err.count("\n") == 1 and err.startswith(f"procevents: error: cannot open {output}: "), err
    assert "Traceback" not in err and not ran.exists()


def test_without_stats_sigusr1_prints_the_summary_and_goes_on(cli: Callable[..., Cli]) -> None:
    """SIGUSR1 means "statistics" everywhere: without -S, the summary so far;
    it never ends procevents (its default action would leave the kernel
    subscription behind)."""
    c = cli("-o", "/dev/null")
    c.wait_listening()
    os.kill(c.pid, signal.SIGUSR1)
    # "1 event received" when SIGUSR1 comes right after the first event
    received = re.compile(rb"procevents: \d+ events? received")
    c.err.wait_for(lambda line: received.match(line) is not None)
    assert c.proc.poll() is None, "SIGUSR1 ended procevents"
    assert c.stop(signal.SIGTERM) == 0
    assert len(received.findall(c.err.data)) == 2, c.err.text  # SIGUSR1, then the exit

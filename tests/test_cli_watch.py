"""The live view (cli/watch.py) against the real kernel: its JSON and text
lines, -e, -p, hostile names.

Every test filters the output by the pids it created, so other activity on
the machine does not matter.  Output is read line by line in threads; a
command that should end by itself gets TIMEOUT seconds.
"""

from __future__ import annotations

import base64
import calendar
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from helpers import (
    COMMON_KEYS,
    ISO,
    TIMEOUT,
    Cli,
    exit_of,
    run_child,
    spawn,
    summary,
)

import procevents

EVIL = b"\x1b[2Jevil\n"


NOT_UTF8 = b"bad\xff\xfename"


@pytest.fixture(scope="module", autouse=True)
def _usable() -> None:
    try:
        with procevents.listen():
            pass
    except procevents.ConnectorError as exc:
        pytest.skip(f"the proc connector is not usable here: {exc}")



def _text_is(event: str, pid: int) -> Callable[[bytes], bool]:
    def pred(line: bytes) -> bool:
        fields = line.split()
        return len(fields) >= 3 and fields[1] == event.encode() and fields[2] == str(pid).encode()

    return pred


def _involves(event: dict[str, Any], pids: set[int]) -> bool:
    keys = ("pid", "tgid", "child_pid", "child_tgid", "parent_pid", "parent_tgid", "process_pid", "process_tgid")
    return any(event.get(key) in pids for key in keys)


def test_json_fork_exec_exit_of_a_shell(cli: Callable[..., Cli]) -> None:
    c = cli("--json", "-D", "3")
    c.wait_listening()
    sh = spawn(["sh", "-c", "exit 3"])
    assert sh.wait(TIMEOUT) == 3
    assert c.wait() == 0, c.err.text
    events = c.json()
    for event in events:
        for key in COMMON_KEYS:
            assert key in event, event
        assert ISO.match(event["time"]), event["time"]
    mine = [e for e in events if _involves(e, {sh.pid})]
    forks = [e for e in mine if e["event"] == "fork" and e["child_tgid"] == sh.pid]
    execs = [e for e in mine if e["event"] == "exec" and e["tgid"] == sh.pid]
    exits = [e for e in mine if exit_of(sh.pid)(e)]
    assert len(forks) == 1, mine
    assert forks[0]["child_pid"] == sh.pid
    assert forks[0]["parent_tgid"] == os.getpid()
    assert len(execs) == 1, mine
    assert len(exits) == 1, mine
    exit_event = exits[0]
    assert exit_event["status"] == 3
    assert exit_event["signal"] is None
    assert exit_event["core_dumped"] is False
    assert exit_event["exit_code"] == 768
    assert exit_event["exit_signal"] == 17
    # Causal order on one socket: fork, then exec, then exit.
    assert events.index(forks[0]) < events.index(execs[0]) < events.index(exit_event)
    # The wall-clock conversion is sane (not a performance check).
    stamp = calendar.timegm(time.strptime(exit_event["time"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert abs(stamp - time.time()) < 300
    assert exit_event["timestamp_ns"] <= time.monotonic_ns()
    m = summary(c.err.text)
    assert int(m[1]) == sum(1 for e in events if e["event"] != "lost")


@pytest.mark.parametrize("extra", [[], ["--no-enrich"]], ids=["enriched", "no-enrich"])
def test_text_exit_status_and_sigkill(cli: Callable[..., Cli], extra: list[str]) -> None:
    c = cli(*extra)
    c.wait_listening()
    sh_pid = run_child(["sh", "-c", "exit 3"])
    victim = spawn(["sleep", "30"])
    victim.kill()
    victim.wait(TIMEOUT)
    exit_line = c.out.wait_for(_text_is("exit", sh_pid)).decode()
    killed_line = c.out.wait_for(_text_is("exit", victim.pid)).decode()
    assert c.stop() == 0, c.err.text
    assert "status 3" in exit_line, exit_line
    assert "killed by SIGKILL" in killed_line, killed_line


@pytest.mark.parametrize(
    "extra",
    [[], ["--no-enrich"], ["--no-enrich", "--no-kernel-filter"]],
    ids=["enriched", "kernel-filter", "userspace-filter"],
)
def test_event_type_filter(cli: Callable[..., Cli], extra: list[str]) -> None:
    c = cli("--json", "-e", "exec,exit", *extra)
    c.wait_listening()
    pid = run_child(["sh", "-c", "exit 5"])
    c.wait_json(exit_of(pid))
    assert c.stop() == 0, c.err.text
    events = c.json()
    assert {e["event"] for e in events} <= {"exec", "exit", "lost"}
    assert any(e["event"] == "exec" and e["tgid"] == pid for e in events)
    m = summary(c.err.text)
    assert "fork" not in (m[2] or "")


def test_pid_follows_descendants(cli: Callable[..., Cli]) -> None:
    # The root waits on stdin so nothing of interest happens before procevents
    # listens.  The inner `sh -c "exit 4"` is forked because a command follows
    # it: a grandchild of this test, child of the root.
    root = spawn(["sh", "-c", 'read _; sh -c "exit 4"; exit 0'], stdin=subprocess.PIPE)
    try:
        c = cli("--json", "-p", str(root.pid))
        c.wait_listening()
        strangers = {run_child(["true"]) for _ in range(3)}
        assert root.stdin is not None
        root.stdin.write(b"go\n")
        root.stdin.close()
        assert root.wait(TIMEOUT) == 0
    finally:
        if root.poll() is None:
            root.kill()
            root.wait()
    c.wait_json(exit_of(root.pid))
    # -p ends by itself once the tree has exited: waited for, not interrupted
    # (a SIGINT could arrive while it already shuts down).
    assert c.wait() == 0, c.err.text
    events = [e for e in c.json() if e["event"] != "lost"]
    followed = {root.pid}
    for e in events:
        if e["event"] == "fork" and e["parent_tgid"] in followed:
            followed.add(e["child_tgid"])
    grandchildren = [
        e for e in events if e["event"] == "exit" and e["status"] == 4 and e["tgid"] != root.pid
    ]
    assert grandchildren, events
    assert grandchildren[0]["tgid"] in followed
    assert any(e["event"] == "fork" and e["child_tgid"] == grandchildren[0]["tgid"] for e in events)
    assert any(exit_of(root.pid)(e) and e["status"] == 0 for e in events)
    for e in events:
        assert e["tgid"] in followed, f"event of an unrelated process: {e}"
        assert not _involves(e, strangers), f"event of a stranger: {e}"


_RENAMER = """
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
for arg in sys.argv[1:]:
    if libc.prctl(15, bytes.fromhex(arg), 0, 0, 0) != 0:  # PR_SET_NAME
        raise OSError(ctypes.get_errno(), "prctl")
"""


def _rename_twice() -> int:
    return run_child([sys.executable, "-c", _RENAMER, EVIL.hex(), NOT_UTF8.hex()])


@pytest.mark.parametrize("extra", [[], ["--no-enrich"]], ids=["enriched", "no-enrich"])
def test_text_escapes_hostile_comm(cli: Callable[..., Cli], extra: list[str]) -> None:
    c = cli(*extra)
    c.wait_listening()
    pid = _rename_twice()
    c.out.wait_for(_text_is("exit", pid))
    assert c.stop() == 0, c.err.text
    assert b"\x1b" not in c.out.data
    comm_lines = [line for line in c.out.lines if _text_is("comm", pid)(line)]
    assert len(comm_lines) == 2, comm_lines
    evil, odd = comm_lines
    # One line each: the newline inside the name is shown as \n, not emitted.
    assert evil.endswith(b"\n") and evil.count(b"\n") == 1
    assert b"comm \\x1b[2Jevil\\n" in evil, evil
    assert b"comm bad\\xff\\xfename" in odd, odd
    for line in c.out.lines:
        line.decode("utf-8")  # every line is valid UTF-8
        assert not any(b < 0x20 for b in line[:-1]), line


@pytest.mark.parametrize("extra", [[], ["--no-enrich"]], ids=["enriched", "no-enrich"])
def test_json_comm_round_trips(cli: Callable[..., Cli], extra: list[str]) -> None:
    c = cli("--json", *extra)
    c.wait_listening()
    pid = _rename_twice()
    c.wait_json(exit_of(pid))
    assert c.stop() == 0, c.err.text
    assert b"\x1b" not in c.out.data
    events = c.json()
    comms = [e for e in events if e["event"] == "comm" and e["tgid"] == pid]
    assert len(comms) == 2, comms
    evil, odd = comms
    assert evil["comm"] == EVIL.decode()
    assert "comm_b64" not in evil
    assert odd["comm"] == NOT_UTF8.decode("utf-8", "replace")
    assert base64.b64decode(odd["comm_b64"]) == NOT_UTF8
    exit_event = next(e for e in events if exit_of(pid)(e))
    if "comm" in exit_event:  # enriched: the name it had when it died
        assert exit_event["comm"] == NOT_UTF8.decode("utf-8", "replace")
        assert base64.b64decode(exit_event["comm_b64"]) == NOT_UTF8

"""Enrichment end to end, against the real kernel.

procevents runs as a subprocess (`python -m procevents`, from src/) writing to a file while
the tests start real processes; assertions are made on the lines about the
processes the test itself started (the machine has other activity).  Some
tests freeze procevents with SIGSTOP so that processes exit, or pids are
reused, before it can read /proc.  Needs root on Linux with the proc
connector.  No wall-clock performance assertions: timeouts are generous.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import CLI, NOBODY
from helpers import WATCH_TIMEOUT, JsonWatcher, Watcher, lifetimes, nonce, one, reaper, watch

from procevents.procfs import GONE, ProcessHandle, ProcFS
from procevents.snapshot import read_exec_snapshots

NS_LAST_PID = "/proc/sys/kernel/ns_last_pid"
MAX_BATCH_EVENTS = 4096  # procevents.connector.MAX_BATCH, restated to size the backlog test


def _why_not() -> str | None:
    if not sys.platform.startswith("linux"):
        return "the proc connector is Linux only"
    if os.geteuid() != 0:
        return "needs root (other users' processes, ns_last_pid, SIGSTOP of procevents)"
    return None


pytestmark = pytest.mark.skipif(_why_not() is not None, reason=str(_why_not()))
__all__ = ["reaper", "watch"]  # fixtures, imported to be used here


# -- selecting events from the full stream ------------------------------------------------


def the_life(events: list[dict[str, Any]], pid: int, parent: int | None = None) -> list[dict[str, Any]]:
    lives = lifetimes(events, pid, parent)
    assert len(lives) == 1, f"expected one process with pid {pid} (parent {parent}), got {lives}"
    return lives[0]


def tree_events(events: list[dict[str, Any]], root: int, parent: int) -> list[dict[str, Any]]:
    """Events of ``root`` (forked by ``parent``) and of its descendants, in order."""
    alive: set[int] = set()
    started = False
    out = []
    for ev in events:
        kind = ev["event"]
        if kind == "lost":
            continue
        if kind == "fork":
            child = ev["child_tgid"]
            if not started and child == root and ev["parent_tgid"] == parent and ev["child_pid"] == root:
                started = True
                alive.add(root)
                out.append(ev)
            elif ev["child_pid"] == child and ev["parent_tgid"] in alive:
                alive.add(child)
                out.append(ev)
            elif ev["child_pid"] != child and child in alive:
                out.append(ev)
            continue
        if ev["tgid"] in alive:
            out.append(ev)
            if kind == "exit" and ev["pid"] == ev["tgid"]:
                alive.discard(ev["tgid"])
    return out


def json_argv(raw: list[bytes]) -> list[str]:
    return [arg.decode("utf-8", "replace") for arg in raw]


def assert_argv(ev: dict[str, Any], raw: list[bytes]) -> None:
    """``cmdline`` (and ``cmdline_b64`` when needed) describe exactly ``raw``."""
    assert ev["cmdline"] == json_argv(raw), ev
    lossy = any(json_argv([arg])[0].encode() != arg for arg in raw)
    if lossy:
        assert base64.b64decode(ev["cmdline_b64"]) == b"\0".join(raw), ev
    else:
        assert "cmdline_b64" not in ev, ev


def argv_is_own_or_null(ev: dict[str, Any], raw: list[bytes]) -> bool:
    return ev["cmdline"] is None or ev["cmdline"] == json_argv(raw)


# -- pid reuse through ns_last_pid --------------------------------------------------------------


def spawn_with_pid(pid: int, argv: list[str], executable: str) -> subprocess.Popen[bytes] | None:
    """Start a process that gets ``pid`` (None if another fork on the machine took it first)."""
    fd = os.open(NS_LAST_PID, os.O_WRONLY)
    try:
        os.write(fd, str(pid - 1).encode())
    finally:
        os.close(fd)
    p = subprocess.Popen(argv, executable=executable)
    if p.pid == pid:
        return p
    p.kill()
    p.wait()
    return None


def uid_event_burst(pairs: int) -> None:
    """Make the kernel send 2 * ``pairs`` UID events without using up pids:
    a forked child flips its effective uid back and forth."""
    child = os.fork()
    if child == 0:  # pragma: no cover - child
        code = 0
        try:
            for _ in range(pairs):
                os.seteuid(NOBODY)
                os.seteuid(0)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


# =============================================================================================
# argv fidelity
# =============================================================================================

ODD_ARGS = [b"arg with space", b'q"uote', b"it's", b"new\nline", b"\xff\xfe", b"\x1b[31mred\x1b[0m", b"tab\there",
            "caf\u00e9".encode(), b""]


def odd_argv(tag: str) -> list[bytes]:
    # $0 and $1.. of the shell are the odd arguments; the shell stays alive
    # (sleep is not its last command, so it forks) long enough to be read.
    return [b"/bin/sh", b"-c", f"sleep 0.3; : {tag}".encode(), *ODD_ARGS]


def test_odd_argv_round_trips_in_json(watch: Callable[..., Any], reaper: list[Any]) -> None:
    w: JsonWatcher = watch(as_json=True)
    argv = odd_argv(nonce())
    p = subprocess.Popen(argv)
    reaper.append(p)
    assert p.wait(WATCH_TIMEOUT) == 0
    w.wait_exit(p.pid)
    life = the_life(w.events, p.pid, os.getpid())
    exec_ev = one(life, "exec")
    assert_argv(exec_ev, argv)
    assert exec_ev["exe"] == os.path.realpath("/bin/sh")
    assert exec_ev["comm"] == "sh"
    assert exec_ev["user"] == "root" and exec_ev["uid"] == 0
    assert exec_ev["ppid"] == os.getpid()
    exit_ev = one(life, "exit")
    assert_argv(exit_ev, argv)
    assert exit_ev["comm"] == "sh"
    # the shell's child: sleep, with a plain argv and no _b64
    sleeps = [ev for ev in tree_events(w.events, p.pid, os.getpid()) if ev["event"] == "exec" and ev["tgid"] != p.pid]
    assert [ev["cmdline"] for ev in sleeps] == [["sleep", "0.3"]]
    assert "cmdline_b64" not in sleeps[0]
    assert sleeps[0]["ppid"] == p.pid


def test_json_lines_are_valid_utf8(watch: Callable[..., Any], reaper: list[Any]) -> None:
    w: JsonWatcher = watch(as_json=True)
    p = subprocess.Popen(odd_argv(nonce()))
    reaper.append(p)
    p.wait(WATCH_TIMEOUT)
    w.wait_exit(p.pid)
    w.stop()
    for line in w.lines:
        if line:
            line.decode("utf-8")  # strict
            assert b"\n" not in line


TIME_PREFIX = re.compile(rb"^\d\d:\d\d:\d\d\.\d{3} ")


def test_odd_argv_is_escaped_in_text(watch: Callable[..., Any], reaper: list[Any]) -> None:
    w: Watcher = watch()
    argv = odd_argv(nonce())
    p = subprocess.Popen(argv)
    reaper.append(p)
    p.wait(WATCH_TIMEOUT)

    def line_of(kind: str) -> list[bytes]:
        return [ln for ln in w.lines if ln.split()[1:3] == [kind.encode(), str(p.pid).encode()]]

    w.wait_for(lambda: bool(line_of("exit")), f"text exit line of {p.pid}")
    w.stop()
    out = b"\n".join(w.lines)
    assert b"\x1b" not in out, "a raw ESC reached the terminal output"
    for ln in w.lines:
        if ln:
            # a raw newline inside an argv would start a line without the time
            assert TIME_PREFIX.match(ln), ln
    (exec_line,) = line_of("exec")
    text = exec_line.decode("utf-8")
    for escaped in ("new\\nline", "\\xff\\xfe", "\\x1b[31mred\\x1b[0m", "tab\\there", "caf\u00e9", "arg with space"):
        assert escaped in text, (escaped, text)
    assert "user root" in text
    (exit_line,) = line_of("exit")
    assert "new\\nline" in exit_line.decode("utf-8")


# =============================================================================================
# processes that are gone, pids that are reused
# =============================================================================================


def test_exec_of_a_process_gone_before_the_read(watch: Callable[..., Any], reaper: list[Any]) -> None:
    """Async capture: the argv is lost, and the process is never named after
    what it was before its exec (our own name)."""
    w: JsonWatcher = watch("--capture", "async", as_json=True)
    argv = [f"gone-{nonce()}", "x"]
    w.pause()
    try:
        p = subprocess.Popen(argv, executable="/bin/true")
        reaper.append(p)
        assert p.wait(WATCH_TIMEOUT) == 0  # exited and reaped: /proc/PID is gone
    finally:
        w.resume()
    w.wait_exit(p.pid)
    life = the_life(w.events, p.pid, os.getpid())
    exec_ev = one(life, "exec")
    assert exec_ev["cmdline"] is None, exec_ev
    assert exec_ev.get("missing") in ("gone", "superseded"), exec_ev
    # unknown, never the name it had before the exec (ours, inherited at fork)
    assert exec_ev["comm"] is None, exec_ev
    exit_ev = one(life, "exit")
    assert argv_is_own_or_null(exit_ev, [a.encode() for a in argv]), exit_ev
    assert exit_ev["cmdline"] is None, "the exit repeats an argv that was never read"
    # taskstats' record of the task at its exit names it truly (issue 13): the
    # kernel's comm of /bin/true, never ours
    assert exit_ev["comm"] == "true", exit_ev
    assert exit_ev["status"] == 0


def test_sync_capture_reads_the_argv_while_the_main_process_is_stopped(
    watch: Callable[..., Any], reaper: list[Any]
) -> None:
    """The per-CPU readers read the exec while it is held: even with the main
    process frozen until the program has exited and been reaped, its argv,
    name, exe and cwd are there, joined to the right exec."""
    w: JsonWatcher = watch(as_json=True)
    assert "argv capture: sync, " in w.stderr() and "realtime" in w.stderr(), w.stderr()
    argv = [f"held-{nonce()}", "x y"]
    w.pause()
    try:
        p = subprocess.Popen(argv, executable="/bin/true", cwd="/tmp")
        reaper.append(p)
        assert p.wait(WATCH_TIMEOUT) == 0
    finally:
        w.resume()
    w.wait_exit(p.pid)
    life = the_life(w.events, p.pid, os.getpid())
    exec_ev = one(life, "exec")
    assert exec_ev["cmdline"] == argv, exec_ev
    assert exec_ev["comm"] == "true" and exec_ev["exe"] == os.path.realpath("/bin/true"), exec_ev
    assert exec_ev["cwd"] == "/tmp"
    exit_ev = one(life, "exit")
    assert exit_ev["cmdline"] == argv and exit_ev["comm"] == "true", exit_ev


def _pid_reuse(w: JsonWatcher, reaper: list[Any], backlog_pairs: int = 0) -> tuple[int, list[bytes], list[bytes]]:
    """With procevents stopped: A runs and exits; B is started with A's pid
    and keeps running.  Returns (pid, A's argv, B's argv) after B's exit was seen."""
    if not os.path.exists(NS_LAST_PID):
        pytest.skip(f"{NS_LAST_PID} is missing (CONFIG_CHECKPOINT_RESTORE off?)")
    tag = nonce()
    a_argv = [f"reuse-A-{tag}", "0"]
    b_argv = [f"reuse-B-{tag}", "60"]
    b = None
    for _attempt in range(20):
        w.pause()
        try:
            a = subprocess.Popen(a_argv, executable="/bin/sleep")
            reaper.append(a)
            a.wait(WATCH_TIMEOUT)
            pid = a.pid
            if backlog_pairs:
                uid_event_burst(backlog_pairs)
            b = spawn_with_pid(pid, b_argv, "/bin/sleep")
        finally:
            w.resume()
        if b is not None:
            reaper.append(b)
            break
        time.sleep(0.2)  # let procevents drain before trying again
    else:
        pytest.skip("could not get a pid reused through ns_last_pid (too many forks on the machine)")
    def b_exec_seen() -> bool:
        lives = lifetimes(w.events, pid, os.getpid())
        return len(lives) >= 2 and any(ev["event"] == "exec" for ev in lives[-1])

    # B lives until procevents has handled its exec, however long the
    # backlog takes on a loaded machine; then it is ended.
    w.wait_for(b_exec_seen, f"exec of B (pid {pid}, reused)")
    assert b is not None
    b.terminate()

    def b_exited() -> bool:
        lives = lifetimes(w.events, pid, os.getpid())
        return len(lives) >= 2 and lives[-1][-1]["event"] == "exit" and lives[-1][-1]["pid"] == pid

    w.wait_for(b_exited, f"fork, exec and exit of B (pid {pid}, reused)")
    b.wait(WATCH_TIMEOUT)
    return pid, [a.encode() for a in a_argv], [a.encode() for a in b_argv]


def _check_reuse(w: JsonWatcher, pid: int, a_argv: list[bytes], b_argv: list[bytes]) -> None:
    lives = lifetimes(w.events, pid, os.getpid())
    assert len(lives) >= 2, lives
    life_a, life_b = lives[-2], lives[-1]
    assert [ev["event"] for ev in life_a] == ["fork", "exec", "exit"], life_a
    assert [ev["event"] for ev in life_b][:2] == ["fork", "exec"], life_b
    for ev in life_a[1:]:
        assert argv_is_own_or_null(ev, a_argv), f"A's {ev['event']} carries another process's argv: {ev}"
    for ev in life_b[1:]:
        if ev["event"] in ("exec", "exit"):
            assert argv_is_own_or_null(ev, b_argv), f"B's {ev['event']} carries another process's argv: {ev}"
    # B was alive until its exec was handled: its argv was readable
    assert one(life_b, "exec")["cmdline"] == json_argv(b_argv), str(one(life_b, "exec"))
    assert one(life_b, "exit")["signal"] == 15


@pytest.mark.parametrize("capture", ["sync", "async"])
def test_pid_reuse_never_mixes_argv(watch: Callable[..., Any], reaper: list[Any], capture: str) -> None:
    w: JsonWatcher = watch("--capture", capture, as_json=True)
    pid, a_argv, b_argv = _pid_reuse(w, reaper)
    _check_reuse(w, pid, a_argv, b_argv)


def test_pid_reuse_behind_a_backlog_never_mixes_argv(watch: Callable[..., Any], reaper: list[Any]) -> None:
    """Same, with more than two batches (MAX_BATCH events each) queued between
    A's exec and B's fork: validate_snapshots only sees the batch and what
    peek() drains, so the fork that proves the reuse must still be found."""
    w: JsonWatcher = watch("--capture", "async", as_json=True)
    pid, a_argv, b_argv = _pid_reuse(w, reaper, backlog_pairs=3 * MAX_BATCH_EVENTS)
    lost = [ev for ev in w.events if ev["event"] == "lost"]
    assert not lost, f"events lost, the test is void: {lost}"
    _check_reuse(w, pid, a_argv, b_argv)


def test_handle_pins_the_process_across_pid_reuse(reaper: list[Any]) -> None:
    if not os.path.exists(NS_LAST_PID):
        pytest.skip(f"{NS_LAST_PID} is missing")
    procfs = ProcFS()
    for _attempt in range(20):
        a = subprocess.Popen(["pin-A", "5"], executable="/bin/sleep")
        reaper.append(a)
        handle = procfs.open_process(a.pid)
        assert isinstance(handle, ProcessHandle)
        with handle:
            # Popen returns when exec closes its CLOEXEC pipe, a moment before
            # the kernel sets up the new argv (cmdline reads empty meanwhile)
            deadline = time.monotonic() + WATCH_TIMEOUT
            while handle.cmdline() != ["pin-A", "5"]:
                assert time.monotonic() < deadline, handle.cmdline()
                time.sleep(0.001)
            a.kill()
            a.wait()
            assert handle.cmdline() is GONE
            b = spawn_with_pid(a.pid, ["pin-B", "5"], "/bin/sleep")
            if b is None:
                continue
            reaper.append(b)
            while procfs.cmdline(b.pid) != ["pin-B", "5"]:
                assert time.monotonic() < deadline, procfs.cmdline(b.pid)
                time.sleep(0.001)
            assert handle.cmdline() is GONE
            assert handle.comm() is GONE
            assert handle.stat() is GONE
            return
    pytest.skip("could not get a pid reused through ns_last_pid")


def test_exec_snapshots_of_real_processes(reaper: list[Any]) -> None:
    argv = odd_argv(nonce())
    p = subprocess.Popen(argv)
    reaper.append(p)
    gone = subprocess.Popen(["/bin/true"])
    gone.wait()
    deadline = time.monotonic() + WATCH_TIMEOUT
    procfs = ProcFS()
    while True:  # wait until the shell has exec'd
        snaps = read_exec_snapshots(procfs, [p.pid, gone.pid])
        if snaps[0].argv is not None and snaps[0].argv[:1] == ["/bin/sh"]:
            break
        assert time.monotonic() < deadline
        time.sleep(0.01)
    live, dead = snaps
    assert [os.fsencode(a) for a in live.argv or []] == argv
    assert live.comm == "sh"
    assert live.exe == os.path.realpath("/bin/sh")
    assert live.cwd == os.getcwd()
    assert live.owner == (0, 0)
    assert live.start_ns is not None
    assert live.missing is None
    assert (dead.argv, dead.missing) == (None, "gone")


# =============================================================================================
# lifetimes
# =============================================================================================


#: How far a duration may be off: a start time is in clock ticks (/proc/PID/stat), then moved to the events' clock.
SLACK = 0.05


def test_sleep_lifetime(watch: Callable[..., Any], reaper: list[Any]) -> None:
    w: JsonWatcher = watch(as_json=True)
    before = time.monotonic()
    p = subprocess.Popen(["/bin/sleep", "0.3"])
    reaper.append(p)
    p.wait(WATCH_TIMEOUT)
    reaped = time.monotonic()
    w.wait_exit(p.pid)
    exit_ev = one(the_life(w.events, p.pid, os.getpid()), "exit")
    # At least the sleep, at most from before its fork to after it was reaped, however loaded the machine.
    assert 0.3 - SLACK <= exit_ev["duration"] <= reaped - before + SLACK, exit_ev
    assert exit_ev["cmdline"] == ["/bin/sleep", "0.3"]
    assert exit_ev["comm"] == "sleep"
    assert exit_ev["ppid"] == os.getpid()
    assert exit_ev["uid"] == 0 and exit_ev["user"] == "root"


def test_lifetime_of_a_process_running_before_procevents(watch: Callable[..., Any], reaper: list[Any]) -> None:
    argv = ["/bin/sleep", "600"]
    before = time.monotonic()
    p = subprocess.Popen(argv)
    reaper.append(p)
    started = time.monotonic()
    deadline = started + WATCH_TIMEOUT
    while ProcFS().cmdline(p.pid) != argv:  # exec'd before procevents starts
        assert time.monotonic() < deadline, ProcFS().cmdline(p.pid)
        time.sleep(0.01)
    # Not a wait for anything: the part of its life that a duration counted
    # from when procevents started would leave out.
    time.sleep(0.3)
    w: JsonWatcher = watch(as_json=True)
    ended = time.monotonic()
    p.terminate()  # it ends once procevents listens, however long that took
    p.wait(WATCH_TIMEOUT)
    reaped = time.monotonic()
    w.wait_exit(p.pid, parent=None)
    (exit_ev,) = [ev for ev in w.of(p.pid, "exit") if ev["pid"] == p.pid]
    # start time from /proc/PID/stat (clock ticks), not when procevents started
    assert ended - started - SLACK <= exit_ev["duration"] <= reaped - before + SLACK, exit_ev
    assert exit_ev["cmdline"] == argv


# =============================================================================================
# trace
# =============================================================================================


def trace(*args: str, timeout: float = WATCH_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "trace", *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


#: A tree line: its time, the indentation, the pid, the rest (render/tree.py).
TREE_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} ( *)(\d+) (.*)$")


def test_trace_draws_the_tree() -> None:
    done = trace("--", "sh", "-c", "sh -c true")
    assert done.returncode == 0, done.stderr
    lines = [TREE_LINE.match(ln) for ln in done.stdout.splitlines()]
    assert all(lines), done.stdout
    execs = [(len(m[1]), int(m[2]), m[3]) for m in lines if m and not m[3].startswith("exit ")]
    assert len(execs) == 2, done.stdout
    assert execs[0][0] == 0 and execs[0][2] == "sh -c 'sh -c true'", done.stdout
    # the inner shell lives for about a millisecond: on a busy machine it may
    # be gone before its argv is read, and then it is drawn by its name
    assert execs[1][0] == 2 and execs[1][2] in ("sh -c true", "[sh]"), done.stdout
    (outer_pid, inner_pid) = (execs[0][1], execs[1][1])
    assert outer_pid != inner_pid
    exits = {int(m[2]): (len(m[1]), m[3]) for m in lines if m and m[3].startswith("exit ")}
    assert exits[outer_pid][0] == 0 and exits[outer_pid][1].startswith("exit status 0")
    assert exits[inner_pid][0] == 2 and exits[inner_pid][1].startswith("exit status 0")


def test_trace_exit_status_and_summary() -> None:
    done = trace("--", "sh", "-c", 'ls / >/dev/null; sh -c "exit 3"; exit 5')
    assert done.returncode == 5, done.stderr
    summary = done.stderr
    match = re.search(r"(\d+) processes started, (\d+) failed, (\d+) killed by a signal", summary)
    assert match, summary
    assert (int(match[1]), int(match[2]), int(match[3])) == (3, 2, 0), summary
    assert "status 3" in summary and "status 5" in summary  # the slowest list
    assert "ls /" in done.stdout
    assert "exit status 3" in done.stdout and "exit status 5" in done.stdout


@pytest.mark.parametrize(
    ("script", "status"), [("exit 0", 0), ("exit 3", 3), ("kill -9 $$", 128 + 9), ("kill -TERM $$", 128 + 15)]
)
def test_trace_passes_the_exit_status_through(script: str, status: int) -> None:
    done = trace("-q", "--", "sh", "-c", script)
    assert done.returncode == status, (done.stdout, done.stderr)
    if status > 128:
        assert f"killed by {signal.Signals(status - 128).name}" in done.stdout


def test_trace_json_is_only_the_traced_tree() -> None:
    p = subprocess.Popen([*CLI, "trace", "--json", "--", "sh", "-c", "sh -c true; ls / >/dev/null"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    out, err = p.communicate(timeout=WATCH_TIMEOUT)
    assert p.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert events, err
    first = events[0]
    assert first["event"] == "fork" and first["parent_tgid"] == p.pid, first
    root = first["child_tgid"]
    assert tree_events(events, root, p.pid) == events, "events outside the traced tree"
    execs = [ev for ev in events if ev["event"] == "exec"]
    expected = [["sh", "-c", "sh -c true; ls / >/dev/null"], ["sh", "-c", "true"], ["ls", "/"]]
    assert len(execs) == 3, execs
    assert execs[0]["cmdline"] == expected[0]
    for ev, argv in zip(execs, expected, strict=True):
        # short-lived ones may be gone before the read: null, never a stranger's
        assert ev["cmdline"] == argv or (ev["cmdline"] is None and ev["missing"] == "gone"), ev
        assert ev["comm"] in (argv[0], "sh"), ev
    exits = [ev for ev in events if ev["event"] == "exit" and ev["pid"] == ev["tgid"]]
    assert len(exits) == 3
    assert exits[-1]["tgid"] == root
    assert all(ev["status"] == 0 for ev in exits)


def test_trace_missing_command() -> None:
    missing = f"/nonexistent/cmd-{nonce()}"
    done = trace("--", missing, "arg")
    assert done.returncode == 127
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert missing in lines[0] and "procevents" in lines[0]


def test_trace_lifetime() -> None:
    p = subprocess.Popen([*CLI, "trace", "--json", "--", "sleep", "0.3"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    out, err = p.communicate(timeout=WATCH_TIMEOUT)
    assert p.returncode == 0, err
    (exit_ev,) = [ev for ev in map(json.loads, out.splitlines()) if ev["event"] == "exit"]
    assert 0.25 <= exit_ev["duration"] <= 1.5, exit_ev
    assert exit_ev["cmdline"] == ["sleep", "0.3"]


# =============================================================================================
# filters and output modes
# =============================================================================================


def test_user_filter(watch: Callable[..., Any], reaper: list[Any]) -> None:
    w: JsonWatcher = watch("-u", "nobody", as_json=True)
    tag = nonce()
    root_one = subprocess.Popen([f"root-{tag}", "0.2"], executable="/bin/sleep")
    reaper.append(root_one)
    if shutil.which("setpriv"):
        p = subprocess.Popen(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                              "sleep", "0.2"])
    else:
        p = subprocess.Popen(["sleep", "0.2"], user=NOBODY, group=NOBODY, extra_groups=[])
    reaper.append(p)
    p.wait(WATCH_TIMEOUT)
    root_one.wait(WATCH_TIMEOUT)
    w.wait_exit(p.pid, parent=None)  # the fork, as root, is not shown
    mine = w.of(p.pid)
    exec_ev = [ev for ev in mine if ev["event"] == "exec" and ev["cmdline"] == ["sleep", "0.2"]]
    assert len(exec_ev) == 1, mine
    assert exec_ev[0]["user"] == "nobody" and exec_ev[0]["uid"] == NOBODY
    assert one(mine, "exit")["uid"] == NOBODY
    assert not w.of(root_one.pid), "a root process passed -u nobody"
    assert not [ev for ev in mine if ev["event"] == "fork"], "the fork happened as root"
    nobody_by_event = {ev["tgid"] for ev in w.events if ev["event"] == "uid" and NOBODY in (ev["ruid"], ev["euid"])}
    for ev in w.events:
        if ev["event"] in ("exec", "exit"):
            assert ev["uid"] == NOBODY or ev["tgid"] in nobody_by_event, ev
        elif ev["event"] == "uid":
            assert NOBODY in (ev["ruid"], ev["euid"]), ev


def test_command_filter(watch: Callable[..., Any], reaper: list[Any]) -> None:
    w: JsonWatcher = watch("-c", "^sleep$", as_json=True)
    p = subprocess.Popen(["sh", "-c", f"sleep 0.2; : {nonce()}"])
    reaper.append(p)
    p.wait(WATCH_TIMEOUT)

    def mine() -> list[dict[str, Any]]:
        return [ev for ev in w.events if ev.get("ppid") == p.pid or ev.get("parent_tgid") == p.pid]

    w.wait_for(lambda: any(ev["event"] == "exit" for ev in mine()), "exit of the sleep child")
    assert not w.of(p.pid), "the shell's own events passed -c ^sleep$"
    execs = [ev for ev in mine() if ev["event"] == "exec"]
    assert len(execs) == 1, mine()
    assert execs[0]["cmdline"] == ["sleep", "0.2"]
    assert execs[0]["user"] == "root" and execs[0]["comm"] == "sleep"
    pattern = re.compile("^sleep$")
    for ev in w.events:
        if ev["event"] == "lost":
            continue
        names = [ev.get("comm"), ev.get("exe"), (ev.get("cmdline") or [None])[0]]
        assert any(n is not None and pattern.search(n) for n in names), ev
        if ev["event"] == "exec":
            assert ev["cmdline"] is not None or ev.get("missing"), ev
            assert "user" in ev


def test_pid_filter_on_an_already_running_tree(watch: Callable[..., Any], reaper: list[Any]) -> None:
    # root sh -> child sh (already running, blocked on read) -> grandchild sh exits 4
    script = 'sh -c "read gate; sleep 0.2; sh -c \\"exit 4\\"; exit 0"; exit 0'
    root = subprocess.Popen(["sh", "-c", script], stdin=subprocess.PIPE)
    reaper.append(root)
    children = Path(f"/proc/{root.pid}/task/{root.pid}/children")
    deadline = time.monotonic() + WATCH_TIMEOUT
    while not children.read_text().split():
        assert time.monotonic() < deadline, "the child shell never started"
        time.sleep(0.01)
    child = int(children.read_text().split()[0])
    w: JsonWatcher = watch("-p", str(root.pid), as_json=True)
    assert root.stdin is not None
    root.stdin.write(b"go\n")
    root.stdin.close()
    assert root.wait(WATCH_TIMEOUT) == 0
    w.wait_exit(root.pid, parent=None)
    w.stop()
    tgids = {root.pid, child}
    for ev in w.events:
        if ev["event"] == "lost":
            continue
        if ev["event"] == "fork":
            assert ev["parent_tgid"] in tgids, ev
            tgids.add(ev["child_tgid"])
        else:
            assert ev["tgid"] in tgids, f"an event outside the -p tree: {ev}"
    statuses = {ev["tgid"]: ev["status"] for ev in w.events if ev["event"] == "exit" and ev["pid"] == ev["tgid"]}
    grandchildren = [pid for pid in statuses if pid not in (root.pid, child)]
    assert [statuses[pid] for pid in grandchildren].count(4) == 1, statuses
    assert statuses[child] == 0 and statuses[root.pid] == 0
    four = next(pid for pid in grandchildren if statuses[pid] == 4)
    (four_exec,) = w.of(four, "exec")
    assert four_exec["cmdline"] in (["sh", "-c", "exit 4"], None), four_exec  # None: gone before the read
    assert four_exec["comm"] == "sh"
    assert four_exec["ppid"] == child


def test_no_enrich_json_has_no_enrichment(watch: Callable[..., Any], reaper: list[Any]) -> None:
    w: JsonWatcher = watch("--no-enrich", as_json=True)
    p = subprocess.Popen([f"plain-{nonce()}", "0.1"], executable="/bin/sleep")
    reaper.append(p)
    p.wait(WATCH_TIMEOUT)
    w.wait_exit(p.pid)
    w.stop()
    life = the_life(w.events, p.pid, os.getpid())
    assert [ev["event"] for ev in life] == ["fork", "exec", "exit"]
    for ev in w.events:
        for key in ("cmdline", "cmdline_b64", "exe", "cwd", "user", "uid", "duration", "ppid"):
            assert key not in ev, ev
        if ev["event"] != "comm":
            assert "comm" not in ev, ev


@pytest.mark.parametrize("option", ["-u", "-c", "--tree"])
def test_no_enrich_refuses_options_that_need_it(option: str) -> None:
    extra = {"-u": ["root"], "-c": ["x"], "--tree": []}[option]
    done = subprocess.run([*CLI, "--no-enrich", option, *extra, "-D", "1"], capture_output=True, text=True,
                          timeout=WATCH_TIMEOUT)
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1, done.stderr


def test_tree_output_indents_execs(watch: Callable[..., Any], reaper: list[Any]) -> None:
    w: Watcher = watch("--tree")
    inner_tag, outer_tag = nonce(), nonce()
    p = subprocess.Popen(["sh", "-c", f'sh -c "sleep 0.2; : {inner_tag}"; : {outer_tag}'])
    reaper.append(p)
    p.wait(WATCH_TIMEOUT)

    def parsed() -> list[tuple[int, int, str]]:
        out = []
        for ln in w.lines:
            m = TREE_LINE.match(ln.decode("utf-8", "replace"))
            if m:
                out.append((len(m[1]), int(m[2]), m[3]))
        return out

    def outer_exit() -> bool:
        return any(pid == p.pid and text.startswith("exit ") for _, pid, text in parsed())

    w.wait_for(outer_exit, f"tree exit line of {p.pid}")
    lines = parsed()
    (outer,) = [ln for ln in lines if ln[1] == p.pid and not ln[2].startswith("exit ")]
    assert outer_tag in outer[2] and outer[2].startswith("sh -c ")
    (inner,) = [ln for ln in lines if inner_tag in ln[2] and ln[1] != p.pid]
    assert inner[2] == f"sh -c 'sleep 0.2; : {inner_tag}'"
    assert inner[0] == outer[0] + 2, lines
    sleeps = [ln for ln in lines if ln[2] == "sleep 0.2" and ln[0] == inner[0] + 2]
    assert sleeps, "the grandchild sleep is not drawn under the inner shell"
    (inner_exit,) = [ln for ln in lines if ln[1] == inner[1] and ln[2].startswith("exit ")]
    assert inner_exit[0] == inner[0]
    assert inner_exit[2].startswith("exit status 0 after ")


"""Synchronous exec capture: the join of frames to execs, then the per-CPU
readers against the real kernel (argv of very short-lived processes, trace,
threads, fallbacks, IGNORE per socket).  The frames themselves:
test_frames.py; the Python API: test_records.py.

Kernel tests need root.  No wall-clock assertions: shares and counts.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import CLI, NOBODY
from helpers import (
    IGNORE,
    LISTEN,
    SH,
    STRACE,
    WATCH_TIMEOUT,
    Gated,
    JsonWatcher,
    Traced,
    as_user,
    burst_tools,
    child_pids,
    guardians_of,
    needs_root,
    nonce,
    one,
    parse_trace,
    probe_as,
    proc_state,
    readers_of,
    reaper,
    unprivileged_refusal,
    watch,
)

from procevents import capture
from procevents.capture import online_cpus
from procevents.events import Exec
from procevents.frames import FLAG_COMM, FLAG_LATE, Frame, encode_frame
from procevents.procfs import RawExec

__all__ = ["reaper", "watch"]  # fixtures, imported to be used here


# -- pure: the join of frames to execs (the frames themselves: test_frames.py) ----------------


def _capture_with(*frames: bytes) -> capture.ExecCapture:
    """An ExecCapture whose cpu-0 reader already sent ``frames`` (no process)."""
    cap = capture.ExecCapture(cpus=[])
    reader = capture._Reader(0, -1, -1)
    for data in frames:
        frame = Frame(data)
        reader.pending[frame.seq] = frame
    cap.readers[0] = reader
    cap.realtime = True
    return cap


def test_a_late_capture_is_not_trusted_as_held() -> None:
    """A reader that was busy when the exec was sent may have read it after
    the process ran on: the main process must check it for pid reuse."""
    late = encode_frame(0, 0, 7, 4242, RawExec(None, b"x\0", b"4242 (x) R 1"), flags=FLAG_LATE)
    held = encode_frame(0, 0, 8, 4243, RawExec(None, b"y\0", b"y\n"), flags=FLAG_COMM)
    cap = _capture_with(late, held)
    first = cap.take(Exec(0, 7, 1, 4242, 4242))
    second = cap.take(Exec(0, 8, 2, 4243, 4243))
    assert first is not None and second is not None
    assert (first.held, first.argv, cap.late) == (False, ["x"], 1)
    assert (second.held, second.comm) == (True, "y")
    assert (cap.captured, cap.missed) == (2, 0)


# -- the readers against the real kernel -------------------------------------------------------


def _tiny_storm(n: int, prefix: str) -> tuple[list[tuple[int, int, int]], Path]:
    burst, tiny = burst_tools()
    pidfile = Path(f"/tmp/procevents-capture-{nonce()}.pids")
    done = subprocess.run(
        [str(burst), "-o", str(pidfile), "-m", "exec", "-n", str(n), "-p", "2", "-t", str(tiny), "-a", prefix],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    children = []
    for line in pidfile.read_text().splitlines():
        if line.startswith(("#", "W")):
            continue
        pid, start, end = map(int, line.split())
        children.append((pid, start, end))
    pidfile.unlink()
    return children, tiny


@needs_root
def test_argv_of_a_storm_of_30us_programs(watch: Callable[..., Any]) -> None:
    """Each child of the storm lives a few microseconds after its exec; the
    realtime reader on its CPU reads its argv while it is held."""
    w: JsonWatcher = watch("-e", "exec", as_json=True)
    prefix = f"cap{nonce()}-"
    n = 2000
    children, _tiny = _tiny_storm(n, prefix)
    last_pid = children[-1][0]
    w.wait_for(lambda: any(ev["pid"] == last_pid for ev in w.events), "the storm's last exec")
    w.stop()
    by_pid: dict[int, list[dict[str, Any]]] = {}
    for ev in w.events:
        by_pid.setdefault(ev["pid"], []).append(ev)
    right = wrong = 0
    for index, (pid, start, end) in enumerate(children):
        execs = [ev for ev in by_pid.get(pid, []) if start <= ev["timestamp_ns"] <= end]
        assert len(execs) == 1, f"child {index} (pid {pid}): {execs}"
        if execs[0]["cmdline"] == ["tiny", f"{prefix}{index}"]:
            right += 1
            assert execs[0]["comm"] == "tiny", execs[0]
        elif execs[0]["cmdline"] is not None or execs[0]["comm"] not in (None, "tiny"):
            wrong += 1  # another process's argv or name: never acceptable
    assert wrong == 0
    assert right / n >= 0.995, f"argv of {right} of {n} execs"
    assert "0 events lost" in w.stderr()


@needs_root
def test_100_runs_of_true_are_all_named_true(watch: Callable[..., Any]) -> None:
    w: JsonWatcher = watch("-e", "exec", as_json=True)
    pids = []
    for _ in range(100):
        p = subprocess.Popen(["/bin/true"])
        p.wait()
        pids.append(p.pid)
    w.wait_for(lambda: any(ev["pid"] == pids[-1] for ev in w.events), "the last exec")
    mine = [ev for ev in w.events if ev["pid"] in set(pids)]
    assert len(mine) == 100
    assert all(ev["cmdline"] == ["/bin/true"] and ev["comm"] == "true" for ev in mine), [
        ev for ev in mine if ev["cmdline"] != ["/bin/true"] or ev["comm"] != "true"
    ][:3]


@needs_root
@pytest.mark.parametrize("attempt", range(3))
def test_trace_shows_the_argv_of_every_process(attempt: int) -> None:
    busy = subprocess.Popen(["sh", "-c", "while :; do /bin/true; done"])  # background activity
    try:
        done = subprocess.run(
            [*CLI, "trace", "--json", "--", "sh", "-c", 'ls / >/dev/null; sh -c "exit 3"; exit 5'],
            capture_output=True, text=True, timeout=WATCH_TIMEOUT,
        )
    finally:
        busy.kill()
        busy.wait()
    assert done.returncode == 5, done.stderr
    execs = [ev for ev in map(json.loads, done.stdout.splitlines()) if ev["event"] == "exec"]
    assert [ev["cmdline"] for ev in execs] == [
        ["sh", "-c", 'ls / >/dev/null; sh -c "exit 3"; exit 5'], ["ls", "/"], ["sh", "-c", "exit 3"],
    ], execs
    assert [ev["comm"] for ev in execs] == ["sh", "ls", "sh"]
    exits = [ev for ev in map(json.loads, done.stdout.splitlines()) if ev["event"] == "exit"]
    assert all(ev["comm"] in ("sh", "ls") and ev["cmdline"] for ev in exits), exits


@needs_root
def test_trace_names_its_command_even_in_async_mode() -> None:
    """The root's argv is the one trace started it with."""
    done = subprocess.run(
        [*CLI, "trace", "--capture", "async", "--json", "--", "/bin/true", "root-argv"],
        capture_output=True, text=True, timeout=WATCH_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    execs = [ev for ev in map(json.loads, done.stdout.splitlines()) if ev["event"] == "exec"]
    assert [ev["cmdline"] for ev in execs] == [["/bin/true", "root-argv"]]
    assert execs[0]["comm"] == "true"


THREADED = textwrap.dedent("""
    import os, sys, threading
    release_thread, release_main = int(sys.argv[1]), int(sys.argv[2])
    t = threading.Thread(target=os.read, args=(release_thread, 1))
    t.start()
    print(threading.get_native_id(), t.native_id, flush=True)
    t.join()
    os.read(release_main, 1)
""")


def _run_threaded(w: JsonWatcher, reaper: list[Any]) -> tuple[int, int]:
    """A process whose thread ends while the process lives on; (pid, tid)."""
    thread_r, thread_w = os.pipe()
    main_r, main_w = os.pipe()
    p = subprocess.Popen(
        [sys.executable, "-c", THREADED, str(thread_r), str(main_r)],
        pass_fds=(thread_r, main_r), stdout=subprocess.PIPE, text=True,
    )
    reaper.append(p)
    assert p.stdout is not None
    _main_tid, tid = map(int, p.stdout.readline().split())
    os.write(thread_w, b"x")  # the child joins the thread before it reads main_r
    os.write(main_w, b"x")
    assert p.wait(WATCH_TIMEOUT) == 0
    for fd in (thread_r, thread_w, main_r, main_w):
        os.close(fd)
    w.wait_exit(p.pid)
    return p.pid, tid


@needs_root
def test_a_threads_exit_has_the_threads_own_lifetime(watch: Callable[..., Any], reaper: list[Any]) -> None:
    w: JsonWatcher = watch(as_json=True)
    pid, tid = _run_threaded(w, reaper)
    thread_fork = one([ev for ev in w.of(pid, "fork") if ev["child_pid"] == tid], "fork")
    thread_exit = one([ev for ev in w.of(pid, "exit") if ev["pid"] == tid], "exit")
    process_exit = one([ev for ev in w.of(pid, "exit") if ev["pid"] == pid], "exit")
    assert thread_exit["thread"] is True and thread_fork["thread"] is True
    assert "thread" not in process_exit
    assert thread_exit["duration"] == (thread_exit["timestamp_ns"] - thread_fork["timestamp_ns"]) / 1e9
    assert thread_exit["duration"] < process_exit["duration"]


@needs_root
def test_no_threads_hides_thread_events(watch: Callable[..., Any], reaper: list[Any]) -> None:
    w: JsonWatcher = watch("--no-threads", as_json=True)
    pid, tid = _run_threaded(w, reaper)
    assert w.of(pid, "exit") and w.of(pid, "exec")
    assert not [ev for ev in w.events if ev["pid"] == tid], "a thread event was shown"
    assert not [ev for ev in w.events if ev.get("thread")]


@needs_root
def test_env_is_captured(watch: Callable[..., Any], reaper: list[Any]) -> None:
    w: JsonWatcher = watch("--env", "-e", "exec", as_json=True)
    tag = nonce()
    p = subprocess.Popen(["/bin/true"], env={"PROCEVENTS_TAG": tag, "X": "a=b"})
    reaper.append(p)
    p.wait()
    w.wait_for(lambda: bool(w.of(p.pid, "exec")), "the exec")
    ev = one(w.of(p.pid), "exec")
    assert ev["env"] == [f"PROCEVENTS_TAG={tag}", "X=a=b"], ev


@needs_root
def test_env_is_bounded(watch: Callable[..., Any], reaper: list[Any]) -> None:
    w: JsonWatcher = watch("--env", "-e", "exec", as_json=True)
    p = subprocess.Popen(["/bin/true"], env={"BIG": "y" * (capture.ENV_LIMIT * 2)})
    reaper.append(p)
    p.wait()
    w.wait_for(lambda: bool(w.of(p.pid, "exec")), "the exec")
    ev = one(w.of(p.pid), "exec")
    assert ev["env_truncated"] is True
    # NUL-separated, the last item cut: at most ENV_LIMIT bytes in all
    assert sum(len(item) for item in ev["env"]) + len(ev["env"]) - 1 <= capture.ENV_LIMIT


@needs_root
def test_env_needs_enrichment() -> None:
    done = subprocess.run([*CLI, "--no-enrich", "--env"], capture_output=True, text=True, timeout=WATCH_TIMEOUT)
    assert done.returncode == 2 and "need enrichment" in done.stderr and "Traceback" not in done.stderr


# -- fallbacks ---------------------------------------------------------------------------------


@needs_root
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_without_cap_sys_nice_readers_run_at_normal_priority(tmp_path: Path, reaper: list[Any]) -> None:
    out = tmp_path / "out.jsonl"
    err = tmp_path / "err.txt"
    drop = ["setpriv", "--inh-caps=-sys_nice", "--bounding-set=-sys_nice", "--"]
    with open(err, "wb") as err_file:
        p = subprocess.Popen([*drop, *CLI, "--json", "-e", "exec", "-o", str(out)], stderr=err_file)
    reaper.append(p)
    deadline = time.monotonic() + WATCH_TIMEOUT
    while b"listening" not in err.read_bytes():
        assert p.poll() is None and time.monotonic() < deadline, err.read_text()
        time.sleep(0.02)
    text = err.read_text()
    assert "normal-priority readers" in text and "no CAP_SYS_NICE or RLIMIT_RTPRIO" in text, text
    sleeper = subprocess.Popen(["sleep", "0.3"])
    reaper.append(sleeper)
    sleeper.wait()
    deadline = time.monotonic() + WATCH_TIMEOUT
    while not any(json.loads(line)["pid"] == sleeper.pid for line in out.read_text().splitlines()):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    p.send_signal(signal.SIGTERM)
    assert p.wait(WATCH_TIMEOUT) == 0
    ev = next(json.loads(line) for line in out.read_text().splitlines() if json.loads(line)["pid"] == sleeper.pid)
    assert ev["cmdline"] == sleeper.args and ev["comm"] == "sleep"


@needs_root
@pytest.mark.parametrize("caps", [(), ("net_admin",)], ids=["plain", "cap_net_admin"])
def test_as_nobody(nobody_python: str, caps: tuple[str, ...]) -> None:
    """Another user, where the kernel lets it subscribe (asked first, by
    procevents' own trial; with CAP_NET_ADMIN every kernel does), gets
    normal-priority readers (no CAP_SYS_NICE); where it does not, the one
    line that says why."""
    refused = probe_as(nobody_python, NOBODY, caps=caps)["subscribe"]
    done = subprocess.run(
        [*as_user(NOBODY, caps=caps), nobody_python, "-m", "procevents", "-D", "0.5"],
        capture_output=True, text=True, timeout=WATCH_TIMEOUT, cwd="/",
    )
    if refused is not None:
        assert not caps
        assert (done.returncode, done.stderr) == (1, f"procevents: error: {unprivileged_refusal()}\n")
        return
    assert done.returncode == 0, done.stderr
    assert "normal-priority readers" in done.stderr, done.stderr


@needs_root
def test_async_mode_has_no_readers(tmp_path: Path) -> None:
    done = subprocess.run(
        [*CLI, "--capture", "async", "-D", "0.3"], capture_output=True, text=True, timeout=WATCH_TIMEOUT
    )
    assert done.returncode == 0, done.stderr
    assert "argv capture: async" in done.stderr


# -- IGNORE for every socket, and no reader outlives procevents ----------------------------------


@needs_root
@pytest.mark.skipif(STRACE is None, reason="needs strace")
def test_readers_unsubscribe_and_end_when_the_main_process_is_killed(tmp_path: Path) -> None:
    """kill -9 of the main process: it cannot say IGNORE itself, but every
    reader notices (its lifeline pipe closes), sends IGNORE and ends, and the
    guardian says IGNORE on the main socket it shares."""
    t = Traced([*CLI, "--json"], tmp_path, stdout=subprocess.DEVNULL)
    try:
        t.err.wait_for(lambda line: line.startswith(b"procevents: listening"))
        main = t.tracee()
        readers = readers_of(main)
        guardians = guardians_of(main)
        assert len(readers) == len(online_cpus()), readers
        assert len(guardians) == 1, guardians
        os.kill(main, signal.SIGKILL)
        t.wait()
    finally:
        t.cleanup()
    requests = [r for r in parse_trace(t.trace) if hasattr(r, "op")]
    for reader in readers:
        ops = [r.op for r in requests if r.pid == reader]  # type: ignore[union-attr]
        assert ops == [LISTEN, IGNORE], (reader, ops)
        assert proc_state(reader) in ("?", "Z"), f"reader {reader} outlived procevents"  # gone or a zombie
    main_ops = [r.op for r in requests if r.pid == main]  # type: ignore[union-attr]
    guardian_ops = [r.op for r in requests if r.pid == guardians[0]]  # type: ignore[union-attr]
    assert (main_ops, guardian_ops) == ([LISTEN], [IGNORE])
    assert proc_state(guardians[0]) in ("?", "Z"), "the guardian outlived procevents"


@needs_root
def test_no_reader_outlives_a_clean_exit() -> None:
    p = subprocess.Popen([*CLI, "-D", "0.5"], stderr=subprocess.PIPE, text=True)
    assert p.stderr is not None
    line = p.stderr.readline()
    while "listening" not in line:
        line = p.stderr.readline()
        assert line, "procevents ended before listening"
    readers = child_pids(p.pid)
    assert len(readers_of(p.pid)) == len(online_cpus()) and len(guardians_of(p.pid)) == 1
    assert p.wait(WATCH_TIMEOUT) == 0
    p.stderr.close()
    assert not [pid for pid in readers if Path(f"/proc/{pid}").exists()]


@needs_root
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_argv_is_cut_at_the_limit_on_every_read_path(
    mode: str, watch: Callable[..., Any], gated: Callable[..., Gated]
) -> None:
    """The same 256 KiB cut, marked, whether a reader read it while the
    process was held or /proc was read after the event (before, the async
    path kept all 384 KiB of three 128 KiB arguments)."""
    from procevents.procfs import ARGV_LIMIT

    big = ["x" * (128 * 1024 - 1)] * 3  # each just under MAX_ARG_STRLEN
    w: JsonWatcher = watch("-e", "exec", "--capture", mode, as_json=True)
    held = gated([SH, "-c", "read _", *big])  # alive until released: async reads find it
    w.wait_for(lambda: bool(w.of(held.pid, "exec")), "the exec")
    ev = one(w.of(held.pid), "exec")
    assert held.release() == 0
    assert ev["cmdline_truncated"] is True
    text = "\0".join(ev["cmdline"])
    assert ARGV_LIMIT - 128 * 1024 < len(text) <= ARGV_LIMIT
    assert ev["cmdline"][:3] == [SH, "-c", "read _"]


def test_pending_captures_have_a_byte_budget() -> None:
    """Captures waiting for a main process that has fallen behind: past
    PENDING_BYTES of text per CPU each new one is cut to ARGV_CUT_LIMIT and
    marked, and still joined to its exec; past twice that, the oldest go."""
    from procevents.events import Exec
    from procevents.frames import CAPTURE, FLAG_ARGV_CUT, FLAG_COMM, Frame, encode_frame
    from procevents.procfs import ARGV_CUT_LIMIT, ARGV_LIMIT, RawExec

    cap = capture.ExecCapture(cpus=[], wait=0.0)
    reader = capture._Reader(0, 0, -1)
    cap.readers[0] = reader

    def keep(seq: int) -> None:
        raw = RawExec(None, b"a" * (ARGV_LIMIT - 1) + b"\0", b"big\n")
        cap._keep(reader, Frame(encode_frame(CAPTURE, 0, seq, 4242, raw, flags=FLAG_COMM)))
        assert reader.pending_bytes == sum(frame.text_bytes for frame in reader.pending.values())
        assert reader.pending_bytes <= 2 * capture.PENDING_BYTES

    whole = capture.PENDING_BYTES // ARGV_LIMIT
    for seq in range(2 * whole):
        keep(seq)
    cut = [seq for seq, frame in reader.pending.items() if frame.flags & FLAG_ARGV_CUT]
    assert cut == list(range(whole, 2 * whole))  # the first whole, then cut
    snapshot = cap.take(Exec(0, whole, 1, 4242, 4242))
    assert snapshot is not None and snapshot.argv_truncated and snapshot.comm == "big"
    assert sum(len(arg) for arg in snapshot.argv or ()) <= ARGV_CUT_LIMIT
    for seq in range(2 * whole, 2 * whole + 3 * capture.PENDING_BYTES // ARGV_CUT_LIMIT):
        keep(seq)  # cut ones add up too: the oldest go
    assert min(reader.pending) > 2 * whole  # all the earlier ones are gone

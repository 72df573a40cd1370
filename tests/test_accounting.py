"""What each process cost, from the real kernel's taskstats: figures checked
against what a child really did, pid reuse, release on every way out, and
running without the privilege."""

from __future__ import annotations

import errno
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import NOBODY, Children
from helpers import TASKSTATS_REFUSAL, Cli, Lines, as_user, probe_as, socket_fds, unprivileged_refusal

from procevents import taskstats
from procevents.accounting import CostsUnavailable, ExitCosts

MIB = 1024 * 1024
TIMEOUT = 30.0


def _available() -> str | None:
    try:
        ExitCosts().open().close()
    except CostsUnavailable as exc:
        return str(exc)
    return None


pytestmark = pytest.mark.skipif(_available() is not None, reason=f"taskstats: {_available()}")

#: Waits on its pipe until released, then burns about 0.5 s of CPU, touches
#: 200 MiB and writes 16 MiB to the file named by argv[1].
WORKLOAD = """
import os, sys, time
os.read(int(sys.argv[2]), 1)
start = time.process_time()
while time.process_time() - start < 0.5:
    pass
block = b"\\1" * (200 * 1024 * 1024)
with open(sys.argv[1], "wb") as f:
    for _ in range(16):
        f.write(block[: 1024 * 1024])
    f.flush()
    os.fsync(f.fileno())
sys.exit(3)
"""


def _held(code: str, *args: str) -> tuple[subprocess.Popen[bytes], int]:
    """The child, waiting to read a byte from the pipe (its fd in argv[-1]); the pipe's write end."""
    read_end, release = os.pipe()
    proc = subprocess.Popen([sys.executable, "-c", code, *args, str(read_end)], pass_fds=(read_end,))
    os.close(read_end)
    return proc, release


@pytest.fixture
def clis() -> Iterator[list[Cli]]:
    started: list[Cli] = []
    yield started
    for c in started:
        c.cleanup()


def test_an_exit_carries_what_the_child_really_did(tmp_path: Path, clis: list[Cli]) -> None:
    proc, release = _held(WORKLOAD, str(tmp_path / "written"))
    try:
        as_json = Cli(["-e", "exit", "--json", "-p", str(proc.pid)])
        as_text = Cli(["-e", "exit", "-p", str(proc.pid)])
        clis += [as_json, as_text]
        as_json.err.wait_for(lambda line: line.startswith(b"procevents: exit costs: taskstats on cpu"))
        as_json.wait_listening()
        as_text.wait_listening()
    finally:
        os.write(release, b"x")
        os.close(release)
    assert proc.wait(TIMEOUT) == 3
    exit_event = as_json.wait_json(lambda e: e["event"] == "exit" and e["pid"] == proc.pid)
    assert exit_event["status"] == 3
    cpu = exit_event["utime"] + exit_event["stime"]
    assert 0.45 <= cpu < 5.0, exit_event
    assert 200 * MIB <= exit_event["max_rss"] < 400 * MIB, exit_event
    assert exit_event["wchar"] >= 16 * MIB
    assert exit_event["rchar"] > 0  # the interpreter read its modules
    for key in ("read_bytes", "write_bytes", "cpu_delay", "io_delay", "mem_delay"):
        assert isinstance(exit_event[key], (int, float)) and exit_event[key] >= 0, key
    line = as_text.out.wait_for(lambda raw: b" exit " in raw and f" {proc.pid} ".encode() in raw)
    text = line.decode()
    assert "status 3" in text and " cpu " in text and " rss 2" in text, text


def test_a_reused_pid_never_mixes_two_processes_figures(children: Children, clis: list[Cli]) -> None:
    watcher = Cli(["-e", "exit", "--json", "--no-threads"])
    clis.append(watcher)
    watcher.wait_listening()

    def burn() -> int:
        start = time.process_time()
        while time.process_time() - start < 0.3:
            pass
        return 3

    first = children.fork(burn)
    assert os.WEXITSTATUS(children.wait(first)) == 3
    second = None
    for _ in range(200):  # another process may take the pid first: try again
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(first - 1))
        candidate = children.fork(lambda: 4)
        children.wait(candidate)
        if candidate == first:
            second = candidate
            break
    if second is None:
        pytest.skip("could not get the same pid again (a busy machine took it each time)")
    # (another process of the machine may have had the pid in between: ours
    # are told apart by their statuses)
    burned = watcher.wait_json(lambda e: e["event"] == "exit" and e["pid"] == first and e["status"] == 3)
    idle = watcher.wait_json(lambda e: e["event"] == "exit" and e["pid"] == first and e["status"] == 4)
    assert burned["utime"] + burned["stime"] >= 0.25
    assert idle["utime"] + idle["stime"] < 0.1
    assert idle["duration"] < burned["duration"]


def _records_for(fd: int, pid: int) -> list[int]:
    """pids of the exit records queued on ``fd`` (read without waiting)."""
    found = []
    while select.select([fd], [], [], 0)[0]:
        data = os.read(fd, 65536)
        for kind, _seq, start, end in taskstats.iter_messages(data):
            if kind > 16:
                found += [cost.pid for cost in taskstats.decode_exit_message(data, start, end)]
    return [p for p in found if p == pid]


def test_close_deregisters_even_while_the_socket_lives_on(children: Children) -> None:
    costs = ExitCosts().open()
    kept = os.dup(costs.fileno())  # keeps the socket alive after close()
    try:
        before = children.fork(lambda: 0)
        children.wait(before)  # its record is queued before its exit completes
        assert _records_for(kept, before) == [before]
        costs.close()
        assert costs.closed
        after = children.fork(lambda: 0)
        children.wait(after)
        assert _records_for(kept, after) == []
    finally:
        os.close(kept)


def test_garbage_collection_deregisters(children: Children) -> None:
    costs = ExitCosts().open()
    kept = os.dup(costs.fileno())
    try:
        del costs
        import gc

        gc.collect()
        after = children.fork(lambda: 0)
        children.wait(after)
        assert _records_for(kept, after) == []
    finally:
        os.close(kept)


def _generic_netlink_inodes() -> set[int]:
    with open("/proc/net/netlink") as f:
        next(f)
        rows = [line.split() for line in f]
    return {int(fields[-1]) for fields in rows if fields[1] == str(taskstats.NETLINK_GENERIC)}


def _socket_inodes(pid: int) -> set[int]:
    return set(socket_fds(pid))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL])
def test_the_socket_is_released_on_every_way_out(sig: int, clis: list[Cli]) -> None:
    watcher = Cli(["-e", "exit", "--json"])
    clis.append(watcher)
    watcher.wait_listening()
    mine = _socket_inodes(watcher.proc.pid) & _generic_netlink_inodes()
    assert len(mine) == 1
    watcher.proc.send_signal(sig)
    watcher.wait()
    # the guardian (kill -9) keeps only the connector's socket
    deadline = time.monotonic() + TIMEOUT
    while mine & _generic_netlink_inodes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not mine & _generic_netlink_inodes()


def test_taskstats_is_asked_by_trial_and_refuses_a_plain_user(nobody_python: str) -> None:
    """Whether taskstats answers is found by registering: a user without
    CAP_NET_ADMIN is refused on every kernel (GENL_ADMIN_PERM), one with it is not."""
    assert probe_as(nobody_python, NOBODY)["taskstats"] == {"errno": errno.EPERM, "message": TASKSTATS_REFUSAL}
    assert probe_as(nobody_python, NOBODY, caps=["net_admin"])["taskstats"] is None


def test_without_the_privilege_one_notice_and_events_without_figures(
    nobody_python: str, children: Children
) -> None:
    """As another user, what this kernel allows is asked first: where it
    refuses the subscription, that is the one line; where it allows it
    (taskstats never does without CAP_NET_ADMIN), one notice, and events
    without figures."""
    argv = [*as_user(NOBODY), nobody_python, "-m", "procevents", "-e", "exit", "--json", "--capture", "async"]
    refused = probe_as(nobody_python, NOBODY)["subscribe"]
    if refused is not None:
        done = subprocess.run(argv, capture_output=True, timeout=TIMEOUT, cwd="/")
        assert refused["message"] == unprivileged_refusal()
        assert (done.returncode, done.stdout) == (1, b"")
        assert done.stderr == f"procevents: error: {unprivileged_refusal()}\n".encode()
        return
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/")
    assert proc.stdout is not None and proc.stderr is not None
    out, err = Lines(proc.stdout), Lines(proc.stderr)
    try:
        err.wait_for(lambda line: line.startswith(b"procevents: listening"), TIMEOUT)
        child = children.fork(lambda: 5)
        children.wait(child)
        line = out.wait_for(lambda raw: json.loads(raw).get("pid") == child, TIMEOUT)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(TIMEOUT)
        out.join()
        err.join()
    event: dict[str, Any] = json.loads(line)
    assert event["status"] == 5
    assert "utime" not in event and "max_rss" not in event
    notices = [raw for raw in err.lines if b"exit costs" in raw]
    assert notices == [
        b"procevents: no exit costs: taskstats needs root or CAP_NET_ADMIN (--no-costs hides this notice)\n"
    ]


def test_no_costs_asks_nothing_of_taskstats(children: Children, clis: list[Cli]) -> None:
    watcher = Cli(["-e", "exit", "--json", "--no-costs"])
    clis.append(watcher)
    watcher.wait_listening()
    assert not _socket_inodes(watcher.proc.pid) & _generic_netlink_inodes()
    child = children.fork(lambda: 0)
    children.wait(child)
    event = watcher.wait_json(lambda e: e["pid"] == child)
    assert "utime" not in event
    assert not any(b"exit costs" in raw for raw in watcher.err.lines)


THREADS = """
import os, sys, threading, time
os.read(int(sys.argv[1]), 1)

def burn():
    start = time.thread_time()
    while time.thread_time() - start < 0.25:
        pass

workers = [threading.Thread(target=burn) for _ in range(2)]
for worker in workers:
    worker.start()
for worker in workers:
    worker.join()
"""


def test_a_thread_has_its_own_figures_and_its_process_the_sum(clis: list[Cli]) -> None:
    proc, release = _held(THREADS)
    try:
        # Every exit, not -p: a joined thread's exit event may come after its
        # process's (the join returns before the kernel reports the thread
        # gone; under load, often), and -p drops a thread's exit that comes
        # after its process's, then ends.
        watcher = Cli(["-e", "exit", "--json"])
        clis.append(watcher)
        watcher.wait_listening()
    finally:
        os.write(release, b"x")
        os.close(release)
    assert proc.wait(TIMEOUT) == 0
    exits: list[dict[str, Any]] = []

    def third_exit(raw: bytes) -> bool:  # each line is offered once
        event = json.loads(raw)
        if event.get("tgid") == proc.pid:
            exits.append(event)
        return len(exits) == 3

    # The process's exit and its two threads', in whatever order they came.
    watcher.out.wait_for(third_exit, TIMEOUT)
    (process,) = [e for e in exits if e["pid"] == proc.pid]
    threads = [e for e in exits if e["pid"] != proc.pid]
    assert all(t.get("thread") for t in threads), threads
    for thread in threads:
        assert thread["pid"] != proc.pid
        assert 0.2 <= thread["utime"] + thread["stime"] < 2.0, thread
    own = sum(t["utime"] + t["stime"] for t in threads)
    assert process["utime"] + process["stime"] >= own  # the threads' CPU counted in the process's
    assert process["max_rss"] >= max(t["max_rss"] for t in threads)


def test_trace_lists_the_processes_that_used_the_most_cpu() -> None:
    burn = "import time\nstart = time.process_time()\nwhile time.process_time() - start < 0.3:\n    pass\n"
    script = f"{sys.executable} -c '{burn}'; true; sh -c 'exit 0'"
    result = subprocess.run(
        [sys.executable, "-m", "procevents", "trace", "--slowest", "2", "--", "sh", "-c", script],
        capture_output=True, timeout=TIMEOUT, check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stderr.decode().splitlines()
    heading = lines.index("procevents: most CPU (user+system, peak memory):")
    ranked = lines[heading + 1:heading + 3]
    assert len(ranked) == 2 and "time.process_time" in ranked[0], lines
    cpu = ranked[0].split()[1]
    assert cpu.endswith("ms") and float(cpu[:-2]) >= 280, ranked  # about 0.3 s, shown as ms under 1 s


def test_an_overflowing_socket_is_said_not_hidden(children: Children) -> None:
    costs = ExitCosts(rcvbuf=4096).open()  # room for a few records only
    try:
        assert costs.problems() is None
        pids = [children.fork(lambda: 0) for _ in range(64)]
        for pid in pids:
            children.wait(pid)
        costs.collect()
        assert costs.overruns >= 1
        assert costs.records < 64
        problems = costs.problems()
        assert problems is not None and "overflowed" in problems and "no figures" in problems
    finally:
        costs.close()

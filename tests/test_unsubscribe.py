"""PROC_CN_MCAST_IGNORE is sent exactly once on every way out, as seen by strace.

The kernel keeps a global count of proc connector listeners and closing a
socket does not lower it: only IGNORE does.  These tests do not trust the
library's own bookkeeping (``Connector.sent``); they run a real process under
``strace -f -e trace=sendto,sendmsg`` and decode what actually went out on
the netlink socket with :func:`procevents.wire.decode_request`.

Expected request sequence on every way out::

    LISTEN (legacy 4-byte, all events)   exactly once, first
    LISTEN (struct proc_input, a mask)   at most once, when events are filtered
    IGNORE                               exactly once, last

A ``kill(getpid(), 0)`` in a script is a marker in the trace, used to show
*when* IGNORE went out (e.g. at the end of the ``with`` block, not at exit).
"""

from __future__ import annotations

import os
import re
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers import (
    CPUS,
    IGNORE,
    LISTEN,
    STRACE,
    TIMEOUT,
    Marker,
    Request,
    Start,
    Traced,
    asleep_in_syscall,
    assert_ignored_once,
    child_pids,
    cli_argv,
    comm_of,
    describe_requests,
    guardians_of,
    parse_trace,
    proc_state,
    traced,
    wait_until,
)

import procevents
from procevents import wire
from procevents.capture import online_cpus
from procevents.events import event_mask
from procevents.guardian import NAME as GUARDIAN

EXEC_EXIT_MASK = event_mask(frozenset({"exec", "exit"}))
CPU_LIST = online_cpus()

pytestmark = pytest.mark.skipif(STRACE is None, reason="strace is not installed (apt-get install strace)")
__all__ = ["traced"]  # the fixture, imported to be used here


# -- environment checks ------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _usable() -> None:
    """Skip (with the reason) when the connector or ptrace is unavailable here."""
    try:
        with procevents.listen():
            pass
    except procevents.ConnectorError as exc:
        pytest.skip(f"the proc connector is not usable here: {exc}")
    assert STRACE is not None
    probe = subprocess.run(
        [STRACE, "-qq", "-e", "trace=none", "true"], capture_output=True, timeout=TIMEOUT, check=False
    )
    if probe.returncode != 0:
        pytest.skip(f"strace cannot trace here: {probe.stderr.decode(errors='replace').strip()}")


def _spawn_true(n: int = 3) -> None:
    """Make some process events happen (fork, exec, exit)."""
    for _ in range(n):
        subprocess.run(["true"], check=True, timeout=TIMEOUT)


# -- strace output parsing ----------------------------------------------------


# -- running a process under strace ---------------------------------------------


def _script(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "script.py"
    path.write_text(textwrap.dedent(body))
    return [sys.executable, str(path)]


def _ready_pid(t: Traced) -> int:
    assert t.out is not None
    line = t.out.wait_for(lambda line: line.startswith(b"READY"))
    return int(line.split()[1])


# -- the parser itself ------------------------------------------------------------


def test_parse_trace_decodes_strace_netlink_lines(tmp_path: Path) -> None:
    listen_req = wire.encode_request(LISTEN, seq=7, ack=7)
    masked_req = wire.encode_request(LISTEN, EXEC_EXIT_MASK)
    ignore_req = wire.encode_request(IGNORE)

    def hexs(data: bytes) -> str:
        return "".join(f"\\x{b:02x}" for b in data)

    def decoded(data: bytes, type_text: str = "NLMSG_DONE") -> str:
        length, _t, _f, seq, pid = struct.unpack_from("<IHHII", data)
        return (
            f"[{{nlmsg_len={length}, nlmsg_type={type_text}, nlmsg_flags=0, nlmsg_seq={seq}, "
            f"nlmsg_pid={pid}}}, \"{hexs(data[16:])}\"]"
        )

    trace = tmp_path / "t.txt"
    trace.write_text(
        f"100  sendto(3, {decoded(listen_req)}, 40, 0, NULL, 0) = 40\n"
        f"100  sendto(3, {decoded(masked_req, '0x3 /* NLMSG_DONE */')}, 44, 0, NULL, 0 <unfinished ...>\n"
        "101  sendto(5, \"\\x68\\x69\", 2, 0, NULL, 0) = 2\n"
        "100  <... sendto resumed>) = 44\n"
        "100  kill(100, 0) = 0\n"
        "100  kill(100, SIGTERM) = 0\n"
        f"100  sendto(3, \"{hexs(ignore_req)}\", 40, 0, NULL, 0) = 40\n"
    )
    items = parse_trace(trace)
    assert items == [
        Request(100, 3, LISTEN, None, 7, 7, 40, 40),
        Request(100, 3, LISTEN, EXEC_EXIT_MASK, 0, 0, 44, 44),
        Marker(100),
        Request(100, 3, IGNORE, None, 0, 0, 40, 40),
    ]
    assert_ignored_once(items, mask=EXEC_EXIT_MASK, ignore_before_marker=False)
    with pytest.raises(AssertionError, match="exactly one IGNORE"):
        assert_ignored_once([*items, items[-1]], mask=EXEC_EXIT_MASK)
    with pytest.raises(AssertionError, match="exactly one IGNORE"):
        assert_ignored_once(items[:-1], mask=EXEC_EXIT_MASK)


# -- 1..4: the library, leaving without a signal -----------------------------------


def test_with_block_normal_end(traced: Start, tmp_path: Path) -> None:
    t = traced(_script(tmp_path, """
        import os, procevents
        with procevents.listen() as stream:
            stream.read_batch(0.05)
            print("READY", os.getpid(), flush=True)
        assert stream.closed
        os.kill(os.getpid(), 0)  # marker
        print("DONE", flush=True)
    """))
    assert t.wait() == 0, t.err.text
    assert t.out is not None and "DONE" in t.out.text
    assert_ignored_once(t.requests(), ignore_before_marker=True)


def test_with_block_filtered_events(traced: Start, tmp_path: Path) -> None:
    t = traced(_script(tmp_path, """
        import os, procevents
        with procevents.listen(events={"exec", "exit"}) as stream:
            assert stream.kernel_filtered
            stream.read_batch(0.05)
        os.kill(os.getpid(), 0)  # marker
    """))
    assert t.wait() == 0, t.err.text
    assert_ignored_once(t.requests(), mask=EXEC_EXIT_MASK, ignore_before_marker=True)


def test_close_twice(traced: Start, tmp_path: Path) -> None:
    t = traced(_script(tmp_path, """
        import os, procevents
        stream = procevents.listen()
        stream.close()
        stream.close()
        assert stream.closed
        with stream:  # entering a closed connector must not reopen or resend
            pass
        stream.close()
        os.kill(os.getpid(), 0)  # marker
    """))
    assert t.wait() == 0, t.err.text
    assert_ignored_once(t.requests(), ignore_before_marker=True)


def test_exception_inside_with_block(traced: Start, tmp_path: Path) -> None:
    t = traced(_script(tmp_path, """
        import os, procevents
        try:
            with procevents.listen(events="fork,exit"):
                raise RuntimeError("boom")
        finally:
            os.kill(os.getpid(), 0)  # marker
    """))
    assert t.wait() == 1
    assert "RuntimeError: boom" in t.err.text
    mask = event_mask(frozenset({"fork", "exit"}))
    assert_ignored_once(t.requests(), mask=mask, ignore_before_marker=True)


def test_dropped_without_close(traced: Start, tmp_path: Path) -> None:
    t = traced(_script(tmp_path, """
        import os, procevents
        stream = procevents.listen()
        del stream  # the last reference: the finalizer sends IGNORE now
        os.kill(os.getpid(), 0)  # marker
    """))
    assert t.wait() == 0, t.err.text
    assert_ignored_once(t.requests(), ignore_before_marker=True)


def test_dropped_in_a_reference_cycle(traced: Start, tmp_path: Path) -> None:
    t = traced(_script(tmp_path, """
        import gc, os, procevents
        class Holder:
            pass
        holder = Holder()
        holder.me = holder
        holder.stream = procevents.listen()
        del holder
        gc.collect()
        os.kill(os.getpid(), 0)  # marker
    """))
    assert t.wait() == 0, t.err.text
    assert_ignored_once(t.requests(), ignore_before_marker=True)


def test_interpreter_exit_without_close(traced: Start, tmp_path: Path) -> None:
    t = traced(_script(tmp_path, """
        import os, procevents
        stream = procevents.listen(events=["exec", "exit"])
        os.kill(os.getpid(), 0)  # marker; then the module ends with the stream open
    """))
    assert t.wait() == 0, t.err.text
    assert_ignored_once(t.requests(), mask=EXEC_EXIT_MASK, ignore_before_marker=False)


def test_sys_exit_with_open_connector(traced: Start, tmp_path: Path) -> None:
    t = traced(_script(tmp_path, """
        import sys, procevents
        stream = procevents.listen()
        sys.exit(7)
    """))
    assert t.wait() == 7, t.err.text
    assert_ignored_once(t.requests())


def test_async_with_and_break(traced: Start, tmp_path: Path) -> None:
    t = traced(_script(tmp_path, """
        import asyncio, os, subprocess, procevents
        async def main():
            async with procevents.alisten() as stream:
                subprocess.run(["true"])
                async for ev in stream:
                    break
            os.kill(os.getpid(), 0)  # marker
        asyncio.run(main())
    """))
    assert t.wait() == 0, t.err.text
    assert_ignored_once(t.requests(), ignore_before_marker=True)


def test_unsubscribe_then_close(traced: Start, tmp_path: Path) -> None:
    t = traced(_script(tmp_path, """
        import os, procevents
        with procevents.listen() as stream:
            stream.unsubscribe()
            assert not stream.subscribed
            os.kill(os.getpid(), 0)  # marker: IGNORE already sent
            stream.read_batch(0)  # what was queued can still be read
            stream.unsubscribe()
    """))
    assert t.wait() == 0, t.err.text
    assert_ignored_once(t.requests(), ignore_before_marker=True)


def test_forked_child_does_not_unsubscribe_the_parent(traced: Start, tmp_path: Path) -> None:
    """A child shares the socket and the subscription: its close() and its
    exit (atexit finalizer) must not send IGNORE; the parent's close does."""
    t = traced(_script(tmp_path, """
        import os, sys, procevents
        with procevents.listen() as stream:
            pid = os.fork()
            if pid == 0:
                stream.close()
                sys.exit(0)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
            assert not stream.closed
            os.kill(os.getpid(), 0)  # marker: the child is gone, we still listen
    """))
    assert t.wait() == 0, t.err.text
    items = t.requests()
    main_pid = next(item.pid for item in items if isinstance(item, Request))
    strays = [item for item in items if item.pid != main_pid]
    assert not strays, "the forked child sent requests:\n" + describe_requests(items)
    assert_ignored_once(items, ignore_before_marker=False)


# -- 5..7: signals while blocked iterating ------------------------------------------

_LOOP_SCRIPT = """
    import os, procevents
    for i, ev in enumerate(procevents.listen()):
        if i == 0:
            print("READY", os.getpid(), flush=True)
"""


@pytest.mark.parametrize(
    ("sig", "expected"),
    [
        pytest.param(signal.SIGTERM, {143}, id="SIGTERM"),
        pytest.param(signal.SIGHUP, {129}, id="SIGHUP"),
        pytest.param(signal.SIGQUIT, {131}, id="SIGQUIT"),
        pytest.param(signal.SIGUSR2, {128 + signal.SIGUSR2}, id="SIGUSR2"),
        # KeyboardInterrupt: Python re-raises SIGINT at exit; strace passes the
        # death on (-2), a shell would report 130.
        pytest.param(signal.SIGINT, {-signal.SIGINT, 130}, id="SIGINT"),
    ],
)
def test_signal_while_iterating(traced: Start, tmp_path: Path, sig: int, expected: set[int]) -> None:
    t = traced(_script(tmp_path, _LOOP_SCRIPT))
    assert t.out is not None
    deadline = time.monotonic() + TIMEOUT
    while not any(line.startswith(b"READY") for line in t.out.lines):
        assert time.monotonic() < deadline and t.proc.poll() is None, t.err.text
        _spawn_true(1)  # the first event prints READY
        time.sleep(0.02)
    pid = _ready_pid(t)
    wait_until(lambda: asleep_in_syscall(pid), "the loop back at its wait for events")
    os.kill(pid, sig)
    rc = t.wait()
    assert rc in expected, f"exit status {rc}; stderr:\n{t.err.text}"
    if sig == signal.SIGINT:
        assert "KeyboardInterrupt" in t.err.text
    else:
        assert "Traceback" not in t.err.text  # Terminated is a quiet SystemExit
    assert_ignored_once(t.requests())


def test_sigterm_inside_with_block(traced: Start, tmp_path: Path) -> None:
    t = traced(_script(tmp_path, """
        import os, procevents
        try:
            with procevents.listen(events="exec,exit") as stream:
                print("READY", os.getpid(), flush=True)
                for ev in stream:
                    pass
        except procevents.Terminated as exc:
            os.kill(os.getpid(), 0)  # marker: the with block has been left
            print("TERMINATED", exc.signum, exc.code, flush=True)
            raise
    """))
    pid = _ready_pid(t)
    os.kill(pid, signal.SIGTERM)
    assert t.wait() == 143, t.err.text
    assert t.out is not None and f"TERMINATED {int(signal.SIGTERM)} 143" in t.out.text
    assert_ignored_once(t.requests(), mask=EXEC_EXIT_MASK, ignore_before_marker=True)


def test_sigterm_after_connector_was_dropped_is_default_again(traced: Start, tmp_path: Path) -> None:
    """Terminated is for "while a connector is open": once the only connector
    has been garbage collected (IGNORE sent), SIGTERM must kill as usual."""
    t = traced(_script(tmp_path, """
        import gc, os, time, procevents
        stream = procevents.listen()
        del stream
        gc.collect()
        print("READY", os.getpid(), flush=True)
        time.sleep(30)
    """))
    pid = _ready_pid(t)
    os.kill(pid, signal.SIGTERM)
    rc = t.wait()
    assert_ignored_once(t.requests())
    assert rc == -signal.SIGTERM, f"exit status {rc}: SIGTERM still raised Terminated after the connector was gone"


# -- 8: the command line ------------------------------------------------------------


def _wait_listening(t: Traced) -> None:
    t.err.wait_for(lambda line: line.startswith(b"procevents: listening"))


def test_cli_broken_pipe(traced: Start) -> None:
    t = traced([*cli_argv()], close_stdout_after=1)
    _wait_listening(t)
    deadline = time.monotonic() + TIMEOUT
    while t.proc.poll() is None and time.monotonic() < deadline:
        _spawn_true(2)  # output for the closed pipe
        time.sleep(0.02)
    rc = t.wait()
    assert t.out is not None and len(t.out.lines) == 1
    assert rc == 0, t.err.text
    assert "Traceback" not in t.err.text
    assert_ignored_once(t.requests(), readers=CPUS)


@pytest.mark.parametrize(
    ("args", "mask"),
    [
        pytest.param(["-n", "1"], None, id="count"),
        pytest.param(["-D", "0.5"], None, id="duration"),
        # Enrichment (the default) needs every fork and exit: -e filters in userspace.
        pytest.param(["-e", "exec,exit", "-n", "1"], None, id="filtered-count"),
        pytest.param(["--no-enrich", "-e", "exec,exit", "-n", "1"], EXEC_EXIT_MASK, id="kernel-filtered-count"),
        pytest.param(["--no-enrich", "-D", "0.5"], None, id="no-enrich-duration"),
        pytest.param(["--json", "-o", "{tmp}/out.jsonl", "-n", "2"], None, id="output-file"),
    ],
)
def test_cli_ends_by_itself(traced: Start, tmp_path: Path, args: list[str], mask: int | None) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    t = traced([*cli_argv(), *args], stdout=subprocess.DEVNULL)
    _wait_listening(t)
    deadline = time.monotonic() + TIMEOUT
    while t.proc.poll() is None and time.monotonic() < deadline:
        _spawn_true(1)
        time.sleep(0.05)
    assert t.wait() == 0, t.err.text
    assert re.search(r"\d+ events? received", t.err.text), t.err.text  # "1 event" with -n 1
    assert_ignored_once(t.requests(), mask=mask, readers=0 if "--no-enrich" in args else CPUS)


# Every signal whose default action would end procevents (and leave the
# kernel subscription behind), an RT signal too.
_ENDING_SIGNALS = [
    signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR2, signal.SIGALRM,
    signal.SIGXCPU, signal.SIGXFSZ, signal.SIGVTALRM, signal.SIGPROF, signal.SIGPWR, signal.SIGRTMIN + 3,
]


@pytest.mark.parametrize("sig", _ENDING_SIGNALS, ids=lambda s: signal.strsignal(s) or str(s))
def test_cli_signal(traced: Start, sig: int) -> None:
    t = traced([*cli_argv(), "--json"], stdout=subprocess.DEVNULL)
    _wait_listening(t)
    _spawn_true(2)
    t.signal(sig)
    assert t.wait() == 0, t.err.text
    assert "Traceback" not in t.err.text
    assert re.search(r"^procevents: \d+ events? received.*, \d+ events? lost$", t.err.text, re.M), t.err.text
    assert_ignored_once(t.requests(), readers=CPUS)


@pytest.mark.parametrize("sig", [signal.SIGQUIT, signal.SIGUSR2, signal.SIGTERM], ids=lambda s: s.name)
def test_cli_record_signal(traced: Start, tmp_path: Path, sig: signal.Signals) -> None:
    t = traced([*cli_argv(), "record", "--db", str(tmp_path / "a.db")], stdout=subprocess.DEVNULL)
    _wait_listening(t)
    _spawn_true(2)
    t.signal(sig)
    assert t.wait() == 0, t.err.text
    assert "Traceback" not in t.err.text and "events recorded" in t.err.text
    assert_ignored_once(t.requests(), readers=CPUS)


def test_cli_sigusr1_does_not_end_it(traced: Start) -> None:
    t = traced([*cli_argv(), "--no-enrich"], stdout=subprocess.DEVNULL)
    _wait_listening(t)
    t.signal(signal.SIGUSR1)
    t.err.wait_for(lambda line: re.search(rb"\d+ events? received", line) is not None)
    assert t.proc.poll() is None, t.err.text
    t.signal(signal.SIGTERM)
    assert t.wait() == 0, t.err.text
    assert_ignored_once(t.requests())


def test_cli_kill_9_guardian_says_ignore(traced: Start) -> None:
    """What no handler catches: the guardian shares the socket and says IGNORE."""
    t = traced([*cli_argv(), "--no-enrich"], stdout=subprocess.DEVNULL)
    _wait_listening(t)
    main = t.tracee()
    guardians = guardians_of(main)
    assert len(guardians) == 1, child_pids(main)
    os.kill(main, signal.SIGKILL)
    t.wait()
    requests = [r for r in t.requests() if isinstance(r, Request)]
    assert [(r.pid, r.op) for r in requests] == [(main, LISTEN), (guardians[0], IGNORE)], describe_requests(requests)
    assert requests[0].fd == requests[1].fd  # the same socket, shared
    assert comm_of(guardians[0]) in ("", GUARDIAN)  # gone (or a zombie reaped by init)


def test_a_killed_guardian_is_replaced_and_the_next_kill_9_still_ends_in_ignore(traced: Start) -> None:
    """The guardian killed first (nothing catches that either): procevents
    notices, says so, starts another, and that one says IGNORE after a later
    kill -9 of procevents."""
    t = traced([*cli_argv(), "--no-enrich"], stdout=subprocess.DEVNULL)
    _wait_listening(t)
    main = t.tracee()
    (first,) = guardians_of(main)
    os.kill(first, signal.SIGKILL)
    notice = t.err.wait_for(lambda line: b"guardian" in line).decode()
    (second,) = guardians_of(main)
    assert second != first
    assert notice == f"the guardian (pid {first}) ended while subscribed; pid {second} took its place\n"
    os.kill(main, signal.SIGKILL)
    t.wait()
    requests = [r for r in t.requests() if isinstance(r, Request)]
    assert [(r.pid, r.op) for r in requests] == [(main, LISTEN), (second, IGNORE)], describe_requests(requests)
    assert requests[0].fd == requests[1].fd  # the same socket, shared


def test_cli_clean_exit_guardian_stays_silent(traced: Start) -> None:
    t = traced([*cli_argv(), "--no-enrich", "-D", "0.5"], stdout=subprocess.DEVNULL)
    _wait_listening(t)
    main = t.tracee()
    guardians = guardians_of(main)
    assert t.wait() == 0, t.err.text
    requests = [r for r in t.requests() if isinstance(r, Request)]
    assert [(r.pid, r.op) for r in requests] == [(main, LISTEN), (main, IGNORE)], describe_requests(requests)
    assert len(guardians) == 1 and not Path(f"/proc/{guardians[0]}").exists()


def test_cli_python_m_signal_with_filter(traced: Start) -> None:
    t = traced([sys.executable, "-m", "procevents", "--no-enrich", "-e", "exec,exit"], stdout=subprocess.DEVNULL)
    _wait_listening(t)
    t.signal(signal.SIGTERM)
    assert t.wait() == 0, t.err.text
    assert_ignored_once(t.requests(), mask=EXEC_EXIT_MASK)


# -- the trace subcommand ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        pytest.param(["true"], 0, id="true"),
        pytest.param(["sh", "-c", "exit 3"], 3, id="exit-3"),
        pytest.param(["/nonexistent/command"], 127, id="not-found"),
    ],
)
def test_cli_trace_ends(traced: Start, command: list[str], expected: int) -> None:
    t = traced([*cli_argv(), "trace", "-q", "--", *command], stdout=subprocess.DEVNULL)
    assert t.wait() == expected, t.err.text
    assert "Traceback" not in t.err.text
    assert_ignored_once(t.requests(), readers=CPUS)


def test_cli_trace_sigterm_is_forwarded(traced: Start) -> None:
    t = traced([*cli_argv(), "trace", "--flat", "--", "sleep", "30"])
    tracee = t.tracee()
    # CMD's exec shown: trace has its child (a signal before that has
    # nowhere to go) and is in its loop.
    assert t.out is not None
    t.out.wait_for(lambda line: b" exec " in line and line.rstrip().endswith(b"sleep 30"))
    os.kill(tracee, signal.SIGTERM)
    assert t.wait() == 128 + signal.SIGTERM, t.err.text
    assert_ignored_once(t.requests(), readers=CPUS)


def test_cli_trace_unwritable_output(traced: Start, tmp_path: Path) -> None:
    t = traced(
        [*cli_argv(), "trace", "-o", str(tmp_path / "missing" / "out.txt"), "--", "true"], stdout=subprocess.DEVNULL
    )
    assert t.wait() == 1, t.err.text  # a runtime error, not a usage one
    assert_ignored_once(t.requests(), readers=CPUS)


# -- the kernel's own witness: a leaked subscription keeps every CPU's seq moving --------------


def _pinned_true(cpu: int) -> int:
    child = subprocess.Popen(["/bin/true"], preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))
    child.wait()
    return child.pid


def _seq_marks() -> dict[int, int]:
    """Each CPU's event counter now: a process pinned to each CPU, seen by a
    short subscription of our own (which says IGNORE when it closes)."""
    marks: dict[int, int] = {}
    with procevents.listen(events="exit", kernel_filter=False) as conn:
        pids = {_pinned_true(cpu): cpu for cpu in CPU_LIST}
        deadline = time.monotonic() + TIMEOUT
        while len(marks) < len(pids) and time.monotonic() < deadline:
            for event in conn.read_batch(0.1):
                if event.tgid in pids and event.pid == event.tgid:
                    marks[pids[event.tgid]] = event.seq
    assert len(marks) == len(CPU_LIST), marks
    return marks


def _numbered_while_nobody_listened(runs: int = 100) -> int:
    """Events the kernel numbered on the quietest CPU while we did not listen:
    about 0 with no subscriber anywhere, about 3 x ``runs`` when one leaked."""
    before = _seq_marks()
    for cpu in CPU_LIST:
        for _ in range(runs):
            _pinned_true(cpu)
    after = _seq_marks()
    return min(after[cpu] - before[cpu] for cpu in CPU_LIST)


def test_no_leaked_subscription_after_kill_9(traced: Start) -> None:
    """The doc's seq test: after procevents is killed with SIGKILL (its guardian
    says IGNORE), the kernel stops numbering events again."""
    if _numbered_while_nobody_listened() > 150:
        pytest.skip("this machine already has another subscriber, or a leaked one (e.g. a killed forkstat)")
    t = traced([*cli_argv(), "--no-enrich"], stdout=subprocess.DEVNULL)
    _wait_listening(t)
    main = t.tracee()
    (guardian,) = guardians_of(main)
    os.kill(main, signal.SIGKILL)
    t.wait()
    # strace ends once its tracees have, so the guardian has exited, but it
    # may be a zombie init has not reaped yet (or its pid already reused).
    wait_until(lambda: proc_state(guardian) in ("?", "Z") or comm_of(guardian) != GUARDIAN,
               f"end of the guardian (pid {guardian})")
    assert _numbered_while_nobody_listened() < 150  # 100 processes per CPU: 300 events if it had leaked


"""The socket's lifecycle and reads (connector.py), against the real kernel:
reads spaced out while events keep coming (the linger), a signal ending a
wait at once, and the kernel-side filter (the requests sent, only the
events asked for, no false loss) or, without it, the filter in userspace.
IGNORE on every way out, seen by strace: test_unsubscribe.py."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import threading
import time

import pytest
from conftest import DEADLINE, connector_available
from helpers import TRUE, forker, skip_unless_connector

import procevents
from procevents import wire
from procevents.events import EVENT_BITS, Event, Exec, Exit, Lost
from procevents.host import kernel_supports_filter

pytestmark = pytest.mark.skipif(connector_available() is not None, reason=str(connector_available()))


def test_events_gather_during_the_linger() -> None:
    """Reads are spaced out while events keep coming (10 ms after a quiet
    spell, doubling): a burst of 10 exits comes in a few batches, not one
    by one."""
    skip_unless_connector()
    with procevents.listen(events={"exit"}) as conn:
        pid, go, pids_fd = forker(10)
        try:
            # Released once the reader is surely waiting (if late, the
            # events are queued before the wait: the test still holds).
            release = threading.Timer(0.2, os.write, (go, b"x"))
            release.start()
            batches: list[set[int]] = []
            born: set[int] | None = None
            seen: set[int] = set()
            while (born is None or not born <= seen) and len(batches) < 50:
                batches.append({e.tgid for e in conn.read_batch(timeout=30, linger=1.0) if type(e) is Exit})
                seen |= batches[-1]
                if born is None and select.select([pids_fd], [], [], 0)[0]:
                    born = {int(p) for p in os.read(pids_fd, 4096).split()}
            release.join()
        finally:
            os.close(go)
            os.close(pids_fd)
            os.waitpid(pid, 0)
    assert born is not None and len(born) == 10 and born <= seen
    with_burst = [batch & born for batch in batches if batch & born]
    assert len(with_burst) <= 4, with_burst


def test_a_signal_ends_the_wait_at_once() -> None:
    """The CLI stops on SIGTERM without a periodic tick: the signal's byte on
    the wakeup pipe ends the wait."""
    skip_unless_connector()
    got: list[int] = []
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    previous_fd = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    previous = signal.signal(signal.SIGUSR1, lambda signum, _frame: got.append(signum))
    try:
        with procevents.listen(events={"ptrace"}) as conn:  # rare events (filtered in the kernel)
            conn.wake_on(wake_r)
            timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGUSR1))
            timer.start()
            started = time.monotonic()
            while not got:
                conn.read_batch(timeout=30)
                assert time.monotonic() - started < 29, "the signal did not end the wait"
            timer.join()
            conn.wake_on(None)
    finally:
        signal.signal(signal.SIGUSR1, previous)
        signal.set_wakeup_fd(previous_fd)
        os.close(wake_r)
        os.close(wake_w)
    assert got == [signal.SIGUSR1]


@pytest.mark.skipif(not kernel_supports_filter(), reason="event filters need kernel 6.6+")
def test_listen_exec_filter_is_done_in_the_kernel() -> None:
    conn = procevents.listen(events={"exec"})
    try:
        assert conn.kernel_filtered is True
        requests = [wire.decode_request(r) for r in conn.sent]
        assert [(op, mask) for op, mask, _seq, _ack in requests] == [
            (wire.PROC_CN_MCAST_LISTEN, None),
            (wire.PROC_CN_MCAST_LISTEN, EVENT_BITS["exec"]),
        ]

        # Read the library's own socket raw (through a dup of its fd) to see
        # what the kernel queued: listen() drained everything sent before the
        # filter took effect, so from here on only EXEC may arrive.
        raw = socket.socket(fileno=os.dup(conn.fileno()))
        try:
            proc = subprocess.Popen([TRUE])
            assert proc.wait() == 0
            got: list[Event] = []
            deadline = time.monotonic() + DEADLINE
            while not any(isinstance(ev, Exec) and ev.pid == proc.pid for ev in got):
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"no Exec for {proc.pid} within {DEADLINE} s: {got[-5:]!r}"
                if select.select([raw], [], [], remaining)[0]:
                    try:
                        got.append(wire.decode(raw.recv(16384)))
                    except BlockingIOError:  # the socket is non-blocking; select raced
                        continue
        finally:
            raw.close()
        assert {type(ev) for ev in got} == {Exec}, sorted({ev.name for ev in got})

        # And through the API: only Exec (Lost would be the one other possibility).
        proc = subprocess.Popen([TRUE])
        assert proc.wait() == 0
        events: list[Event] = []
        deadline = time.monotonic() + DEADLINE
        while not any(isinstance(ev, Exec) and ev.pid == proc.pid for ev in events):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no Exec for {proc.pid} within {DEADLINE} s: {events[-5:]!r}"
            events.extend(conn.read_batch(remaining))
        assert {type(ev) for ev in events} <= {Exec, Lost}, sorted({ev.name for ev in events})
        mine = [ev for ev in events if ev.tgid == proc.pid]
        assert len(mine) == 1
        assert isinstance(mine[0], Exec)
        assert (mine[0].process_pid, mine[0].process_tgid) == (proc.pid, proc.pid)
    finally:
        conn.close()
        conn.close()
    ops = [wire.decode_request(r)[0] for r in conn.sent]
    assert ops.count(wire.PROC_CN_MCAST_IGNORE) == 1
    assert ops[-1] == wire.PROC_CN_MCAST_IGNORE
    assert conn.closed


@pytest.mark.skipif(not kernel_supports_filter(), reason="event filters need kernel 6.6+")
def test_a_kernel_filtered_stream_reports_no_false_loss() -> None:
    """Bug caught: per-CPU seq-gap tracking left on under a kernel filter (the
    forks and exits the kernel filtered out leave gaps that are not losses)."""
    with procevents.listen(events={"exec"}) as conn:
        assert conn.kernel_filtered
        pids = set()
        for _ in range(20):
            proc = subprocess.Popen([TRUE])
            assert proc.wait() == 0
            pids.add(proc.pid)
        events: list[Event] = []
        deadline = time.monotonic() + DEADLINE
        while not pids <= {ev.pid for ev in events if isinstance(ev, Exec)}:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"not every Exec within {DEADLINE} s"
            events.extend(conn.read_batch(remaining))
        assert not [ev for ev in events if isinstance(ev, Lost)] and conn.lost == 0


def test_listen_exec_without_kernel_filter_filters_in_userspace() -> None:
    with procevents.listen(events="exec", kernel_filter=False) as conn:
        assert conn.kernel_filtered is False
        assert [wire.decode_request(r)[:2] for r in conn.sent] == [(wire.PROC_CN_MCAST_LISTEN, None)]
        proc = subprocess.Popen([TRUE])
        assert proc.wait() == 0
        events: list[Event] = []
        deadline = time.monotonic() + DEADLINE
        while not any(isinstance(ev, Exec) and ev.pid == proc.pid for ev in events):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no Exec for {proc.pid} within {DEADLINE} s: {events[-5:]!r}"
            events.extend(conn.read_batch(remaining))
    # The kernel sent everything (the FORK and EXIT of our child included);
    # only EXEC may come out.
    assert {type(ev) for ev in events} <= {Exec, Lost}, sorted({ev.name for ev in events})
    assert [ev.name for ev in events if ev.tgid == proc.pid] == ["exec"]

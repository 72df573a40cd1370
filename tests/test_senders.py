"""senders.py: only the kernel's datagrams are believed.

The bookkeeping from values; then, against the real kernel, a root process
sends well-formed datagrams to procevents' own ports (the connector's, a
capture reader's, taskstats'), as an attacker with root would: none is
shown or joined, and each is counted, by the sender's port.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Callable

import pytest
from conftest import Children
from helpers import SH, TIMEOUT, Cli, Gated, nonce, readers_of, socket_fds

import procevents
from procevents import taskstats, wire
from procevents.accounting import ExitCosts
from procevents.events import Exec, Exit, Fork
from procevents.senders import MAX_PORTS, Refusals

# -- the bookkeeping -------------------------------------------------------------------


def test_refusals_count_by_port_and_say_so_in_one_line() -> None:
    refused = Refusals()
    assert not refused
    refused.note(4242)
    assert refused.line() == "refused 1 datagram not sent by the kernel (from netlink port 4242)"
    refused.note(4242)
    refused.note(17)
    assert (refused.total, refused.by_port) == (3, {4242: 2, 17: 1})
    assert refused.line() == "refused 3 datagrams not sent by the kernel (from netlink ports 17, 4242)"
    assert refused.record() == {"event": "refused", "count": 3, "ports": [17, 4242]}


def test_refusals_keep_a_bounded_number_of_ports_and_count_every_datagram() -> None:
    refused = Refusals()
    for port in range(1, 1001):
        refused.note(port)
    assert refused.total == 1000
    assert len(refused.by_port) == MAX_PORTS
    assert refused.line().endswith(", and others)")


def test_refusals_merge_keeps_the_total_and_the_ports() -> None:
    a, b = Refusals(), Refusals()
    a.note(1)
    for port in range(100, 100 + MAX_PORTS + 3):
        b.note(port)
    total = Refusals()
    total.merge(a)
    total.merge(b)
    assert total.total == 1 + MAX_PORTS + 3
    assert total.by_port[1] == 1
    assert len(total.by_port) == MAX_PORTS


# -- against the real kernel -------------------------------------------------------------


def _port(sock: socket.socket | int) -> int:
    """The netlink port id of a socket (or of a descriptor of this process)."""
    if isinstance(sock, int):
        sock = socket.socket(fileno=os.dup(sock))
        try:
            return int(sock.getsockname()[0])
        finally:
            sock.close()
    return int(sock.getsockname()[0])


def _netlink_ports(pid: int, protocol: int) -> list[int]:
    """The port ids of ``pid``'s netlink sockets of ``protocol``, from /proc/net/netlink."""
    inodes = socket_fds(pid)
    with open("/proc/net/netlink") as f:
        rows = [line.split() for line in f.read().splitlines()[1:]]
    return [int(cols[2]) for cols in rows if int(cols[1]) == protocol and int(cols[9]) in inodes]


def _forged_exec(pid: int, cpu: int) -> bytes:
    """An EXEC datagram exactly as the kernel would send it (nlmsg_pid 0 inside)."""
    return wire.encode_event(Exec(cpu, 0x7FFF0000, time.monotonic_ns(), pid, pid))


def _attacker(protocol: int) -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, protocol)
    sock.bind((0, 0))
    return sock


def test_the_connector_refuses_a_datagram_another_process_sent(children: Children) -> None:
    with procevents.listen() as conn, _attacker(wire.NETLINK_CONNECTOR) as attacker:
        attacker.sendto(_forged_exec(os.getpid(), 0), (_port(conn.fileno()), 0))
        child = children.fork(lambda: 3)
        children.wait(child)
        seen = []
        deadline = time.monotonic() + TIMEOUT
        while not any(isinstance(ev, Exit) and ev.pid == child for ev in seen):
            assert time.monotonic() < deadline, "the child's exit never came"
            seen += conn.read_batch(1.0)
        assert not [ev for ev in seen if isinstance(ev, Exec) and ev.pid == os.getpid()]
        assert not [ev for ev in seen if ev.name == "lost"]  # its made-up seq broke no count
        assert (conn.refused.total, conn.refused.by_port) == (1, {_port(attacker): 1})
        assert conn.malformed == 0  # refused before decoding, not "malformed"


def test_taskstats_refuses_records_another_process_sent(children: Children) -> None:
    costs = ExitCosts().open()
    try:
        with _attacker(taskstats.NETLINK_GENERIC) as attacker:
            attacker.sendto(b"\0" * 64, (_port(costs.fileno()), 0))
            child = children.fork(lambda: 0)
            children.wait(child)
            deadline = time.monotonic() + TIMEOUT
            while costs.take(child, None, time.monotonic_ns()) is None:
                assert time.monotonic() < deadline, "no taskstats record of the child"
                costs.collect()
            assert (costs.refused.total, costs.refused.by_port) == (1, {_port(attacker): 1})
            assert costs.malformed == 0
    finally:
        costs.close()


def test_a_forged_exec_to_procevents_and_to_a_reader_is_never_shown_and_is_counted(
    cli: Callable[..., Cli], gated: Callable[..., Gated]
) -> None:
    """Root sends well-formed EXEC datagrams for a live process to the main
    socket's port and to cpu 0's reader's, and a datagram to the taskstats
    socket's: none becomes an event or a capture; the run ends with one
    in-band record and one line that count them, by the sender's port."""
    victim = gated([SH, "-c", "read _"])  # a live process the forged execs name, started before
    watcher = cli("--json")
    watcher.wait_listening()
    (main_port,) = _netlink_ports(watcher.pid, wire.NETLINK_CONNECTOR)
    (costs_port,) = _netlink_ports(watcher.pid, taskstats.NETLINK_GENERIC)
    reader_ports = {}
    for reader in readers_of(watcher.pid):
        with open(f"/proc/{reader}/status") as f:
            cpus = next(line.split()[1] for line in f if line.startswith("Cpus_allowed_list"))
        (reader_ports[cpus],) = _netlink_ports(reader, wire.NETLINK_CONNECTOR)
    mark = nonce()
    with _attacker(wire.NETLINK_CONNECTOR) as forger, _attacker(taskstats.NETLINK_GENERIC) as genl:
        forger.sendto(_forged_exec(victim.pid, 0), (main_port, 0))
        forger.sendto(_forged_exec(victim.pid, 0), (reader_ports["0"], 0))
        genl.sendto(b"\0" * 64, (costs_port, 0))
        # Port ids are per protocol: both may well be this process's pid.
        ports = sorted({_port(forger), _port(genl)})
    # Behind the forged datagrams in every queue: an exec on cpu 0 (its
    # reader reads in order) and its exit (read after the forged record).
    assert subprocess.run(["taskset", "-c", "0", "/bin/true", mark]).returncode == 0
    watcher.wait_json(lambda e: e["event"] == "exit" and e.get("cmdline") == ["/bin/true", mark])
    assert victim.release() == 0
    assert watcher.stop() == 0
    events = watcher.json()
    assert events[-1] == {"event": "refused", "count": 3, "ports": ports}
    assert [e for e in events if e["event"] == "refused"] == [events[-1]]
    assert not [e for e in events if e["event"] == "exec" and e["pid"] == victim.pid]
    assert not [e for e in events if e["event"] == "lost"]
    (marked,) = [e for e in events if e["event"] == "exec" and e.get("cmdline") == ["/bin/true", mark]]
    assert marked["cpu"] == 0
    named = f"port {ports[0]}" if len(ports) == 1 else f"ports {ports[0]}, {ports[1]}"
    expected = f"procevents: refused 3 datagrams not sent by the kernel (from netlink {named})"
    assert expected.encode() + b"\n" in watcher.err.lines
    assert not [line for line in watcher.err.lines if b"malformed" in line]


def test_forks_are_not_counted_as_refusals(children: Children) -> None:
    """The kernel's own datagrams, many of them, are never refused."""
    with procevents.listen() as conn:
        pids = [children.fork(lambda: 0) for _ in range(20)]
        for pid in pids:
            children.wait(pid)
        forks: set[int] = set()
        deadline = time.monotonic() + TIMEOUT
        while not set(pids) <= forks:
            assert time.monotonic() < deadline
            forks |= {ev.pid for ev in conn.read_batch(1.0) if isinstance(ev, Fork)}
        assert not conn.refused
        assert json.dumps(conn.refused.record()) == '{"event": "refused", "count": 0, "ports": []}'


pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="only root can send to another socket's port")

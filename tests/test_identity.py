"""Exec ids (identity.py): ``HOST:BOOT_ID:START_TICKS:PID``, the start in
clock ticks since boot as /proc/PID/stat counts it, so a process seen from
its fork and the same process found in /proc by a later recorder get the
same id; the ids are kept with the process once known, so a parent's id
does not change when the process is reparented.  On each event:
test_enrich.py; across hosts: test_containers.py."""

from __future__ import annotations

import os
from pathlib import Path

from helpers import BOOT_OFFSET_NS, start_ns

from procevents.identity import Identity
from procevents.procfs import CLOCK_TICKS
from procevents.proctable import Proc

NS = 1_000_000_000


def test_the_id_is_host_boot_start_ticks_and_pid() -> None:
    ids = Identity("web-1", "b00t", boot_offset_ns=7 * NS)
    assert ids.exec_id(4242, 3 * NS) == f"web-1:b00t:{10 * CLOCK_TICKS}:4242"
    # a start within a tick counts the ticks begun before it, as the kernel does
    assert ids.exec_id(4242, 3 * NS + NS // CLOCK_TICKS - 1) == f"web-1:b00t:{10 * CLOCK_TICKS}:4242"
    assert ids.exec_id(4242, 3 * NS + NS // CLOCK_TICKS) == f"web-1:b00t:{10 * CLOCK_TICKS + 1}:4242"
    assert ids.exec_id(4242, None) is None


def test_the_start_ticks_are_procs_starttime() -> None:
    """A process found running (its stat's starttime) and the same process
    seen from its fork (that start in CLOCK_MONOTONIC) have one id."""
    ids = Identity("h", "b", boot_offset_ns=BOOT_OFFSET_NS)
    for starttime in (0, 1, 99, 100, 101, 12_345, 987_654_321):
        assert ids.exec_id(7, start_ns(starttime)) == f"h:b:{starttime}:7", starttime


def test_this_machine_and_this_boot_by_default() -> None:
    ids = Identity()
    assert ids.host == os.uname().nodename
    assert ids.boot == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert ids.exec_id(1, 0) == f"{ids.host}:{ids.boot}:0:1"


def test_an_id_is_kept_with_its_process() -> None:
    ids = Identity("h", "b")
    proc = Proc(pid=600, ppid=1, start_ns=8 * NS, comm="worker")
    assert ids.of(proc) == proc.exec_id == f"h:b:{8 * CLOCK_TICKS}:600"
    proc.start_ns = 9 * NS  # what the table learns later does not rename it
    assert ids.of(proc) == f"h:b:{8 * CLOCK_TICKS}:600"
    unknown = Proc(pid=601, ppid=1, start_ns=None, comm="early")
    assert ids.of(unknown) is None and unknown.exec_id is None
    unknown.start_ns = 2 * NS  # known now: named from then on
    assert ids.of(unknown) == f"h:b:{2 * CLOCK_TICKS}:601"


def test_a_parents_id_is_the_one_that_forked_it() -> None:
    ids = Identity("h", "b")
    parent = Proc(pid=10, ppid=1, start_ns=1 * NS, comm="shell")
    child = Proc(pid=11, ppid=10, start_ns=2 * NS, comm="job")
    assert ids.parent_of(child, None) is None and child.parent_exec_id is None
    assert ids.parent_of(child, child) is None
    assert ids.parent_of(child, parent) == child.parent_exec_id == f"h:b:{CLOCK_TICKS}:10"
    assert parent.exec_id == f"h:b:{CLOCK_TICKS}:10"  # the parent keeps its own too
    reaper = Proc(pid=1, ppid=0, start_ns=0, comm="init")
    assert ids.parent_of(child, reaper) == f"h:b:{CLOCK_TICKS}:10"  # reparented: still who forked it

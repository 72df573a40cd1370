"""The process table (proctable.py), against a fixture /proc tree built in
``tmp_path`` (helpers.FixtureProc, read through ``ProcFS(root=...)``) and synthetic
events built directly from :mod:`procevents.events`: seeding, relationships, updates.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import NOBODY
from helpers import (
    SEQ,
    FixtureProc,
    comm_event,
    exec_,
    exit_,
    fork,
    fx,
    procfs,
    snap,
    start_ns,
    uid_event,
)

from procevents.events import Gid
from procevents.procfs import ProcFS
from procevents.proctable import ProcessTable

__all__ = ["fx", "procfs"]  # fixtures, imported to be used here


@pytest.fixture
def seeded(fx: FixtureProc, procfs: ProcFS) -> ProcessTable:
    """init(1) -> sshd(100) -> bash(101) -> make(102) -> cc(103); init -> nobody's job(200);
    a zombie (300) and a kernel thread (2); a pid without stat (400)."""
    fx.add(1, comm="systemd", cmdline=b"/sbin/init\x00splash\x00", ppid=0, starttime=1, exe="/usr/lib/systemd/systemd")
    fx.add(2, comm="kthreadd", cmdline=b"", ppid=0, starttime=1, exe=None, cwd=None)
    fx.add(100, comm="sshd", cmdline=b"sshd: root@pts/0\x00", ppid=1, starttime=500)
    fx.add(101, comm="bash", cmdline=b"-bash\x00", ppid=100, starttime=600, uid=1000, gid=1000,
           exe="/usr/bin/bash", cwd="/home/u")
    fx.add(102, comm="make", cmdline=b"make\x00-j4\x00", ppid=101, starttime=700, uid=1000, gid=1000)
    fx.add(103, comm="a) b) c", cmdline=b"cc\x00-c\x00x.c\x00", ppid=102, starttime=701, uid=1000, euid=0)
    fx.add(200, comm="job", cmdline=b"job\x00\xff\x00", ppid=1, starttime=900, uid=NOBODY, gid=NOBODY)
    fx.add(300, comm="defunct", cmdline=b"", ppid=101, starttime=800, state="Z", exe=None)
    (fx.add(400, comm="half") / "stat").unlink()
    return ProcessTable(procfs)


class TestSeed:
    def test_entries(self, seeded: ProcessTable) -> None:
        assert sorted(seeded.procs) == [1, 2, 100, 101, 102, 103, 200, 300]
        assert len(seeded) == 8
        assert 101 in seeded and 400 not in seeded

    def test_fields(self, seeded: ProcessTable) -> None:
        bash = seeded.get(101)
        assert bash is not None
        assert bash.pid == 101
        assert bash.ppid == 100
        assert bash.comm == "bash"
        assert bash.argv == ["-bash"]
        assert bash.argv_source == "seed"
        assert bash.exe == "/usr/bin/bash"
        assert (bash.ruid, bash.euid, bash.rgid, bash.egid) == (1000, 1000, 1000, 1000)
        assert bash.start_ns == start_ns(600)
        assert bash.execs == 0

    def test_comm_from_stat_with_parens(self, seeded: ProcessTable) -> None:
        cc = seeded.get(103)
        assert cc is not None
        assert cc.comm == "a) b) c"
        assert cc.ppid == 102
        assert (cc.ruid, cc.euid) == (1000, 0)
        assert cc.argv == ["cc", "-c", "x.c"]

    def test_non_utf8_argv(self, seeded: ProcessTable) -> None:
        job = seeded.get(200)
        assert job is not None
        assert [os.fsencode(a) for a in job.argv or []] == [b"job", b"\xff"]
        assert job.ruid == NOBODY

    def test_zombie_and_kernel_thread_have_no_argv(self, seeded: ProcessTable) -> None:
        for pid in (2, 300):
            proc = seeded.get(pid)
            assert proc is not None
            assert proc.argv is None
            assert proc.argv_source is None
        assert seeded.get(2).exe is None  # type: ignore[union-attr]

    def test_no_seed(self, fx: FixtureProc, procfs: ProcFS) -> None:
        fx.add(5)
        table = ProcessTable(procfs, seed=False)
        assert len(table) == 0
        table.seed()
        assert 5 in table

    def test_load(self, seeded: ProcessTable) -> None:
        assert seeded.load(99999) is None
        assert seeded.load(400) is None
        fresh = seeded.load(102)
        assert fresh is not None and fresh.argv == ["make", "-j4"]


class TestRelationships:
    def test_descendants(self, seeded: ProcessTable) -> None:
        assert seeded.descendants({100}) == {100, 101, 102, 103, 300}
        assert seeded.descendants({102}) == {102, 103}
        assert seeded.descendants({103}) == {103}
        assert seeded.descendants({1}) == {1, 100, 101, 102, 103, 200, 300}
        assert seeded.descendants({102, 200}) == {102, 103, 200}
        assert seeded.descendants({77777}) == {77777}
        assert seeded.descendants(set()) == set()

    def test_ancestors(self, seeded: ProcessTable) -> None:
        assert [p.pid for p in seeded.ancestors(103)] == [102, 101, 100, 1]
        assert [p.pid for p in seeded.ancestors(200)] == [1]
        assert list(seeded.ancestors(1)) == []
        assert list(seeded.ancestors(77777)) == []

    def test_ancestors_stop_on_a_cycle(self, fx: FixtureProc, procfs: ProcFS) -> None:
        # lost events can leave the table with a parent loop; it must not hang
        fx.add(10, ppid=11)
        fx.add(11, ppid=12)
        fx.add(12, ppid=10)
        table = ProcessTable(procfs)
        assert [p.pid for p in table.ancestors(10)] == [11, 12]
        assert table.descendants({10}) == {10, 11, 12}

    def test_relationships_follow_events(self, seeded: ProcessTable) -> None:
        seeded.update(fork(103, 500, ts=10))
        seeded.update(fork(500, 501, ts=11))
        assert seeded.descendants({102}) == {102, 103, 500, 501}
        assert [p.pid for p in seeded.ancestors(501)] == [500, 103, 102, 101, 100, 1]
        seeded.update(exit_(500, ts=12, parent=103))
        assert 500 not in seeded.descendants({102})


class TestUpdate:
    def test_fork_copies_the_parent(self, seeded: ProcessTable) -> None:
        child = seeded.update(fork(101, 600, ts=123_456_789))
        assert child is not None
        assert seeded.get(600) is child
        assert child.pid == 600
        assert child.ppid == 101
        assert child.start_ns == 123_456_789
        assert child.comm == "bash"
        assert child.argv == ["-bash"]
        assert child.argv_source == "fork"
        assert child.exe == "/usr/bin/bash"
        assert (child.ruid, child.euid, child.rgid, child.egid) == (1000, 1000, 1000, 1000)
        assert child.execs == 0

    def test_fork_of_an_unknown_parent_loads_it(self, fx: FixtureProc, procfs: ProcFS) -> None:
        fx.add(50, comm="late", cmdline=b"late\x00x\x00", uid=7)
        table = ProcessTable(procfs, seed=False)
        child = table.update(fork(50, 51, ts=5))
        assert child is not None
        assert (child.comm, child.argv, child.ruid) == ("late", ["late", "x"], 7)
        assert 50 in table

    def test_fork_of_a_vanished_parent(self, procfs: ProcFS) -> None:
        table = ProcessTable(procfs, seed=False)
        child = table.update(fork(50, 51, ts=5))
        assert child is not None
        assert (child.ppid, child.comm, child.argv, child.ruid, child.start_ns) == (50, None, None, None, 5)
        assert child.argv_source is None

    def test_thread_fork_adds_no_process(self, seeded: ProcessTable) -> None:
        before = set(seeded.procs)
        proc = seeded.update(fork(101, 5000, thread_of=101))
        assert proc is seeded.get(101)
        assert set(seeded.procs) == before

    def test_exec_with_snapshot(self, seeded: ProcessTable) -> None:
        seeded.update(fork(101, 600, ts=1))
        proc = seeded.update(exec_(600, ts=2), snap(["/usr/bin/prog", "--flag"], comm="prog"))
        assert proc is seeded.get(600)
        assert proc is not None
        assert proc.argv == ["/usr/bin/prog", "--flag"]
        assert proc.argv_source == "exec"
        assert proc.comm == "prog"
        assert proc.exe == "/usr/bin/prog"
        assert proc.cwd == "/tmp"
        assert (proc.ruid, proc.euid) == (1000, 1000)
        assert proc.execs == 1
        assert proc.start_ns == 1  # exec keeps the process's start
        seeded.update(exec_(600, ts=3), snap(["second"]))
        assert proc.execs == 2 and proc.argv == ["second"]

    def test_exec_without_argv_forgets_the_inherited_one(self, seeded: ProcessTable) -> None:
        seeded.update(fork(101, 600, ts=1))
        proc = seeded.update(exec_(600), snap(None, comm=None, missing="gone"))
        assert proc is not None
        assert proc.argv is None
        assert proc.argv_source is None
        assert proc.exe is None
        assert proc.comm is None  # unknown, never the name it had before the exec

    def test_exec_of_an_unknown_gone_process(self, procfs: ProcFS) -> None:
        table = ProcessTable(procfs, seed=False)
        proc = table.update(exec_(77), snap(None, comm=None, missing="gone"))
        assert proc is not None and proc.pid == 77 and proc.argv is None
        assert 77 in table

    def test_exit_removes_and_returns(self, seeded: ProcessTable) -> None:
        bash = seeded.get(101)
        proc = seeded.update(exit_(101, code=256, parent=100))
        assert proc is bash
        assert 101 not in seeded
        assert seeded.get(101) is None

    def test_exit_of_a_thread_keeps_the_process(self, seeded: ProcessTable) -> None:
        seeded.update(fork(101, 5000, thread_of=101))
        proc = seeded.update(exit_(5000, tgid=101))
        assert proc is seeded.get(101)
        assert 101 in seeded

    def test_exit_of_a_thread_after_its_process_still_finds_it(self, seeded: ProcessTable) -> None:
        # A joined thread may be reported gone after its process (the join
        # returns before the kernel's exit event for the thread is sent).
        bash = seeded.get(101)
        seeded.update(fork(101, 5000, thread_of=101))
        assert seeded.update(exit_(101, parent=100)) is bash
        assert seeded.update(exit_(5000, tgid=101)) is bash
        assert 101 not in seeded
        # Until the pid names a new process: then a thread exit is that one's.
        child = seeded.update(fork(200, 101))
        assert seeded.update(exit_(5001, tgid=101)) is child is not bash

    def test_exit_of_an_unknown_process(self, seeded: ProcessTable) -> None:
        proc = seeded.update(exit_(4444, parent=101))
        assert proc is not None
        assert (proc.pid, proc.ppid, proc.argv, proc.comm) == (4444, 101, None, None)
        assert 4444 not in seeded

    def test_comm_event(self, seeded: ProcessTable) -> None:
        proc = seeded.update(comm_event(101, b"renamed"))
        assert proc is not None and proc.comm == "renamed"
        seeded.update(comm_event(101, b"\xffbin"))
        assert os.fsencode(seeded.get(101).comm) == b"\xffbin"  # type: ignore[union-attr, arg-type]

    def test_comm_of_a_thread_keeps_the_process_name(self, seeded: ProcessTable) -> None:
        seeded.update(comm_event(5000, b"worker", tgid=101))
        assert seeded.get(101).comm == "bash"  # type: ignore[union-attr]

    def test_uid_and_gid_events(self, seeded: ProcessTable) -> None:
        proc = seeded.update(uid_event(101, NOBODY, 0))
        assert proc is not None and (proc.ruid, proc.euid) == (NOBODY, 0)
        seeded.update(Gid(0, next(SEQ), 1, 101, 101, 5, 6))
        assert (proc.rgid, proc.egid) == (5, 6)
        child = seeded.update(fork(101, 600))
        assert child is not None and (child.ruid, child.euid, child.rgid, child.egid) == (NOBODY, 0, 5, 6)

    def test_pid_reuse_gives_a_fresh_entry(self, seeded: ProcessTable) -> None:
        pid = 600
        a = seeded.update(fork(101, pid, ts=1_000))
        seeded.update(exec_(pid, ts=1_100), snap(["program-A", "--a"], comm="progA"))
        gone = seeded.update(exit_(pid, ts=1_500, parent=101))
        assert gone is a
        assert gone is not None and gone.argv == ["program-A", "--a"]
        assert pid not in seeded
        # the pid comes back, as a child of another process
        b = seeded.update(fork(200, pid, ts=2_000))
        assert b is not None and b is not a
        assert b.argv == ["job", "\udcff"]  # the new parent's, never A's
        assert b.comm == "job"
        assert b.start_ns == 2_000
        assert b.ppid == 200
        assert b.execs == 0
        assert b.ruid == NOBODY
        exited = seeded.update(exit_(pid, ts=2_500, parent=200))
        assert exited is b and exited.argv != ["program-A", "--a"]

    def test_pid_reuse_without_the_exit(self, seeded: ProcessTable) -> None:
        # the exit was lost: the new fork still replaces the old entry
        seeded.update(fork(101, 600, ts=1))
        seeded.update(exec_(600), snap(["program-A"]))
        b = seeded.update(fork(102, 600, ts=9))
        assert b is not None and b.argv == ["make", "-j4"] and b.ppid == 102 and b.start_ns == 9

    def test_resync_drops_dead_and_replaces_reused(self, fx: FixtureProc, procfs: ProcFS, tmp_path: Path) -> None:
        fx.add(10, comm="old", starttime=100)
        fx.add(11, comm="dies", starttime=100)
        table = ProcessTable(procfs)
        table.update(exec_(10), snap(["argv-of-old"]))
        shutil.rmtree(tmp_path / "11")
        shutil.rmtree(tmp_path / "10")
        fx.add(10, comm="new", cmdline=b"new\x00", starttime=100_000)  # a different start time
        fx.add(12, comm="born", starttime=200)
        table.resync()
        assert sorted(table.procs) == [10, 12]
        assert table.get(10).comm == "new"  # type: ignore[union-attr]
        assert table.get(10).argv == ["new"]  # type: ignore[union-attr]

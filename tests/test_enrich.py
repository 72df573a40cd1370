"""The Enricher (enrich.py) that feeds the process table and describes each
event, against a fixture /proc tree (helpers.FixtureProc): what each event
carries, and the rescan of /proc after a loss.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from helpers import (
    FixtureProc,
    exec_,
    exit_,
    fork,
    fx,
    procfs,
    snap,
)

from procevents.costs import CostJoin, TaskCost
from procevents.enrich import Enricher
from procevents.events import Event, Lost
from procevents.identity import Identity
from procevents.procfs import ProcFS
from procevents.proctable import ProcessTable

__all__ = ["fx", "procfs"]  # fixtures, imported to be used here


def _cost(pid: int, **fields: object) -> TaskCost:
    """A taskstats record of task ``pid`` (figures not given are unknown)."""
    record: dict[str, object] = dict.fromkeys(TaskCost.__dataclass_fields__)
    record.update({"pid": pid, "thread_group": False, "version": 16, "elapsed": None, "stime": 0.0, **fields})
    return TaskCost(**record)  # type: ignore[arg-type]


class TestEnricher:
    def test_prefetch_and_apply(self, fx: FixtureProc, procfs: ProcFS) -> None:
        fx.add(1, comm="init", ppid=0, starttime=1)
        fx.add(600, comm="prog", cmdline=b"prog\x00arg one\x00\xff\x00", ppid=1, uid=0, cwd="/srv")
        table = ProcessTable(procfs)
        enricher = Enricher(table, identity=Identity("h", "b", boot_offset_ns=table.boot_offset_ns))
        batch: list[Event] = [fork(1, 600, ts=1_000_000_000), exec_(600, ts=1_100_000_000),
                              exit_(600, ts=1_600_000_000, code=3 << 8, parent=1)]
        snapshots = enricher.read_execs(batch)
        assert set(snapshots) == {1}
        infos = [enricher.apply(ev, snapshots.get(i))[1] for i, ev in enumerate(batch)]
        # Started 8 s after boot (the fork's CLOCK_MONOTONIC plus the offset),
        # in 10 ms ticks; init's 1 tick is /proc's starttime as it is.
        ids = {"exec_id": "h:b:800:600", "parent_exec_id": "h:b:1:1"}
        assert infos[0] == {"comm": "init", "ppid": 1, **ids}
        assert all(info["exec_id"] == ids["exec_id"] for info in infos)
        exec_info = infos[1]
        assert exec_info["cmdline"] == ["prog", "arg one", "\udcff"]
        assert exec_info["exe"] == "/usr/bin/proc"
        assert exec_info["cwd"] == "/srv"
        assert exec_info["ppid"] == 1
        assert exec_info["uid"] == 0
        assert exec_info["user"] == "root"
        assert exec_info["comm"] == "prog"
        assert "missing" not in exec_info
        exit_info = infos[2]
        assert exit_info["cmdline"] == ["prog", "arg one", "\udcff"]
        assert exit_info["comm"] == "prog"
        assert exit_info["duration"] == pytest.approx(0.6)
        assert exit_info["ppid"] == 1
        assert exit_info["user"] == "root"
        assert (enricher.execs, enricher.argv_captured) == (1, 1)

    def test_gone_exec(self, fx: FixtureProc, procfs: ProcFS) -> None:
        fx.add(1, comm="sh", cmdline=b"sh\x00-c\x00x\x00", ppid=0)
        enricher = Enricher(ProcessTable(procfs))
        batch: list[Event] = [fork(1, 600, ts=1), exec_(600, ts=2), exit_(600, ts=3, parent=1)]
        snapshots = enricher.read_execs(batch)
        infos = [enricher.apply(ev, snapshots.get(i))[1] for i, ev in enumerate(batch)]
        assert infos[1]["cmdline"] is None
        assert infos[1]["missing"] == "gone"
        assert infos[1]["comm"] is None  # unknown: not the name it had before the exec
        assert infos[2]["cmdline"] is None  # not the parent's argv inherited at fork
        assert (enricher.execs, enricher.argv_captured) == (1, 0)

    def test_reused_pid_read_is_discarded(self, fx: FixtureProc, procfs: ProcFS) -> None:
        # A's exec is in the batch, but by the time /proc is read, pid 600
        # belongs to B (whose fork the socket delivers as `later`).
        fx.add(1, comm="init", ppid=0)
        fx.add(600, comm="progB", cmdline=b"program-B\x00")
        enricher = Enricher(ProcessTable(procfs, seed=False))
        batch: list[Event] = [fork(1, 600, ts=1), exec_(600, ts=2)]
        later: list[Event] = [exit_(600, ts=3, parent=1), fork(1, 600, ts=4), exec_(600, ts=5)]
        snapshots = enricher.read_execs(batch)
        enricher.check_snapshots(batch, snapshots, later, complete=True)
        _, info = enricher.apply(batch[1], snapshots[1])
        assert info["cmdline"] is None
        assert info["missing"] == "superseded"
        _, exit_info = enricher.apply(later[0], None)
        assert exit_info["cmdline"] is None

    def test_exec_without_snapshot_reports_no_argv(self, fx: FixtureProc, procfs: ProcFS) -> None:
        fx.add(1, comm="sh", cmdline=b"sh\x00", ppid=0)
        enricher = Enricher(ProcessTable(procfs))
        enricher.apply(fork(1, 600), None)
        _, info = enricher.apply(exec_(600), None)
        assert info["cmdline"] is None

    def test_unknown_uid_shown_as_number(self, fx: FixtureProc, procfs: ProcFS) -> None:
        fx.add(600, uid=4_000_000_001)
        enricher = Enricher(ProcessTable(procfs))
        snapshots = enricher.read_execs([exec_(600)])
        _, info = enricher.apply(exec_(600), snapshots[0])
        assert info["user"] == "4000000001"

    def test_a_thread_exit_after_its_process_has_its_name_and_figures(
        self, fx: FixtureProc, procfs: ProcFS
    ) -> None:
        # A joined thread may be reported gone after its process: its exit is
        # still a thread's of that process, with its own figures, and the
        # process's sum counts them once (never again for a new process 600).
        fx.add(1, comm="init", ppid=0)
        join = CostJoin()
        costs = SimpleNamespace(join=join, take=join.take)
        enricher = Enricher(ProcessTable(procfs, seed=False), costs=costs)  # type: ignore[arg-type]
        enricher.apply(fork(1, 600, ts=1_000), None)
        enricher.apply(exec_(600, ts=2_000), snap(["prog"], comm="prog"))
        enricher.apply(fork(600, 601, ts=3_000, thread_of=600), None)
        join.add([_cost(601, tgid=600, utime=0.25), _cost(600, tgid=600, utime=0.5)], received_ns=4_000)
        _, process = enricher.apply(exit_(600, ts=5_000, parent=1), None)
        _, thread = enricher.apply(exit_(601, ts=5_100, tgid=600), None)
        assert process["utime"] == 0.75  # its own and its thread's
        assert (thread["thread"], thread["comm"], thread["cmdline"], thread["utime"]) == (True, "prog", ["prog"], 0.25)
        enricher.apply(fork(1, 600, ts=6_000), None)
        join.add([_cost(600, tgid=600, utime=1.0)], received_ns=7_000)
        _, again = enricher.apply(exit_(600, ts=8_000, parent=1), None)
        assert again["utime"] == 1.0


class TestResyncAfterLoss:
    """A Lost event makes the pipeline rescan /proc, at most once a second."""

    def test_lost_exit_and_fork_are_repaired(self, fx: FixtureProc, procfs: ProcFS) -> None:
        import shutil

        fx.add(100, comm="old", cmdline=b"old\0", starttime=1000)
        enricher = Enricher(ProcessTable(procfs))
        assert enricher.table.get(100) is not None and enricher.table.get(100).comm == "old"  # type: ignore[union-attr]
        # Meanwhile (events lost): 100 exited, a new 100 started, 200 appeared.
        shutil.rmtree(fx.root / "100")
        fx.add(100, comm="new", cmdline=b"new\0arg\0", starttime=9000, ppid=200)
        fx.add(200, comm="parent", starttime=8000)
        enricher.apply(Lost(-1, 0, 1, 3, "drops"), None)
        assert enricher.maybe_resync(now=10.0)
        proc = enricher.table.get(100)
        assert proc is not None and (proc.comm, proc.argv, proc.ppid) == ("new", ["new", "arg"], 200)
        assert enricher.table.get(200) is not None
        # A second loss within the interval waits; after it, it rescans.
        enricher.apply(Lost(-1, 0, 2, 1, "drops"), None)
        assert not enricher.maybe_resync(now=10.5)
        assert enricher.maybe_resync(now=11.1)
        assert enricher.resyncs == 2
        assert not enricher.maybe_resync(now=20.0)  # nothing asked


def test_a_batch_has_a_byte_budget_for_argv(fx: FixtureProc, procfs: ProcFS) -> None:
    """A batch of 100 execs of a 256 KiB command line (any user can make
    one): argv is whole until BATCH_ARGV_BYTES is spent, then cut to
    ARGV_CUT_LIMIT and marked; every exec keeps its event and its name."""
    from procevents.enrich import BATCH_ARGV_BYTES
    from procevents.procfs import ARGV_CUT_LIMIT, ARGV_LIMIT

    fx.add(1, comm="init", ppid=0, starttime=1)
    fx.add(600, comm="big", cmdline=(b"x" * (128 * 1024 - 1) + b"\0") * 2, ppid=1, uid=0, cwd="/srv")
    enricher = Enricher(ProcessTable(procfs))
    batch: list[Event] = [exec_(600, ts=2_000 + i) for i in range(100)]
    found = enricher.read_execs(batch)
    assert sorted(found) == list(range(100))
    sizes = [sum(len(arg) for arg in found[i].argv or ()) for i in range(100)]
    whole = [size for size in sizes if size == ARGV_LIMIT - 2]
    assert len(whole) == BATCH_ARGV_BYTES // (ARGV_LIMIT - 2)
    assert sum(sizes) <= BATCH_ARGV_BYTES + 100 * ARGV_CUT_LIMIT
    for i in range(100):
        snapshot = found[i]
        assert snapshot.comm == "big"
        assert snapshot.argv_truncated is (sizes[i] < ARGV_LIMIT - 2)
        if snapshot.argv_truncated:
            assert sizes[i] <= ARGV_CUT_LIMIT

"""Exec snapshots and their pid-reuse checks (snapshot.py): validate_snapshots
against synthetic events, with a complete and an incomplete drain.
"""

from __future__ import annotations

from helpers import (
    exec_,
    exit_,
    fork,
    snap,
)

from procevents.events import Event, Exec
from procevents.snapshot import ExecSnapshot, validate_snapshots


def validate(batch: list[Event], snapshots: dict[int, ExecSnapshot], later: list[Event] | None = None) -> None:
    indexes = sorted(snapshots)
    assert all(type(batch[i]) is Exec for i in indexes)
    validate_snapshots(batch, indexes, [snapshots[i] for i in indexes], later or [])


class TestValidateSnapshots:
    def assert_kept(self, s: ExecSnapshot, argv: list[str]) -> None:
        assert s.argv == argv
        assert s.missing is None
        assert s.exe is not None and s.owner is not None

    def assert_superseded(self, s: ExecSnapshot) -> None:
        assert s.argv is None
        assert s.missing == "superseded"
        assert (s.exe, s.cwd, s.owner, s.comm) == (None, None, None, None)

    def test_lone_exec_kept(self) -> None:
        s = snap(["a"])
        validate([exec_(10)], {0: s})
        self.assert_kept(s, ["a"])

    def test_exec_again_in_batch(self) -> None:
        first, second = snap(["newest"]), snap(["newest"])
        validate([exec_(10), exec_(10)], {0: first, 1: second})
        self.assert_superseded(first)
        self.assert_kept(second, ["newest"])

    def test_refork_in_batch(self) -> None:
        s = snap(["b-argv"])
        validate([exec_(10), exit_(10), fork(1, 10)], {0: s})
        self.assert_superseded(s)

    def test_thread_taking_the_pid_in_batch(self) -> None:
        s = snap(["x"])
        validate([exec_(10), exit_(10), fork(20, 10, thread_of=20)], {0: s})
        self.assert_superseded(s)

    def test_exec_again_later(self) -> None:
        s = snap(["x"])
        validate([exec_(10)], {0: s}, later=[exec_(10)])
        self.assert_superseded(s)

    def test_refork_later(self) -> None:
        s = snap(["x"])
        validate([exec_(10)], {0: s}, later=[exit_(10), fork(1, 10)])
        self.assert_superseded(s)

    def test_events_before_the_exec_do_not_count(self) -> None:
        s = snap(["x"])
        validate([fork(1, 10), exec_(10), exit_(11)], {1: s})
        self.assert_kept(s, ["x"])
        t = snap(["y"])
        validate([exec_(10), exit_(10), fork(1, 10), exec_(10)], {0: snap(["y"]), 3: t})
        self.assert_kept(t, ["y"])

    def test_exit_alone_does_not_supersede(self) -> None:
        s = snap(["x"])
        validate([exec_(10), exit_(10)], {0: s})
        self.assert_kept(s, ["x"])

    def test_other_pids_do_not_interfere(self) -> None:
        a, b = snap(["a"]), snap(["b"])
        validate([exec_(10), fork(10, 11), exec_(12), exec_(11)], {0: a, 2: b}, later=[fork(1, 13), exec_(14)])
        self.assert_kept(a, ["a"])
        self.assert_kept(b, ["b"])

    def test_interleaved(self) -> None:
        p0, q1, q3, r4 = snap(["p0"]), snap(["q1"]), snap(["q3"]), snap(["r4"])
        batch: list[Event] = [exec_(10), exec_(20), fork(1, 10), exec_(20), exec_(30)]
        validate(batch, {0: p0, 1: q1, 3: q3, 4: r4}, later=[fork(5, 30)])
        self.assert_superseded(p0)
        self.assert_superseded(q1)
        self.assert_kept(q3, ["q3"])
        self.assert_superseded(r4)

    def test_gone_stays_gone(self) -> None:
        s = snap(None, comm=None, missing="gone")
        validate([exec_(10), fork(1, 10)], {0: s})
        assert s.argv is None and s.missing == "gone"

    def test_a_name_read_without_argv_is_checked_too(self) -> None:
        """argv already gone, but comm and cwd were read: after a re-fork of
        the pid they may be the new process's, so they are dropped."""
        s = ExecSnapshot(argv=None, comm="other", exe=None, cwd="/elsewhere", owner=(0, 0), missing="gone")
        validate([exec_(10), exit_(10), fork(1, 10)], {0: s})
        assert (s.comm, s.cwd, s.owner, s.missing) == (None, None, None, "gone")
        kept = ExecSnapshot(argv=None, comm="tiny", exe=None, cwd="/", owner=(0, 0), missing="gone")
        validate([exec_(10), exit_(10)], {0: kept})
        assert (kept.comm, kept.cwd, kept.missing) == ("tiny", "/", "gone")

    def test_no_execs(self) -> None:
        validate_snapshots([fork(1, 2)], [], [], [exec_(2)])


class TestValidateIncompleteDrain:
    """When peek() stopped short (reader far behind), start times decide."""

    def test_start_matching_the_fork_in_the_batch_is_kept(self) -> None:
        s = snap(["a"])
        s.start_ns = 1_000 + 5_000_000  # within a tick of the fork at ts 1_000
        validate_snapshots([fork(1, 10), exec_(10)], [1], [s], [], complete=False)
        assert s.argv == ["a"]

    def test_start_far_from_the_known_start_is_dropped(self) -> None:
        s = snap(["stranger"])
        s.start_ns = 5_000_000_000
        validate_snapshots([exec_(10)], [0], [s], [], complete=False, known_start=lambda pid: 1_000)
        assert s.argv is None and s.missing == "superseded"

    def test_unknown_start_is_dropped(self) -> None:
        s = snap(["who"])
        s.start_ns = 1_000
        validate_snapshots([exec_(10)], [0], [s], [], complete=False, known_start=lambda pid: None)
        assert s.argv is None

    def test_complete_drain_needs_no_start_time(self) -> None:
        s = snap(["a"])
        validate_snapshots([exec_(10)], [0], [s], [], complete=True, known_start=lambda pid: None)
        assert s.argv == ["a"]

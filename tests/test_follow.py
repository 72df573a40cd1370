"""-p ends once every followed process has exited (--keep-running goes on);
the notice and the summary say what is selected and counted."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

from helpers import Cli, Gated, skip_unless_connector

from procevents.events import Exec, Exit, Fork, Lost
from procevents.filters import DescendantFilter, FollowEnd, live_descendants
from procevents.procfs import GONE, ProcFS, Stat, Unavailable
from procevents.stats import Summary, counted


def test_pid_ends_with_status_0_once_the_tree_has_exited(cli: Callable[..., Cli]) -> None:
    root = Gated(["sh", "-c", "read _; sh -c 'exit 3'; exit 0"])
    try:
        c = cli("-p", str(root.pid), "-e", "exec,exit")
        c.wait_listening()
        notice = c.err.lines[-1].decode()
        assert notice.startswith(
            f"procevents: listening for exec, exit events, following pid {root.pid} and its descendants "
            "until they have all exited ("
        ), notice
        assert root.release() == 0
    finally:
        root.cleanup()
    assert c.wait() == 0, c.err.text  # by itself: no signal sent
    lines = c.out.text.splitlines()
    assert lines and lines[-1].split()[1:3] == ["exit", str(root.pid)], (lines, c.err.text)
    summary = c.err.text.splitlines()[-1]
    assert summary.startswith("procevents: 3 events shown (exec 1, exit 2) of "), summary
    assert summary.endswith(" events received, 0 events lost"), summary


def test_keep_running_goes_on_after_the_tree(cli: Callable[..., Cli]) -> None:
    root = Gated(["sh", "-c", "read _; exit 0"])
    try:
        c = cli("-p", str(root.pid), "--keep-running", "-e", "exit")
        c.wait_listening()
        assert c.err.lines[-1].decode().startswith(
            f"procevents: listening for exit events, following pid {root.pid} and its descendants ("
        )
        assert root.release() == 0
    finally:
        root.cleanup()
    c.out.wait_for(lambda line: f" {root.pid} ".encode() in line and b" exit " in line)
    assert c.proc.poll() is None, "ended although --keep-running"
    assert c.stop(signal.SIGINT) == 0


class _FakeProc(ProcFS):
    """/proc with these pid -> ppid links only."""

    def __init__(self, parents: dict[int, int]) -> None:
        super().__init__("/nonexistent")
        self.parents = parents

    def pids(self) -> list[int]:
        return sorted(self.parents)

    def stat(self, pid: int) -> Stat | Unavailable:
        if pid not in self.parents:
            return GONE
        return Stat(comm="x", state="S", ppid=self.parents[pid], pgrp=0, session=0, tty_nr=0, starttime=1,
                    num_threads=1)


def test_a_process_gone_before_the_subscription_does_not_hold_it_open() -> None:
    follow = DescendantFilter({10, 11, 12})  # from the table, before subscribing: 11 has gone since
    seen = [0]
    end = FollowEnd(follow, {10}, lambda: seen[0], _FakeProc({10: 1, 12: 10, 13: 12}))
    assert end() is False  # first call: /proc read, 13 (forked meanwhile) joins
    assert follow.tgids == {10, 11, 12, 13}
    assert end() is False and 11 in follow.tgids  # nothing read yet: 11's exit may still be queued
    seen[0] = 5  # a batch went through
    assert end() is False and follow.tgids == {10, 12, 13}
    for pid in (13, 12, 10):
        follow(Exit(0, pid, 1, pid, pid, 0, 17, 1, 1))
    assert end() is True


def test_an_exit_queued_before_the_first_read_is_still_shown() -> None:
    follow = DescendantFilter({10})
    seen = [0]
    end = FollowEnd(follow, {10}, lambda: seen[0], _FakeProc({}))  # 10 exited after subscribing
    assert end() is False
    assert follow(Fork(0, 1, 1, 10, 10, 20, 20)) and follow(Exit(0, 2, 2, 10, 10, 0, 17, 1, 1))
    seen[0] = 2
    assert follow.tgids == {20}
    assert end() is False  # its child lives on


def test_live_descendants() -> None:
    parents = {1: 0, 10: 1, 11: 10, 12: 11, 20: 1}
    assert live_descendants({10}, parents) == {10, 11, 12}
    assert live_descendants({99}, parents) == set()


def test_summary_words() -> None:
    summary = Summary()
    summary.add(Exec(0, 1, 1, 2, 2))
    summary.seen = 1
    assert summary.line() == "1 event received (exec 1), 0 events lost"
    summary.seen = 40
    summary.add(Lost(0, 2, 2, 1, "drops"))
    summary.seen += 1
    assert summary.line() == "1 event shown (exec 1) of 40 events received, 1 event lost"
    assert Summary("replayed", "read", "replayed").line() == "0 events replayed, 0 events lost"
    assert [counted(n, "process", "processes") for n in (0, 1, 2)] == ["0 processes", "1 process", "2 processes"]


def test_trace_counts_one_process(tmp_path: Path) -> None:
    skip_unless_connector()
    from helpers import run_cli

    result = run_cli("trace", "--", "true")
    assert result.returncode == 0, result.stderr
    assert b"procevents: 1 process started, 0 failed, 0 killed by a signal" in result.stderr, result.stderr

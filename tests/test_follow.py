"""-p ends once every followed process has exited (--keep-running goes on),
and leaves out procevents' own processes (``-p $$ &`` from a shell ends with
the shell, and neither shows nor records itself); the notice and the
summary say what is selected and counted."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from conftest import Recorder
from helpers import (
    LISTENING,
    SH,
    TIMEOUT,
    TRUE,
    Cli,
    Gated,
    Lines,
    NatsServer,
    child_pids,
    cli_argv,
    db_rows,
    env,
    nats,
    run_cli,
    skip_unless_connector,
    wait_until,
)

from procevents.events import Event, Exec, Exit, Fork, Lost
from procevents.filters import DescendantFilter, FollowEnd, OwnProcesses, live_descendants
from procevents.procfs import GONE, ProcFS, Stat, Unavailable
from procevents.stats import Summary, counted

__all__ = ["nats"]  # the fixture, imported to be used here


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
    end = FollowEnd(follow, {10}, _FakeProc({10: 1, 12: 10, 13: 12}))
    assert end() is False  # first call: /proc read, 13 (forked meanwhile) joins
    assert follow.tgids == {10, 11, 12, 13}
    assert end.scanned_ns is not None
    follow(Exit(0, 1, end.scanned_ns - 1, 20, 20, 0, 17, 1, 1))  # queued before the scan ended
    assert end() is False and 11 in follow.tgids  # 11's exit may still be queued behind it
    follow(Exit(0, 2, end.scanned_ns + 1, 21, 21, 0, 17, 1, 1))  # sent after the scan: 11's would be read
    assert end() is False and follow.tgids == {10, 12, 13}
    for pid in (13, 12, 10):
        follow(Exit(0, 3, end.scanned_ns + 2, pid, pid, 0, 17, 1, 1))
    assert end() is True


def test_an_exit_queued_before_the_first_read_is_still_shown() -> None:
    follow = DescendantFilter({10})
    end = FollowEnd(follow, {10}, _FakeProc({}))  # 10 exited after subscribing
    assert end() is False
    assert end.scanned_ns is not None
    assert follow(Fork(0, 1, 1, 10, 10, 20, 20)) and follow(Exit(0, 2, 2, 10, 10, 0, 17, 1, 1))
    assert follow.tgids == {20}
    assert end() is False  # its child lives on


def test_a_first_batch_read_while_subscribing_does_not_drop_the_doubtful() -> None:
    # The first batch may be what subscribing read while waiting for its
    # ack: events from before the scan.  A root gone during the scan (it
    # exited just after the subscription) is still followed until an event
    # sent after the scan says its own exit, queued before, has been read.
    follow = DescendantFilter({10})
    end = FollowEnd(follow, {10}, _FakeProc({}))
    assert end() is False and end.doubtful == {10}
    assert end.scanned_ns is not None
    assert not follow(Exit(0, 1, end.scanned_ns - 10, 30, 30, 0, 17, 1, 1))  # a stranger's, read while subscribing
    assert end() is False and follow.tgids == {10}
    assert follow(Fork(0, 2, end.scanned_ns - 5, 10, 10, 40, 40))  # the root's own, queued before the scan ended
    assert follow.tgids == {10, 40}


def test_the_marker_thread_ends_a_follow_whose_roots_all_exited_before_the_subscription(recorder: Recorder) -> None:
    # On a quiet host nothing else may come: FollowEnd's own marker (a
    # thread started and ended after the scan) is the event that says so.
    follow = DescendantFilter({999_999_999})
    end = FollowEnd(follow, {999_999_999}, _FakeProc({}))
    assert end() is False
    assert end.scanned_ns is not None
    scanned = end.scanned_ns

    def marks(events: list[Event]) -> list[Event]:
        return [ev for ev in events if isinstance(ev, Fork) and ev.tgid == os.getpid() and ev.is_thread
                and ev.timestamp_ns > scanned]

    recorder.wait_until(lambda events: bool(marks(events)), "the marker thread's fork")
    follow(marks(recorder.events)[0])
    assert end() is True


def test_an_ancestor_of_ours_below_the_root_is_not_waited_for() -> None:
    # 100 the followed shell, 60 a sudo that runs procevents (50) and waits for it.
    follow = DescendantFilter({100, 60, 50}, OwnProcesses(50))
    procfs = _FakeProc({1: 0, 100: 1, 60: 100, 50: 60})
    end = FollowEnd(follow, {100}, procfs)
    assert end() is False and end.above == {60} and follow.tgids == {100, 60}
    follow(Exit(0, 1, 5, 100, 100, 0, 17, 1, 1))
    assert end() is True  # only sudo is left, and it waits for us


def test_an_ancestor_gone_since_is_waited_for_under_its_reused_pid() -> None:
    follow = DescendantFilter({100, 60, 50}, OwnProcesses(50))
    procfs = _FakeProc({1: 0, 100: 1, 60: 100, 50: 60})
    end = FollowEnd(follow, {100}, procfs)
    assert end() is False and end.above == {60}
    follow(Exit(0, 1, 5, 60, 60, 0, 17, 100, 100))  # it did not wait: we are init's now
    procfs.parents = {1: 0, 100: 1, 50: 1, 60: 100}
    follow(Fork(0, 2, 6, 100, 100, 60, 60))  # and its pid is a new child of the shell
    follow(Exit(0, 3, 7, 100, 100, 0, 17, 1, 1))
    assert follow.tgids == {60}
    assert end() is False and end.above == set()


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


class _Shell:
    """``sh -c 'procevents ARGS -p $$ & ...; exit'``, the README's recipe:
    the shell starts procevents in the background, waits (on its stdin)
    until the test has seen it listening, runs ``/bin/true MARKER`` and
    exits.  procevents and every process of its own hold the shell's stderr
    (the readers and the shipper inherit it), so its end is the pipe's."""

    def __init__(self, *args: str, waiter: bool = False) -> None:
        command = shlex.join([*cli_argv(), *args])
        if waiter:
            # procevents under a shell that waits for it, as sudo would.
            command = f"{SH} -c {shlex.quote(command + ' -p $PPID; echo ended')}"
        else:
            command += " -p $$"
        script = f"{command} & echo $!; read _; {TRUE} marker; exit 0"
        self.proc = subprocess.Popen(
            [SH, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env(),
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.out = Lines(self.proc.stdout)
        self.err = Lines(self.proc.stderr)
        self.procevents = self.waiter = int(self.out.wait_for(lambda line: True))
        if waiter:
            wait_until(lambda: len(child_pids(self.waiter)) == 1, "procevents under its waiting shell")
            self.procevents = child_pids(self.waiter)[0]

    def own(self, shipper: bool = False) -> set[int]:
        """procevents and its readers, guardian (and shipper), once it listens."""
        self.err.wait_for(lambda line: line.startswith(LISTENING))
        kids = set(child_pids(self.procevents))
        assert len(kids) >= 2 + shipper, kids  # a reader at least, the guardian, the shipper
        return {self.procevents, *kids}

    def finish(self) -> str:
        """Let the shell go on and exit; wait for procevents to end by itself."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.close()
        assert self.proc.wait(TIMEOUT) == 0
        self.err.join()  # EOF: every holder of the shell's stderr has gone
        assert self.err.eof, f"procevents did not end after the shell; stderr:\n{self.err.text}"
        wait_until(lambda: not os.path.exists(f"/proc/{self.procevents}"), "procevents reaped")
        return self.err.text

    def cleanup(self) -> None:
        if os.path.exists(f"/proc/{self.procevents}"):
            os.kill(self.procevents, signal.SIGTERM)  # ours: started by this test's shell
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _ends_by_itself(shell: _Shell) -> None:
    err = shell.finish()
    # Its summary: it ended by itself, not by a signal.
    assert any(line.endswith(" events lost") for line in err.splitlines()), err


def test_p_of_the_shell_that_started_it_ends_and_never_shows_itself(tmp_path: Path) -> None:
    skip_unless_connector()
    out = tmp_path / "events.jsonl"
    shell = _Shell("--json", "-o", str(out))
    try:
        own = shell.own()
        _ends_by_itself(shell)
    finally:
        shell.cleanup()
    events = [json.loads(line) for line in out.read_text().splitlines()]
    shown = {pid for event in events for pid in (event["pid"], event["tgid"], event.get("child_tgid"))}
    assert not shown & own, (own, events)
    assert any(event["event"] == "exec" and event["cmdline"] == [TRUE, "marker"] for event in events), events
    assert events[-1]["event"] == "exit" and events[-1]["pid"] == shell.proc.pid, events[-1]


def _recorded_pids(db: Path) -> set[int]:
    rows = db_rows(db, "SELECT pid FROM procs UNION SELECT pid FROM events UNION SELECT tgid FROM events")
    return {pid for (pid,) in rows}


def _assert_recorded_without(db: Path, shell: _Shell, own: set[int], tmp_path: Path) -> None:
    assert not _recorded_pids(db) & own, (own, db_rows(db, "SELECT pid, comm FROM procs"))
    argvs = [argv for (argv,) in db_rows(db, "SELECT argv FROM procs")]
    assert f"{TRUE}\0marker\0".encode() in argvs, argvs
    timeline = tmp_path / "t.json"
    result = run_cli("query", "--db", str(db), "--pid", str(shell.proc.pid), "--timeline", str(timeline))
    assert result.returncode == 0, result.stderr
    spans = [s for s in json.loads(timeline.read_bytes())["traceEvents"] if s["ph"] == "X"]
    pids = {span["args"]["pid"] for span in spans}
    assert shell.proc.pid in pids and not pids & own, spans


def test_record_p_of_the_shell_that_started_it_ends_and_never_records_itself(tmp_path: Path) -> None:
    skip_unless_connector()
    db = tmp_path / "build.db"
    shell = _Shell("record", "--db", str(db))
    try:
        own = shell.own()
        _ends_by_itself(shell)
    finally:
        shell.cleanup()
    _assert_recorded_without(db, shell, own, tmp_path)


def test_record_nats_leaves_out_its_shipper_too(nats: NatsServer, tmp_path: Path) -> None:
    skip_unless_connector()
    db = tmp_path / "build.db"
    shell = _Shell("record", "--db", str(db), "--nats", nats.url)
    try:
        own = shell.own(shipper=True)
        _ends_by_itself(shell)
    finally:
        shell.cleanup()
    _assert_recorded_without(db, shell, own, tmp_path)


def test_p_does_not_wait_for_an_ancestor_that_waits_for_it(tmp_path: Path) -> None:
    # sh -c 'sh -c "procevents -p $PPID; echo ended" & ...': the inner shell
    # (sudo, in `sudo procevents -p $$ &`) waits for procevents, so
    # procevents must not wait for it; it is still followed and shown.
    skip_unless_connector()
    out = tmp_path / "events.jsonl"
    shell = _Shell("--json", "-o", str(out), waiter=True)
    try:
        own = shell.own()
        _ends_by_itself(shell)
    finally:
        shell.cleanup()
    shell.out.join()
    assert shell.out.lines[-1] == b"ended\n", shell.out.text
    events = [json.loads(line) for line in out.read_text().splitlines()]
    shown = {pid for event in events for pid in (event["pid"], event["tgid"], event.get("child_tgid"))}
    assert not shown & own, (own, events)
    assert any(event["event"] == "exec" and event["cmdline"] == [TRUE, "marker"] for event in events), events
    assert any(event["event"] == "exit" and event["pid"] == shell.proc.pid for event in events), events


def test_p_of_procevents_itself_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "none.db"
    for args in ([], ["record", "--db", str(db)], ["top"]):
        p = subprocess.Popen(
            [SH, "-c", f'exec {shlex.join([*cli_argv(), *args])} -p "$$"'], stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env(),
        )
        try:
            _, err = p.communicate(timeout=TIMEOUT)
        finally:
            if p.poll() is None:  # following itself for ever
                p.terminate()
                p.wait(TIMEOUT)
        assert p.returncode == 2, err
        assert err.decode().splitlines() == [f"procevents: error: -p {p.pid} is procevents itself"], err
        assert not db.exists()

"""The per-event filters, from synthetic events: each test catches one
plausible bug (named in its docstring) that the kernel tests did not."""

from __future__ import annotations

import re

from helpers import exec_, exit_, fork

from procevents.events import Comm, Lost
from procevents.filters import (
    CommandFilter,
    DescendantFilter,
    EventTypeFilter,
    OwnProcesses,
    UserFilter,
    no_threads,
)
from procevents.proctable import Proc


def test_p_follows_forks_of_the_tree_only() -> None:
    follow = DescendantFilter({100})
    assert follow(fork(100, 101)) and follow(exec_(101)) and follow(fork(101, 102))
    assert not follow(fork(1, 200)) and not follow(exec_(200))


def test_p_forgets_an_exited_pid() -> None:
    """Bug caught: -p never forgetting an exited pid (a stranger reusing it is followed)."""
    follow = DescendantFilter({100})
    assert follow(fork(100, 101))
    assert follow(exit_(101))
    assert not follow(fork(1, 101)), "pid 101, reused by a stranger, is still followed"
    assert not follow(exec_(101))


def test_a_threads_exit_keeps_its_process_followed() -> None:
    """Bug caught: a thread's exit dropping the whole process from -p."""
    follow = DescendantFilter({100})
    assert follow(fork(100, 105, thread_of=100))  # a thread of the root
    assert follow(exit_(105, tgid=100))  # the thread ends...
    assert follow(exec_(100)) and follow(fork(100, 106)), "...and its process is forgotten"


def test_p_leaves_out_our_own_processes_and_their_forks() -> None:
    """Bug caught: -p $$ following procevents itself (it is the shell's child),
    its guardian forked after subscribing, or what those fork."""
    own = OwnProcesses(50)  # procevents, a child of the followed shell 100
    follow = DescendantFilter({100, 50}, own)  # the table's descendants of 100 include it
    assert follow.tgids == {100}
    assert not follow(fork(50, 51)) and not follow(exec_(51)), "our guardian is followed"
    assert not follow(fork(51, 52)), "a fork of our guardian is followed"
    assert own.tgids == {50, 51, 52}
    assert follow(fork(100, 101)) and follow(exit_(101)) and follow.tgids == {100}


def test_p_leaves_out_a_thread_of_ours_said_to_be_the_shells() -> None:
    """Bug caught: the kernel gives a thread's fork its process's parent as
    parent, so a thread of procevents looks like a new child of the shell."""
    own = OwnProcesses(50)
    follow = DescendantFilter({100}, own)
    assert not follow(fork(100, 55, thread_of=50)), "a thread of ours joined the followed tree"
    assert follow.tgids == {100}
    assert follow(fork(100, 105, thread_of=100)) and follow.tgids == {100}  # the shell's own thread


def test_p_follows_a_pid_of_ours_reused_by_the_tree() -> None:
    """Bug caught: an exited process of ours keeping its pid out of the followed tree."""
    own = OwnProcesses(50)
    follow = DescendantFilter({100}, own)
    assert not follow(fork(50, 51)) and not follow(exit_(51))
    assert 51 not in own.tgids
    assert follow(fork(100, 51)) and follow(exec_(51)), "pid 51, now the shell's child, is not followed"
    own.tgids.add(52)  # its exit was lost: still counted ours
    assert follow(fork(100, 52)) and 52 not in own.tgids


def test_our_processes_are_found_below_us_in_a_pid_map() -> None:
    own = OwnProcesses(50)
    assert own.found_in({1: 0, 100: 1, 50: 100, 51: 50, 52: 50, 53: 52, 60: 100}) == {50, 51, 52, 53}
    assert 53 in own and 60 not in own


def test_lost_events_pass_every_filter() -> None:
    lost = Lost(0, 0, 0, 5, "seq-gap")
    assert DescendantFilter(set())(lost)
    assert UserFilter(0)(lost, None) and CommandFilter("x")(lost, None)
    assert EventTypeFilter({"exec"})(lost)


def test_u_matches_the_real_or_the_effective_uid() -> None:
    """Bug caught: -u matching the effective uid only (a user's setuid program is theirs too)."""
    setuid_run = Proc(pid=10, ppid=1, ruid=1000, euid=0)
    assert UserFilter(1000)(exec_(10), setuid_run), "the real uid is not matched"
    assert UserFilter(0)(exec_(10), setuid_run)
    assert not UserFilter(1001)(exec_(10), setuid_run)
    assert not UserFilter(1000)(exec_(10), None)  # unknown is not a match


def test_c_matches_comm_exe_or_argv0() -> None:
    """Bug caught: -c matching comm only."""
    match = CommandFilter(re.compile("^gcc$|/gcc-12$"))
    by_comm = Proc(pid=1, ppid=0, comm="gcc")
    by_exe = Proc(pid=2, ppid=0, comm="cc1", exe="/usr/bin/gcc-12")
    by_argv0 = Proc(pid=3, ppid=0, comm="cc1", argv=["gcc", "-c", "x.c"])
    neither = Proc(pid=4, ppid=0, comm="cc1", exe="/usr/bin/cc1", argv=["cc1", "gcc"])
    assert match(exec_(1), by_comm)
    assert match(exec_(2), by_exe), "exe is not matched"
    assert match(exec_(3), by_argv0), "argv[0] is not matched"
    assert not match(exec_(4), neither)  # a later argument does not count
    assert not match(exec_(5), None)


def test_event_types_and_threads() -> None:
    only = EventTypeFilter({"exec", "comm"})
    assert only(exec_(1)) and only(Comm(0, 1, 0, 1, 1, b"x")) and not only(fork(1, 2))
    assert no_threads(fork(1, 2)) and not no_threads(fork(1, 3, thread_of=1))
    assert not no_threads(exit_(3, tgid=1)) and no_threads(exit_(1))


def test_p_follows_a_process_added_later() -> None:
    """``add``: a process found after the filter was made (trace's command)
    is followed with its children."""
    follow = DescendantFilter({100})
    assert not follow(exec_(300))
    follow.add(300)
    assert follow(exec_(300))
    assert follow(fork(300, 301))
    assert follow(exec_(301))


def test_c_takes_a_pattern_as_text() -> None:
    match = CommandFilter("^ba")
    assert match(exec_(1), Proc(pid=1, ppid=0, comm="bash"))
    assert not match(exec_(1), Proc(pid=1, ppid=0, comm="zsh"))

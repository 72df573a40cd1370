"""Every way out as an exception (exits.py): while a connector is open, a
terminating signal left at its default action becomes Terminated (a
SystemExit of status 128 + N), so ``with`` and ``finally`` run; a handler
the program set is left alone; once no connector is open the defaults come
back, and a signal caught after every connector was dropped does what it
would have done.  IGNORE sent on each of these ways out, seen by strace:
test_unsubscribe.py."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator

import pytest

from procevents.exits import (
    STOPPING_SIGNALS,
    TERMINATING_SIGNALS,
    Terminated,
    install_signal_handlers,
    register,
    restore_signal_handlers,
    unregister,
)


class Holder:
    """What exits.register takes: anything that says whether it is closed (a Connector, in the package)."""

    def __init__(self) -> None:
        self.closed = False


@pytest.fixture
def holder() -> Iterator[Holder]:
    held = Holder()
    register(held)
    try:
        yield held
    finally:
        unregister(held)
        restore_signal_handlers()


def test_terminated_is_a_system_exit_of_128_plus_the_signal() -> None:
    ended = Terminated(signal.SIGTERM)
    assert isinstance(ended, SystemExit) and ended.code == 128 + signal.SIGTERM and ended.signum == signal.SIGTERM


def test_which_signals_end_a_process() -> None:
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM,
                signal.SIGPWR, signal.SIGRTMIN, signal.SIGRTMAX):
        assert sig in TERMINATING_SIGNALS, sig
    for sig in (signal.SIGKILL, signal.SIGSTOP, signal.SIGINT, signal.SIGSEGV, signal.SIGCHLD, signal.SIGWINCH):
        assert sig not in TERMINATING_SIGNALS, sig
    # a command line stops on Ctrl-C too, and SIGUSR1 asks it for the summary instead
    assert set(STOPPING_SIGNALS) == {signal.SIGINT, *TERMINATING_SIGNALS} - {signal.SIGUSR1}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGRTMIN + 3])
def test_a_terminating_signal_becomes_terminated(holder: Holder, sig: int) -> None:
    # At its default action, whatever the runner inherited (nohup ignores SIGHUP).
    inherited = signal.signal(sig, signal.SIG_DFL)
    try:
        install_signal_handlers()
        with pytest.raises(Terminated) as ended:
            signal.raise_signal(sig)
        assert ended.value.signum == sig
        unregister(holder)
        restore_signal_handlers()
        assert signal.getsignal(sig) is signal.SIG_DFL
    finally:
        signal.signal(sig, inherited)


def test_a_handler_the_program_set_is_left_alone(holder: Holder) -> None:
    got: list[int] = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, _frame: got.append(signum))
    try:
        install_signal_handlers()
        signal.raise_signal(signal.SIGUSR2)
        assert got == [signal.SIGUSR2]
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_the_defaults_stay_while_a_connector_is_open(holder: Holder) -> None:
    install_signal_handlers()
    other = Holder()
    register(other)
    unregister(other)
    restore_signal_handlers()  # one still open: nothing given back yet
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    with pytest.raises(Terminated):
        signal.raise_signal(signal.SIGTERM)


def _ends_by(body: Callable[[], None]) -> int:
    """The wait status of a forked child that runs ``body`` (its own process, its own signals)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            body()
        finally:
            os._exit(0)
    return os.waitpid(pid, 0)[1]


def _sigterm(*, dropped: bool) -> None:
    held = Holder()
    register(held)
    install_signal_handlers()
    held.closed = dropped
    try:
        signal.raise_signal(signal.SIGTERM)
    except Terminated:
        os._exit(3)


def test_a_signal_after_every_connector_was_dropped_does_its_work() -> None:
    """Dropped without close (closed is what the handler asks): the signal
    ends the process as its default action would, not as an exception."""
    status = _ends_by(lambda: _sigterm(dropped=True))
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM, status
    status = _ends_by(lambda: _sigterm(dropped=False))
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 3, status

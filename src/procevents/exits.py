"""Every way out of a process that holds a subscription, as an exception.

While a connector is open (and the program left a signal at its default
action), a terminating signal becomes :class:`Terminated`, a SystemExit, so
``with`` blocks, ``finally`` clauses and finalizers run and IGNORE is sent.
"""

from __future__ import annotations

import os
import signal
import threading
import weakref
from collections.abc import Callable
from types import FrameType
from typing import Final, Protocol


class _Closable(Protocol):
    @property
    def closed(self) -> bool: ...


def register(conn: _Closable) -> None:
    _open_connectors.add(conn)


def unregister(conn: _Closable) -> None:
    _open_connectors.discard(conn)


class Terminated(SystemExit):
    """A terminating signal (SIGTERM, SIGHUP, SIGQUIT, ...) arrived while a
    connector was open: a SystemExit (status 128 + signal), so ``with`` and
    ``finally`` run and an uncaught one ends the program quietly."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


# Connectors open in this process, so signal handlers know when to act.
_open_connectors: weakref.WeakSet[_Closable] = weakref.WeakSet()
_previous_handlers: dict[int, signal.Handlers | Callable[[int, FrameType | None], object] | int | None] = {}
_handler_lock = threading.Lock()
#: Every signal whose default action ends the process and that a handler can
#: catch (SIGKILL cannot: see :mod:`procevents.guardian`; faults such as
#: SIGSEGV are left alone).  Handled only where the program left the default.
TERMINATING_SIGNALS: Final = tuple(
    getattr(signal, name)
    for name in (
        "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGXCPU", "SIGXFSZ",
        "SIGVTALRM", "SIGPROF", "SIGIO", "SIGPWR", "SIGSTKFLT", "SIGSYS",
    )
    if hasattr(signal, name)
) + tuple(range(signal.SIGRTMIN, signal.SIGRTMAX + 1))
#: What a command line stops on (or passes on to its command): Ctrl-C and
#: the terminating signals but SIGUSR1, which asks for the summary instead.
STOPPING_SIGNALS: Final = (signal.SIGINT, *(sig for sig in TERMINATING_SIGNALS if sig != signal.SIGUSR1))


def _raise_terminated(signum: int, _frame: FrameType | None) -> None:
    if not any(not conn.closed for conn in list(_open_connectors)):
        # Every connector is gone (maybe garbage collected without close()):
        # behave as if we had never been here and let the signal do its work.
        _previous_handlers.clear()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise Terminated(signum)


def install_signal_handlers() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    with _handler_lock:
        for sig in TERMINATING_SIGNALS:
            if sig in _previous_handlers:
                continue
            try:
                current = signal.getsignal(sig)
            except ValueError:
                continue
            if current is signal.SIG_DFL:
                _previous_handlers[sig] = current
                signal.signal(sig, _raise_terminated)


def restore_signal_handlers() -> None:
    if _open_connectors or threading.current_thread() is not threading.main_thread():
        return
    with _handler_lock:
        for sig, previous in list(_previous_handlers.items()):
            if signal.getsignal(sig) is _raise_terminated and previous is not None:
                signal.signal(sig, previous)
            del _previous_handlers[sig]

"""Shared helpers for tests that talk to the real kernel proc connector.

The rule (tests/README.md): ``src/procevents/X.py`` is tested in ``tests/test_X.py``,
``src/procevents/P/X.py`` in ``tests/test_P_X.py``; themed whole-system files are listed there.

Nothing here is mocked: a :class:`Recorder` holds a live ``procevents.listen()``
subscription, the tests start real processes, and assertions are made on what
the kernel sends back.  The machine has other activity, so every helper
selects events by the pids the test itself created.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import pytest
from hypothesis.configuration import set_hypothesis_home_dir

if TYPE_CHECKING:  # helpers imports this module: the fixtures below import it when they run
    from helpers import Cli, Gated

#: The repository root, found from this file rather than hard-coded.
REPO_ROOT = Path(__file__).resolve().parents[1]
SRC_DIR = REPO_ROOT / "src"

# The suite tests the source tree, never an installed copy (pyproject's
# pythonpath puts src/ first for this process): every child process, however
# started (sys.executable, setpriv, unshare, another user's Python), finds
# the same code through PYTHONPATH.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC_DIR), os.environ.get("PYTHONPATH", "")) if p)
# No bytecode in src/ or tests/, from this process (modules imported from
# here on) or its children.
sys.dont_write_bytecode = True
os.environ["PYTHONDONTWRITEBYTECODE"] = "1"

import procevents  # noqa: E402 - after the line above, so it leaves no bytecode in src/
from procevents.events import Event, Exit, Lost  # noqa: E402

#: The command line, from the source tree (not a console script a venv may hold from another checkout).
CLI = [sys.executable, "-m", "procevents"]

_session_tmp: Path | None = None


def session_tmp() -> Path:
    """Scratch space for the whole session (hypothesis' example database and
    unicode tables, bench binaries): the suite writes nothing into the source tree."""
    assert _session_tmp is not None, "only inside a pytest session"
    return _session_tmp


def pytest_configure() -> None:
    # Made here, not at import: a script that imports a test module makes none.
    global _session_tmp
    _session_tmp = Path(tempfile.mkdtemp(prefix="procevents-tests-"))
    set_hypothesis_home_dir(_session_tmp / "hypothesis")


def pytest_unconfigure() -> None:
    # A hook, not atexit: forked children that exit normally must not remove it.
    if _session_tmp is not None:
        shutil.rmtree(_session_tmp, ignore_errors=True)


#: Generous upper bound for events to arrive; normally they take microseconds.
DEADLINE = 5.0

NOBODY = 65534  # the one non-root uid every Debian passwd has


def kernel_version(release: str | None = None) -> tuple[int, int]:
    parts = (release or os.uname().release).split(".")
    return int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or 0)


def connector_available() -> str | None:
    """None when the proc connector can be used here, else why not."""
    if not sys.platform.startswith("linux"):
        return "the proc connector is Linux only"
    if os.geteuid() != 0:
        return "these tests start processes as other users and ptrace them: run them as root"
    return None


# -- recording events ----------------------------------------------------------


class Recorder:
    """Collects every event from a live subscription; tests pick theirs by pid."""

    def __init__(self, conn: procevents.Connector) -> None:
        self.conn = conn
        self.events: list[Event] = []

    def pump(self, timeout: float) -> None:
        self.events.extend(self.conn.read_batch(timeout))

    def wait_until(
        self, predicate: Callable[[list[Event]], bool], what: str, timeout: float = DEADLINE
    ) -> None:
        """Read events until ``predicate(self.events)`` holds; fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not predicate(self.events):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {what} within {timeout:g} s; {self.describe()}")
            self.pump(min(remaining, 0.25))

    def of(self, *tgids: int) -> list[Event]:
        """Events about the processes ``tgids`` (their threads included), in arrival order.

        For a Fork this is the child, so a process's own birth is included.
        """
        wanted = set(tgids)
        return [ev for ev in self.events if not isinstance(ev, Lost) and ev.tgid in wanted]

    def lost(self) -> list[Lost]:
        return [ev for ev in self.events if isinstance(ev, Lost)]

    def wait_exit(self, pid: int, timeout: float = DEADLINE) -> list[Event]:
        """Wait for the Exit of process ``pid`` (its leader thread); return its events."""

        def done(_events: list[Event]) -> bool:
            return any(isinstance(ev, Exit) and ev.pid == pid for ev in self.of(pid))

        self.wait_until(done, f"Exit event for pid {pid}", timeout)
        return self.of(pid)

    def describe(self) -> str:
        lost = self.lost()
        return (
            f"{len(self.events)} events recorded in all, {sum(ev.count for ev in lost)} reported lost"
            f" ({lost[:3]!r})"
        )


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    """A live all-events subscription for the duration of one test."""
    if reason := connector_available():
        pytest.skip(reason)
    with procevents.listen() as conn:
        yield Recorder(conn)


# -- child processes -----------------------------------------------------------


class Children:
    """Forks children that always leave through os._exit, and reaps them.

    os._exit matters beyond hygiene: a child leaving through normal
    interpreter shutdown would run the parent's atexit hooks (pytest's, and
    procevents' finalizers on inherited sockets).
    """

    def __init__(self) -> None:
        self.pids: set[int] = set()
        self.statuses: dict[int, int] = {}

    def fork(self, body: Callable[[], int | None]) -> int:
        """Run ``body`` in a forked child; its return value (default 0) is the exit status."""
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 0
            try:
                result = body()
                code = result if isinstance(result, int) else 0
            except BaseException:
                traceback.print_exc()
                code = 70
            finally:
                os._exit(code)
        self.pids.add(pid)
        return pid

    def wait(self, pid: int, options: int = 0) -> int:
        """waitpid(pid); return the raw wait status (cached once reaped)."""
        if pid in self.statuses:
            return self.statuses[pid]
        got, status = os.waitpid(pid, options)
        if got == pid and not (os.WIFSTOPPED(status) or os.WIFCONTINUED(status)):
            self.statuses[pid] = status
            self.pids.discard(pid)
        return status

    def cleanup(self) -> None:
        for pid in list(self.pids):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            self.pids.discard(pid)


@pytest.fixture
def children() -> Iterator[Children]:
    kids = Children()
    try:
        yield kids
    finally:
        kids.cleanup()


T = TypeVar("T")


def run_in_thread(fn: Callable[[], T]) -> T:
    """Run ``fn`` in a new thread of this process, wait for it, return or re-raise."""
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(DEADLINE * 2)
    assert not thread.is_alive(), "helper thread hung"
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


# -- libc through ctypes ---------------------------------------------------------


@pytest.fixture(scope="session")
def libc() -> ctypes.CDLL:
    lib = ctypes.CDLL(None, use_errno=True)
    lib.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    lib.ptrace.restype = ctypes.c_long
    lib.prctl.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    lib.prctl.restype = ctypes.c_int
    return lib


# -- an interpreter another user can run ---------------------------------------------


def _runs_as(python: str, uid: int, gid: int) -> bool:
    try:
        probe = subprocess.run(
            [python, "-c", "import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)"],
            user=uid, group=gid, extra_groups=[], cwd="/", capture_output=True, timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0


@pytest.fixture(scope="session")
def nobody_python() -> str:
    """A Python >= 3.11 that uid 65534 may execute (a venv under /root is not one)."""
    candidates = [sys.executable, getattr(sys, "_base_executable", ""), "/usr/bin/python3", "/usr/local/bin/python3"]
    for python in dict.fromkeys(c for c in candidates if c):
        if _runs_as(python, NOBODY, NOBODY):
            return python
    pytest.skip(f"no Python >= 3.11 executable by uid {NOBODY} among {candidates}")


@pytest.fixture
def cli() -> Iterator[Callable[..., Cli]]:
    """Start ``python -m procevents ...`` (helpers.Cli); every one is stopped at the end."""
    from helpers import cli_processes, skip_unless_connector

    skip_unless_connector()
    yield from cli_processes()


@pytest.fixture
def gated() -> Iterator[Callable[..., Gated]]:
    """Start a process held on a pipe until released (helpers.Gated); all reaped at the end."""
    from helpers import gated_processes

    yield from gated_processes()

"""suite.py's loads: burst (fork or exec storms, bench/burst.c) and a
``make -j4`` of small shell pipelines (mixed); run in a process group of
their own, or behind a gate for ``procevents trace``, which starts its load
itself."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import subprocess
from pathlib import Path

from .build import burst_command

MIXED_RECIPE = "echo x | tr x y | wc -c > $@"
#: burst -a: child i of an exec load runs with argv {"tiny", "burst-<i>"}
ARGV_PREFIX = "burst-"
#: what the real command line of each program of the mixed load looks like
MIXED_ARGV: dict[str, str | re.Pattern[str]] = {
    "sh": re.compile(r"/bin/sh -c " + re.escape(MIXED_RECIPE.replace("$@", "")) + r"t\d+"),
    "tr": "tr x y",
    "wc": "wc -c",
}


def mixed_argv(filename: str) -> str | re.Pattern[str]:
    """The command line expected of an exec of ``filename`` in the mixed load."""
    base = os.path.basename(filename)
    expected = MIXED_ARGV.get(base)
    if expected is not None:
        return expected
    # anything else: argv[0] names the file that was executed
    return re.compile(rf"(?:\S*/)?{re.escape(base)}(?: .*)?")


def mixed_targets(n: int) -> int:
    return max(20, n // 50)


def write_makefile(directory: Path, targets: int) -> None:
    names = " ".join(f"t{i}" for i in range(1, targets + 1))
    (directory / "Makefile").write_text(f"all: {names}\nt%:\n\t{MIXED_RECIPE}\n")


def load_command(shape: str, n: int, workers: int, bins: dict[str, Path], rundir: Path) -> list[str]:
    """burst (its pid file: rundir/pids.txt), or make in rundir/make."""
    if shape in ("fork", "exec"):
        return burst_command(bins["burst"], bins["tiny"], rundir / "pids.txt", shape, n, workers, ARGV_PREFIX)
    mkdir = rundir / "make"
    mkdir.mkdir(exist_ok=True)
    write_makefile(mkdir, mixed_targets(n))
    return ["make", "-r", "-R", "-s", "-j4", "-C", str(mkdir)]


def spawn_tiny(tiny: Path, arg: str) -> int:
    """Run bench/tiny.c once, as ``tiny ARG``; its pid."""
    proc = subprocess.Popen(["tiny", arg], executable=str(tiny))
    proc.wait()
    return proc.pid


def run_load(cmd: list[str], pids: list[int] | None = None) -> tuple[int, str, str]:
    """Run a load generator in its own process group, killed whole if we are
    interrupted (burst's workers and make's jobs would go on otherwise)."""
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    if pids is not None:
        pids.append(proc.pid)
    try:
        out, err = proc.communicate()
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, out, err


class Gate:
    """The load as ``procevents trace`` runs it: a shell that writes its pid,
    waits at a FIFO for the starting signal, runs the load (a child of the
    shell, as make or burst is a child of this script otherwise), writes its
    exit status, and waits at a second FIFO until every tool has caught up
    and was measured.  So procevents trace is measured around the load only,
    as the other tools are, and before it exits (it exits once its command
    has).  The shell's own fork, exec and exit are not in the load's
    expected events; neither are make's (as in every run)."""

    SCRIPT = ('d=$1; shift; echo $$ > "$d/pid"; read _ < "$d/go"; "$@"; echo $? > "$d/status"; '
              'read _ < "$d/done"')

    def __init__(self, directory: Path) -> None:
        directory.mkdir(exist_ok=True)
        self.dir = directory
        for name in ("go", "done", "pid", "status"):
            (directory / name).unlink(missing_ok=True)
        os.mkfifo(directory / "go")
        os.mkfifo(directory / "done")
        self._go = -1
        self.fired = False
        self.released = False

    def wrap(self, load: list[str]) -> list[str]:
        return ["/bin/sh", "-c", self.SCRIPT, "sh", str(self.dir), *load]

    def _open(self, name: str) -> int:
        """The FIFO opened for writing, or -1 while the shell is not (yet) opening it to read."""
        try:
            return os.open(self.dir / name, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                return -1
            raise

    def arm(self) -> bool:
        """Is the shell waiting for the starting signal?  (The FIFO is then held open until fire.)"""
        if self._go < 0:
            self._go = self._open("go")
        return self._go >= 0

    @property
    def shell(self) -> int:
        return int((self.dir / "pid").read_text())

    def fire(self) -> None:
        os.write(self._go, b"go\n")
        self.fired = True
        self.close()

    def status(self) -> int | None:
        """The load's exit status, once it has ended."""
        try:
            text = (self.dir / "status").read_text()
        except FileNotFoundError:
            return None
        return int(text) if text.endswith("\n") else None

    def release(self) -> bool:
        """Let the shell exit (and so procevents trace), once it waits for that."""
        fd = self._open("done")
        if fd < 0:
            return False
        try:
            os.write(fd, b"done\n")
        finally:
            os.close(fd)
        self.released = True
        return True

    def close(self) -> None:
        """Close the starting FIFO.  Only once the shell is gone, or fired: an
        end of file lets it start the load too."""
        if self._go >= 0:
            os.close(self._go)
            self._go = -1

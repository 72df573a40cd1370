"""bench/burst.c (the load generator) and bench/tiny.c (a 512-byte static
program that only calls exit_group(0)): compiled with gcc into bench/.build/
when the sources are newer than the binaries; burst's command line."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from . import BenchError

BENCH = Path(__file__).resolve().parents[1]
BUILD = BENCH / ".build"

TINY_FLAGS = [
    "-O2", "-static", "-nostartfiles", "-nostdlib", "-fno-asynchronous-unwind-tables", "-s",
    "-Wl,--build-id=none", "-Wl,-n", "-Wl,-z,noexecstack",
]
BURST_FLAGS = ["-O2", "-Wall", "-Wextra"]


def build(name: str, flags: Sequence[str], into: Path = BUILD) -> Path:
    """Compile bench/NAME.c into INTO/NAME (bench/.build/ by default) unless it is up to date."""
    src = BENCH / f"{name}.c"
    out = into / name
    if out.exists() and out.stat().st_mtime >= src.stat().st_mtime:
        return out
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise BenchError("no C compiler found (install gcc)")
    into.mkdir(exist_ok=True)
    tmp = out.with_suffix(".tmp")
    proc = subprocess.run([cc, *flags, "-o", str(tmp), str(src)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenchError(f"compiling {src.name} failed:\n{proc.stderr}")
    tmp.replace(out)
    return out


def build_all(into: Path = BUILD) -> tuple[Path, Path]:
    """(burst, tiny), each compiled into INTO if needed (the tests pass a temporary directory)."""
    return build("burst", BURST_FLAGS, into), build("tiny", TINY_FLAGS, into)


def burst_command(burst: Path, tiny: Path, pidfile: Path, shape: str, n: int, workers: int,
                  argv_prefix: str | None = None) -> list[str]:
    """burst making ``n`` children (``shape`` exec or fork) with ``workers``
    workers, recording every child's pid and lifetime in ``pidfile``; with
    ``argv_prefix``, child i's argv is {"tiny", "PREFIX<i>"}."""
    cmd = [str(burst), "-o", str(pidfile), "-m", shape, "-n", str(n), "-p", str(workers), "-t", str(tiny)]
    if argv_prefix is not None:
        cmd += ["-a", argv_prefix]
    return cmd

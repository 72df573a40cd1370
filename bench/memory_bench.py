#!/usr/bin/env python3
"""Memory under what any user execs: the byte budgets, measured.

Per mode (the live text view, ``--json``, ``--json --env``, ``record``):
procevents starts (stdout to /dev/null); once it listens, LOOPS shells run
as user nobody, each re-exec'ing itself for ever with two 128 KiB arguments
(the largest argv a user can pass in two strings: MAX_ARG_STRLEN each); with
``--stop S`` the main process is SIGSTOPped S seconds meanwhile (a main
process that has fallen behind: captures and the kernel's queue pile up),
then resumed.  For SECONDS after that, every process of procevents' tree is
sampled; the table shows the peak resident memory (VmHWM) of the main
process and of the largest reader, and the events received.  Every
procevents process should stay under 100 MiB (README "JSON keys").

Usage (root, from the repository root):
  .venv/bin/python bench/memory_bench.py                   # 4 loops, stopped 8 s, sampled 8 s
  .venv/bin/python bench/memory_bench.py --loops 8 --stop 0 --seconds 20
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import BenchError
from benchlib.host import process_tree, status_kib, stop_process, wait_for
from benchlib.table import print_table

REPO = Path(__file__).resolve().parents[1]
MODES = {"text": [], "json": ["--json"], "json-env": ["--json", "--env"], "record": ["record"]}
NOBODY = 65534
# One argument just under MAX_ARG_STRLEN (128 KiB with its NUL).
ARG = "a" * (128 * 1024 - 1)


def run_mode(name: str, args: list[str], loops: int, stop: float, seconds: float, work: Path) -> list[str]:
    extra = ["--db", str(work / f"{name}.db")] if args[:1] == ["record"] else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "procevents", *args, *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")}, start_new_session=True,
    )
    assert proc.stderr is not None
    os.set_blocking(proc.stderr.fileno(), False)
    said = b""

    def listening() -> bool:
        nonlocal said
        assert proc.stderr is not None
        said += proc.stderr.read() or b""
        return b"procevents: listening" in said

    wait_for(listening, 30.0, "procevents to listen", proc)
    script = work / "loop.sh"
    script.write_text('exec /bin/sh "$0" "$1" "$2"\n')
    script.chmod(0o755)
    work.chmod(0o755)
    children = [
        subprocess.Popen(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                          "/bin/sh", str(script), ARG, ARG])
        for _ in range(loops)
    ]
    try:
        if stop:
            time.sleep(1.0)
            os.kill(proc.pid, signal.SIGSTOP)
            time.sleep(stop)
            os.kill(proc.pid, signal.SIGCONT)
        main_peak = reader_peak = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for pid in process_tree(proc.pid):
                try:
                    peak = status_kib(pid, "VmHWM")
                except OSError:
                    continue  # gone meanwhile
                if pid == proc.pid:
                    main_peak = max(main_peak, peak)
                else:
                    reader_peak = max(reader_peak, peak)
            time.sleep(0.25)
    finally:
        for child in children:
            child.kill()
            child.wait()
    os.set_blocking(proc.stderr.fileno(), True)
    status = stop_process(proc)
    said += proc.stderr.read()
    if status != 0:
        raise BenchError(f"procevents {name} ended with status {status}: {said.decode(errors='replace')}")
    received = re.search(rb"([\d,]+) events? (?:received|recorded)", said)
    events = received[1].decode() if received else "?"
    return [name, f"{main_peak / 1024:.1f}", f"{reader_peak / 1024:.1f}", events]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loops", type=int, default=4, help="shells re-exec'ing themselves as nobody (default 4)")
    parser.add_argument("--stop", type=float, default=8.0, help="seconds the main process is stopped (default 8)")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds sampled after that (default 8)")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    opts = parser.parse_args()
    if os.geteuid() != 0:
        print("memory_bench.py: run it as root (it runs loops as nobody)", file=sys.stderr)
        return 2
    rows = []
    with tempfile.TemporaryDirectory(prefix="procevents-memory-") as tmp:
        for name in opts.modes.split(","):
            if name not in MODES:
                print(f"memory_bench.py: no mode {name!r} (of {', '.join(MODES)})", file=sys.stderr)
                return 2
            rows.append(run_mode(name, MODES[name], opts.loops, opts.stop, opts.seconds, Path(tmp)))
    print(f"{opts.loops} loops as nobody, two 128 KiB arguments each; main process stopped {opts.stop:g} s")
    print_table(rows, ["mode", "main MiB (VmHWM)", "largest other MiB (readers, guardian)", "events"])
    return 0


if __name__ == "__main__":
    sys.exit(main())

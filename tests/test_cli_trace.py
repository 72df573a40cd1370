"""trace's command line (cli/trace.py): its help, and CMD never run when the
output cannot be opened.  trace against the real kernel: test_enrich_kernel.py,
test_unsubscribe.py, test_promises.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers import TIMEOUT, cli_argv, env, run_cli

#: Runs argv[1:] as a child subreaper, then waits for every process left
#: behind (orphans are its children then) before it exits with its status.
SUBREAPER = r"""
import ctypes, os, subprocess, sys
PR_SET_CHILD_SUBREAPER = 36
assert ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
status = subprocess.run(sys.argv[1:]).returncode
while True:
    try:
        os.wait()
    except ChildProcessError:
        break
sys.exit(status)
"""


def test_trace_help() -> None:
    result = run_cli("trace", "--help")
    assert result.returncode == 0
    assert "examples:" in result.stdout.decode()


def test_trace_unwritable_output_does_not_run_command(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    result = subprocess.run(
        [sys.executable, "-c", SUBREAPER, *cli_argv(), "trace", "-o", str(tmp_path / "missing" / "out.txt"),
         "--", "touch", str(marker)],
        capture_output=True, env=env(), stdin=subprocess.DEVNULL, timeout=TIMEOUT, check=False,
    )
    assert result.returncode == 2, result.stderr
    # Every process procevents started has ended by now, a wrongly started CMD too.
    assert not marker.exists(), "CMD ran although procevents refused to start"

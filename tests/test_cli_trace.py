"""trace's command line (cli/trace.py): its help, and CMD never run when the
output cannot be opened.  trace against the real kernel: test_enrich_kernel.py,
test_unsubscribe.py, test_promises.py."""

from __future__ import annotations

import time
from pathlib import Path

from helpers import run_cli


def test_trace_help() -> None:
    result = run_cli("trace", "--help")
    assert result.returncode == 0
    assert "examples:" in result.stdout.decode()


def test_trace_unwritable_output_does_not_run_command(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    result = run_cli("trace", "-o", str(tmp_path / "missing" / "out.txt"), "--", "touch", str(marker))
    assert result.returncode == 2, result.stderr
    time.sleep(0.2)  # give a wrongly started command time to show
    assert not marker.exists(), "CMD ran although procevents refused to start"

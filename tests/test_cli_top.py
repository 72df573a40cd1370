"""top (cli/top.py) against the real kernel: rates and spawners of a real workload, and one line without rich."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import (
    SH,
    TIMEOUT,
    Cli,
    Gated,
    skip_unless_connector,
)


@pytest.fixture(scope="module", autouse=True)
def _usable() -> None:
    skip_unless_connector()




def test_top_shows_rates_and_spawners(cli: Callable[..., Cli], gated: Callable[..., Gated], tmp_path: Path) -> None:
    pytest.importorskip("rich")
    spawner = tmp_path / "pe-spawner"
    spawner.symlink_to(SH)
    # The children name themselves (a COMM event): no race with /proc decides it.
    root = gated([str(spawner), "-c", "read _; for i in 1 2 3 4 5 6; do sh -c 'printf pe-fail > /proc/$$/comm; "
                  "exit 1'; done; exit 0"])
    top = cli("top", "-p", str(root.pid), "--interval", "0.2")
    top.wait_listening()
    assert root.release() == 0
    # -p: top ends by itself once the tree has exited, every event of it
    # counted (a signal sent now could land in its last moments).
    assert top.wait() == 0, top.err.text
    out = top.out.text
    assert "procevents top" in out and "top spawners" in out, out
    (row,) = [line for line in out.splitlines() if line.strip().startswith("pe-spawner")]
    cells = row.split()
    assert cells[-3] == "6" and cells[-1] == "0", row  # 6 forks, no failure of its own
    rows = {line.split()[0]: line.split()[-3:] for line in out.splitlines() if line.strip()}
    assert rows["pe-fail"][0] == "0" and rows["pe-fail"][2] == "6", rows["pe-fail"]  # failed under its new name
    # Each exec is named as /proc showed it when read: before or after the rename.
    assert sum(int(rows[name][1]) for name in ("pe-spawner", "sh", "pe-fail") if name in rows) == 6, out
    assert re.search(r"fork +[\d.]+ +6\b", out) and re.search(r"comm +[\d.]+ +6\b", out), out


def test_top_without_rich_says_so(tmp_path: Path) -> None:
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "rich").mkdir()
    (shadow / "rich" / "__init__.py").write_text("raise ImportError('no rich here')\n")
    env = {**os.environ, "PYTHONPATH": f"{shadow}{os.pathsep}{Path(__file__).resolve().parents[1] / 'src'}"}
    result = subprocess.run(
        [sys.executable, "-m", "procevents", "top", "-D", "1"], capture_output=True, env=env, timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 1
    assert result.stderr.decode().strip() == (
        "procevents: error: procevents top needs the rich package: pip install 'procevents[top]'"
    )

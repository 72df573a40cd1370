"""Namespaces the kernel ignores: a clear one-line error, never a hang."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from conftest import CLI

UNSHARE = shutil.which("unshare")
pytestmark = pytest.mark.skipif(UNSHARE is None, reason="unshare (util-linux) is not installed")


def run_in(namespace_args: list[str]) -> subprocess.CompletedProcess[str]:
    assert UNSHARE is not None
    return subprocess.run(
        [UNSHARE, *namespace_args, *CLI, "-D", "5"], capture_output=True, text=True, timeout=30
    )


@pytest.mark.parametrize(
    ("args", "kind"),
    [
        (["--user", "--map-root-user"], "user"),
        (["--pid", "--fork", "--mount-proc"], "pid"),
        (["--net"], "network"),
    ],
)
def test_non_initial_namespace_is_refused_with_one_line(args: list[str], kind: str) -> None:
    probe = subprocess.run([UNSHARE or "unshare", *args, "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a {kind} namespace here: {probe.stderr.decode().strip()}")
    result = run_in(args)
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    if kind == "network":
        expected = re.escape(
            "procevents: error: running in a non-initial network namespace: the proc connector exists only "
            "in the host's, which refused the request; run procevents there"
        )
    else:
        # Named before the bind is tried: in a user namespace the bind fails
        # too (EPERM), and that is not the reason to give.
        expected = (
            rf"procevents: error: running in a non-initial {kind} namespace \({kind}:\[\d+\]\): the kernel "
            "ignores proc connector subscriptions from there; run procevents on the host"
        )
    assert re.fullmatch(expected, lines[0]), lines[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""

"""Option parsing (cli/options.py): a bad value, or a pid of no process, is one
line on stderr and status 2."""

from __future__ import annotations

import pytest
from helpers import run_cli as _run


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["-e", "bogus"], id="events-bogus"),
        pytest.param(["-D", "0"], id="duration-0"),
        pytest.param(["-n", "-1"], id="count-negative"),
        pytest.param(["-p", "abc"], id="pid-abc"),
        pytest.param(["-o", "/nonexistent-dir/out.txt"], id="output-unwritable"),
        pytest.param(["trace"], id="trace-no-command"),
    ],
)
def test_bad_arguments_one_line_exit_2(args: list[str]) -> None:
    result = _run(*args)
    err = result.stderr.decode(errors="replace")
    assert result.returncode == 2, err
    assert "Traceback" not in err
    assert result.stdout == b""
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    assert lines[0].startswith("procevents"), lines[0]
    assert "error" in lines[0], lines[0]


def test_pid_of_no_process_is_a_usage_error() -> None:
    result = _run("-p", "999999999", "-D", "5")
    assert result.returncode == 2
    assert result.stderr.decode().strip().splitlines() == ["procevents: error: no such process: 999999999"]

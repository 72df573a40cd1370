"""The command line's entry (cli/__init__.py main, and __main__.py): --help,
--version through the console script pyproject names and through python -m."""

from __future__ import annotations

import sys
import tomllib

import pytest
from helpers import SRC, run_cli

import procevents


def test_help_mentions_examples() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    out = result.stdout.decode()
    assert out.startswith("usage: procevents")
    assert "examples:" in out
    assert result.stderr == b""


def _console_script() -> list[str]:
    """What the ``procevents`` script pip generates runs, from pyproject's [project.scripts],
    on the source tree (the suite never relies on an installed copy)."""
    with open(SRC.parent / "pyproject.toml", "rb") as f:
        target = tomllib.load(f)["project"]["scripts"]["procevents"]
    module, _, func = target.partition(":")
    code = f"import sys; sys.argv[0] = 'procevents'; from {module} import {func}; sys.exit({func}())"
    return [sys.executable, "-c", code]


@pytest.mark.parametrize("how", ["script", "python -m"])
def test_version(how: str) -> None:
    argv0 = _console_script() if how == "script" else [sys.executable, "-m", "procevents"]
    result = run_cli("--version", argv0=argv0)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().strip() == f"procevents {procevents.__version__}"
    assert run_cli("--help", argv0=argv0).stdout.decode().startswith("usage: procevents ")


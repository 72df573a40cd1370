"""Option parsing (cli/options.py): a bad value, or a pid of no process, is one
line on stderr and status 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import (
    run_cli,
)


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["-e", "bogus"], id="events-bogus"),
        pytest.param(["-D", "0"], id="duration-0"),
        pytest.param(["-n", "-1"], id="count-negative"),
        pytest.param(["-p", "abc"], id="pid-abc"),
        pytest.param(["trace"], id="trace-no-command"),
    ],
)
def test_bad_arguments_one_line_exit_2(args: list[str]) -> None:
    result = run_cli(*args)
    err = result.stderr.decode(errors="replace")
    assert result.returncode == 2, err
    assert "Traceback" not in err
    assert result.stdout == b""
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    assert lines[0].startswith("procevents"), lines[0]
    assert "error" in lines[0], lines[0]


def test_pid_of_no_process_is_a_usage_error() -> None:
    result = run_cli("-p", "999999999", "-D", "5")
    assert result.returncode == 2
    assert result.stderr.decode().strip().splitlines() == ["procevents: error: no such process: 999999999"]


def test_usage_errors(tmp_path: Path) -> None:
    for args in (
        ["query", "--since", "yesterday-ish"],
        ["query", "--tree", "--json"],
        ["query", "--sql", "SELECT 1", "--failed"],
        ["replay", "--tree", "--json"],
        ["record", "-p", "999999999"],
        ["top", "--rows", "0"],
        # Beyond int64 nanoseconds (SQLite's INTEGER): one line, not an OverflowError.
        ["query", "--since", "9999-12-31T23:59"],
        ["query", "--since", "@-99999999999"],
        ["query", "--until", "@1e400"],
        ["replay", "--since", "@99999999999999"],
        ["record", "--retain", "99999999999999d"],
    ):
        result = run_cli(*args, "--db", str(tmp_path / "x.db")) if args[0] != "top" else run_cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert len(result.stderr.splitlines()) == 1, (args, result.stderr)


def test_parse_times_and_durations() -> None:
    import datetime as dt

    from procevents.cli.options import parse_duration, parse_time

    assert parse_duration("90") == 90 and parse_duration("90s") == 90 and parse_duration("10m") == 600
    assert parse_duration("1.5h") == 5400 and parse_duration("7d") == 7 * 86400 and parse_duration("2w") == 14 * 86400
    for bad in ("", "m", "10x", "-5m", "1e3"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    now = 1_763_700_000 * 10**9
    assert parse_time("now", now) == now
    assert parse_time("10m", now) == now - 600 * 10**9
    assert parse_time("2h ago", now) == now - 7200 * 10**9
    assert parse_time("@1763700000.5", now) == 1_763_700_000_500_000_000
    assert parse_time("2026-11-21T10:40:01.250Z", now) == (
        int(dt.datetime(2026, 11, 21, 10, 40, 1, tzinfo=dt.UTC).timestamp()) * 10**9 + 250_000_000
    )
    utc = parse_time("2026-11-21T10:40:01+00:00", now)
    assert utc == int(dt.datetime(2026, 11, 21, 10, 40, 1, tzinfo=dt.UTC).timestamp()) * 10**9
    local = parse_time("2026-11-21 10:40", now)
    assert local == int(dt.datetime(2026, 11, 21, 10, 40).astimezone().timestamp()) * 10**9
    today = dt.datetime.fromtimestamp(now / 1e9).astimezone()
    half_past_two = today.replace(hour=14, minute=30, second=0, microsecond=0)
    assert parse_time("14:30", now) == int(half_past_two.timestamp()) * 10**9
    for bad in ("yesterday-ish", "25:00", "2026", "@x"):
        with pytest.raises(ValueError):
            parse_time(bad, now)


@pytest.mark.parametrize("command", ["query", "replay"])
@pytest.mark.parametrize("bad", ["10x", "yesterday-ish", "25:00", "@x"])
def test_a_bad_time_says_every_form_a_time_may_take(tmp_path: Path, command: str, bad: str) -> None:
    # Issue 22: "--since 10x" said "not a duration", though clock times and dates are times too.
    result = run_cli(command, "--db", str(tmp_path / "none.db"), "--since", bad)
    assert result.returncode == 2 and result.stderr.count(b"\n") == 1, result.stderr
    message = result.stderr.decode()
    assert f"not a time: {bad!r}" in message and "not a duration" not in message
    for form in ("10m", "'2h ago'", "14:30", "2026-11-21T14:30", "@EPOCH"):
        assert form in message, message


@pytest.mark.parametrize("bad", ["-1", "soon", "1e400"])
def test_min_cpu_refuses_what_is_not_a_cpu_time(tmp_path: Path, bad: str) -> None:
    result = run_cli("query", "--db", str(tmp_path / "none.db"), "--min-cpu", bad)
    assert result.returncode == 2 and result.stderr.count(b"\n") == 1 and b"Traceback" not in result.stderr


def test_bad_nats_options_are_one_line(tmp_path: Path) -> None:
    for args in (
        ["collect", "--db", str(tmp_path / "c.db")],
        ["record", "--nats", "nats://127.0.0.1:1", "--nats-stream", "a.b"],
        ["record", "--nats", "nats://127.0.0.1:1", "--nats-creds", str(tmp_path / "missing.creds")],
        ["collect", "--nats", "nats://127.0.0.1:1", "--nats-cert", "x"],
    ):
        result = run_cli(*args)
        assert result.returncode == 2 and result.stderr.count(b"\n") == 1, (args, result.stderr)
        assert b"Traceback" not in result.stderr

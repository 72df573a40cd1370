"""procevents collect (cli/collect.py): a bad consumer name or a file that
is not a store is one line and a status, nothing created; with a real
nats-server, -D ends it by itself with its summary.  Many hosts collected
end to end: test_fleet.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import NATS_SERVER, Cli, NatsServer, nats, run_cli

__all__ = ["nats"]  # the fixture, imported to be used here


def test_a_bad_consumer_name_is_one_line(tmp_path: Path) -> None:
    db = tmp_path / "central.db"
    result = run_cli("collect", "--nats", "nats://127.0.0.1:1", "--db", str(db), "--durable", "no spaces")
    assert result.returncode == 2 and result.stderr.count(b"\n") == 1, result.stderr
    assert b"not a consumer name: 'no spaces'" in result.stderr
    assert not db.exists()


def test_a_file_that_is_not_a_store_is_one_line(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n")
    result = run_cli("collect", "--nats", "nats://127.0.0.1:1", "--db", str(text))
    assert result.returncode == 1 and result.stderr.count(b"\n") == 1, result.stderr
    assert b"not an SQLite file" in result.stderr
    assert text.read_text() == "not a database\n"


def test_a_duration_ends_it_with_its_summary(nats: NatsServer, tmp_path: Path) -> None:
    db = tmp_path / "central.db"
    result = run_cli("collect", "--nats", nats.url, "--db", str(db), "-D", "0.5")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.decode().splitlines()
    assert lines[0].startswith(f"procevents: collecting from {nats.url}"), lines
    assert lines[-1].startswith("procevents: 0 events and 0 lifetime updates collected from 0 hosts into "), lines
    assert db.exists()
    quiet = run_cli("collect", "--nats", nats.url, "--db", str(db), "-D", "0.5", "-q")
    assert quiet.returncode == 0 and quiet.stderr == b"", quiet.stderr


def test_a_server_down_is_said_once_and_the_duration_still_ends_it(tmp_path: Path) -> None:
    db = tmp_path / "central.db"
    result = run_cli("collect", "--nats", "nats://127.0.0.1:1", "--db", str(db), "-D", "1")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.decode().splitlines()
    assert [line for line in lines if "cannot collect from" in line] == [lines[0]], lines
    assert lines[0].startswith("procevents: cannot collect from nats://127.0.0.1:1 ("), lines
    assert lines[-1].startswith("procevents: 0 events and 0 lifetime updates collected from 0 hosts"), lines


def test_a_server_without_jetstream_is_one_clear_line(tmp_path: Path) -> None:
    """Issue 23 (12): it said `ServiceUnavailableError: ... description='None'`."""
    if NATS_SERVER is None:
        pytest.skip("nats-server is not installed (scripts/test installs it)")
    server = NatsServer(tmp_path / "jetstream", jetstream=False)
    collector = Cli(["collect", "--nats", server.url, "--db", str(tmp_path / "central.db")])
    try:
        line = collector.err.wait_for(lambda line: b"cannot collect from" in line)
        assert line == (
            f"procevents: cannot collect from {server.url} (the server has no JetStream: start nats-server with -js);"
            " retrying\n"
        ).encode(), collector.err.text
        assert collector.stop() == 0, collector.err.text
        assert collector.err.text.count("cannot collect from") == 1, collector.err.text
    finally:
        collector.cleanup()
        server.stop()

"""The shipper process (fleet/shipper.py) as the recorder starts it: its
settings as one JSON line on stdin, then wakeups; it ships what is
committed to a real nats-server, moves the outbox cursor once the stream
has acknowledged it, and ends when stdin closes.  Its refusals are one
line each.  Through record --nats, end to end: test_fleet.py."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from helpers import TIMEOUT, NatsServer, db_rows, env, lost_rows_db, nats, wait_until

__all__ = ["nats"]  # the fixture, imported to be used here

SHIPPER = [sys.executable, "-m", "procevents.fleet.shipper"]


def _shipper(settings: bytes) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(SHIPPER, stdin=subprocess.PIPE, stderr=subprocess.PIPE, env=env())
    assert proc.stdin is not None
    proc.stdin.write(settings)
    proc.stdin.flush()
    return proc


def _settings(db: Path, url: str, **more: Any) -> bytes:
    config: dict[str, Any] = {"url": url}
    return json.dumps({"db": str(db), "host": "solo", "nats": config, **more}).encode() + b"\n"


def test_it_ships_what_is_committed_then_ends_when_stdin_closes(nats: NatsServer, tmp_path: Path) -> None:
    db = lost_rows_db(tmp_path / "events.db")  # 2000 events committed
    secret = "s3cret-shipper"
    proc = _shipper(_settings(db, nats.url.replace("nats://", f"nats://procevents:{secret}@")))
    # acknowledged: the cursor moves
    wait_until(lambda: db_rows(db, "SELECT events FROM outbox") == [(2000,)], "the outbox cursor at the last event")
    assert proc.stdin is not None
    proc.stdin.close()  # the recorder's end
    assert proc.wait(TIMEOUT) == 0
    assert proc.stderr is not None
    err = proc.stderr.read()
    assert err.endswith(b"2000 events and 0 lifetime updates shipped to stream PROCEVENTS\n"), err
    assert b"shipping to " + nats.url.encode() in err and secret.encode() not in err, err


def test_without_settings_it_says_so_in_one_line() -> None:
    result = subprocess.run(SHIPPER, input=b"", capture_output=True, env=env(), timeout=TIMEOUT, check=False)
    assert result.returncode == 2 and result.stderr.count(b"\n") == 1, result.stderr
    assert b"no settings on stdin" in result.stderr


def test_a_file_that_is_not_a_store_is_one_line(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n")
    result = subprocess.run(
        SHIPPER, input=_settings(text, "nats://127.0.0.1:1"), capture_output=True, env=env(), timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 1 and result.stderr.count(b"\n") == 1, result.stderr
    assert b"not an SQLite file" in result.stderr and b"Traceback" not in result.stderr


def test_a_server_down_from_the_start_is_said_once_and_the_end_still_comes(tmp_path: Path) -> None:
    db = lost_rows_db(tmp_path / "events.db")
    proc = _shipper(_settings(db, "nats://procevents:s3cret@127.0.0.1:1"))  # nothing listens on port 1
    try:
        assert proc.stdin is not None
        proc.stdin.close()  # the recorder's end: it tries for the drain's few seconds, then ends
        assert proc.wait(TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    assert err.count("cannot ship to nats://127.0.0.1:1 (") == 1, err
    assert "Connect call failed" in err and "s3cret" not in err, err
    assert err.endswith("shipped to stream PROCEVENTS, 2000 not yet acknowledged (kept in the outbox)\n"), err


def test_the_drain_it_is_given_bounds_a_first_connection_still_being_tried(tmp_path: Path) -> None:
    """record -D gives it a short drain (DURATION_DRAIN): a first connection
    begun before the end gives up with the drain, not after its own
    FIRST_CONNECT_WAIT; it still says why once, and how much waits."""
    from procevents.fleet.connect import FIRST_CONNECT_WAIT

    db = lost_rows_db(tmp_path / "events.db")
    drain = 0.5
    proc = _shipper(_settings(db, "nats://127.0.0.1:1", drain=drain))  # nothing listens on port 1
    try:
        assert proc.stdin is not None
        began = time.monotonic()
        proc.stdin.close()
        assert proc.wait(TIMEOUT) == 0
        took = time.monotonic() - began
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    assert err.count("cannot ship to nats://127.0.0.1:1 (") == 1, err
    assert err.endswith("2000 not yet acknowledged (kept in the outbox)\n"), err
    # Generous (its start and end on a busy machine), and still below the
    # first connection's own wait, which is what it took before.
    assert took < FIRST_CONNECT_WAIT - 1.0, (took, err)

"""The shipper process (fleet/shipper.py) as the recorder starts it: its
settings as one JSON line on stdin, then wakeups; it ships what is
committed to a real nats-server, moves the outbox cursor once the stream
has acknowledged it, and ends when stdin closes.  Its refusals are one
line each.  Through record --nats, end to end: test_fleet.py."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from helpers import TIMEOUT, Lines, NatsServer, db_rows, env, lost_rows_db, nats, wait_until

__all__ = ["nats"]  # the fixture, imported to be used here

#: A bound for shipping and collecting on a loaded machine, not a pace.
SLOW = 60.0

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


def _store_id(db: Path) -> str:
    return str(db_rows(db, "SELECT value FROM meta WHERE key = 'store_id'")[0][0])


def _shipped_event_ids(nats: NatsServer) -> list[int]:
    """The event ids in the stream's messages from the shipper (subject procevents.solo.events)."""
    return sorted(row[0] for m in nats.stream_messages() if m.subject == "procevents.solo.events"
                  for row in json.loads(m.data)["rows"])


def test_message_ids_cannot_be_taken_first(nats: NatsServer, tmp_path: Path) -> None:
    """Issue 23: messages published first under a host's next ids
    (HOST:STORE:events:FIRST-LAST, the store id being in every message id)
    made JetStream drop the real events as duplicates, and the shipper
    moved its cursor.  The ids now carry a MAC under the store's secret:
    the squatter's guesses take nothing, every event is in the stream."""
    db = lost_rows_db(tmp_path / "events.db")  # 2000 events: messages 1-1000 and 1001-2000
    from procevents.fleet.outbox import Outbox

    Outbox(str(db), "PROCEVENTS", "procevents", "solo").close()  # the store id, made as the shipper would
    store = _store_id(db)
    guesses = [f"solo:{store}:events:{first}-{first + 999}" for first in (1, 1001)]
    acks = nats.publish([("procevents.web-2.events", b"squatted", guess) for guess in guesses])
    assert not [a for a in acks if isinstance(a, Exception)], acks
    proc = _shipper(_settings(db, nats.url))
    wait_until(lambda: db_rows(db, "SELECT events FROM outbox") == [(2000,)], "the outbox cursor at the last event",
               timeout=SLOW)
    assert proc.stdin is not None
    proc.stdin.close()
    assert proc.wait(TIMEOUT) == 0
    assert _shipped_event_ids(nats) == list(range(1, 2001))


def test_a_duplicate_of_a_message_it_never_sent_keeps_the_rows(nats: NatsServer, tmp_path: Path) -> None:
    """Whoever has the store's secret (here: the test, from the file) can
    take an id first; the shipper's acknowledgement then says duplicate for
    a message it never sent.  That is a failure, said in one line: the
    rows stay in the outbox, the cursor does not move."""
    db = lost_rows_db(tmp_path / "events.db")
    from procevents.fleet.outbox import Outbox

    outbox = Outbox(str(db), "PROCEVENTS", "procevents", "solo")
    ids = [m.msg_id for m in outbox.read().messages if m.kind == "events"]  # the ids the shipper will send
    outbox.close()
    assert len(ids) == 2
    acks = nats.publish([("procevents.web-2.events", b"squatted", ids[0])])
    assert not [a for a in acks if isinstance(a, Exception)], acks
    proc = _shipper(_settings(db, nats.url))
    assert proc.stderr is not None
    err = Lines(proc.stderr)
    failed = err.wait_for(lambda line: b"failed (" in line, timeout=SLOW)
    assert failed == (
        f"procevents: nats: publishing to stream PROCEVENTS failed (the stream already holds message {ids[0]}, "
        "which this shipper did not send): 2000 events wait in the outbox\n"
    ).encode(), err.text
    assert db_rows(db, "SELECT events FROM outbox") == [(0,)]
    assert proc.stdin is not None
    proc.stdin.close()
    assert proc.wait(TIMEOUT) == 0
    err.join()
    assert err.data.endswith(
        b"shipped to stream PROCEVENTS, 2000 not yet acknowledged (kept in the outbox)\n"), err.text
    assert db_rows(db, "SELECT events FROM outbox") == [(0,)]


def test_the_next_run_knows_the_ids_the_last_one_sent(nats: NatsServer, tmp_path: Path) -> None:
    """A shipper whose acknowledgements came too late to move the cursor
    (here: the cursor set back by hand) ends; the next run sends the same
    messages again, and the stream says duplicate.  Those ids were kept in
    the outbox: its own messages, not a failure, and the cursor moves."""
    db = lost_rows_db(tmp_path / "events.db")
    for run in ("first", "second"):
        proc = _shipper(_settings(db, nats.url))
        wait_until(lambda: db_rows(db, "SELECT events FROM outbox") == [(2000,)], f"the {run} run's cursor at 2000",
                   timeout=SLOW)
        assert proc.stdin is not None and proc.stderr is not None
        proc.stdin.close()
        assert proc.wait(TIMEOUT) == 0
        err = proc.stderr.read()
        assert b"failed" not in err and err.endswith(b"2000 events and 0 lifetime updates shipped to stream "
                                                     b"PROCEVENTS\n"), err
        sqlite3.connect(db).execute("UPDATE outbox SET events = 0").connection.commit()
    assert _shipped_event_ids(nats) == list(range(1, 2001))  # stored once: the second run's were duplicates

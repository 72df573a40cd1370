"""replay (cli/replay.py) against the real kernel: a recording replayed is byte for byte what the live view printed."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    ISO,
    SH,
    Cli,
    Gated,
    committed_events,
    lost_rows_db,
    run_cli,
    skip_unless_connector,
    wait_until,
)


@pytest.fixture(scope="module", autouse=True)
def _usable() -> None:
    skip_unless_connector()




def test_replay_equals_live_output(cli: Callable[..., Cli], gated: Callable[..., Gated], tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    live_json = tmp_path / "live.jsonl"
    # Everything this test starts from now on, forked while all three watch
    # (so each knows its start from its fork, not from /proc).
    me = str(os.getpid())
    rec = cli("record", "--db", str(db), "-p", me)
    live = cli("--json", "-p", me, "-o", str(live_json))
    live_text = cli("-p", me)
    for c in (rec, live, live_text):
        c.wait_listening()
    kid = gated([SH, "-c", "read _; printf x > /proc/$$/comm; exec sh -c 'read _; exit 7'"])

    def seen_by_both(execs: int) -> Callable[[], bool]:
        def check() -> bool:
            in_live = live_json.exists() and live_json.read_bytes().count(b'"event":"exec"') >= execs
            return in_live and committed_events(db, "exec", [kid.pid]) >= execs

        return check

    wait_until(seen_by_both(1), "the first exec in both outputs")
    assert kid.proc.stdin is not None
    kid.proc.stdin.write(b"one\n")
    kid.proc.stdin.flush()
    wait_until(seen_by_both(2), "the second exec in both outputs")
    assert kid.release() == 7
    exit_line = f'"pid":{kid.pid},"tgid":{kid.pid},"exit_code"'.encode()
    wait_until(lambda: exit_line in live_json.read_bytes(), "the live exit")
    wait_until(lambda: committed_events(db, "exit", [kid.pid]) == 1, "the recorded exit")
    live_text.out.wait_for(lambda line: line.split()[1:3] == [b"exit", str(kid.pid).encode()])
    for c in (rec, live, live_text):
        assert c.stop() == 0, c.err.text

    # The watchers' own exits are in some outputs (they are this test's
    # children too): compare the workload's events.
    def events(data: bytes) -> list[dict[str, Any]]:
        parsed = [json.loads(line) for line in data.splitlines()]
        assert not [e for e in parsed if e["event"] == "lost"]
        return [e for e in parsed if e["tgid"] == kid.pid]

    live_events = events(live_json.read_bytes())
    result = run_cli("replay", "--db", str(db), "--json")
    assert result.returncode == 0, result.stderr
    replayed = events(result.stdout)
    assert [e["event"] for e in live_events] == ["fork", "exec", "comm", "exec", "exit"]
    # Two processes, two reads of the wall clock: "time" may differ in the
    # last microsecond; everything else is the same, event for event.
    assert len(replayed) == len(live_events)
    for got, want in zip(replayed, live_events, strict=True):
        diff = {k: (got.get(k), want.get(k)) for k in set(got) | set(want) if k != "time" and got.get(k) != want.get(k)}
        assert not diff, (want["event"], diff)
    assert all(ISO.match(e["time"]) for e in replayed)
    # The text view too (the time column aside).
    result = run_cli("replay", "--db", str(db))
    assert result.returncode == 0

    def text(lines: list[bytes]) -> list[bytes]:
        return [line.split(b" ", 1)[1] for line in lines if line.split()[2:3] == [str(kid.pid).encode()]]

    assert text(result.stdout.splitlines(keepends=True)) == text(live_text.out.lines)
    assert len(text(live_text.out.lines)) == 5
    # Selection: -e and --since
    result = run_cli("replay", "--db", str(db), "--json", "-e", "exit", "--since", "10m")
    assert [e["event"] for e in events(result.stdout)] == ["exit"]
    replayed = rb"^procevents: \d+ events? replayed \(exit \d+\) of \d+ events read, 0 events lost$"
    assert re.search(replayed, result.stderr, re.M), result.stderr


def test_a_replayed_loss_has_the_running_total(tmp_path: Path) -> None:
    """As the live view: each lost event says how many were lost so far,
    this one included, and the last total is the summary's count."""
    db = lost_rows_db(tmp_path / "lost.db")  # 2000 lost rows, the i-th counting i
    result = run_cli("replay", "--db", str(db), "--json")
    assert result.returncode == 0, result.stderr
    lost = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["count"] for e in lost] == list(range(2000))
    assert [e["total"] for e in lost] == [i * (i + 1) // 2 for i in range(2000)]
    assert result.stderr.decode().rstrip().endswith(f", {1999 * 2000 // 2} events lost"), result.stderr
    text = run_cli("replay", "--db", str(db)).stdout.decode().splitlines()
    assert text[1].endswith(" 1 event lost (drops, 1 in all)"), text[1]
    assert text[-1].endswith(" 1,999 events lost (drops, 1,999,000 in all)"), text[-1]

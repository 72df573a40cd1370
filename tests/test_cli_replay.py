"""replay (cli/replay.py) against the real kernel: a recording replayed is
byte for byte what the live view printed (and where: the host); a store
collected from several hosts replayed with each line's host, --host and
--container."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    CONTAINER_ID,
    ISO,
    SH,
    Cli,
    Gated,
    collected_store,
    committed_events,
    lost_rows_db,
    run_cli,
    skip_unless_connector,
    two_hosts_build,
    wait_until,
)

from procevents.identity import host_name


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
        # ... and where it was recorded (the live stream is of this host alone).
        assert got.pop("host") == host_name()
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


def _replay(*args: str) -> list[str]:
    result = run_cli("replay", "-q", *args)
    assert result.returncode == 0 and result.stderr == b"", result.stderr
    return result.stdout.decode().splitlines()


def test_a_collected_store_replays_each_line_with_its_host(tmp_path: Path) -> None:
    # Issue 22: replay of a central store interleaved web-1 and web-2 with
    # nothing to tell them apart, --json had no host, --host was refused.
    central = str(collected_store(tmp_path, two_hosts_build()))
    text = _replay("--db", central)
    assert len(text) == 12, text  # fork, exec, exit of make and cc1 on each host
    for line in text:
        host = line.split()[0]
        assert host in ("web-1", "web-2") and line.endswith((f"{host}.mk", f"{host}.c", "[make]", "[cc1]")), line
    assert [line.split()[0] for line in text[:2]] == ["web-1", "web-2"]  # interleaved, as collected
    # A tree per host: the same pids on both, each host's exits under its own execs.
    tree = _replay("--db", central, "--tree")
    assert [(line.split()[0], line.split()[3:5]) for line in tree if " exit " in line] == [
        ("web-1", ["exit", "status"]), ("web-2", ["exit", "status"]), ("web-1", ["exit", "status"]),
        ("web-2", ["exit", "status"])]
    assert [line.split()[0] for line in tree] == ["web-1", "web-2"] * 4, tree
    for line in tree:
        host = line.split()[0]
        assert f"{host}." in line or "exit status" in line, line
    events = [json.loads(line) for line in _replay("--db", central, "--json")]
    assert len(events) == 12 and all(e["host"] in ("web-1", "web-2") for e in events)
    assert all(e["exec_id"].startswith(e["host"] + ":") for e in events)
    # One host: its events only, and no column (as from its own file).
    one = _replay("--db", central, "--host", "web-2")
    assert len(one) == 6 and all(line[:2].isdigit() for line in one), one
    assert [line.split(maxsplit=1)[1] for line in one] == [
        line.split(maxsplit=1)[1] for line in _replay("--db", str(tmp_path / "web-2.db"))]
    assert {json.loads(line)["host"] for line in _replay("--db", central, "--json", "--host", "web-1")} == {"web-1"}
    # --container, as live and in query: web-2's cc1 alone.
    inside = [json.loads(line) for line in _replay("--db", central, "--json", "--container", CONTAINER_ID[:8])]
    assert [(e["event"], e["host"], e["pid"]) for e in inside] == [
        ("fork", "web-2", 601), ("exec", "web-2", 601), ("exit", "web-2", 601)]
    assert _replay("--db", central, "--host", "web-1", "--container", CONTAINER_ID[:8]) == []


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

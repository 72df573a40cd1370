"""Timelines (Chrome trace event JSON for Perfetto): made from a real recorded
run and from ``trace --timeline``, then checked as Perfetto's JSON importer
reads them: valid JSON, every span with ts and dur >= 0, the spans of one
track nested, every arrow's start and end paired and bound to a span, every
track named.  (The ``perfetto`` package's trace processor downloads its
binary at run time, which this machine cannot: the checks are written here
from the importer's rules.)
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    SH,
    TIMEOUT,
    Cli,
    Gated,
    cli_argv,
    committed_events,
    env,
    run_cli,
    skip_unless_connector,
    wait_until,
)

from procevents.render.timeline import timeline_events
from procevents.store import Lifetime
from procevents.store.reader import ExecPoint

# -- what Perfetto's JSON importer needs ---------------------------------------------------


def check_trace(doc: Any) -> dict[str, Any]:
    """Raise AssertionError where ``doc`` breaks a rule of the Chrome trace
    format as Perfetto imports it; return what was found, for more checks."""
    assert isinstance(doc, dict) and isinstance(doc.get("traceEvents"), list), "not {traceEvents: [...]}"
    assert doc.get("displayTimeUnit") in (None, "ms", "ns")
    # An unknown top-level key makes Perfetto's tokenizer skip the rest of the file.
    assert set(doc) <= {"traceEvents", "displayTimeUnit", "otherData", "metadata", "systemTraceEvents"}, set(doc)
    events = doc["traceEvents"]
    spans: dict[tuple[int, int], list[tuple[float, float, int]]] = defaultdict(list)
    names: dict[str, set[Any]] = defaultdict(set)
    flows: dict[Any, list[tuple[str, int, dict[str, Any]]]] = defaultdict(list)
    instants: list[tuple[int, dict[str, Any]]] = []
    group_of: dict[int, int] = {}
    last_ts = -1.0
    for n, e in enumerate(events):
        assert isinstance(e.get("ph"), str) and isinstance(e.get("name"), str), e
        for key in ("pid", "tid"):
            assert isinstance(e.get(key), int) and 0 <= e[key] < 2**32, e
        # A track is one (pid, tid): a tid in two groups would be two tracks named alike.
        assert group_of.setdefault(e["tid"], e["pid"]) == e["pid"], e
        if e["ph"] == "M":
            assert e["name"] in {"process_name", "thread_name", "process_sort_index", "thread_sort_index"}, e
            assert isinstance(e.get("args"), dict), e
            if e["name"] == "process_name":
                names["process"].add(e["pid"])
            elif e["name"] == "thread_name":
                names["thread"].add((e["pid"], e["tid"]))
            continue
        ts = e.get("ts")
        assert isinstance(ts, (int, float)) and ts >= 0, e
        # Written in time order: Perfetto then never re-sorts, so same-moment order holds.
        assert ts >= last_ts, (e, last_ts)
        last_ts = ts
        if e["ph"] == "X":
            assert isinstance(e.get("dur"), (int, float)) and e["dur"] >= 0, e
            spans[(e["pid"], e["tid"])].append((ts, ts + e["dur"], n))
        elif e["ph"] == "i":
            assert e.get("s") in ("t", "p", "g"), e
            instants.append((n, e))
        elif e["ph"] in ("s", "f"):
            assert "id" in e and isinstance(e.get("cat"), str), e
            flows[e["id"]].append((e["ph"], n, e))
        else:
            raise AssertionError(f"unexpected phase: {e}")
    # The spans of one track nest (a later span inside or after an earlier one).
    for track, found in spans.items():
        stack: list[tuple[float, float, int]] = []
        for start, end, n in sorted(found, key=lambda s: (s[0], -s[1])):
            while stack and stack[-1][1] <= start:
                stack.pop()
            assert not stack or end <= stack[-1][1] + 1e-6, f"spans overlap on {track}: {stack[-1]} and {(start, end)}"
            stack.append((start, end, n))

    def enclosing(e: dict[str, Any], before: int) -> tuple[float, float, int] | None:
        # (ts + dur, in floats, may miss the end by a rounding step)
        found = [s for s in spans[(e["pid"], e["tid"])] if s[0] <= e["ts"] <= s[1] + 1e-6 and s[2] < before]
        return found[0] if found else None

    for n, e in instants:
        assert enclosing(e, n) is not None, f"an instant outside every span of its track: {e}"
    for flow_id, ends in flows.items():
        assert [ph for ph, _, _ in ends] == ["s", "f"], f"flow {flow_id}: {ends}"
        (_, ns, start), (_, nf, finish) = ends
        assert (start["cat"], start["name"]) == (finish["cat"], finish["name"]), ends
        assert start["ts"] <= finish["ts"], ends
        assert enclosing(start, ns) is not None, f"a flow start outside every span of its track: {start}"
        if finish.get("bp") == "e":
            assert enclosing(finish, nf) is not None, f"a flow end bound to no span: {finish}"
    for pid, tid in spans:
        assert (pid, tid) in names["thread"], f"track {(pid, tid)} has no thread_name"
        assert pid in names["process"], f"group {pid} has no process_name"
    return {"spans": spans, "flows": flows, "instants": [e for _, e in instants]}


def x_spans(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in doc["traceEvents"] if e["ph"] == "X"]


# -- from a recorded real run ----------------------------------------------------------------


def test_timeline_of_a_recorded_tree(cli: Callable[..., Cli], tmp_path: Path) -> None:
    """record a real process tree, then query --timeline: its structure is what
    Perfetto needs and its content is the recording's."""
    skip_unless_connector()
    db = tmp_path / "events.db"
    out = tmp_path / "timeline.json"
    rec = cli("record", "--db", str(db))
    rec.wait_listening()
    # A child that fails, one killed by a signal, one that execs twice, and a
    # grandchild; all start once the root is released (the recorder is listening).
    script = (
        "read _; "
        "sh -c 'sh -c \"exit 3\"; exit 0' & "
        "sh -c 'kill -TERM $$' & "
        "sh -c 'exec env true' & "
        "wait; exit 0"
    )
    root = Gated([SH, "-c", script], cwd=tmp_path)
    assert root.release() == 0
    wait_until(lambda: committed_events(db, "exit", [root.pid]) == 1, "the root's exit committed")
    assert rec.stop() == 0, rec.err.text
    result = run_cli("query", "--db", str(db), "--pid", str(root.pid), "--timeline", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout == b""
    listed = run_cli("query", "--db", str(db), "--pid", str(root.pid), "--json")
    lives = [json.loads(line) for line in listed.stdout.splitlines()]
    assert f"timeline of {len(lives)} processes written to {out}".encode() in result.stderr, result.stderr
    assert oct(out.stat().st_mode & 0o777) == "0o600"

    doc = json.loads(out.read_bytes())
    found = check_trace(doc)
    spans = x_spans(doc)
    # One span per recorded lifetime, each on a track of its own, all in the root's group.
    assert sorted(s["args"]["pid"] for s in spans) == sorted(life["pid"] for life in lives)
    assert len({(s["pid"], s["tid"]) for s in spans}) == len(spans)
    assert len({s["pid"] for s in spans}) == 1
    by_pid = {s["args"]["pid"]: s for s in spans}
    assert by_pid[root.pid]["name"].startswith(f"{SH} -c 'read _;")
    for life in lives:
        span = by_pid[life["pid"]]
        assert span["dur"] == pytest.approx(life["duration"] * 1e6, abs=1.0), (span, life)
        for key in ("ppid", "user", "cwd", "exit_code", "execs"):
            assert span["args"][key] == life[key], key
    assert by_pid[root.pid]["args"]["cwd"] == str(tmp_path)
    # Failures marked: the span (category) and an instant at its end.
    marks = {(e["tid"], e["name"]) for e in found["instants"] if e["cat"] == "failed"}
    failed = [s for s in spans if s["args"].get("status") == 3]
    killed = [s for s in spans if s["args"].get("signal") == signal.SIGTERM]
    assert len(failed) == 1 and len(killed) == 1, spans
    assert (failed[0]["tid"], "status 3") in marks
    assert (killed[0]["tid"], "killed by SIGTERM") in marks
    assert "failed" in failed[0]["cat"] and "failed" not in by_pid[root.pid]["cat"]
    # Exec points: sh, env, then true, on the track of the process that ran them.
    (thrice,) = [s for s in spans if s["args"]["execs"] == 3]
    assert thrice["name"] == "true", thrice
    execs = [e["name"] for e in found["instants"] if e["cat"] == "exec" and e["tid"] == thrice["tid"]]
    assert execs == ["exec sh -c 'exec env true'", "exec env true", "exec true"]
    # Every fork drawn: one arrow per child, from its parent's track to its own.
    tid_of = {s["args"]["pid"]: s["tid"] for s in spans}
    arrows = {(ends[0][2]["tid"], ends[1][2]["tid"]) for ends in found["flows"].values()}
    expected = {(tid_of[life["ppid"]], tid_of[life["pid"]]) for life in lives if life["pid"] != root.pid}
    assert arrows == expected


def test_trace_writes_a_timeline_and_keeps_the_status(tmp_path: Path) -> None:
    skip_unless_connector()
    out = tmp_path / "build.json"
    out.write_text("an older file, replaced\n")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    command = ["sh", "-c", "ls / >/dev/null; sh -c 'exit 3'; exit 5"]
    result = subprocess.run(
        [*cli_argv(), "trace", "--timeline", str(out), "--", *command], capture_output=True,
        env={**env(), "TMPDIR": str(scratch)}, stdin=subprocess.DEVNULL, timeout=TIMEOUT, check=False,
    )
    assert result.returncode == 5, result.stderr
    assert b"timeline of 3 processes written to" in result.stderr, result.stderr
    doc = json.loads(out.read_bytes())
    found = check_trace(doc)
    names = sorted(s["name"] for s in x_spans(doc))
    assert names == sorted(["ls /", "sh -c 'exit 3'", "sh -c 'ls / >/dev/null; sh -c '\\''exit 3'\\''; exit 5'"])
    assert len(found["flows"]) == 2
    assert list(scratch.iterdir()) == []  # its scratch database is gone


def test_timeline_usage_errors(tmp_path: Path) -> None:
    db = tmp_path / "none.db"
    for args, message in [
        (["--timeline", "t.json", "--json"], b"choose one of --json and --timeline"),
        (["--timeline", "t.json", "--tree"], b"choose one of --tree and --timeline"),
        (["--timeline", "t.json", "-o", "x"], b"--timeline FILE is the output: drop -o"),
        (["--timeline", "t.json", "--sql", "SELECT 1"], b"--sql runs alone"),
    ]:
        result = run_cli("query", "--db", str(db), *args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr and len(result.stderr.splitlines()) == 1, (args, result.stderr)
    result = run_cli("trace", "--timeline", str(tmp_path / "missing" / "t.json"), "--", "touch", str(tmp_path / "ran"))
    assert result.returncode == 1 and b"cannot open" in result.stderr, result.stderr  # runtime, not usage
    assert not (tmp_path / "ran").exists()  # refused before CMD ran


# -- the builder alone: what a real run cannot be made to show ---------------------------------


def _life(life_id: int, pid: int, parent: int | None, start: int | None, end: int | None, **kw: Any) -> Lifetime:
    fields: dict[str, Any] = dict(
        id=life_id, session=1, pid=pid, ppid=None, parent=parent, start_ns=start, start_wall=start, forked=True,
        end_ns=end, end_wall=end, comm="sh", exe=None, argv=["sh", "-c", str(life_id)], cwd=None, uid=0,
        user="root", execs=1, exit_code=0, duration=None,
    )
    fields.update(kw)
    return Lifetime(**fields)


def test_a_reused_pid_gets_a_track_of_its_own() -> None:
    base = 1_700_000_000_000_000_000
    lives = [
        _life(1, 100, None, base, base + 10_000_000),
        _life(2, 200, 1, base + 1_000_000, base + 2_000_000),
        _life(3, 200, 1, base + 3_000_000, base + 9_000_000, exit_code=256),  # pid 200 again
        _life(4, 300, 3, base + 4_000_000, None),  # no exit recorded: runs to the end
    ]
    execs = {2: [ExecPoint(base + 1_500_000, ["ls"], "ls")], 3: [ExecPoint(base + 20_000_000, ["late"], None)]}
    events, first = timeline_events(lives, execs, lambda life: {"pid": life.pid})
    assert first == base
    found = check_trace({"traceEvents": events})
    spans = {e["tid"]: e for e in events if e["ph"] == "X"}
    assert spans[2]["args"] == spans[3]["args"] == {"pid": 200}
    assert (spans[2]["pid"], spans[2]["tid"]) != (spans[3]["pid"], spans[3]["tid"])
    assert spans[4]["ts"] + spans[4]["dur"] == pytest.approx(10_000.0)  # to the last known time
    assert [e["name"] for e in found["instants"] if e["cat"] == "exec"] == ["exec ls"]  # the late one is dropped
    assert [(e["tid"], e["name"]) for e in found["instants"] if e["cat"] == "failed"] == [(3, "status 1")]
    assert len(found["flows"]) == 3


def test_a_window_cuts_long_lives_and_init_starts_no_group() -> None:
    base = 1_700_000_000_000_000_000
    lives = [
        _life(1, 1, None, base - 3600 * 10**9, None, forked=False),  # init, from boot
        _life(2, 50, 1, base - 60 * 10**9, base + 5_000_000),  # a daemon's child of init
        _life(3, 51, 2, base + 1_000_000, base + 2_000_000),
    ]
    events, first = timeline_events(lives, {}, lambda life: {}, (base, base + 10_000_000))
    assert first == base
    check_trace({"traceEvents": events})
    spans = {e["tid"]: e for e in events if e["ph"] == "X"}
    assert spans[1]["ts"] == 0 and spans[2]["ts"] == 0
    assert spans[1]["pid"] == 1 and spans[2]["pid"] == spans[3]["pid"] == 2
    assert spans[3]["ts"] == pytest.approx(1000.0) and spans[3]["dur"] == pytest.approx(1000.0)
    assert not [e for e in events if e["ph"] == "s" and e["id"] == 2]  # its fork lies before the window


def test_the_checker_catches_what_perfetto_rejects() -> None:
    good = [
        {"ph": "M", "ts": 0, "pid": 1, "tid": 1, "name": "process_name", "args": {"name": "p"}},
        {"ph": "M", "ts": 0, "pid": 1, "tid": 1, "name": "thread_name", "args": {"name": "t"}},
        {"ph": "X", "ts": 0, "dur": 10, "pid": 1, "tid": 1, "name": "a"},
        {"ph": "X", "ts": 2, "dur": 5, "pid": 1, "tid": 1, "name": "b"},
    ]
    check_trace({"traceEvents": good})
    overlap = [*good[:3], {"ph": "X", "ts": 5, "dur": 10, "pid": 1, "tid": 1, "name": "b"}]
    with pytest.raises(AssertionError, match="overlap"):
        check_trace({"traceEvents": overlap})
    backwards = [*good[:2], {"ph": "X", "ts": 0, "dur": -1, "pid": 1, "tid": 1, "name": "a"}]
    with pytest.raises(AssertionError):
        check_trace({"traceEvents": backwards})
    end_first = [
        *good[:3],
        {"ph": "f", "bp": "e", "ts": 1, "pid": 1, "tid": 1, "id": 7, "name": "fork", "cat": "fork"},
        {"ph": "s", "ts": 1, "pid": 1, "tid": 1, "id": 7, "name": "fork", "cat": "fork"},
    ]
    with pytest.raises(AssertionError, match="flow 7"):
        check_trace({"traceEvents": end_first})
    unnamed = [good[0], good[2]]
    with pytest.raises(AssertionError, match="thread_name"):
        check_trace({"traceEvents": unnamed})

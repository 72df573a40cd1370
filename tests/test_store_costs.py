"""What each process cost, through the store: a schema-1 file read as it is
and recorded into (migrated in place), and query's --sort and --min-cpu on a
real recording.  The cost columns and the migration itself:
test_store_schema.py; reading a row's costs: test_store_reader.py; --min-cpu's
refusals: test_cli_options.py."""

from __future__ import annotations

import json
import re
import sqlite3
import sys
from pathlib import Path

import pytest
from helpers import TIMEOUT, Cli, make_schema_1, run_cli, wait_rows

from procevents.store import LifetimeQuery, StoreError, StoreReader
from procevents.store.schema import COST_COLUMNS, SCHEMA_VERSION


def test_schema_1_file_is_read_as_it_is(tmp_path: Path) -> None:
    db = tmp_path / "v1.db"
    make_schema_1(db)
    assert "utime" not in {row[1] for row in sqlite3.connect(db).execute("PRAGMA table_info(procs)")}
    with StoreReader(str(db)) as reader:
        assert not reader.has_costs
        (life,) = reader.lifetimes(LifetimeQuery())
        assert (life.pid, life.comm, life.utime, life.max_rss, life.cpu) == (4242, "old", None, None, None)
        with pytest.raises(StoreError, match="recorded without exit costs"):
            reader.lifetimes(LifetimeQuery(sort="cpu"))
        assert [lt.pid for lt in reader.lifetimes(LifetimeQuery(sort="duration"))] == [4242]
    result = run_cli("query", "--db", str(db), "--sort", "rss")
    assert result.returncode == 1 and result.stderr.count(b"\n") == 1 and b"without exit costs" in result.stderr


def test_recording_into_a_schema_1_file_migrates_it_in_place(tmp_path: Path) -> None:
    from procevents.store import StoreWriter

    db = tmp_path / "v1.db"
    make_schema_1(db)
    writer = StoreWriter(str(db))
    writer.close()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    columns = [row[1] for row in conn.execute("PRAGMA table_info(procs)")]
    assert set(COST_COLUMNS) <= set(columns)
    assert conn.execute("SELECT pid, comm, utime FROM lifetimes").fetchall() == [(4242, "old", None)]
    assert "costs" in [row[1] for row in conn.execute("PRAGMA table_info(events_named)")]
    conn.close()
    with StoreReader(str(db)) as reader:
        assert reader.has_costs


BURN = """
import sys, time
sys.stdin.read(1)
start = time.process_time()
while time.process_time() - start < float(sys.argv[1]):
    pass
"""



def test_query_sorts_and_filters_by_what_each_process_cost(tmp_path: Path, cli: object) -> None:
    import subprocess

    db = tmp_path / "costs.db"
    recorder: Cli = cli("record", "--db", str(db))  # type: ignore[operator]
    recorder.wait_listening()
    heavy = subprocess.Popen([sys.executable, "-c", BURN, "0.4"], stdin=subprocess.PIPE)
    light = subprocess.Popen([sys.executable, "-c", BURN, "0"], stdin=subprocess.PIPE)
    for proc in (heavy, light):
        assert proc.stdin is not None
        proc.stdin.write(b"x")
        proc.stdin.close()
        assert proc.wait(TIMEOUT) == 0
    try:
        wait_rows(db, "SELECT count(*) FROM procs WHERE pid IN (?, ?) AND end_wall IS NOT NULL",
                  (heavy.pid, light.pid), 2, "both lifetimes committed")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the recorder said:\n{recorder.err.text}") from None
    assert recorder.stop() == 0

    rows = sqlite3.connect(db).execute(
        "SELECT l.pid, l.utime + l.stime, l.max_rss, json_extract(e.costs, '$[0]') FROM lifetimes l "
        "JOIN events_named e ON e.proc = l.id AND e.event = 'exit' WHERE l.pid IN (?, ?)",
        (heavy.pid, light.pid),
    ).fetchall()
    cpu = {pid: used for pid, used, _rss, _event_utime in rows}
    assert cpu[heavy.pid] >= 0.35 and cpu[light.pid] < 0.3
    assert all(rss > 1024 * 1024 for _pid, _cpu, rss, _u in rows)
    assert all(utime is not None for *_rest, utime in rows)  # the exit event keeps them too (replay)

    def query(*args: str) -> list[dict[str, object]]:
        result = run_cli("query", "--db", str(db), "--json", "--pid", str(heavy.pid), "--pid", str(light.pid), *args)
        assert result.returncode == 0, result.stderr
        return [json.loads(line) for line in result.stdout.splitlines()]

    by_cpu = query("--sort", "cpu")
    assert [life["pid"] for life in by_cpu] == [heavy.pid, light.pid]
    assert all(key in by_cpu[0] for key in COST_COLUMNS)
    assert [life["pid"] for life in query("--min-cpu", "0.3")] == [heavy.pid]
    assert query("--min-cpu", "1h") == []
    table = run_cli("query", "--db", str(db), "--pid", str(heavy.pid), "--sort", "cpu").stdout.decode().splitlines()
    assert table[0].split()[5:7] == ["CPU", "MAXRSS"]
    assert re.search(r"\s0\.\d{3}s\s|\s\d+\.\dms\s", table[1]), table[1]

    replayed = run_cli("replay", "--db", str(db), "--json", "-p", str(heavy.pid))
    exits = [json.loads(line) for line in replayed.stdout.splitlines() if b'"exit"' in line]
    assert exits and exits[-1]["utime"] is not None and exits[-1]["max_rss"] == by_cpu[0]["max_rss"]


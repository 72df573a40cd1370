"""What each process cost, in the store: schema 2's columns, the migration
from schema 1 in place, reading a schema-1 file as it is, and query's
--sort and --min-cpu on a real recording."""

from __future__ import annotations

import json
import re
import sqlite3
import sys
from pathlib import Path

import pytest
from helpers import TIMEOUT, Cli, cli_processes, run_cli, skip_unless_connector, wait_rows

from procevents.costs import COST_KEYS
from procevents.store import LifetimeQuery, StoreError, StoreReader
from procevents.store.schema import APPLICATION_ID, COST_COLUMNS, SCHEMA, SCHEMA_VERSION


def test_the_store_keeps_every_figure_an_exit_carries() -> None:
    assert COST_COLUMNS == COST_KEYS
    for column in COST_COLUMNS:
        assert re.search(rf"^\s+{column} (REAL|INTEGER)", SCHEMA, re.M), column


#: The schema procevents 0.1 wrote (schema 1), as it was: no cost columns.
SCHEMA_1 = """
CREATE TABLE sessions (
    id INTEGER PRIMARY KEY,
    started_wall INTEGER NOT NULL,   -- ns since the epoch
    clock_offset INTEGER NOT NULL,   -- wall-clock ns minus CLOCK_MONOTONIC ns
    boot_id TEXT,
    hostname TEXT,
    recorder_pid INTEGER,
    version TEXT,
    ended TEXT,                      -- clean, error; NULL: never closed (killed, power loss)
    ended_wall INTEGER
);
CREATE TABLE procs (                 -- one row per process lifetime
    id INTEGER PRIMARY KEY,
    session INTEGER NOT NULL,
    pid INTEGER NOT NULL,
    ppid INTEGER,
    parent INTEGER,                  -- procs.id of the parent's lifetime
    start_ns INTEGER,                -- CLOCK_MONOTONIC
    start_wall INTEGER,              -- ns since the epoch
    forked INTEGER NOT NULL,         -- 1: its fork was recorded; 0: running when first seen
    end_ns INTEGER,
    end_wall INTEGER,
    comm TEXT,
    exe TEXT,
    argv BLOB,                       -- NUL-terminated arguments
    cwd TEXT,
    uid INTEGER,
    user TEXT,
    execs INTEGER NOT NULL,
    exit_code INTEGER,               -- raw wait status
    duration REAL                    -- seconds
);
CREATE INDEX procs_start ON procs(start_wall);
CREATE INDEX procs_end ON procs(end_wall);
CREATE INDEX procs_comm ON procs(comm);
CREATE INDEX procs_user ON procs(user);
CREATE INDEX procs_parent ON procs(parent);
CREATE TABLE events (                -- one row per event, in arrival order
    id INTEGER PRIMARY KEY,
    proc INTEGER,                    -- procs.id
    ts INTEGER NOT NULL,             -- timestamp_ns, CLOCK_MONOTONIC
    wall INTEGER NOT NULL,           -- ns since the epoch
    event TEXT NOT NULL,
    cpu INTEGER,
    seq INTEGER,
    pid INTEGER,                     -- for fork: the child
    tgid INTEGER,
    a INTEGER,                       -- per type, see the events_named view
    b INTEGER,
    c INTEGER,
    d INTEGER,
    data BLOB,
    comm TEXT,                       -- enrichment, as shown live
    ppid INTEGER,
    uid INTEGER,
    argv BLOB,
    exe TEXT,
    cwd TEXT
);
CREATE INDEX events_wall ON events(wall);
CREATE VIEW events_named AS SELECT
    id, proc, ts, wall, event, cpu, seq, pid, tgid,
    CASE WHEN event IN ('fork', 'exit', 'coredump') THEN a END AS parent_pid,
    CASE WHEN event IN ('fork', 'exit', 'coredump') THEN b END AS parent_tgid,
    CASE WHEN event = 'exit' THEN c END AS exit_code,
    CASE WHEN event = 'exit' THEN d END AS exit_signal,
    CASE WHEN event = 'uid' THEN a END AS ruid,
    CASE WHEN event = 'uid' THEN b END AS euid,
    CASE WHEN event = 'gid' THEN a END AS rgid,
    CASE WHEN event = 'gid' THEN b END AS egid,
    CASE WHEN event = 'ptrace' THEN a END AS tracer_pid,
    CASE WHEN event = 'ptrace' THEN b END AS tracer_tgid,
    CASE WHEN event = 'comm' THEN data END AS new_comm,
    CASE WHEN event = 'lost' THEN a END AS count,
    CASE WHEN event = 'lost' THEN CAST(data AS TEXT) END AS reason,
    CASE WHEN event = 'exec' THEN CAST(data AS TEXT) END AS missing,
    CASE WHEN event = 'unknown' THEN a END AS what,
    comm, ppid, uid, argv, exe, cwd
FROM events;
CREATE VIEW lifetimes AS SELECT
    procs.*,
    CASE WHEN exit_code & 127 = 0 THEN (exit_code >> 8) & 255 END AS status,
    CASE WHEN exit_code & 127 != 0 THEN exit_code & 127 END AS signal,
    CASE WHEN exit_code IS NOT NULL THEN exit_code & 127 != 0 AND exit_code & 128 != 0 END AS core_dumped,
    exit_code != 0 AS failed,
    strftime('%Y-%m-%dT%H:%M:%fZ', start_wall / 1e9, 'unixepoch') AS start_time,
    strftime('%Y-%m-%dT%H:%M:%fZ', end_wall / 1e9, 'unixepoch') AS end_time
FROM procs;
"""


def _make_schema_1(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(
        f"BEGIN; {SCHEMA_1}; PRAGMA application_id={APPLICATION_ID}; PRAGMA user_version=1; COMMIT;"
    )
    conn.execute(
        "INSERT INTO sessions (started_wall, clock_offset) VALUES (1, 0)"
    )
    conn.execute(
        "INSERT INTO procs (id, session, pid, start_wall, end_wall, forked, execs, comm, exit_code, duration) "
        "VALUES (1, 1, 4242, 1000, 2000, 1, 1, 'old', 0, 0.5)"
    )
    conn.close()


def test_schema_1_file_is_read_as_it_is(tmp_path: Path) -> None:
    db = tmp_path / "v1.db"
    _make_schema_1(db)
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
    _make_schema_1(db)
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


@pytest.fixture
def cli() -> object:
    skip_unless_connector()
    yield from cli_processes()


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


@pytest.mark.parametrize("bad", ["-1", "soon", "1e400"])
def test_min_cpu_refuses_what_is_not_a_cpu_time(tmp_path: Path, bad: str) -> None:
    result = run_cli("query", "--db", str(tmp_path / "none.db"), "--min-cpu", bad)
    assert result.returncode == 2 and result.stderr.count(b"\n") == 1 and b"Traceback" not in result.stderr


def _layout(path: Path) -> dict[str, object]:
    """Every table's columns (name, type), every index and view, as SQLite describes them."""
    conn = sqlite3.connect(path)
    try:
        objects = conn.execute(
            "SELECT type, name, tbl_name FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%'"
        ).fetchall()
        tables = sorted(name for kind, name, _ in objects if kind == "table")
        return {
            "tables": {t: sorted((r[1], r[2]) for r in conn.execute(f"PRAGMA table_info({t})")) for t in tables},
            "indexes": sorted((name, table) for kind, name, table in objects if kind == "index"),
            "index_columns": {
                name: [r[2] for r in conn.execute(f"PRAGMA index_info({name})")]
                for kind, name, _ in objects if kind == "index"
            },
            "unique": sorted(
                (t, r[1], r[2]) for t in tables
                for r in conn.execute(f"PRAGMA index_list({t})") if r[1][:7] != "sqlite_"
            ),
            "views": {
                v: [r[1] for r in conn.execute(f"PRAGMA table_info({v})")]
                for kind, v, _ in objects if kind == "view"
            },
            "version": conn.execute("PRAGMA user_version").fetchone()[0],
        }
    finally:
        conn.close()


def test_a_migrated_file_is_laid_out_as_a_new_one(tmp_path: Path) -> None:
    from procevents.store import StoreWriter

    old, new = tmp_path / "old.db", tmp_path / "new.db"
    _make_schema_1(old)
    StoreWriter(str(old)).close()
    StoreWriter(str(new)).close()
    assert _layout(old) == _layout(new)
    # and again: nothing left to do, nothing done twice
    before = old.read_bytes()
    conn = sqlite3.connect(old, isolation_level=None)
    from procevents.store.schema import migrate

    migrate(conn)
    conn.close()
    assert old.read_bytes() == before


def test_migrating_gives_old_rows_their_sessions_host(tmp_path: Path) -> None:
    from procevents.store import StoreWriter

    db = tmp_path / "v1.db"
    _make_schema_1(db)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("UPDATE sessions SET hostname = 'oldhost'")
    conn.execute("INSERT INTO events (proc, ts, wall, event) VALUES (1, 1, 1000, 'exec')")
    conn.execute("INSERT INTO events (proc, ts, wall, event, a, data) VALUES (NULL, 2, 1001, 'lost', 3, 'seq-gap')")
    conn.close()
    StoreWriter(str(db)).close()
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT host, rev, utime FROM procs WHERE id = 1").fetchone() == ("oldhost", 1, None)
    assert conn.execute("SELECT event, host FROM events ORDER BY id").fetchall() == [
        ("exec", "oldhost"), ("lost", "oldhost")  # one host ever: it is the lost events' too
    ]
    conn.close()


def test_a_failed_migration_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    from procevents.store.schema import migrate

    db = tmp_path / "v1.db"
    _make_schema_1(db)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("CREATE TABLE procs_rev (x)")  # a table by the name of an index schema 3 makes
    before = _layout(db)
    with pytest.raises(sqlite3.OperationalError, match="procs_rev"):
        migrate(conn)
    assert conn.in_transaction  # left to the caller (the writer closes without committing)
    conn.execute("ROLLBACK")
    conn.close()
    assert _layout(db) == before  # all of it or nothing: no column added, still version 1
    assert before["version"] == 1


@pytest.mark.parametrize(
    ("data", "want"),
    [
        (json.dumps(list(range(10))), dict(zip(COST_COLUMNS, range(10), strict=True))),
        (json.dumps(list(range(10))).encode(), dict(zip(COST_COLUMNS, range(10), strict=True))),
        (json.dumps([None] * 10), dict.fromkeys(COST_COLUMNS)),
        (None, {}),
        (7, {}),
        (b"not json", {}),
        (b'{"utime": 1}', {}),
        (json.dumps(list(range(9))), {}),
        (json.dumps(list(range(11))), {}),
    ],
)
def test_an_exit_rows_costs_are_read_back_or_left_out(data: object, want: dict[str, object]) -> None:
    from procevents.store.reader import _costs

    assert _costs(data) == want

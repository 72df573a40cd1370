"""The store's values and identity checks (procevents.store.schema): text
and argv kept as exact bytes, where the database lives, which files are
refused, and every refusal's one line."""

from __future__ import annotations

import os
import re
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import (
    TIMEOUT,
    digest,
    lost_rows_db,
    make_schema_1,
    run_cli,
)
from hypothesis import given
from hypothesis import strategies as st

from procevents.costs import COST_KEYS
from procevents.events import Comm, Coredump, Event, Exec, Exit, Fork, Gid, Lost, Ptrace, Sid, Uid, Unknown
from procevents.store import StoreReader, StoreWriter
from procevents.store.schema import (
    APPLICATION_ID,
    COST_COLUMNS,
    EVENT_FROM_COLUMNS,
    EVENT_SPECIFIC,
    SCHEMA,
    SCHEMA_VERSION,
    StoreError,
    check_file,
    check_identity,
    check_objects,
    check_regular,
    damaged,
    database_bytes,
    decode_argv,
    decode_text,
    default_db_path,
    describe_error,
    encode_argv,
    encode_text,
    raw_bytes,
)

# -- values ---------------------------------------------------------------------------------


def test_text_as_stored() -> None:
    assert encode_text(None) is None
    assert encode_text("plain") == "plain"
    assert encode_text("caf\u00e9") == "caf\u00e9"  # valid UTF-8 stays TEXT
    assert encode_text("bad\udcff") == b"bad\xff"  # an undecodable byte: the exact bytes
    assert decode_text(b"bad\xff") == "bad\udcff"
    assert decode_text("caf\u00e9") == "caf\u00e9"
    assert decode_text(None) is None
    assert decode_text(7) == "7"


def test_a_lone_surrogate_is_kept_as_its_utf8_form() -> None:
    """A surrogate no byte decodes to (U+D800) cannot come from a file name,
    but a str may hold it: stored as the bytes Python's surrogatepass gives."""
    assert raw_bytes("a\ud800b") == b"a\xed\xa0\x80b"
    assert encode_text("a\ud800") == b"a\xed\xa0\x80"
    assert raw_bytes("x\udcffy") == b"x\xffy"
    assert raw_bytes("caf\u00e9") == b"caf\xc3\xa9"


def test_argv_as_stored() -> None:
    assert encode_argv(["caf\u00e9", "x"]) == b"caf\xc3\xa9\0x\0"
    assert encode_argv(["odd\udcfe"]) == b"odd\xfe\0"
    assert decode_argv(b"a\0b\0") == ["a", "b"]
    assert decode_argv(b"a\0b") == ["a", "b"]  # a last argument without its NUL
    assert decode_argv(b"\0\0") == ["", ""]
    assert decode_argv(b"odd\xfe\0") == ["odd\udcfe"]
    assert decode_argv(b"") == []
    assert decode_argv(None) is None
    assert decode_argv(42) is None


def test_argv_written_as_text_by_another_tool() -> None:
    assert decode_argv("ls\0-l\0") == ["ls", "-l"]
    assert decode_argv("caf\u00e9\0") == ["caf\u00e9"]
    assert decode_argv("") == []


def test_an_error_without_a_message_is_named_by_its_type() -> None:
    assert describe_error(sqlite3.OperationalError()) == "OperationalError"
    assert describe_error(sqlite3.DatabaseError("disk I/O error")) == "disk I/O error"


def test_damaged_tells_failures_from_corruption() -> None:
    assert str(damaged("/x.db", sqlite3.OperationalError("database is locked"))) == "/x.db: database is locked"
    assert str(damaged("/x.db", sqlite3.DatabaseError("file is not a database"))) == (
        "/x.db is damaged or not a procevents database: file is not a database"
    )
    assert str(damaged("/x.db", sqlite3.OperationalError())) == "/x.db: OperationalError"


# -- where the database lives ----------------------------------------------------------------


def _as_nobody(env: dict[str, str | None]) -> str:
    """default_db_path() in a child process that is not root, with this environment."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read)
            for key, value in env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            os.setgid(65534)
            os.setuid(65534)
            os.write(write, default_db_path().encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        answer = f.read().decode()
    os.waitpid(pid, 0)
    return answer


def test_default_db_path_as_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("root's default path is only chosen as root")
    assert default_db_path() == "/var/lib/procevents/events.db"


@pytest.mark.parametrize(
    ("xdg", "expected"),
    [
        ("/data/xdg", "/data/xdg/procevents/events.db"),
        (None, "/home/someone/.local/share/procevents/events.db"),
        ("", "/home/someone/.local/share/procevents/events.db"),
        ("relative/dir", "/home/someone/.local/share/procevents/events.db"),  # not absolute: ignored
    ],
)
def test_default_db_path_of_a_user(xdg: str | None, expected: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to become another user")
    assert default_db_path() == "/var/lib/procevents/events.db"  # (and mutmut sees the test use it)
    assert _as_nobody({"XDG_DATA_HOME": xdg, "HOME": "/home/someone"}) == expected


def test_database_bytes_counts_the_wal(tmp_path: Path) -> None:
    path = tmp_path / "size.db"
    assert database_bytes(str(path)) == 0
    writer = StoreWriter(str(path))
    try:
        wal = Path(f"{path}-wal")
        assert wal.stat().st_size > 0
        assert database_bytes(str(path)) == path.stat().st_size + wal.stat().st_size
    finally:
        writer.close()
    assert not wal.exists()  # checkpointed at close
    assert database_bytes(str(path)) == path.stat().st_size > 0


# -- files refused, in one line --------------------------------------------------------------


@pytest.fixture
def unix_socket(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    try:
        yield path
    finally:
        s.close()


def test_files_that_are_not_databases(tmp_path: Path, unix_socket: Path) -> None:
    (tmp_path / "empty").touch()
    check_file(str(tmp_path / "empty"))  # an empty file: a database not yet written
    text = tmp_path / "notes.txt"
    text.write_text("hello, not SQLite at all\n")
    cases = {
        str(tmp_path / "none.db"): f"no database at {tmp_path}/none.db (record one with: procevents record "
        f"--db {tmp_path}/none.db)",
        str(tmp_path): f"{tmp_path} is a directory, not a database",
        str(text): f"{text} is not a procevents database (not an SQLite file)",
        f"{text}/below": f"cannot read {text}/below: Not a directory",
        str(unix_socket): f"cannot read {unix_socket}: No such device or address",
    }
    for path, message in cases.items():
        with pytest.raises(StoreError) as err:
            check_file(path)
        assert str(err.value) == message


def _sqlite_file(path: Path, app_id: int, version: int, table: bool = True) -> str:
    conn = sqlite3.connect(path)
    if table:
        conn.execute("CREATE TABLE t (x)")
    conn.execute(f"PRAGMA application_id = {app_id}")
    conn.execute(f"PRAGMA user_version = {version}")
    conn.commit()
    conn.close()
    return str(path)


@pytest.mark.parametrize(
    ("app_id", "version", "table", "message"),
    [
        (0, 0, True, "{} is an SQLite database but not a procevents one"),
        (0x12345678, 1, True, "{} is an SQLite database but not a procevents one"),
        (APPLICATION_ID, 0, True, "{} has no procevents schema"),
        (APPLICATION_ID, 0, False, "{} has no procevents schema"),
        (APPLICATION_ID, SCHEMA_VERSION + 1, True,
         f"{{}} was written by a newer procevents (schema {SCHEMA_VERSION + 1}; this one knows {SCHEMA_VERSION})"),
        (0, 0, False, "{} is an empty database (nothing recorded yet)"),
    ],
)
def test_identity_refusals(tmp_path: Path, app_id: int, version: int, table: bool, message: str) -> None:
    path = _sqlite_file(tmp_path / "other.db", app_id, version, table)
    conn = sqlite3.connect(path)
    try:
        with pytest.raises(StoreError) as err:
            check_identity(conn, path, writable=False)
    finally:
        conn.close()
    assert str(err.value) == message.format(path)
    with pytest.raises(StoreError) as err:  # the reader says the same
        StoreReader(path)
    assert str(err.value) == message.format(path)


def test_identity_of_a_new_file_and_of_ours(tmp_path: Path) -> None:
    new = _sqlite_file(tmp_path / "new.db", 0, 0, table=False)
    ours = _sqlite_file(tmp_path / "ours.db", APPLICATION_ID, 1)
    conn = sqlite3.connect(new)
    try:
        assert check_identity(conn, new, writable=True) is True  # empty: to be written
    finally:
        conn.close()
    conn = sqlite3.connect(ours)
    try:
        assert check_identity(conn, ours, writable=True) is False
        assert check_identity(conn, ours, writable=False) is False
    finally:
        conn.close()


def _one_of_each() -> list[Event]:
    return [
        Fork(1, 2, 3, 10, 11, 12, 13),
        Exec(1, 2, 3, 12, 13),
        Exit(1, 2, 3, 12, 13, 0x86, 17, 10, 11),
        Uid(1, 2, 3, 12, 13, 1000, 0),
        Gid(1, 2, 3, 12, 13, 1000, 0),
        Sid(1, 2, 3, 12, 13),
        Ptrace(1, 2, 3, 12, 13, 10, 11),
        Comm(1, 2, 3, 12, 13, b"re\xffnamed"),
        Coredump(1, 2, 3, 12, 13, 10, 11),
        Lost(1, 0, 3, 7, "seq-gap"),
        Unknown(1, 2, 3, 0x1234, b"\x01\x02"),
    ]


def test_every_event_type_has_its_columns_both_ways() -> None:
    from procevents.events import EVENT_TYPES

    assert set(EVENT_SPECIFIC) == {*EVENT_TYPES.values(), Lost, Unknown}
    assert set(EVENT_FROM_COLUMNS) == {cls.name for cls in EVENT_SPECIFIC} - {"ack", "unknown"}
    for event in _one_of_each():
        columns = EVENT_SPECIFIC[type(event)](event)
        assert len(columns) == 5
        if type(event) is Unknown:
            continue  # read back by the reader's fallback, as any name it does not know
        pid, tgid = (0, 0) if type(event) is Lost else (event.pid, event.tgid)
        back = EVENT_FROM_COLUMNS[event.name](event.cpu, event.seq, event.timestamp_ns, pid, tgid, *columns)
        assert back == event


@pytest.mark.parametrize("command", ["query", "replay", "record"])
def test_damaged_or_foreign_file_is_one_clear_line(command: str, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_bytes(b"hello\n" * 1000)
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    for path, message in ((text, b"not a procevents database"), (other, b"not a procevents one")):
        before = path.read_bytes()
        extra = ["-D", "1"] if command == "record" else []
        result = run_cli(command, "--db", str(path), *extra)
        assert result.returncode == 1, result.stderr
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and message in lines[0] and b"Traceback" not in result.stderr, result.stderr
        assert path.read_bytes() == before
    if command != "record":
        result = run_cli(command, "--db", str(tmp_path / "missing.db"))
        assert result.returncode == 1 and b"no database at" in result.stderr


def test_default_database_path_for_a_user(nobody_python: str, tmp_path: Path) -> None:
    code = "from procevents.store import default_db_path; print(default_db_path())"
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": src, "HOME": "/nonexistent", "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run(
        [nobody_python, "-c", code], user=65534, group=65534, extra_groups=[],
        env={**env, "XDG_DATA_HOME": "/xdg"}, capture_output=True, timeout=TIMEOUT, cwd="/",
    )
    assert result.stdout.decode().strip() == "/xdg/procevents/events.db", result.stderr
    result = subprocess.run(
        [nobody_python, "-c", code], user=65534, group=65534, extra_groups=[], env=env,
        capture_output=True, timeout=TIMEOUT, cwd="/",
    )
    assert result.stdout.decode().strip() == "/nonexistent/.local/share/procevents/events.db", result.stderr
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, timeout=TIMEOUT, env={**env, "HOME": "/root"}
    )
    assert result.stdout.decode().strip() == "/var/lib/procevents/events.db"


# -- round trips ------------------------------------------------------------------------------

# Text as procevents holds it: str with surrogate escapes for undecodable bytes.
byte_strings = st.binary(max_size=40)
fs_text = byte_strings.map(lambda b: b.decode("utf-8", "surrogateescape"))


@given(fs_text)
def test_text_round_trip(text: str) -> None:
    stored = encode_text(text)
    if isinstance(stored, str):
        stored.encode("utf-8")  # what SQLite accepts as TEXT
    assert decode_text(stored) == text


@given(st.lists(byte_strings.filter(lambda b: b"\0" not in b).map(lambda b: b.decode("utf-8", "surrogateescape"))))
def test_argv_round_trip(argv: list[str]) -> None:
    assert decode_argv(encode_argv(argv)) == argv


def test_argv_edges() -> None:
    assert encode_argv(None) is None and decode_argv(None) is None
    assert encode_argv([]) == b"" and decode_argv(b"") == []
    assert encode_argv([""]) == b"\0" and decode_argv(b"\0") == [""]
    assert encode_argv(["a", "b c"]) == b"a\0b c\0"


@pytest.mark.parametrize("opener", ["reader", "writer"])
def test_foreign_files_are_refused_untouched(tmp_path: Path, opener: str) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n" * 100)
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    newer = lost_rows_db(tmp_path / "newer.db")
    conn = sqlite3.connect(newer)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    cases = {text: "not an SQLite file", other: "not a procevents one", newer: "newer procevents"}
    for path, message in cases.items():
        before = digest(path)
        with pytest.raises(StoreError, match=message):
            if opener == "reader":
                StoreReader(str(path))
            else:
                StoreWriter(str(path))
        assert digest(path) == before, path
    with pytest.raises(StoreError, match="no database"):
        StoreReader(str(tmp_path / "missing.db"))
    with pytest.raises(StoreError, match="directory"):
        StoreReader(str(tmp_path))


def test_the_store_keeps_every_figure_an_exit_carries() -> None:
    assert COST_COLUMNS == COST_KEYS
    for column in COST_COLUMNS:
        assert re.search(rf"^\s+{column} (REAL|INTEGER)", SCHEMA, re.M), column


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
    make_schema_1(old)
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
    make_schema_1(db)
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
    make_schema_1(db)
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


# -- files another user may have planted (issue 23 item 7) ----------------------------------------


def _fifo(tmp_path: Path) -> Path:
    fifo = tmp_path / "planted.db"
    os.mkfifo(fifo, 0o600)
    return fifo


@pytest.mark.parametrize("command", ["query", "replay", "record", "collect"])
def test_a_fifo_at_the_path_is_one_line_not_a_hang(command: str, tmp_path: Path) -> None:
    """A FIFO would block every open or read of it for good: refused at once
    (the bound here is only the test's own; it never comes near)."""
    fifo = _fifo(tmp_path)
    extra = {"record": ["-D", "30"], "collect": ["--nats", "nats://127.0.0.1:1", "-D", "30"]}.get(command, [])
    result = run_cli(command, "--db", str(fifo), *extra, timeout=TIMEOUT)
    assert result.returncode == 1, result.stderr
    assert result.stderr == f"procevents: error: {fifo} is a FIFO, not a database\n".encode()
    assert fifo.is_fifo()


def _own_store(tmp_path: Path, name: str = "events.db") -> Path:
    path = tmp_path / name
    StoreWriter(str(path)).close()
    assert path.stat().st_mode & 0o777 == 0o600
    return path


def test_a_store_another_user_owns_is_refused_unless_trusted(tmp_path: Path) -> None:
    path = _own_store(tmp_path)
    os.chown(path, 65534, 65534)
    before = digest(path)
    owned = f"{path} is owned by uid 65534, not by this user (uid 0): another user may have planted it; " \
        "--trust-db opens it anyway"
    for argv in (["query"], ["replay"], ["record", "-D", "0.1"]):
        result = run_cli(*argv, "--db", str(path))
        assert (result.returncode, result.stderr) == (1, f"procevents: error: {owned}\n".encode()), argv
    assert digest(path) == before
    with pytest.raises(StoreError, match="owned by uid 65534"):
        StoreWriter(str(path))
    assert run_cli("query", "--db", str(path), "--trust-db").returncode == 0
    reader = StoreReader(str(path), trust=True)
    reader.close()


def test_a_store_others_may_read_is_not_recorded_into(tmp_path: Path) -> None:
    """It would hold every process's argv; reading one is harmless."""
    path = _own_store(tmp_path)
    path.chmod(0o644)
    before = digest(path)
    result = run_cli("record", "--db", str(path), "-D", "0.1")
    assert result.returncode == 1
    assert result.stderr == (
        f"procevents: error: {path} may be read by others (mode 0644) and would hold every process's argv: "
        "chmod 600 it, or --trust-db opens it anyway\n"
    ).encode()
    assert digest(path) == before
    assert run_cli("query", "--db", str(path)).returncode == 0
    assert run_cli("record", "--db", str(path), "-D", "0.1", "--trust-db", "-q").returncode == 0


def test_triggers_or_views_the_schema_does_not_define_are_refused(tmp_path: Path) -> None:
    """A trigger runs on the recorder's writes (it could delete or relabel
    rows); a view could stand in for what a query reads."""
    path = _own_store(tmp_path)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TRIGGER \"forget\x1b[31m\" AFTER INSERT ON events BEGIN DELETE FROM events; END")
    conn.execute("CREATE VIEW mine AS SELECT 1")
    conn.commit()
    conn.close()
    before = digest(path)
    said = f"{path} has what procevents did not create (trigger forget\\x1b[31m, view mine); --trust-db opens it anyway"
    for argv in (["query"], ["replay"], ["record", "-D", "0.1"]):
        result = run_cli(*argv, "--db", str(path))
        assert (result.returncode, result.stderr) == (1, f"procevents: error: {said}\n".encode()), argv
    assert digest(path) == before
    with pytest.raises(StoreError, match="trigger forget"):
        StoreReader(str(path))
    # The schema's own views are its own.
    conn = sqlite3.connect(_own_store(tmp_path, "plain.db"))
    try:
        check_objects(conn, "plain.db")
    finally:
        conn.close()


def test_check_regular_names_each_kind(tmp_path: Path) -> None:
    check_regular("f", (tmp_path / "f").touch() or os.stat(tmp_path / "f"))
    with pytest.raises(StoreError, match=r"^d is a directory, not a database$"):
        check_regular("d", os.stat(tmp_path))
    with pytest.raises(StoreError, match=r"^n is a character device, not a database$"):
        check_regular("n", os.stat("/dev/null"))
    with pytest.raises(StoreError, match=r"^p is a FIFO, not a database$"):
        check_regular("p", os.stat(_fifo(tmp_path)))
    with pytest.raises(StoreError, match="is a FIFO"):
        check_file(str(tmp_path / "planted.db"))

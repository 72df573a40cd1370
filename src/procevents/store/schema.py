"""The database's layout and how values are stored: the schema and its
identity checks, text and argv as exact bytes, one-line errors."""

from __future__ import annotations

import os
import re
import sqlite3
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ..costs import cpu_seconds
from ..escape import escape
from ..events import (
    Ack,
    Comm,
    Coredump,
    Event,
    Exec,
    Exit,
    Fork,
    Gid,
    Lost,
    Ptrace,
    Sid,
    Uid,
    Unknown,
    decode_wait_status,
)

SCHEMA_VERSION: Final = 3


#: ``PRAGMA application_id``: "PEVT".
APPLICATION_ID: Final = 0x50455654


#: Parent links followed at most this deep (a loop in bad data ends there).
MAX_ANCESTRY: Final = 256
SQLITE_MAGIC: Final = b"SQLite format 3\x00"


VIEWS: Final = """
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
    CASE WHEN event = 'exit' THEN CAST(data AS TEXT) END AS costs,
    comm, ppid, uid, argv, exe, cwd, host, cgroup
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


#: Tables of schema 3: this store's random id (a message id names it), the
#: shipping cursors (what a NATS stream has acknowledged), and the stores a
#: collector has heard from.
FLEET_TABLES: Final = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value);",
    "CREATE TABLE outbox (stream TEXT PRIMARY KEY, events INTEGER NOT NULL, procs INTEGER NOT NULL, "
    "sessions INTEGER NOT NULL);",
    "CREATE TABLE sources (id INTEGER PRIMARY KEY, host TEXT, store TEXT NOT NULL UNIQUE);",
    "CREATE UNIQUE INDEX events_remote ON events(source, remote_id) WHERE source IS NOT NULL;",
)


_FLEET_INDEXES: Final = (
    "CREATE INDEX procs_rev ON procs(rev);",
    "CREATE INDEX procs_host ON procs(host);",
    "CREATE INDEX procs_container ON procs(container_id);",
    "CREATE UNIQUE INDEX procs_remote ON procs(source, remote_id) WHERE source IS NOT NULL;",
)


SCHEMA: Final = """
CREATE TABLE sessions (
    id INTEGER PRIMARY KEY,
    started_wall INTEGER NOT NULL,   -- ns since the epoch
    clock_offset INTEGER NOT NULL,   -- wall-clock ns minus CLOCK_MONOTONIC ns
    boot_id TEXT,
    hostname TEXT,
    recorder_pid INTEGER,
    version TEXT,
    ended TEXT,                      -- clean, error; NULL: never closed (killed, power loss)
    ended_wall INTEGER,
    source INTEGER,                  -- collected (schema 3): sources.id and the id it has there
    remote_id INTEGER
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
    duration REAL,                   -- seconds
    -- what it cost, from taskstats (schema 2; NULL: not read)
    utime REAL,                      -- user CPU seconds
    stime REAL,                      -- system CPU seconds
    max_rss INTEGER,                 -- peak resident memory, bytes
    rchar INTEGER,                   -- bytes read, any source
    wchar INTEGER,                   -- bytes written, any destination
    read_bytes INTEGER,              -- bytes read from storage
    write_bytes INTEGER,             -- bytes written to storage
    cpu_delay REAL,                  -- seconds waiting for a CPU
    io_delay REAL,                   -- seconds waiting for block I/O
    mem_delay REAL,                  -- seconds waiting for memory (swap-in, reclaim, thrashing, compaction)
    -- who and where (schema 3)
    host TEXT,                       -- the recorder's host name
    exec_id TEXT,                    -- HOST:BOOT_ID:START_TICKS:PID (procevents.identity)
    parent_exec_id TEXT,
    cgroup TEXT,                     -- the cgroup path at its last exec (or when first seen)
    container_id TEXT,               -- parsed from cgroup (procevents.containers)
    pod_uid TEXT,
    rev INTEGER,                     -- raised each time the row is written: what to ship since a cursor
    source INTEGER,                  -- collected: sources.id and the row's id there
    remote_id INTEGER
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
    cwd TEXT,
    host TEXT,                       -- schema 3: the recorder's host name
    cgroup TEXT,                     -- exec: the cgroup path
    source INTEGER,                  -- collected: sources.id and the row's id there
    remote_id INTEGER
);
CREATE INDEX events_wall ON events(wall);
""" + "\n".join(("", *_FLEET_INDEXES, *FLEET_TABLES)) + VIEWS


EVENT_COLUMNS: Final = (
    "proc", "ts", "wall", "event", "cpu", "seq", "pid", "tgid", "a", "b", "c", "d", "data",
    "comm", "ppid", "uid", "argv", "exe", "cwd", "host", "cgroup",
)


#: The taskstats figures of a lifetime (the keys of procevents.costs.COST_KEYS).
COST_COLUMNS: Final = (
    "utime", "stime", "max_rss", "rchar", "wchar", "read_bytes", "write_bytes", "cpu_delay", "io_delay", "mem_delay",
)


#: Who and where (schema 3).
FLEET_COLUMNS: Final = ("host", "exec_id", "parent_exec_id", "cgroup", "container_id", "pod_uid", "rev")


PROC_COLUMNS: Final = (
    "id", "session", "pid", "ppid", "parent", "start_ns", "start_wall", "forked", "end_ns", "end_wall",
    "comm", "exe", "argv", "cwd", "uid", "user", "execs", "exit_code", "duration", *COST_COLUMNS, *FLEET_COLUMNS,
)


INSERT_EVENT: Final = (
    f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) VALUES ({', '.join('?' * len(EVENT_COLUMNS))})"
)


UPSERT_PROC: Final = (
    f"INSERT INTO procs ({', '.join(PROC_COLUMNS)}) VALUES ({', '.join('?' * len(PROC_COLUMNS))}) "
    f"ON CONFLICT(id) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in PROC_COLUMNS[2:])}"
)


class StoreError(Exception):
    """The database cannot be used; ``str()`` is one line for a user."""


def default_db_path() -> str:
    """/var/lib/procevents/events.db as root, else under the XDG data directory."""
    if os.geteuid() == 0:
        return "/var/lib/procevents/events.db"
    base = os.environ.get("XDG_DATA_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "procevents", "events.db")


def encode_text(value: str | None) -> str | bytes | None:
    """A str for SQLite: as is when valid UTF-8, else its exact bytes (a BLOB)."""
    if value is None or value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return raw_bytes(value)
    return value


def decode_text(value: object) -> str | None:
    """The inverse of :func:`encode_text` (surrogate escapes for odd bytes)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return str(value)


def raw_bytes(text: str) -> bytes:
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate no bytes decode to
        return text.encode("utf-8", "surrogatepass")


def encode_argv(argv: Sequence[str] | None) -> bytes | None:
    """argv as /proc/PID/cmdline has it: each argument NUL-terminated."""
    if argv is None:
        return None
    joined = "\0".join(argv) + "\0" if argv else ""
    if joined.isascii():
        return joined.encode("ascii")
    return raw_bytes(joined)


def decode_argv(blob: object) -> list[str] | None:
    """The inverse of :func:`encode_argv`."""
    if blob is None:
        return None
    if isinstance(blob, str):  # written by hand through some other tool
        data = raw_bytes(blob)
    elif isinstance(blob, bytes):
        data = blob
    else:
        return None
    if not data:
        return []
    if data.endswith(b"\0"):
        data = data[:-1]
    return [arg.decode("utf-8", "surrogateescape") for arg in data.split(b"\0")]


@dataclass(slots=True)
class Lifetime:
    """One ``procs`` row: a process from its fork (or its first sighting) to
    its exit.  The writer keeps one per live process and rewrites the row as
    it changes (:meth:`to_row`); the reader decodes rows (:meth:`from_row`).
    Fields are :data:`PROC_COLUMNS`, in order."""

    id: int
    session: int
    pid: int
    ppid: int | None
    parent: int | None
    start_ns: int | None
    start_wall: int | None
    forked: bool
    end_ns: int | None = None
    end_wall: int | None = None
    comm: str | None = None
    exe: str | None = None
    argv: list[str] | None = None
    cwd: str | None = None
    uid: int | None = None
    user: str | None = None
    execs: int = 0
    exit_code: int | None = None
    duration: float | None = None
    #: What it cost (taskstats; None: not read), as the COST_COLUMNS.
    utime: float | None = None
    stime: float | None = None
    max_rss: int | None = None
    rchar: int | None = None
    wchar: int | None = None
    read_bytes: int | None = None
    write_bytes: int | None = None
    cpu_delay: float | None = None
    io_delay: float | None = None
    mem_delay: float | None = None
    #: Who and where (schema 3; None before): see FLEET_COLUMNS.
    host: str | None = None
    exec_id: str | None = None
    parent_exec_id: str | None = None
    cgroup: str | None = None
    container_id: str | None = None
    pod_uid: str | None = None
    #: The commit that last wrote the row (the fleet shipper's cursor).
    rev: int | None = None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Lifetime:
        (life_id, session, pid, ppid, parent, start_ns, start_wall, forked, end_ns, end_wall,
         comm, exe, argv, cwd, uid, user, execs, exit_code, duration) = row[:19]
        life = cls(
            life_id, session, pid, ppid, parent, start_ns, start_wall, bool(forked), end_ns, end_wall,
            decode_text(comm), decode_text(exe), decode_argv(argv), decode_text(cwd), uid, decode_text(user),
            execs, exit_code, duration, *row[19:],
        )
        if life.cgroup is not None:
            life.cgroup = decode_text(life.cgroup)
        return life

    def to_row(self) -> tuple[Any, ...]:
        """The row's values, as :data:`PROC_COLUMNS` stores them."""
        return (
            self.id, self.session, self.pid, self.ppid, self.parent, self.start_ns, self.start_wall,
            int(self.forked), self.end_ns, self.end_wall, encode_text(self.comm), encode_text(self.exe),
            encode_argv(self.argv), encode_text(self.cwd), self.uid, encode_text(self.user), self.execs,
            self.exit_code, self.duration, self.utime, self.stime, self.max_rss, self.rchar, self.wchar,
            self.read_bytes, self.write_bytes, self.cpu_delay, self.io_delay, self.mem_delay, self.host,
            self.exec_id, self.parent_exec_id, encode_text(self.cgroup), self.container_id, self.pod_uid, self.rev,
        )

    @property
    def cpu(self) -> float | None:
        """User plus system CPU seconds (None: not read)."""
        return cpu_seconds(self.utime, self.stime)

    @property
    def status(self) -> int | None:
        return None if self.exit_code is None else decode_wait_status(self.exit_code)[0]

    @property
    def signal(self) -> int | None:
        return None if self.exit_code is None else decode_wait_status(self.exit_code)[1]

    @property
    def core_dumped(self) -> bool | None:
        return None if self.exit_code is None else decode_wait_status(self.exit_code)[2]

    @property
    def failed(self) -> bool:
        return bool(self.exit_code)


# What the events table's a, b, c, d and data columns hold, per event type
# (the events_named view names them): written by StoreSink, read back by
# the reader's replay.  The row's pid and tgid are the event's own.
_EMPTY: Final = (None, None, None, None, None)

#: Event class -> its (a, b, c, d, data).
EVENT_SPECIFIC: Final[dict[type[Event], Callable[[Any], tuple[Any, ...]]]] = {
    Fork: lambda e: (e.parent_pid, e.parent_tgid, None, None, None),
    Exec: lambda e: _EMPTY,
    Exit: lambda e: (e.parent_pid, e.parent_tgid, e.exit_code, e.exit_signal, None),
    Uid: lambda e: (e.ruid, e.euid, None, None, None),
    Gid: lambda e: (e.rgid, e.egid, None, None, None),
    Sid: lambda e: _EMPTY,
    Ptrace: lambda e: (e.tracer_pid, e.tracer_tgid, None, None, None),
    Comm: lambda e: (None, None, None, None, e.comm),
    Coredump: lambda e: (e.parent_pid, e.parent_tgid, None, None, None),
    Lost: lambda e: (e.count, None, None, None, e.reason),
    Unknown: lambda e: (e.what, None, None, None, e.data),
    Ack: lambda e: _EMPTY,  # never recorded: the connector keeps its acks
}

#: The ``event`` column -> the event, from the row's (cpu, seq, ts, pid, tgid, a, b, c, d, data);
#: any other name was an event of a type this version does not know (:class:`Unknown`).
EVENT_FROM_COLUMNS: Final[dict[str, Callable[..., Event]]] = {
    "fork": lambda cpu, seq, ts, pid, tgid, a, b, c, d, data: Fork(cpu, seq, ts, a, b, pid, tgid),
    "exec": lambda cpu, seq, ts, pid, tgid, a, b, c, d, data: Exec(cpu, seq, ts, pid, tgid),
    "exit": lambda cpu, seq, ts, pid, tgid, a, b, c, d, data: Exit(cpu, seq, ts, pid, tgid, c, d, a, b),
    "uid": lambda cpu, seq, ts, pid, tgid, a, b, c, d, data: Uid(cpu, seq, ts, pid, tgid, a, b),
    "gid": lambda cpu, seq, ts, pid, tgid, a, b, c, d, data: Gid(cpu, seq, ts, pid, tgid, a, b),
    "sid": lambda cpu, seq, ts, pid, tgid, a, b, c, d, data: Sid(cpu, seq, ts, pid, tgid),
    "ptrace": lambda cpu, seq, ts, pid, tgid, a, b, c, d, data: Ptrace(cpu, seq, ts, pid, tgid, a, b),
    "comm": lambda cpu, seq, ts, pid, tgid, a, b, c, d, data: Comm(cpu, seq, ts, pid, tgid, blob_bytes(data)),
    "coredump": lambda cpu, seq, ts, pid, tgid, a, b, c, d, data: Coredump(cpu, seq, ts, pid, tgid, a, b),
    "lost": lambda cpu, seq, ts, pid, tgid, a, b, c, d, data: Lost(cpu, seq, ts, a, decode_text(data) or ""),
}


def blob_bytes(value: object) -> bytes:
    """A stored byte string (a BLOB, or text kept as its raw bytes); b"" for NULL."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return raw_bytes(value)
    return b""


def describe_error(exc: sqlite3.Error | sqlite3.Warning) -> str:
    return str(exc) or type(exc).__name__


_FILE_KINDS: Final = (
    (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
)
#: What --trust-db lifts, said once in every refusal below.
TRUST_HINT: Final = "--trust-db opens it anyway"


def check_regular(path: str, info: os.stat_result) -> None:
    """Raise StoreError unless ``info`` (of ``path``) is a regular file: a
    FIFO would hang every read, a device is nobody's database."""
    if stat.S_ISREG(info.st_mode):
        return
    kind = next((name for test, name in _FILE_KINDS if test(info.st_mode)), "not a regular file")
    raise StoreError(f"{path} is {kind}, not a database")


def check_file(path: str) -> os.stat_result:
    """Raise StoreError unless ``path`` is a regular file, empty or looking
    like an SQLite file; return what fstat says of it.  Opened without
    blocking, so a FIFO planted there is refused, not waited on."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise StoreError(f"no database at {path} (record one with: procevents record --db {path})") from None
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        check_regular(path, info)
        head = os.read(fd, len(SQLITE_MAGIC))
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if head and head != SQLITE_MAGIC:
        raise StoreError(f"{path} is not a procevents database (not an SQLite file)")
    return info


def check_trust(path: str, info: os.stat_result, *, writing: bool) -> None:
    """Raise StoreError for a file that another user may have planted or
    may read: owned by someone else, or (to be written) readable by others,
    since it holds every process's argv.  Lifted by ``--trust-db``."""
    me = os.geteuid()
    if info.st_uid != me:
        raise StoreError(
            f"{path} is owned by uid {info.st_uid}, not by this user (uid {me}): another user may have "
            f"planted it; {TRUST_HINT}"
        )
    if writing and info.st_mode & 0o077:
        raise StoreError(
            f"{path} may be read by others (mode {stat.S_IMODE(info.st_mode):04o}) and would hold every "
            f"process's argv: chmod 600 it, or {TRUST_HINT}"
        )


def _defined_objects() -> frozenset[tuple[str, str]]:
    names = re.findall(r"CREATE\s+(TRIGGER|VIEW)\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)", SCHEMA, re.IGNORECASE)
    return frozenset((kind.lower(), name) for kind, name in names)


def check_objects(conn: sqlite3.Connection, path: str) -> None:
    """Raise StoreError if the file has triggers or views the schema does not
    define: a trigger runs on our writes (it could delete or relabel rows),
    a view could stand in for what a query reads.  Lifted by ``--trust-db``."""
    defined = _defined_objects()
    found = conn.execute("SELECT type, name FROM sqlite_schema WHERE type IN ('trigger', 'view')").fetchall()
    # Names another user chose: escaped before a terminal sees them.
    foreign = sorted(f"{kind} {escape(str(name))}" for kind, name in found if (kind, name) not in defined)
    if foreign:
        listed = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise StoreError(f"{path} has what procevents did not create ({listed}); {TRUST_HINT}")


def check_identity(conn: sqlite3.Connection, path: str, *, writable: bool) -> bool:
    """Check application_id and schema version; True if the file is new (empty)."""
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    tables = conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()[0]
    if app_id == 0 and version == 0 and tables == 0:
        if writable:
            return True
        raise StoreError(f"{path} is an empty database (nothing recorded yet)")
    if app_id != APPLICATION_ID:
        raise StoreError(f"{path} is an SQLite database but not a procevents one")
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path} was written by a newer procevents (schema {version}; this one knows {SCHEMA_VERSION})"
        )
    if version < 1:
        raise StoreError(f"{path} has no procevents schema")
    return False


def migrate(conn: sqlite3.Connection) -> None:
    """Bring a file written by an earlier procevents up to :data:`SCHEMA_VERSION`
    (one transaction: all of it or nothing).  Columns are added where
    missing, so a half-known layout is completed rather than refused."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version >= SCHEMA_VERSION:
        return
    have = {
        table: {str(row[1]) for row in conn.execute(f"PRAGMA table_info({table})")}
        for table in ("sessions", "procs", "events")
    }
    seconds = {"utime", "stime", "cpu_delay", "io_delay", "mem_delay"}
    wanted = {
        "sessions": [("ended", "TEXT"), ("ended_wall", "INTEGER"), ("source", "INTEGER"), ("remote_id", "INTEGER")],
        "procs": [
            *((c, "REAL" if c in seconds else "INTEGER") for c in COST_COLUMNS),
            *((c, "INTEGER" if c == "rev" else "TEXT") for c in FLEET_COLUMNS),
            ("source", "INTEGER"), ("remote_id", "INTEGER"),
        ],
        "events": [("host", "TEXT"), ("cgroup", "TEXT"), ("source", "INTEGER"), ("remote_id", "INTEGER")],
    }
    steps = ["BEGIN IMMEDIATE;"]
    for table, columns in wanted.items():
        steps += [f"ALTER TABLE {table} ADD COLUMN {c} {kind};" for c, kind in columns if c not in have[table]]
    if version < 3:
        steps += [
            # Rows recorded before: the host of their session; revisions to ship them by.
            "UPDATE procs SET rev = id, host = (SELECT hostname FROM sessions s WHERE s.id = procs.session);",
            "UPDATE events SET host = (SELECT host FROM procs p WHERE p.id = events.proc) WHERE proc IS NOT NULL;",
            "UPDATE events SET host = (SELECT hostname FROM sessions ORDER BY id DESC LIMIT 1) WHERE proc IS NULL "
            "AND (SELECT count(DISTINCT hostname) FROM sessions) = 1;",
            *(_if_not_exists(statement) for statement in (*_FLEET_INDEXES, *FLEET_TABLES)),
        ]
    steps += ["DROP VIEW IF EXISTS events_named;", "DROP VIEW IF EXISTS lifetimes;", VIEWS]
    steps.append(f"PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")
    conn.executescript("\n".join(steps))


def _if_not_exists(statement: str) -> str:
    for kind in ("TABLE", "UNIQUE INDEX", "INDEX"):
        if statement.startswith(f"CREATE {kind} "):
            return statement.replace(f"CREATE {kind} ", f"CREATE {kind} IF NOT EXISTS ", 1)
    return statement


def store_id(conn: sqlite3.Connection) -> str:
    """This file's random id, made when first asked for (in a transaction
    of the caller's or its own)."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()
    if row is not None:
        return str(row[0])
    made = os.urandom(8).hex()
    conn.execute("INSERT INTO meta (key, value) VALUES ('store_id', ?)", (made,))
    return made


def damaged(path: str, exc: sqlite3.Error) -> StoreError:
    """A one-line error: corruption (and foreign files) told apart from other failures."""
    if isinstance(exc, sqlite3.OperationalError):  # locked, I/O error, no permission...
        return StoreError(f"{path}: {describe_error(exc)}")
    return StoreError(f"{path} is damaged or not a procevents database: {describe_error(exc)}")


def user_names() -> Callable[[int | None], str | None]:
    from ..enrich import Users

    return Users().name


def database_bytes(path: str) -> int:
    """Size on disk of the database and its WAL."""
    total = 0
    for suffix in ("", "-wal"):
        try:
            total += Path(path + suffix).stat().st_size
        except FileNotFoundError:
            pass
    return total


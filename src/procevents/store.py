"""Recording: the SQLite event store.

Standard library only (sqlite3), and no socket code: the writer is a
pipeline sink fed events, their process (from the enricher's table) and
their enrichment; the reader answers queries and rebuilds events for replay.

Layout (``PRAGMA application_id`` marks the file as ours, ``user_version``
is the schema version):

* ``sessions``: one row per recorder run (boot id, wall/monotonic offset).
* ``procs``: one row per process lifetime, from its fork (or the first event
  seen of a process running when recording began) to its exit: pid, ppid,
  ``parent`` (the parent lifetime's id), start and end (CLOCK_MONOTONIC ns
  and wall-clock ns), comm, exe, argv, cwd, uid, user, exit code decoded,
  duration.  The row is written when the process appears and rewritten as
  it execs and exits.
* ``events``: one row per event as the kernel sent it (cn_proc.h names),
  ``ts`` (timestamp_ns) and ``wall`` (ns since the epoch), the lifetime it
  belongs to (``proc``), and the enrichment shown live (comm, ppid, uid,
  user; exec also argv, exe, cwd).  Lost events are rows too.

Text another process controls is kept exactly: a string that is not valid
UTF-8 is stored as a BLOB of its bytes; argv is a BLOB of NUL-terminated
arguments, as in /proc/PID/cmdline.

Writes are batched: rows accumulate in memory and are committed in one
transaction at least every :data:`COMMIT_INTERVAL` seconds (WAL journal,
synchronous=NORMAL), so a crash loses at most the rows not yet committed and
never leaves a damaged file.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from .events import Comm, Coredump, Event, Exec, Exit, Fork, Gid, Lost, Ptrace, Sid, Uid, Unknown, wall_clock_ns
from .tree import Proc

SCHEMA_VERSION: Final = 1
#: ``PRAGMA application_id``: "PEVT".
APPLICATION_ID: Final = 0x50455654
SQLITE_MAGIC: Final = b"SQLite format 3\x00"
#: Rows are committed when the oldest uncommitted one is this old (seconds).
COMMIT_INTERVAL: Final = 0.25
#: ... or when this many are waiting.
MAX_PENDING: Final = 50_000
#: Retention runs this often (seconds), deleting at most PRUNE_CHUNK rows per table per run.
PRUNE_INTERVAL: Final = 60.0
PRUNE_CHUNK: Final = 20_000
_MAX_ANCESTRY: Final = 256

SCHEMA: Final = """
CREATE TABLE sessions (
    id INTEGER PRIMARY KEY,
    started_wall INTEGER NOT NULL,   -- ns since the epoch
    clock_offset INTEGER NOT NULL,   -- wall-clock ns minus CLOCK_MONOTONIC ns
    boot_id TEXT,
    hostname TEXT,
    recorder_pid INTEGER,
    version TEXT
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

EVENT_COLUMNS: Final = (
    "proc", "ts", "wall", "event", "cpu", "seq", "pid", "tgid", "a", "b", "c", "d", "data",
    "comm", "ppid", "uid", "argv", "exe", "cwd",
)
PROC_COLUMNS: Final = (
    "id", "session", "pid", "ppid", "parent", "start_ns", "start_wall", "forked", "end_ns", "end_wall",
    "comm", "exe", "argv", "cwd", "uid", "user", "execs", "exit_code", "duration",
)
_INSERT_EVENT: Final = (
    f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) VALUES ({', '.join('?' * len(EVENT_COLUMNS))})"
)
_UPSERT_PROC: Final = (
    f"INSERT INTO procs ({', '.join(PROC_COLUMNS)}) VALUES ({', '.join('?' * len(PROC_COLUMNS))}) "
    f"ON CONFLICT(id) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in PROC_COLUMNS[2:])}"
)
_NONE5: Final = (None, None, None, None, None)
_NONE6: Final = (None, None, None, None, None, None)


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


# -- values ----------------------------------------------------------------------


def encode_text(value: str | None) -> str | bytes | None:
    """A str for SQLite: as is when valid UTF-8, else its exact bytes (a BLOB)."""
    if value is None or value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return _raw(value)
    return value


def decode_text(value: object) -> str | None:
    """The inverse of :func:`encode_text` (surrogate escapes for odd bytes)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return str(value)


def _raw(text: str) -> bytes:
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
    return _raw(joined)


def decode_argv(blob: object) -> list[str] | None:
    """The inverse of :func:`encode_argv`."""
    if blob is None:
        return None
    if isinstance(blob, str):  # written by hand through some other tool
        data = _raw(blob)
    elif isinstance(blob, bytes):
        data = blob
    else:
        return None
    if not data:
        return []
    if data.endswith(b"\0"):
        data = data[:-1]
    return [arg.decode("utf-8", "surrogateescape") for arg in data.split(b"\0")]


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return None


# -- opening ----------------------------------------------------------------------


def _describe(exc: sqlite3.Error | sqlite3.Warning) -> str:
    return str(exc) or type(exc).__name__


def check_file(path: str) -> None:
    """Raise StoreError unless ``path`` is empty or looks like an SQLite file."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except FileNotFoundError:
        raise StoreError(f"no database at {path} (record one with: procevents record --db {path})") from None
    except IsADirectoryError:
        raise StoreError(f"{path} is a directory, not a database") from None
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror}") from None
    if head and head != SQLITE_MAGIC:
        raise StoreError(f"{path} is not a procevents database (not an SQLite file)")


def _check_identity(conn: sqlite3.Connection, path: str, *, writable: bool) -> bool:
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


def _damaged(path: str, exc: sqlite3.Error) -> StoreError:
    """A one-line error: corruption (and foreign files) told apart from other failures."""
    if isinstance(exc, sqlite3.OperationalError):  # locked, I/O error, no permission...
        return StoreError(f"{path}: {_describe(exc)}")
    return StoreError(f"{path} is damaged or not a procevents database: {_describe(exc)}")


# -- writing -----------------------------------------------------------------------


class Life:
    """The in-memory side of one ``procs`` row, mirrored from the table's Proc."""

    __slots__ = (
        "argv", "argv_blob", "comm", "cwd", "duration", "end_ns", "exe", "execs", "exit_code", "forked", "id",
        "parent", "pid", "ppid", "start_ns", "uid", "user",
    )

    def __init__(self, life_id: int, pid: int, ppid: int | None, start_ns: int | None, forked: bool) -> None:
        self.id = life_id
        self.pid = pid
        self.ppid = ppid
        self.parent: int | None = None
        self.start_ns = start_ns
        self.forked = forked
        self.end_ns: int | None = None
        self.comm: str | None = None
        self.exe: str | None = None
        self.argv: list[str] | None = None
        self.argv_blob: bytes | None = None
        self.cwd: str | None = None
        self.uid: int | None = None
        self.user: str | None = None
        self.execs = 0
        self.exit_code: int | None = None
        self.duration: float | None = None

    def row(self, session: int) -> tuple[Any, ...]:
        start, end = self.start_ns, self.end_ns
        return (
            self.id, session, self.pid, self.ppid, self.parent, start,
            None if start is None else wall_clock_ns(start), int(self.forked),
            end, None if end is None else wall_clock_ns(end),
            encode_text(self.comm), encode_text(self.exe), self.argv_blob, encode_text(self.cwd),
            self.uid, encode_text(self.user), self.execs, self.exit_code, self.duration,
        )


def _users() -> Callable[[int | None], str | None]:
    from .enrich import Users

    return Users().name


class StoreWriter:
    """The writing end of a database: schema, batched transactions, retention.

    One writer per file at a time (an exclusive lock on it); readers may run
    alongside (WAL).  Add rows with :meth:`add_event` and :meth:`touch`
    (usually through :class:`StoreSink`), then :meth:`flush` often: it commits
    when the oldest waiting row is ``interval`` seconds old.
    """

    def __init__(
        self,
        path: str,
        *,
        retain_ns: int | None = None,
        interval: float = COMMIT_INTERVAL,
        version: str = "",
    ) -> None:
        self.path = path
        self.retain_ns = retain_ns
        self.interval = interval
        self.pending: list[tuple[Any, ...]] = []
        self.dirty: dict[int, Life] = {}
        self.first_pending = 0.0
        #: Counters, for the summary and for metrics.
        self.events_written = 0
        self.commits = 0
        self.pruned_events = 0
        self.pruned_procs = 0
        self._next_prune = 0.0
        self._prune_more = False
        self._lock_fd = -1
        self.closed = False
        self.conn = self._open(version)

    def _open(self, version: str) -> sqlite3.Connection:
        path = self.path
        parent = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(parent, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create {parent}: {exc.strerror}") from None
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except IsADirectoryError:
            raise StoreError(f"{path} is a directory, not a database") from None
        except OSError as exc:
            raise StoreError(f"cannot open {path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StoreError(f"{path} is being written by another procevents record") from None
            raise StoreError(f"cannot lock {path}: {exc.strerror}") from None
        self._lock_fd = fd
        try:
            check_file(path)
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except (StoreError, sqlite3.Error):
            self._unlock()
            raise
        try:
            new = _check_identity(conn, path, writable=True)
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{path}: cannot use write-ahead logging (journal mode {mode})")
            conn.execute("PRAGMA synchronous=NORMAL")
            if new:  # all of the schema or nothing
                conn.executescript(
                    f"BEGIN IMMEDIATE; {SCHEMA}; PRAGMA application_id={APPLICATION_ID}; "
                    f"PRAGMA user_version={SCHEMA_VERSION}; COMMIT;"
                )
            offset = wall_clock_ns(0)
            cur = conn.execute(
                "INSERT INTO sessions (started_wall, clock_offset, boot_id, hostname, recorder_pid, version) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (time.time_ns(), offset, _boot_id(), os.uname().nodename, os.getpid(), version),
            )
            assert cur.lastrowid is not None
            self.session = cur.lastrowid
            self.next_id = (conn.execute("SELECT max(id) FROM procs").fetchone()[0] or 0) + 1
        except StoreError:
            conn.close()
            self._unlock()
            raise
        except sqlite3.Error as exc:
            conn.close()
            self._unlock()
            raise _damaged(path, exc) from None
        return conn

    def _unlock(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    # -- rows --------------------------------------------------------------

    def new_life(self, pid: int, ppid: int | None, start_ns: int | None, forked: bool) -> Life:
        life = Life(self.next_id, pid, ppid, start_ns, forked)
        self.next_id += 1
        return life

    def add_event(self, row: tuple[Any, ...]) -> None:
        if not self.pending:
            self.first_pending = time.monotonic()
        self.pending.append(row)

    def touch(self, life: Life) -> None:
        """The lifetime changed: write it with the next commit."""
        self.dirty[life.id] = life

    # -- committing ----------------------------------------------------------------

    @property
    def due(self) -> bool:
        pending = self.pending
        if not pending:
            return bool(self.dirty)
        return len(pending) >= MAX_PENDING or time.monotonic() - self.first_pending >= self.interval

    @property
    def flush_due_in(self) -> float | None:
        """Seconds until :meth:`flush` has work to do; None while it has none
        (an idle recorder then needs no wakeup, unless it prunes)."""
        now = time.monotonic()
        due: float | None = None
        if self.pending:
            due = max(0.0, self.first_pending + self.interval - now)
        elif self.dirty:
            due = 0.0
        if self.retain_ns is not None:
            prune = 0.0 if self._prune_more else max(0.0, self._next_prune - now)
            due = prune if due is None else min(due, prune)
        return due

    def flush(self, force: bool = False) -> None:
        """Commit if due (or ``force``), and run retention when its time has come."""
        if force or self.due:
            self.commit()
        if self.retain_ns is not None and (self._prune_more or time.monotonic() >= self._next_prune):
            self.prune()

    def commit(self) -> None:
        """Write everything waiting in one transaction."""
        if not self.pending and not self.dirty:
            return
        conn = self.conn
        session = self.session
        try:
            if conn.in_transaction:  # an earlier commit was interrupted
                conn.execute("ROLLBACK")
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(_INSERT_EVENT, self.pending)
            conn.executemany(_UPSERT_PROC, [life.row(session) for life in self.dirty.values()])
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise OSError(errno.EIO, f"{self.path}: {_describe(exc)}") from None
        self.events_written += len(self.pending)
        self.commits += 1
        self.pending = []
        self.dirty = {}

    def prune(self, now_ns: int | None = None) -> int:
        """Delete events and ended lifetimes older than the retention period
        (at most PRUNE_CHUNK rows of each per call); returns rows deleted."""
        if self.retain_ns is None:
            return 0
        cutoff = (time.time_ns() if now_ns is None else now_ns) - self.retain_ns
        conn = self.conn
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.execute("BEGIN IMMEDIATE")
            events = conn.execute(
                "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE wall < ? LIMIT ?)",
                (cutoff, PRUNE_CHUNK),
            ).rowcount
            # Lifetimes that ended before the cutoff, and those never seen to
            # end that started before it (a running process still written to
            # is written again whole).
            procs = conn.execute(
                "DELETE FROM procs WHERE id IN (SELECT id FROM procs WHERE end_wall < ? "
                "OR (end_wall IS NULL AND start_wall < ?) LIMIT ?)",
                (cutoff, cutoff, PRUNE_CHUNK),
            ).rowcount
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise OSError(errno.EIO, f"{self.path}: {_describe(exc)}") from None
        self.pruned_events += events
        self.pruned_procs += procs
        self._prune_more = events >= PRUNE_CHUNK or procs >= PRUNE_CHUNK
        self._next_prune = time.monotonic() + PRUNE_INTERVAL
        return events + procs

    def close(self) -> None:
        """Commit what is waiting and close (the WAL is checkpointed).  Idempotent."""
        if self.closed:
            return
        self.closed = True
        try:
            self.commit()
        finally:
            self.conn.close()
            self._unlock()


class StoreSink:
    """A pipeline sink that records every event it is given.

    ``lookup`` finds a live process by pid (the enricher's table), so a new
    lifetime can be linked to its parent's.
    """

    def __init__(self, writer: StoreWriter, lookup: Callable[[int], Proc | None] | None = None) -> None:
        self.writer = writer
        self.lookup = lookup
        self.user_name = _users()

    def _life(self, proc: Proc, forked: bool, depth: int = 0) -> Life:
        life = proc.extra.get("store")
        if isinstance(life, Life):
            return life
        writer = self.writer
        life = writer.new_life(proc.pid, proc.ppid, proc.start_ns, forked)
        proc.extra["store"] = life
        self._mirror(life, proc)
        lookup = self.lookup
        if lookup is not None and proc.ppid > 0 and depth < _MAX_ANCESTRY:
            parent = lookup(proc.ppid)
            if parent is not None and parent is not proc:
                life.parent = self._life(parent, False, depth + 1).id
        writer.touch(life)
        return life

    def _mirror(self, life: Life, proc: Proc) -> None:
        life.comm = proc.comm
        if proc.argv is not life.argv:
            life.argv = proc.argv
            life.argv_blob = encode_argv(proc.argv)
        life.exe = proc.exe
        life.cwd = proc.cwd
        if proc.ruid != life.uid:
            life.uid = proc.ruid
            life.user = self.user_name(proc.ruid)

    def emit(self, event: Event, proc: Proc | None, info: Mapping[str, Any]) -> bool:
        cls = type(event)
        ts = event.timestamp_ns
        life_id: int | None = None
        if proc is not None:
            life = self._life(proc, cls is Fork and event.pid == event.tgid)
            life_id = life.id
            self._mirror(life, proc)
            if cls is Exec:
                life.execs += 1
            elif cls is Exit and event.pid == event.tgid:
                assert isinstance(event, Exit)
                life.end_ns = ts
                life.exit_code = event.exit_code
                life.duration = info.get("duration")
                if not life.ppid:
                    life.ppid = info.get("ppid") or event.parent_tgid or None
            self.writer.touch(life)
        row: tuple[Any, ...] = (
            life_id, ts, wall_clock_ns(ts), event.name, event.cpu, event.seq, event.pid, event.tgid
        )
        if cls is Exec:
            # comm, ppid, uid, argv, exe, cwd; why argv is missing in data
            get = info.get
            row += (None, None, None, None, get("missing"), encode_text(get("comm")), get("ppid"), get("uid"),
                    encode_argv(get("cmdline")), encode_text(get("exe")), encode_text(get("cwd")))
        else:
            row += _specific(event)
            if not info:
                row += _NONE6
            elif cls is Exit:
                row += (encode_text(info.get("comm")), info.get("ppid"), info.get("uid"), None, None, None)
            else:
                row += (encode_text(info.get("comm")), info.get("ppid"), None, None, None, None)
        self.writer.add_event(row)
        return True


def _specific(event: Event) -> tuple[Any, ...]:
    """Columns a, b, c, d, data (see the events_named view)."""
    cls = type(event)
    if cls is Fork:
        assert isinstance(event, Fork)
        return (event.parent_pid, event.parent_tgid, None, None, None)
    if cls is Exit:
        assert isinstance(event, Exit)
        return (event.parent_pid, event.parent_tgid, event.exit_code, event.exit_signal, None)
    if cls is Uid:
        assert isinstance(event, Uid)
        return (event.ruid, event.euid, None, None, None)
    if cls is Gid:
        assert isinstance(event, Gid)
        return (event.rgid, event.egid, None, None, None)
    if cls is Ptrace:
        assert isinstance(event, Ptrace)
        return (event.tracer_pid, event.tracer_tgid, None, None, None)
    if cls is Comm:
        assert isinstance(event, Comm)
        return (None, None, None, None, event.comm)
    if cls is Coredump:
        assert isinstance(event, Coredump)
        return (event.parent_pid, event.parent_tgid, None, None, None)
    if cls is Lost:
        assert isinstance(event, Lost)
        return (event.count, None, None, None, event.reason)
    if cls is Unknown:
        assert isinstance(event, Unknown)
        return (event.what, None, None, None, event.data)
    return _NONE5


# -- reading -------------------------------------------------------------------------


@dataclass(slots=True)
class Lifetime:
    """One ``procs`` row, decoded."""

    id: int
    session: int
    pid: int
    ppid: int | None
    parent: int | None
    start_ns: int | None
    start_wall: int | None
    forked: bool
    end_ns: int | None
    end_wall: int | None
    comm: str | None
    exe: str | None
    argv: list[str] | None
    cwd: str | None
    uid: int | None
    user: str | None
    execs: int
    exit_code: int | None
    duration: float | None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Lifetime:
        (life_id, session, pid, ppid, parent, start_ns, start_wall, forked, end_ns, end_wall,
         comm, exe, argv, cwd, uid, user, execs, exit_code, duration) = row
        return cls(
            life_id, session, pid, ppid, parent, start_ns, start_wall, bool(forked), end_ns, end_wall,
            decode_text(comm), decode_text(exe), decode_argv(argv), decode_text(cwd), uid, decode_text(user),
            execs, exit_code, duration,
        )

    @property
    def status(self) -> int | None:
        code = self.exit_code
        return None if code is None or code & 0x7F else (code >> 8) & 0xFF

    @property
    def signal(self) -> int | None:
        code = self.exit_code
        return None if code is None else (code & 0x7F) or None

    @property
    def core_dumped(self) -> bool | None:
        code = self.exit_code
        return None if code is None else bool(code & 0x7F and code & 0x80)

    @property
    def failed(self) -> bool:
        return bool(self.exit_code)


@dataclass(frozen=True, slots=True)
class LifetimeQuery:
    """Which lifetimes: those alive at some time in [since, until] (wall ns),
    matching every condition given."""

    since: int | None = None
    until: int | None = None
    command: Any = None  # a compiled regex: comm, exe or argv[0]
    user: str | None = None  # a name or a uid
    pids: frozenset[int] | None = None  # these and their descendants
    failed: bool = False


_PROC_SELECT: Final = f"SELECT {', '.join('p.' + c for c in PROC_COLUMNS)} FROM procs p"


class StoreReader:
    """Read-only access: lifetime queries, event replay, SQL passthrough."""

    def __init__(self, path: str) -> None:
        self.path = path
        check_file(path)
        uri = f"file:{quote(os.path.abspath(path))}?mode=ro"
        try:
            self.conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {path}: {_describe(exc)}") from None
        try:
            _check_identity(self.conn, path, writable=False)
            self.conn.execute("PRAGMA query_only=ON")
        except StoreError:
            self.conn.close()
            raise
        except sqlite3.Error as exc:
            self.conn.close()
            raise _damaged(path, exc) from None
        self.conn.create_function("procevents_match", 4, self._match, deterministic=True)
        self._pattern: Any = None

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> StoreReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        try:
            return self.conn.execute(sql, params)
        except sqlite3.Error as exc:
            raise _damaged(self.path, exc) from None

    def _rows(self, cursor: sqlite3.Cursor) -> Iterator[Any]:
        try:
            yield from cursor
        except sqlite3.Error as exc:
            raise _damaged(self.path, exc) from None

    def _match(self, comm: object, exe: object, argv: object, _unused: object) -> bool:
        search = self._pattern.search
        text = decode_text(comm)
        if text is not None and search(text):
            return True
        text = decode_text(exe)
        if text is not None and search(text):
            return True
        args = decode_argv(argv)
        return bool(args) and search(args[0]) is not None  # type: ignore[index]

    def integrity(self) -> str:
        """``ok``, or what SQLite's quick check found."""
        rows = [str(r[0]) for r in self._rows(self._execute("PRAGMA quick_check"))]
        return "ok" if rows == ["ok"] else "; ".join(rows[:5])

    # -- lifetimes ----------------------------------------------------------------

    def lifetimes(self, query: LifetimeQuery) -> list[Lifetime]:
        """Matching lifetimes, by start time."""
        where: list[str] = []
        params: list[Any] = []
        if query.since is not None:
            where.append("(p.end_wall >= ? OR p.end_wall IS NULL)")
            params.append(query.since)
        if query.until is not None:
            where.append("(p.start_wall <= ? OR p.start_wall IS NULL)")
            params.append(query.until)
        if query.failed:
            where.append("p.exit_code != 0")
        if query.user is not None:
            if query.user.isdigit():
                where.append("p.uid = ?")
                params.append(int(query.user))
            else:
                where.append("p.user = ?")
                params.append(query.user)
        if query.command is not None:
            self._pattern = query.command
            where.append("procevents_match(p.comm, p.exe, p.argv, NULL)")
        if query.pids is not None:
            marks = ", ".join("?" * len(query.pids))
            where.append(
                "p.id IN (WITH RECURSIVE sub(id) AS ("
                f"SELECT id FROM procs WHERE pid IN ({marks}) "
                "UNION SELECT c.id FROM procs c JOIN sub ON c.parent = sub.id) SELECT id FROM sub)"
            )
            params.extend(sorted(query.pids))
        sql = _PROC_SELECT
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY p.start_wall, p.id"
        return [Lifetime.from_row(row) for row in self._rows(self._execute(sql, params))]

    def lifetimes_by_id(self, ids: Iterable[int]) -> dict[int, Lifetime]:
        wanted = list(ids)
        found: dict[int, Lifetime] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            sql = f"{_PROC_SELECT} WHERE p.id IN ({', '.join('?' * len(chunk))})"
            for row in self._rows(self._execute(sql, chunk)):
                life = Lifetime.from_row(row)
                found[life.id] = life
        return found

    def with_ancestors(self, lives: Sequence[Lifetime]) -> dict[int, Lifetime]:
        """The lifetimes and every recorded ancestor of theirs, by id."""
        known = {life.id: life for life in lives}
        wanted = {life.parent for life in lives if life.parent is not None and life.parent not in known}
        for _ in range(_MAX_ANCESTRY):
            if not wanted:
                break
            found = self.lifetimes_by_id(wanted)
            known.update(found)
            wanted = {life.parent for life in found.values() if life.parent is not None and life.parent not in known}
        return known

    # -- events ------------------------------------------------------------------

    def events(self, since: int | None = None, until: int | None = None) -> Iterator[Recorded]:
        """Recorded events in arrival order, rebuilt, with their enrichment."""
        where: list[str] = []
        params: list[Any] = []
        if since is not None:
            where.append("e.wall >= ?")
            params.append(since)
        if until is not None:
            where.append("e.wall <= ?")
            params.append(until)
        sql = (
            f"SELECT {', '.join('e.' + c for c in EVENT_COLUMNS)}, "
            "p.argv, p.duration, p.parent, p.start_ns, p.exe, p.uid FROM events e LEFT JOIN procs p ON p.id = e.proc"
        )
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY e.id"
        names = self.user_names()
        for row in self._rows(self._execute(sql, params)):
            yield _rebuild(row, names)

    def user_names(self) -> Callable[[int | None], str | None]:
        """uid -> user name as recorded (else as this host knows it)."""
        from .enrich import Users

        recorded: dict[int, str] = {}
        for uid, user in self._rows(self._execute("SELECT DISTINCT uid, user FROM procs WHERE uid IS NOT NULL")):
            if user is not None:
                recorded[uid] = decode_text(user) or str(uid)
        local = Users().name

        def name(uid: int | None) -> str | None:
            if uid is None:
                return None
            found = recorded.get(uid)
            return found if found is not None else local(uid)

        return name

    # -- SQL -------------------------------------------------------------------------

    def sql(self, statement: str) -> tuple[list[str], Iterator[Sequence[Any]]]:
        """Run one read-only statement; (column names, rows)."""
        self.conn.set_authorizer(_read_only)
        try:
            cursor = self.conn.execute(statement)
        except (sqlite3.DatabaseError, sqlite3.Warning, sqlite3.ProgrammingError) as exc:
            message = _describe(exc)
            if "not authorized" in message:
                message += " (--sql is read-only: SELECT, WITH and read-only PRAGMAs)"
            raise StoreError(f"SQL error: {message}") from None
        columns = [d[0] for d in cursor.description or ()]
        return columns, self._rows(cursor)


#: What --sql may do (sqlite3 authorizer action codes): read, nothing else.
_SQLITE_RECURSIVE: Final = 33
_ALLOWED_ACTIONS: Final = frozenset(
    {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_PRAGMA, _SQLITE_RECURSIVE}
)
#: PRAGMAs that only report, and those of them that take an argument (a table name...).
_READ_PRAGMAS: Final = frozenset(
    {"user_version", "application_id", "page_count", "page_size", "freelist_count", "table_list",
     "database_list", "collation_list", "function_list", "pragma_list", "compile_options", "journal_mode"}
)
_READ_PRAGMAS_WITH_ARG: Final = frozenset(
    {"table_info", "table_xinfo", "index_list", "index_info", "index_xinfo", "foreign_key_list",
     "quick_check", "integrity_check"}
)


def _read_only(action: int, arg1: str | None, arg2: str | None, _db: str | None, _trigger: str | None) -> int:
    if action not in _ALLOWED_ACTIONS:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_PRAGMA:
        name = (arg1 or "").lower()
        if not (name in _READ_PRAGMAS_WITH_ARG or (name in _READ_PRAGMAS and arg2 is None)):
            return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


@dataclass(slots=True)
class Recorded:
    """One recorded event, rebuilt: the event, its enrichment as shown live,
    the process as far as the rows tell, and the wall-clock ns it was stamped."""

    event: Event
    info: dict[str, Any]
    proc: Proc | None
    wall: int
    life: int | None
    parent: int | None


def _rebuild(row: Sequence[Any], user_name: Callable[[int | None], str | None]) -> Recorded:
    (life_id, ts, wall, name, cpu, seq, pid, tgid, a, b, c, d, data, comm, ppid, uid, argv, exe, cwd,
     life_argv, life_duration, life_parent, life_start, life_exe, life_uid) = row
    event: Event
    if name == "fork":
        event = Fork(cpu, seq, ts, a, b, pid, tgid)
    elif name == "exec":
        event = Exec(cpu, seq, ts, pid, tgid)
    elif name == "exit":
        event = Exit(cpu, seq, ts, pid, tgid, c, d, a, b)
    elif name == "uid":
        event = Uid(cpu, seq, ts, pid, tgid, a, b)
    elif name == "gid":
        event = Gid(cpu, seq, ts, pid, tgid, a, b)
    elif name == "sid":
        event = Sid(cpu, seq, ts, pid, tgid)
    elif name == "ptrace":
        event = Ptrace(cpu, seq, ts, pid, tgid, a, b)
    elif name == "comm":
        event = Comm(cpu, seq, ts, pid, tgid, _blob(data))
    elif name == "coredump":
        event = Coredump(cpu, seq, ts, pid, tgid, a, b)
    elif name == "lost":
        event = Lost(cpu, seq, ts, a, decode_text(data) or "")
    else:
        event = Unknown(cpu, seq, ts, a or 0, _blob(data))
    info: dict[str, Any] = {}
    proc: Proc | None = None
    if life_id is not None and name != "lost":
        comm_text = decode_text(comm)
        # Keys in the order the live enricher gives them (procevents.enrich).
        if name == "exec":
            cmdline = decode_argv(argv)
            info = {
                "cmdline": cmdline, "exe": decode_text(exe), "cwd": decode_text(cwd), "ppid": ppid,
                "uid": uid, "user": user_name(uid), "comm": comm_text,
            }
            if data is not None:
                info["missing"] = decode_text(data)
        elif name == "exit":
            cmdline = decode_argv(life_argv)
            info = {
                "comm": comm_text, "cmdline": cmdline, "duration": life_duration, "ppid": ppid,
                "uid": uid, "user": user_name(uid),
            }
        else:
            cmdline = decode_argv(life_argv)
            info = {"comm": comm_text, "ppid": ppid}
        # For filters and the tree: what the row says, else the lifetime's final values.
        owner = uid if uid is not None else life_uid
        proc = Proc(
            pid=tgid, ppid=ppid or 0, start_ns=life_start, comm=comm_text, argv=cmdline,
            exe=decode_text(exe if name == "exec" else life_exe), ruid=owner, euid=owner,
        )
        proc.extra["life"] = life_id
    return Recorded(event, info, proc, wall, life_id, life_parent)


def _blob(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return _raw(value)
    return b""


def database_bytes(path: str) -> int:
    """Size on disk of the database and its WAL."""
    total = 0
    for suffix in ("", "-wal"):
        try:
            total += Path(path + suffix).stat().st_size
        except FileNotFoundError:
            pass
    return total

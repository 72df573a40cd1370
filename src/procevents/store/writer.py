"""The writing end: the recorder's pipeline sink, batched transactions,
retention."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from ..containers import container_of
from ..events import Event, Exec, Exit, Fork, wall_clock_ns
from ..files import UnsafePath, check_planted_link
from ..identity import Identity, host_name
from ..procfs import boot_id
from ..proctable import Proc
from .schema import (
    APPLICATION_ID,
    COST_COLUMNS,
    EVENT_COLUMNS,
    EVENT_SPECIFIC,
    INSERT_EVENT,
    MAX_ANCESTRY,
    SCHEMA,
    SCHEMA_VERSION,
    UPSERT_PROC,
    Lifetime,
    StoreError,
    check_file,
    check_identity,
    check_objects,
    check_regular,
    check_trust,
    damaged,
    describe_error,
    encode_argv,
    encode_text,
    migrate,
    store_id,
    user_names,
)

#: How far a query can lag a running recorder (seconds), the bound README.md
#: and ``record --help`` state: an event is read at most RECORD_LINGER after
#: the kernel sent it (the main loop's linger), committed at most
#: COMMIT_INTERVAL after it was read, and the fifth left is for processing
#: the batch and the commit itself.  It holds while the recorder keeps up
#: and no other program holds the write lock; SIGUSR1 commits at once.
MAX_LAG: Final = 0.5
#: Rows are committed when the oldest uncommitted one is this old (seconds).
COMMIT_INTERVAL: Final = 0.4 * MAX_LAG
#: The most the recorder lets events gather before it reads them (seconds).
RECORD_LINGER: Final = 0.4 * MAX_LAG


#: ... or when this many are waiting.
MAX_PENDING: Final = 50_000
#: While another program holds the write lock, rows wait in memory, up to
#: this many; beyond it the oldest are dropped and recorded as lost.
MAX_WAITING: Final = 500_000
#: ... and the bytes of argv they may hold (a row's argv can be 256 KiB,
#: so the count alone would let any user's execs take gigabytes).
MAX_WAITING_BYTES: Final = 64 * 1024 * 1024
#: Rows are also committed once their argv reaches this many bytes.
COMMIT_BYTES: Final = 16 * 1024 * 1024
_ARGV_AT: Final = EVENT_COLUMNS.index("argv")


def _argv_bytes(row: tuple[Any, ...]) -> int:
    blob = row[_ARGV_AT]
    return len(blob) if isinstance(blob, bytes) else 0
#: How long one commit waits for the lock (the main loop must go on reading
#: the kernel's events), and how soon a blocked commit is tried again.
BUSY_WAIT: Final = 0.05
BUSY_RETRY: Final = 0.25
#: At the end, how long a foreign lock is waited out before giving up.
CLOSE_LOCK_WAIT: Final = 30.0


#: Retention runs this often (seconds), deleting at most PRUNE_CHUNK rows per table per run.
PRUNE_INTERVAL: Final = 60.0


PRUNE_CHUNK: Final = 20_000


#: The sink forgets ended lifetimes every this many events (see StoreSink._forget_ended).
SWEEP_EVENTS: Final = 8192

_NONE6: Final = (None, None, None, None, None, None)


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
        host: str | None = None,
        outbox: str | None = None,
        trust: bool = False,
    ) -> None:
        self.path = path
        #: Open a file another user owns, others may read, or with foreign
        #: triggers or views (``--trust-db``); refused otherwise.
        self.trust = trust
        #: The stream this recording is shipped to: retention keeps what it has not acknowledged.
        self.outbox = outbox
        #: The name rows are recorded under (this machine's unless given).
        self.host = host or host_name()
        self.retain_ns = retain_ns
        self.interval = interval
        self.pending: list[tuple[Any, ...]] = []
        #: Bytes of argv in ``pending`` (what the byte budgets count).
        self.pending_bytes = 0
        self.dirty: dict[int, Lifetime] = {}
        self.first_pending = 0.0
        #: Counters, for the summary and for metrics.
        self.events_written = 0
        self.commits = 0
        self._next_prune = 0.0
        self._prune_more = False
        #: When another program's lock began to block our commits (None: not blocked).
        self.locked_since: float | None = None
        self._retry_at = 0.0
        #: Rows dropped while blocked (counted as lost), and those not yet
        #: recorded as a lost row.
        self.dropped = 0
        self.dropped_unrecorded = 0
        self._lock_fd = -1
        self.closed = False
        #: The file was moved, removed or replaced while recording: stopped.
        self.stale = False
        self.conn = self._open(version)

    def _open(self, version: str) -> sqlite3.Connection:
        path = self.path
        parent = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(parent, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create {parent}: {exc.strerror}") from None
        try:
            check_planted_link(path)
        except UnsafePath as exc:
            raise StoreError(f"refusing {exc.strerror}") from None
        try:
            # Without blocking: a FIFO planted at the path is refused below, not waited on.
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC, 0o600)
        except IsADirectoryError:
            raise StoreError(f"{path} is a directory, not a database") from None
        except OSError as exc:
            raise StoreError(f"cannot open {path}: {exc.strerror}") from None
        try:
            check_regular(path, os.fstat(fd))
        except StoreError:
            os.close(fd)
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StoreError(f"{path} is being written by another procevents record") from None
            raise StoreError(f"cannot lock {path}: {exc.strerror}") from None
        self._lock_fd = fd
        try:
            info = check_file(path)
            # Setting up may wait for a lock; once recording, BUSY_WAIT at most.
            conn = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
        except (StoreError, sqlite3.Error):
            self._unlock()
            raise
        try:
            new = check_identity(conn, path, writable=True)
            if not self.trust:
                # Before anything is written: the file must be ours, and only ours to read.
                check_trust(path, info, writing=True)
                check_objects(conn, path)
            if not new:
                migrate(conn)
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{path}: cannot use write-ahead logging (journal mode {mode})")
            conn.execute("PRAGMA synchronous=NORMAL")
            if new:  # all of the schema or nothing
                conn.executescript(
                    f"BEGIN IMMEDIATE; {SCHEMA}; PRAGMA application_id={APPLICATION_ID}; "
                    f"PRAGMA user_version={SCHEMA_VERSION}; COMMIT;"
                )
            columns = {row[1] for row in conn.execute("PRAGMA table_info(sessions)")}
            if "ended" not in columns:  # recorded by an earlier version
                conn.execute("ALTER TABLE sessions ADD COLUMN ended TEXT")
                conn.execute("ALTER TABLE sessions ADD COLUMN ended_wall INTEGER")
            offset = wall_clock_ns(0)
            cur = conn.execute(
                "INSERT INTO sessions (started_wall, clock_offset, boot_id, hostname, recorder_pid, version) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (time.time_ns(), offset, boot_id(), self.host, os.getpid(), version),
            )
            assert cur.lastrowid is not None
            self.session = cur.lastrowid
            self.store_id = store_id(conn)
            self.next_id = (conn.execute("SELECT max(id) FROM procs").fetchone()[0] or 0) + 1
            self.next_rev = (conn.execute("SELECT max(rev) FROM procs").fetchone()[0] or 0) + 1
            conn.execute(f"PRAGMA busy_timeout={int(BUSY_WAIT * 1000)}")
        except StoreError:
            conn.close()
            self._unlock()
            raise
        except sqlite3.Error as exc:
            conn.close()
            self._unlock()
            raise damaged(path, exc) from None
        return conn

    def _moved_to(self) -> str | None:
        """None while the path names the file being written; else where that
        file is now (the kernel's name for our descriptor: ``... (deleted)``
        once removed).  Moved, removed or replaced, SQLite no longer finds
        its -wal beside it by name and would leave what we commit in an
        orphaned -wal at the old path: so the recorder stops (see commit)."""
        try:
            now = os.stat(self.path)
        except OSError:
            now = None
        held = os.fstat(self._lock_fd)
        if now is not None and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
            return None
        try:
            return os.readlink(f"/proc/self/fd/{self._lock_fd}")
        except OSError:
            return "an unknown place"

    def _stop_moved(self, where: str) -> None:
        """Everything committed goes into the file where it is now (a
        checkpoint, through the open descriptors), then stop, saying so once."""
        self.stale = True
        try:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass
        old = self.path
        if where.endswith(" (deleted)"):
            raise OSError(errno.ESTALE, f"{old} was removed while recording: stopped; what it held is gone")
        self.path = where
        raise OSError(
            errno.ESTALE, f"{old} was moved to {where} while recording: stopped; everything recorded is there"
        )

    def _unlock(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    # -- rows --------------------------------------------------------------

    def new_life(self, pid: int, ppid: int | None, start_ns: int | None, forked: bool) -> Lifetime:
        start_wall = None if start_ns is None else wall_clock_ns(start_ns)
        life = Lifetime(self.next_id, self.session, pid, ppid, None, start_ns, start_wall, forked, host=self.host)
        self.next_id += 1
        return life

    def add_event(self, row: tuple[Any, ...], argv_bytes: int = 0) -> None:
        """One events row; ``argv_bytes``: the size of its argv blob (the byte budgets count it)."""
        if not self.pending:
            self.first_pending = time.monotonic()
        self.pending.append(row)
        self.pending_bytes += argv_bytes

    def touch(self, life: Lifetime) -> None:
        """The lifetime changed: write it with the next commit."""
        self.dirty[life.id] = life

    # -- committing ----------------------------------------------------------------

    @property
    def due(self) -> bool:
        pending = self.pending
        if not pending:
            return bool(self.dirty)
        return (
            len(pending) >= MAX_PENDING or self.pending_bytes >= COMMIT_BYTES
            or time.monotonic() - self.first_pending >= self.interval
        )

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
        if due is not None and self.locked_since is not None:
            due = max(due, self._retry_at - now)
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
        """Write everything waiting in one transaction.  While another program
        holds the write lock, rows wait (see MAX_WAITING) and the commit is
        tried again later; any other failure raises OSError."""
        if not self.pending and not self.dirty:
            return
        moved = self._moved_to()
        if self.locked_since is not None and time.monotonic() < self._retry_at:
            self._bound_waiting()
            return
        conn = self.conn
        rows = self.pending
        if self.dropped_unrecorded:
            rows = [self._drop_row(), *rows]
        try:
            if conn.in_transaction:  # an earlier commit was interrupted
                conn.execute("ROLLBACK")
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(INSERT_EVENT, rows)
            rev = self.next_rev
            lives = []
            for life in self.dirty.values():
                life.rev = rev
                rev += 1
                lives.append(life.to_row())
            conn.executemany(UPSERT_PROC, lives)
            conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise OSError(errno.EIO, f"{self.path}: {describe_error(exc)}") from None
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if self.locked_since is None:
                self.locked_since = time.monotonic()
            self._retry_at = time.monotonic() + BUSY_RETRY
            self._bound_waiting()
            return
        except sqlite3.Error as exc:
            raise OSError(errno.EIO, f"{self.path}: {describe_error(exc)}") from None
        self.next_rev = rev
        self.locked_since = None
        self.dropped_unrecorded = 0
        self.events_written += len(self.pending)
        self.commits += 1
        self.pending = []
        self.pending_bytes = 0
        self.dirty = {}
        if moved is not None and not self.stale:
            self._stop_moved(moved)

    def _bound_waiting(self) -> None:
        """Past MAX_WAITING rows or MAX_WAITING_BYTES of argv, the oldest rows
        are dropped (and recorded as lost where they were)."""
        pending = self.pending
        drop = max(0, len(pending) - MAX_WAITING)
        freed = sum(_argv_bytes(row) for row in pending[:drop])
        while self.pending_bytes - freed > MAX_WAITING_BYTES and drop < len(pending):
            freed += _argv_bytes(pending[drop])
            drop += 1
        if drop:
            del pending[:drop]
            self.pending_bytes -= freed
            self.dropped += drop
            self.dropped_unrecorded += drop

    def _drop_row(self) -> tuple[Any, ...]:
        # A lost row where the rows were dropped, as the kernel's losses are.
        ts = self.pending[0][1] if self.pending else time.monotonic_ns()
        return (None, ts, wall_clock_ns(ts), "lost", -1, 0, 0, 0, self.dropped_unrecorded,
                None, None, None, "store-locked", None, None, None, None, None, None, self.host, None)

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
            shipped_events = shipped_procs = ""
            params: tuple[Any, ...] = ()
            if self.outbox is not None:
                shipped_events = " AND id <= (SELECT events FROM outbox WHERE stream = ?)"
                shipped_procs = " AND rev <= (SELECT procs FROM outbox WHERE stream = ?)"
                params = (self.outbox,)
            events = conn.execute(
                f"DELETE FROM events WHERE id IN (SELECT id FROM events WHERE wall < ?{shipped_events} LIMIT ?)",
                (cutoff, *params, PRUNE_CHUNK),
            ).rowcount
            # Lifetimes that ended before the cutoff, and those never seen to
            # end that started before it (a running process still written to
            # is written again whole).
            procs = conn.execute(
                "DELETE FROM procs WHERE id IN (SELECT id FROM procs WHERE (end_wall < ? "
                f"OR (end_wall IS NULL AND start_wall < ?)){shipped_procs} LIMIT ?)",
                (cutoff, cutoff, *params, PRUNE_CHUNK),
            ).rowcount
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise OSError(errno.EIO, f"{self.path}: {describe_error(exc)}") from None
        self._prune_more = events >= PRUNE_CHUNK or procs >= PRUNE_CHUNK
        self._next_prune = time.monotonic() + PRUNE_INTERVAL
        return events + procs

    def close(self, lock_wait: float = CLOSE_LOCK_WAIT) -> None:
        """Commit what is waiting and close (the WAL is checkpointed).  A
        foreign lock is waited out for ``lock_wait`` seconds; then OSError
        says how many events could not be written.  Idempotent."""
        if self.closed:
            return
        self.closed = True
        if self.stale:  # said once already (commit): end the session where the file is now
            self._end_session("error")
            try:
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
            self.conn.close()
            self._unlock()
            return
        try:
            deadline = time.monotonic() + lock_wait
            self.commit()
            while (self.pending or self.dirty) and time.monotonic() < deadline:
                time.sleep(BUSY_RETRY)
                self.commit()
            if self.pending or self.dirty:
                raise OSError(
                    errno.EBUSY, f"{self.path} stayed locked by another program: "
                    f"{len(self.pending)} events not written"
                )
            self._end_session("clean")
        except OSError:
            self._end_session("error")
            raise
        finally:
            self.conn.close()
            self._unlock()

    def _end_session(self, how: str) -> None:
        try:
            self.conn.execute(
                "UPDATE sessions SET ended = ?, ended_wall = ? WHERE id = ?", (how, time.time_ns(), self.session)
            )
        except sqlite3.Error:
            pass  # the disk is full or locked: the session stays "unknown"


class StoreSink:
    """A pipeline sink that records every event it is given.

    ``lookup`` finds a live process by pid (the enricher's table), so a new
    lifetime can be linked to its parent's; ``identity`` (the enricher's)
    names each lifetime's process and parent.
    """

    def __init__(
        self, writer: StoreWriter, lookup: Callable[[int], Proc | None] | None = None,
        identity: Identity | None = None,
    ) -> None:
        self.writer = writer
        self.lookup = lookup
        self.user_name = user_names()
        self.host = writer.host
        self.identity = identity or Identity(writer.host)
        #: pid -> the process and its lifetime, while it may still have events.
        self.lives: dict[int, tuple[Proc, Lifetime]] = {}
        self._ended: list[tuple[int, Lifetime]] = []
        self._ended_before: list[tuple[int, Lifetime]] = []
        self._until_sweep = SWEEP_EVENTS

    def _life(self, proc: Proc, forked: bool, depth: int = 0) -> Lifetime:
        """``proc``'s lifetime, begun now if this is the first time it is seen."""
        known = self.lives.get(proc.pid)
        if known is not None:
            seen, life = known
            if seen is proc or (proc.start_ns is not None and proc.start_ns == life.start_ns):
                return life
        writer = self.writer
        life = writer.new_life(proc.pid, proc.ppid, proc.start_ns, forked)
        self.lives[proc.pid] = (proc, life)
        self._mirror(life, proc)
        lookup = self.lookup
        parent = None
        if lookup is not None and proc.ppid > 0 and depth < MAX_ANCESTRY:
            parent = lookup(proc.ppid)
            if parent is not None and parent is not proc:
                life.parent = self._life(parent, False, depth + 1).id
        identity = self.identity
        life.exec_id = identity.of(proc)
        life.parent_exec_id = identity.parent_of(proc, parent)
        writer.touch(life)
        return life

    def _forget_ended(self) -> None:
        # A thread's events may come just after its process's exit: a
        # lifetime is forgotten one sweep after it ended, not at once.
        lives = self.lives
        for pid, life in self._ended_before:
            known = lives.get(pid)
            if known is not None and known[1] is life:
                del lives[pid]
        self._ended_before, self._ended = self._ended, []
        self._until_sweep = SWEEP_EVENTS

    def _mirror(self, life: Lifetime, proc: Proc) -> None:
        life.comm = proc.comm
        life.argv = proc.argv
        life.exe = proc.exe
        life.cwd = proc.cwd
        if proc.ruid != life.uid:
            life.uid = proc.ruid
            life.user = self.user_name(proc.ruid)
        if proc.cgroup != life.cgroup:
            life.cgroup = proc.cgroup
            found = container_of(proc.cgroup)
            life.container_id = None if found is None else found.id
            life.pod_uid = None if found is None else found.pod_uid

    def emit(self, event: Event, proc: Proc | None, info: Mapping[str, Any]) -> bool:
        cls = type(event)
        ts = event.timestamp_ns
        wall = wall_clock_ns(ts)
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
                life.end_wall = wall
                life.exit_code = event.exit_code
                life.duration = info.get("duration")
                if "utime" in info:
                    for key in COST_COLUMNS:
                        setattr(life, key, info.get(key))
                self._ended.append((event.pid, life))
                if not life.ppid:
                    life.ppid = info.get("ppid") or event.parent_tgid or None
            self.writer.touch(life)
        row: tuple[Any, ...] = (
            life_id, ts, wall, event.name, event.cpu, event.seq, event.pid, event.tgid
        )
        argv_bytes = 0
        if cls is Exec:
            # comm, ppid, uid, argv, exe, cwd; why argv is missing in data
            get = info.get
            argv = encode_argv(get("cmdline"))
            argv_bytes = len(argv) if argv is not None else 0
            row += (None, None, None, None, get("missing"), encode_text(get("comm")), get("ppid"), get("uid"),
                    argv, encode_text(get("exe")), encode_text(get("cwd")), self.host,
                    encode_text(get("cgroup")))
        elif cls is Exit and "utime" in info:
            costs = json.dumps([info.get(key) for key in COST_COLUMNS], separators=(",", ":"))
            row += (*EVENT_SPECIFIC[Exit](event)[:4], costs,
                    encode_text(info.get("comm")), info.get("ppid"), info.get("uid"), None, None, None, self.host, None)
        else:
            row += EVENT_SPECIFIC[cls](event)
            if not info:
                row += _NONE6
            elif cls is Exit:
                row += (encode_text(info.get("comm")), info.get("ppid"), info.get("uid"), None, None, None)
            else:
                row += (encode_text(info.get("comm")), info.get("ppid"), None, None, None, None)
            row += (self.host, None)
        self.writer.add_event(row, argv_bytes)
        self._until_sweep -= 1
        if self._until_sweep <= 0:
            self._forget_ended()
        return True

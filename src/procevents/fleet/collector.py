"""``procevents collect``: a durable JetStream consumer that writes the rows
every recorder ships into one store.

Each fetched batch is written in one transaction and acknowledged only once
committed: a collector killed in between gets the same messages again, and
they change nothing.  Every row keeps where it came from (``source``: the
store of that host, and its id there): an event already stored is ignored
(a unique index), a lifetime is rewritten only by a newer revision of it,
so the order messages arrive in and how often they arrive do not matter.
Ids that rows use to point at each other (an event's process, a lifetime's
parent and session) are translated to this store's; one not seen yet gets
a placeholder row that its own message fills in later.

What another host sends is not believed: the host is the subject's (the
token NATS permissions give each host, README "On many hosts"), a message
whose payload or rows name another host is refused, and so is a store id
first seen under another host (it is in every message id: anyone could
claim it).  Every value is checked against its column before anything is
written (messages.py).  A refused message costs one line (the first
MAX_NAMED, then only the count) and is terminated, never redelivered; the
good messages fetched with it are committed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from ..escape import escape
from ..store.schema import EVENT_COLUMNS, PROC_COLUMNS, describe_error
from ..store.writer import StoreWriter
from . import DEFAULT_DURABLE
from .connect import NatsConfig
from .messages import KINDS, BadMessage, Batch, decode, subject_token

#: Messages fetched (and committed) at once.
FETCH: Final = 256
#: Unacknowledged messages the server lets this consumer have.
MAX_ACK_PENDING: Final = 4096
#: Seconds before the server sends a message again that was not acknowledged.
ACK_WAIT: Final = 30.0
#: Refused messages named one by one; the rest are counted (the summary).
MAX_NAMED: Final = 10
_MAP_CACHE: Final = 200_000

_PROC_SET: Final = [c for c in PROC_COLUMNS if c != "id"]
_UPSERT_PROC: Final = (
    f"INSERT INTO procs ({', '.join(_PROC_SET)}, source, remote_id) "
    f"VALUES ({', '.join('?' * (len(_PROC_SET) + 2))}) "
    "ON CONFLICT(source, remote_id) WHERE source IS NOT NULL DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _PROC_SET)
    + " WHERE procs.rev IS NULL OR excluded.rev > procs.rev"
)
_INSERT_EVENT: Final = (
    f"INSERT OR IGNORE INTO events ({', '.join(EVENT_COLUMNS)}, source, remote_id) "
    f"VALUES ({', '.join('?' * (len(EVENT_COLUMNS) + 2))})"
)
_SESSION_SET: Final = (
    "started_wall", "clock_offset", "boot_id", "hostname", "recorder_pid", "version", "ended", "ended_wall",
)


class CentralStore:
    """The collector's database: a store like a recorder's, its rows from many."""

    def __init__(self, path: str, version: str = "") -> None:
        # The writer gives the file its schema, lock, WAL and permissions;
        # its own session row is the collector's.
        self.writer = StoreWriter(path, version=version)
        self.conn = self.writer.conn
        self.conn.execute("PRAGMA busy_timeout=5000")
        self.sources: dict[tuple[str, str], int] = {}
        self.sessions: dict[tuple[int, int], int] = {}
        self.procs: dict[tuple[int, int], int] = {}
        self.events = 0
        self.duplicates = 0
        self.lifetimes = 0
        self.hosts: set[str] = set()

    def close(self) -> None:
        self.writer.close()

    def write(self, batches: Sequence[Batch]) -> None:
        """Every batch in one transaction (all of it or nothing)."""
        conn = self.conn
        counts = (self.events, self.duplicates, self.lifetimes)
        conn.execute("BEGIN IMMEDIATE")
        try:
            for batch in batches:
                source = self._source(batch.host, batch.store)
                self.hosts.add(batch.host)
                if batch.kind == "sessions":
                    self._sessions(source, batch)
                elif batch.kind == "procs":
                    self._procs(source, batch)
                else:
                    self._events(source, batch)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            # What the cache learned in the rolled-back transaction is not so.
            self.sources.clear()
            self.sessions.clear()
            self.procs.clear()
            self.events, self.duplicates, self.lifetimes = counts
            raise

    def _source(self, host: str, store: str) -> int:
        key = (host, store)
        found = self.sources.get(key)
        if found is None:
            conn = self.conn
            row = conn.execute("SELECT id, host FROM sources WHERE store = ?", (store,)).fetchone()
            if row is None:
                found = int(conn.execute("INSERT INTO sources (host, store) VALUES (?, ?)", key).lastrowid or 0)
            elif row[1] != host:
                # Its id is in every message id: anyone could claim it.
                raise BadMessage(f"store {store!r} belongs to host {row[1]!r}, not {host!r}")
            else:
                found = int(row[0])
            self.sources[key] = found
        return found

    def _session(self, source: int, remote: int) -> int:
        """This store's id of a session (a placeholder until its row comes)."""
        key = (source, remote)
        found = self.sessions.get(key)
        if found is None:
            row = self.conn.execute(
                "SELECT id FROM sessions WHERE source = ? AND remote_id = ?", key
            ).fetchone()
            if row is None:
                cur = self.conn.execute(
                    "INSERT INTO sessions (started_wall, clock_offset, source, remote_id) VALUES (0, 0, ?, ?)", key
                )
                found = int(cur.lastrowid or 0)
            else:
                found = int(row[0])
            self.sessions[key] = found
        return found

    def _sessions(self, source: int, batch: Batch) -> None:
        index = {c: i for i, c in enumerate(batch.columns)}
        for row in batch.rows:
            central = self._session(source, row[index["id"]])
            values = [row[index[c]] if c in index else None for c in _SESSION_SET]
            self.conn.execute(
                f"UPDATE sessions SET {', '.join(f'{c} = ?' for c in _SESSION_SET)} WHERE id = ?", (*values, central)
            )

    def _proc(self, source: int, remote: int | None, session: int, host: str | None) -> int | None:
        """This store's id of a lifetime (a placeholder until its row comes)."""
        if remote is None:
            return None
        key = (source, remote)
        found = self.procs.get(key)
        if found is None:
            conn = self.conn
            row = conn.execute("SELECT id FROM procs WHERE source = ? AND remote_id = ?", key).fetchone()
            if row is None:
                cur = conn.execute(
                    "INSERT INTO procs (session, pid, forked, execs, host, source, remote_id) "
                    "VALUES (?, 0, 0, 0, ?, ?, ?)", (session, host, source, remote),
                )
                found = int(cur.lastrowid or 0)
            else:
                found = int(row[0])
            if len(self.procs) >= _MAP_CACHE:
                self.procs.clear()
            self.procs[key] = found
        return found

    def _procs(self, source: int, batch: Batch) -> None:
        index = {c: i for i, c in enumerate(batch.columns)}
        missing = [c for c in (*PROC_COLUMNS, "id") if c not in index]
        if missing:
            raise BadMessage(f"procs without {', '.join(missing)}")
        at_id, at_session, at_parent, at_host = index["id"], index["session"], index["parent"], index["host"]
        values = []
        for row in batch.rows:
            session = self._session(source, row[at_session])
            host = row[at_host]
            # The row itself first (a placeholder if new), so that the upsert finds it.
            self._proc(source, row[at_id], session, host)
            mapped = {"session": session, "parent": self._proc(source, row[at_parent], session, host)}
            values.append(
                (*(mapped[c] if c in mapped else row[index[c]] for c in _PROC_SET), source, row[at_id])
            )
        before = self.conn.total_changes
        self.conn.executemany(_UPSERT_PROC, values)
        # Not counted: a revision older than the row has (sent again, or late).
        self.lifetimes += self.conn.total_changes - before

    def _events(self, source: int, batch: Batch) -> None:
        index = {c: i for i, c in enumerate(batch.columns)}
        missing = [c for c in (*EVENT_COLUMNS, "id") if c not in index]
        if missing:
            raise BadMessage(f"events without {', '.join(missing)}")
        at_id, at_proc, at_host = index["id"], index["proc"], index["host"]
        columns = [index[c] for c in EVENT_COLUMNS]
        # An event before its lifetime's row: the placeholder belongs to the
        # collector's own session until that row says which one.
        session = self.writer.session
        values = []
        for row in batch.rows:
            out = [row[i] for i in columns]
            out[0] = self._proc(source, row[at_proc], session, row[at_host])
            values.append((*out, source, row[at_id]))
        before = self.conn.total_changes
        self.conn.executemany(_INSERT_EVENT, values)
        added = self.conn.total_changes - before
        self.events += added
        self.duplicates += len(values) - added


class Collector:
    """The consuming loop (asyncio)."""

    def __init__(
        self, db: str, config: NatsConfig, *, durable: str = DEFAULT_DURABLE, version: str = "",
        note: Callable[[str], None],
    ) -> None:
        self.config = config
        self.durable = durable
        self.note = note
        self.store = CentralStore(db, version)
        self.stopping = False
        self.refused = 0
        self.failing_since: float | None = None
        self.connected = False

    def stop(self) -> None:
        self.stopping = True

    async def run(self, duration: float | None = None) -> int:
        from .connect import FIRST_CONNECT_WAIT, connect, describe, ensure_stream

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, self.stop)
        deadline = None if duration is None else time.monotonic() + duration
        told = False
        nc = sub = None
        try:
            while not self._done(deadline):
                try:
                    if nc is None:
                        wait = FIRST_CONNECT_WAIT if deadline is None else deadline - time.monotonic()
                        nc = await connect(
                            self.config, f"procevents-collect {os.uname().nodename}", on_error=self._error,
                            on_disconnect=self._disconnected, first_wait=min(FIRST_CONNECT_WAIT, max(0.1, wait)),
                        )
                    if sub is None:
                        js = nc.jetstream()
                        await ensure_stream(js, self.config)
                        sub = await self._subscribe(js)
                        self.connected = True
                        self.note(
                            f"collecting from {self.config.shown_url}, stream {self.config.stream}, "
                            f"consumer {self.durable}"
                        )
                except Exception as exc:  # unreachable, no JetStream...: say so once, try again
                    if not told:
                        self.note(escape(f"cannot collect from {self.config.shown_url} ({describe(exc)}); retrying"))
                        told = True
                    if nc is not None and sub is None:
                        await _close(nc)
                        nc = None
                    await asyncio.sleep(0.5)
                    continue
                await self._fetch(sub)
        finally:
            self.connected = False
            if nc is not None:
                await _close(nc)
            self.store.close()
        return 0

    def _done(self, deadline: float | None) -> bool:
        return self.stopping or (deadline is not None and time.monotonic() >= deadline)

    async def _subscribe(self, js: Any) -> Any:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        return await js.pull_subscribe(
            f"{self.config.prefix}.>", durable=self.durable, stream=self.config.stream,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL, ack_wait=ACK_WAIT,
                max_ack_pending=MAX_ACK_PENDING,
            ),
        )

    async def _fetch(self, sub: Any) -> None:
        from nats.errors import TimeoutError as NatsTimeout

        from .connect import describe

        try:
            messages = await sub.fetch(FETCH, timeout=0.5)
        except (TimeoutError, NatsTimeout):
            return
        except Exception as exc:
            self._error(describe(exc))
            await asyncio.sleep(0.5)
            return
        good: list[tuple[Any, Batch]] = []
        for message in messages:
            try:
                batch = decode(message.data)
                self._check_subject(message.subject, batch)
            except BadMessage as exc:
                await self._refuse(message, str(exc))
                continue
            good.append((message, batch))
        try:
            self.store.write([batch for _, batch in good])
            written = [message for message, _ in good]
        except sqlite3.OperationalError as exc:  # the disk, a lock: not the messages' fault
            raise OSError(f"{self.store.writer.path}: {describe_error(exc)}") from None
        except (BadMessage, sqlite3.Error, ValueError, TypeError, OverflowError):
            # A message the checks let through (a store id claimed by
            # another host, ...): one at a time, so that the rest go in.
            written = []
            for message, batch in good:
                try:
                    self.store.write([batch])
                except sqlite3.OperationalError as exc:
                    raise OSError(f"{self.store.writer.path}: {describe_error(exc)}") from None
                except (BadMessage, sqlite3.Error, ValueError, TypeError, OverflowError) as exc:
                    await self._refuse(message, str(exc) or type(exc).__name__)
                    continue
                written.append(message)
        # Only now: what is committed is acknowledged (a crash before this
        # brings the messages again, and they change nothing).
        for message in written:
            await message.ack()
        if self.failing_since is not None:
            self.note(f"collecting again after {time.monotonic() - self.failing_since:.1f} s")
            self.failing_since = None

    def _check_subject(self, subject: str, batch: Batch) -> None:
        """The host is the subject's (PREFIX.HOST.KIND, which NATS
        permissions can give each host), not what the payload says."""
        rest = subject[len(self.config.prefix) + 1:] if subject.startswith(f"{self.config.prefix}.") else ""
        token, _, kind = rest.partition(".")
        if not token or kind not in KINDS:
            raise BadMessage("not a subject of procevents rows (PREFIX.HOST.KIND)")
        if subject_token(batch.host) != token:
            raise BadMessage(f"its payload says host {batch.host!r}")
        if batch.kind != kind:
            raise BadMessage(f"its payload says {batch.kind!r}")

    async def _refuse(self, message: Any, why: str) -> None:
        """One line (escaped: the subject and the values are the sender's),
        and terminated: the server never delivers it again."""
        self.refused += 1
        if self.refused <= MAX_NAMED:
            more = " (the next ones are only counted)" if self.refused == MAX_NAMED else ""
            self.note(escape(f"refusing a message on {message.subject}: {why}{more}"))
        try:
            await message.term()
        except Exception:  # gone with the connection: it comes back after ACK_WAIT, and is refused again
            pass

    def _error(self, text: str) -> None:
        if self.failing_since is None and self.connected:
            self.note(escape(f"{text}; retrying"))
            self.failing_since = time.monotonic()

    def _disconnected(self) -> None:
        if self.failing_since is None and self.connected:
            self.note(f"disconnected from {self.config.shown_url}; retrying")
            self.failing_since = time.monotonic()

    def summary(self) -> str:
        store = self.store
        hosts = len(store.hosts)
        dup = f", {store.duplicates} already stored" if store.duplicates else ""
        refused = f", {self.refused} message{'s' if self.refused != 1 else ''} refused" if self.refused else ""
        return (
            f"{store.events} events and {store.lifetimes} lifetime updates collected from "
            f"{hosts} host{'s' if hosts != 1 else ''} into {store.writer.path}{dup}{refused}"
        )


async def _close(nc: Any) -> None:
    try:
        await asyncio.wait_for(nc.close(), 2.0)
    except Exception:
        pass

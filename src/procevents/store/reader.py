"""The reading end: process lifetimes for queries, events rebuilt for
replay, and one read-only SQL statement at a time."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

from ..containers import container_fields
from ..events import Event, Unknown
from ..proctable import Proc
from .schema import (
    COST_COLUMNS,
    EVENT_COLUMNS,
    EVENT_FROM_COLUMNS,
    MAX_ANCESTRY,
    PROC_COLUMNS,
    Lifetime,
    StoreError,
    blob_bytes,
    check_file,
    check_identity,
    check_objects,
    check_trust,
    damaged,
    decode_argv,
    decode_text,
    describe_error,
)


@dataclass(slots=True)
class RecordedProc(Proc):
    """A process as a recorded event shows it, with the lifetime it belongs to."""

    #: procs.id of its lifetime (None: the event belongs to none).
    life: int | None = None


@dataclass(frozen=True, slots=True)
class ExecPoint:
    """One recorded exec of a lifetime: when (wall-clock ns) and what it ran."""

    wall: int
    argv: list[str] | None
    comm: str | None


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
    min_cpu: float | None = None  # seconds of user plus system CPU
    sort: str | None = None  # one of SORT_KEYS: heaviest first, instead of by start time
    host: str | None = None  # recorded on this host (schema 3)
    container: str | None = None  # in the container whose id is or begins with this


#: --sort keys: the expression ordered by, heaviest first.
SORT_KEYS: Final = {
    "cpu": "p.utime + p.stime",
    "rss": "p.max_rss",
    "io": "p.read_bytes + p.write_bytes",
    "duration": "p.duration",
}


def _proc_select(present: set[str]) -> str:
    # A file from schema 1, opened read-only, has no cost columns: NULLs.
    return f"SELECT {', '.join('p.' + c if c in present else 'NULL' for c in PROC_COLUMNS)} FROM procs p"


def _event_columns(present: set[str]) -> str:
    # Nor one from schema 2 the host and cgroup of events.
    return ", ".join("e." + c if c in present else "NULL" for c in EVENT_COLUMNS)


class StoreReader:
    """Read-only access: lifetime queries, event replay, SQL passthrough."""

    def __init__(self, path: str, *, trust: bool = False) -> None:
        self.path = path
        info = check_file(path)
        uri = f"file:{quote(os.path.abspath(path))}?mode=ro"
        try:
            self.conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {path}: {describe_error(exc)}") from None
        try:
            check_identity(self.conn, path, writable=False)
            if not trust:  # --trust-db
                check_trust(path, info, writing=False)
                check_objects(self.conn, path)
            self.conn.execute("PRAGMA query_only=ON")
            present = {str(row[1]) for row in self.conn.execute("PRAGMA table_info(procs)")}
            event_present = {str(row[1]) for row in self.conn.execute("PRAGMA table_info(events)")}
        except StoreError:
            self.conn.close()
            raise
        except sqlite3.Error as exc:
            self.conn.close()
            raise damaged(path, exc) from None
        self.conn.create_function("procevents_match", 4, self._match, deterministic=True)
        self._pattern: Any = None
        self._proc_select = _proc_select(present)
        self._event_columns = _event_columns(event_present)
        #: The file has the taskstats columns (schema 2 and later).
        self.has_costs = "utime" in present
        #: ... and hosts, process identities and cgroups (schema 3).
        self.has_fleet = "exec_id" in present

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
            raise damaged(self.path, exc) from None

    def _rows(self, cursor: sqlite3.Cursor, stop: Callable[[], bool] | None = None) -> Iterator[Any]:
        try:
            yield from cursor
        except sqlite3.Error as exc:
            if stop is not None and stop():
                raise KeyboardInterrupt from None
            raise damaged(self.path, exc) from None

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
        if (query.min_cpu is not None or query.sort in ("cpu", "rss", "io")) and not self.has_costs:
            raise StoreError(f"{self.path} was recorded without exit costs (schema 1): nothing to sort or filter by")
        if query.min_cpu is not None:
            where.append("p.utime + p.stime >= ?")
            params.append(query.min_cpu)
        if (query.host is not None or query.container is not None) and not self.has_fleet:
            raise StoreError(f"{self.path} was recorded without hosts and containers (schema 2 or earlier)")
        if query.host is not None:
            where.append("p.host = ?")
            params.append(query.host)
        if query.container is not None:
            where.append("substr(p.container_id, 1, ?) = ?")
            params.extend((len(query.container), query.container.lower()))
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
        sql = self._proc_select
        if where:
            sql += " WHERE " + " AND ".join(where)
        # Ties in the order they were recorded, collected rows too (by
        # their id where they were recorded: ids here follow arrival).
        ties = "p.start_wall, p.source, coalesce(p.remote_id, p.id)" if self.has_fleet else "p.start_wall, p.id"
        if query.sort is not None:
            sql += f" ORDER BY {SORT_KEYS[query.sort]} DESC NULLS LAST, {ties}"
        else:
            sql += f" ORDER BY {ties}"
        return [Lifetime.from_row(row) for row in self._rows(self._execute(sql, params))]

    def lifetimes_by_id(self, ids: Iterable[int]) -> dict[int, Lifetime]:
        wanted = list(ids)
        found: dict[int, Lifetime] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            sql = f"{self._proc_select} WHERE p.id IN ({', '.join('?' * len(chunk))})"
            for row in self._rows(self._execute(sql, chunk)):
                life = Lifetime.from_row(row)
                found[life.id] = life
        return found

    def exec_points(self, lives: Sequence[Lifetime]) -> dict[int, list[ExecPoint]]:
        """The recorded execs of these lifetimes (when, what), by lifetime id,
        in arrival order."""
        ids = {life.id for life in lives}
        found: dict[int, list[ExecPoint]] = {}
        if not ids:
            return found
        # By time (events has an index on wall, none on proc), then by lifetime.
        starts = [life.start_wall for life in lives]
        ends = [life.end_wall for life in lives]
        where = ["event = 'exec'"]
        params: list[Any] = []
        if None not in starts:
            where.append("wall >= ?")
            params.append(min(s for s in starts if s is not None))
        if None not in ends:
            where.append("wall <= ?")
            params.append(max(e for e in ends if e is not None))
        sql = f"SELECT proc, wall, argv, comm FROM events WHERE {' AND '.join(where)} ORDER BY id"
        for life_id, wall, argv, comm in self._rows(self._execute(sql, params)):
            if life_id in ids:
                found.setdefault(life_id, []).append(ExecPoint(wall, decode_argv(argv), decode_text(comm)))
        return found

    def with_ancestors(self, lives: Sequence[Lifetime]) -> dict[int, Lifetime]:
        """The lifetimes and every recorded ancestor of theirs, by id."""
        known = {life.id: life for life in lives}
        wanted = {life.parent for life in lives if life.parent is not None and life.parent not in known}
        for _ in range(MAX_ANCESTRY):
            if not wanted:
                break
            found = self.lifetimes_by_id(wanted)
            known.update(found)
            wanted = {life.parent for life in found.values() if life.parent is not None and life.parent not in known}
        return known

    # -- events ------------------------------------------------------------------

    def hosts(self) -> list[str]:
        """The hosts whose processes the file holds, by name (one for a
        recorder's own file, several for a collected one; none before schema 3)."""
        if not self.has_fleet:
            return []
        rows = self._rows(self._execute("SELECT DISTINCT host FROM procs WHERE host IS NOT NULL ORDER BY host"))
        return [str(host) for (host,) in rows]

    def events(
        self, since: int | None = None, until: int | None = None, host: str | None = None
    ) -> Iterator[Recorded]:
        """Recorded events in arrival order, rebuilt, with their enrichment
        (of one ``host`` only, when given)."""
        where: list[str] = []
        params: list[Any] = []
        if since is not None:
            where.append("e.wall >= ?")
            params.append(since)
        if until is not None:
            where.append("e.wall <= ?")
            params.append(until)
        fleet = self.has_fleet
        if host is not None:
            if not fleet:
                raise StoreError(f"{self.path} was recorded without hosts and containers (schema 2 or earlier)")
            where.append("e.host = ?")
            params.append(host)
        identities = "p.exec_id, p.parent_exec_id, p.cgroup" if fleet else "NULL, NULL, NULL"
        sql = (
            f"SELECT {self._event_columns}, p.argv, p.duration, p.parent, p.start_ns, p.exe, p.uid, {identities} "
            "FROM events e LEFT JOIN procs p ON p.id = e.proc"
        )
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY e.id"
        names = self.user_names()
        for row in self._rows(self._execute(sql, params)):
            yield _rebuild(row, names, fleet)

    def user_names(self) -> Callable[[int | None], str | None]:
        """uid -> user name as recorded (else as this host knows it)."""
        from ..enrich import Users

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

    def sql(
        self, statement: str, stop: Callable[[], bool] | None = None
    ) -> tuple[list[str], Iterator[Sequence[Any]]]:
        """Run one read-only statement; (column names, rows).  ``stop()`` is
        asked every few thousand SQLite steps (so that a signal handler can
        run, even in a runaway statement): True ends it with
        KeyboardInterrupt."""
        self.conn.set_authorizer(_read_only)
        if stop is not None:
            self.conn.set_progress_handler(lambda: bool(stop()), _PROGRESS_STEPS)
        try:
            cursor = self.conn.execute(statement)
        except sqlite3.OperationalError as exc:
            if stop is not None and stop():
                raise KeyboardInterrupt from None
            raise StoreError(f"SQL error: {describe_error(exc)}") from None
        except (sqlite3.DatabaseError, sqlite3.Warning, sqlite3.ProgrammingError) as exc:
            message = describe_error(exc)
            if "not authorized" in message:
                message += " (--sql is read-only: SELECT, WITH and read-only PRAGMAs)"
            raise StoreError(f"SQL error: {message}") from None
        columns = [d[0] for d in cursor.description or ()]
        return columns, self._rows(cursor, stop)


#: SQLite virtual-machine steps between two calls of a statement's stop().
_PROGRESS_STEPS: Final = 20_000


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
    the process as far as the rows tell, the wall-clock ns it was stamped
    and the host it happened on."""

    event: Event
    info: dict[str, Any]
    proc: Proc | None
    wall: int
    life: int | None
    parent: int | None
    #: The host it was recorded on (None before schema 3).
    host: str | None = None


def _rebuild(row: Sequence[Any], user_name: Callable[[int | None], str | None], fleet: bool = False) -> Recorded:
    (life_id, ts, wall, name, cpu, seq, pid, tgid, a, b, c, d, data, comm, ppid, uid, argv, exe, cwd, host, cgroup,
     life_argv, life_duration, life_parent, life_start, life_exe, life_uid, exec_id, parent_exec_id,
     life_cgroup) = row
    build = EVENT_FROM_COLUMNS.get(name)
    if build is not None:
        event = build(cpu, seq, ts, pid, tgid, a, b, c, d, data)
    else:
        event = Unknown(cpu, seq, ts, a or 0, blob_bytes(data))
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
            if fleet:
                path = decode_text(cgroup)
                info["cgroup"] = path
                if path is not None:
                    info.update(container_fields(path))
        elif name == "exit":
            cmdline = decode_argv(life_argv)
            info = {
                "comm": comm_text, "cmdline": cmdline, "duration": life_duration, "ppid": ppid,
                "uid": uid, "user": user_name(uid),
            }
            if tgid != pid:
                info["thread"] = True
            if data is not None:
                info.update(_costs(data))
        else:
            cmdline = decode_argv(life_argv)
            info = {"comm": comm_text, "ppid": ppid}
        if fleet:
            info["exec_id"] = exec_id
            info["parent_exec_id"] = parent_exec_id
        # For filters and the tree: what the row says, else the lifetime's final values.
        owner = uid if uid is not None else life_uid
        proc = RecordedProc(
            pid=tgid, ppid=ppid or 0, start_ns=life_start, comm=comm_text, argv=cmdline,
            exe=decode_text(exe if name == "exec" else life_exe), ruid=owner, euid=owner,
            cgroup=decode_text(cgroup if name == "exec" and cgroup is not None else life_cgroup), life=life_id,
        )
    return Recorded(event, info, proc, wall, life_id, life_parent, host)


def _costs(data: object) -> dict[str, Any]:
    """An exit's taskstats figures, stored as a JSON list in COST_COLUMNS order."""
    try:
        values = json.loads(data if isinstance(data, (str, bytes)) else "null")
    except ValueError:
        return {}
    if not isinstance(values, list) or len(values) != len(COST_COLUMNS):
        return {}
    return dict(zip(COST_COLUMNS, values, strict=True))

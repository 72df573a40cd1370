"""Recording: the SQLite event store.

:mod:`.schema` (layout and values), :mod:`.writer` (the recorder's sink and
transactions), :mod:`.reader` (queries and replay).

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
never leaves a damaged file, and a query sees an event at most
:data:`MAX_LAG` seconds after the kernel sent it.
"""

from .reader import LifetimeQuery, Recorded, StoreReader
from .schema import (
    APPLICATION_ID,
    EVENT_COLUMNS,
    PROC_COLUMNS,
    SCHEMA,
    SCHEMA_VERSION,
    Lifetime,
    StoreError,
    check_file,
    database_bytes,
    decode_argv,
    decode_text,
    default_db_path,
    encode_argv,
    encode_text,
)
from .writer import (
    COMMIT_INTERVAL,
    MAX_LAG,
    MAX_PENDING,
    PRUNE_CHUNK,
    PRUNE_INTERVAL,
    RECORD_LINGER,
    StoreSink,
    StoreWriter,
)

__all__ = [
    "APPLICATION_ID",
    "COMMIT_INTERVAL",
    "EVENT_COLUMNS",
    "MAX_LAG",
    "MAX_PENDING",
    "PROC_COLUMNS",
    "PRUNE_CHUNK",
    "PRUNE_INTERVAL",
    "RECORD_LINGER",
    "SCHEMA",
    "SCHEMA_VERSION",
    "Lifetime",
    "LifetimeQuery",
    "Recorded",
    "StoreError",
    "StoreReader",
    "StoreSink",
    "StoreWriter",
    "check_file",
    "database_bytes",
    "decode_argv",
    "decode_text",
    "default_db_path",
    "encode_argv",
    "encode_text",
]

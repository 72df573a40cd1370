"""The rows a recorder ships, as NATS messages: pure, stdlib only.

One message holds consecutive rows of one table of one store (events by id,
lifetimes by revision, sessions), as JSON::

    {"v": 1, "host": "web-1", "store": "9f3c...", "kind": "events",
     "columns": ["id", "proc", "ts", ...], "rows": [[41, 7, ...], ...]}

A value that is bytes in SQLite (an argv, text that is not valid UTF-8) is
``{"b64": "..."}``.  Rows are batched because JetStream acknowledges each
message: one message per event would ship a few thousand events a second
here, far below what the recorder records (bench/README.md).  The subject
is ``PREFIX.HOST.KIND`` (``.`` in a host name becomes ``_``: subjects split
at dots); the message id (JetStream's ``Nats-Msg-Id``, its duplicate
window) is ``HOST:STORE:KIND:FIRST-LAST:MAC``, MAC an HMAC of the message
under the store's own secret: the store's random id tells a database
recreated on the same host from the one before, and the MAC makes the id
of a message not sent yet unguessable, so nobody can take it first and
have JetStream drop the real one as a duplicate.  The collector drops any
row it already has by (store, id).

:func:`decode` checks every value against its column as the store declares
it (store/schema.py's SCHEMA: type, NOT NULL, SQLite's 64-bit integers),
so that what it lets through can be written as it is.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import math
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ..store.schema import EVENT_COLUMNS, PROC_COLUMNS, SCHEMA

VERSION: Final = 1
KINDS: Final = ("sessions", "procs", "events")
SESSION_COLUMNS: Final = (
    "id", "started_wall", "clock_offset", "boot_id", "hostname", "recorder_pid", "version", "ended", "ended_wall",
)
SHIPPED_EVENT_COLUMNS: Final = ("id", *EVENT_COLUMNS)
#: The columns a message of each kind ships (it may have more, which the collector ignores).
COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "sessions": SESSION_COLUMNS, "procs": PROC_COLUMNS, "events": SHIPPED_EVENT_COLUMNS,
}
#: SQLite's integers.
INT_MIN: Final = -(2**63)
INT_MAX: Final = 2**63 - 1
#: Hex digits of the HMAC in a message id (128 bits).
MAC_DIGITS: Final = 32
#: A message is closed once its JSON passes this size (NATS' default
#: max_payload is 1 MiB; one row is at most an argv of 256 KiB, base64).
MAX_BYTES: Final = 256 * 1024
#: ... or holds this many rows.
MAX_ROWS: Final = 1000


class BadMessage(ValueError):
    """Not a message of ours; ``str()`` says why in one line."""


@dataclass(frozen=True, slots=True)
class Message:
    subject: str
    msg_id: str
    payload: bytes
    kind: str
    #: The last row's id (events, sessions) or revision (procs): the cursor once acknowledged.
    last: int
    rows: int


@dataclass(frozen=True, slots=True)
class Batch:
    """A decoded message."""

    host: str
    store: str
    kind: str
    columns: list[str]
    rows: list[list[Any]]


def subject_token(host: str) -> str:
    return host.replace(".", "_") or "_"


def _default(value: object) -> object:
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode("ascii")}
    raise TypeError(f"cannot ship a {type(value).__name__}")


def _hook(obj: dict[str, Any]) -> object:
    if len(obj) == 1 and isinstance(obj.get("b64"), str):
        try:
            return base64.b64decode(obj["b64"], validate=True)
        except ValueError:  # binascii.Error
            raise BadMessage("a b64 value is not base64") from None
    return obj  # anything else stays a dict, which no column takes


def encode(
    prefix: str, host: str, store: str, kind: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
    order: int = 0, *, secret: bytes,
) -> Iterator[Message]:
    """``rows`` (in cursor order; ``order`` is the column that is the
    cursor) as messages of at most MAX_ROWS rows and about MAX_BYTES.
    ``secret`` is the store's (outbox.py): the key of the ids' MAC."""
    subject = f"{prefix}.{subject_token(host)}.{kind}"
    head = json.dumps({"v": VERSION, "host": host, "store": store, "kind": kind, "columns": list(columns)})[:-1]
    dumps = json.JSONEncoder(separators=(",", ":"), default=_default, ensure_ascii=False).encode
    start = 0
    while start < len(rows):
        parts: list[str] = []
        size = 0
        end = start
        while end < len(rows) and len(parts) < MAX_ROWS and (not parts or size < MAX_BYTES):
            part = dumps(list(rows[end]))
            parts.append(part)
            size += len(part)
            end += 1
        first, last = rows[start][order], rows[end - 1][order]
        payload = f'{head},"rows":[{",".join(parts)}]}}'.encode("utf-8", "surrogatepass")
        # Over the payload too: a session row changes (its end), and each
        # state is a message of its own; the same rows sent again (their
        # acknowledgement was lost) have the same id, which JetStream drops.
        mac = hmac.new(secret, f"{kind}:{first}-{last}:".encode() + payload, hashlib.sha256).hexdigest()
        msg_id = f"{host}:{store}:{kind}:{first}-{last}:{mac[:MAC_DIGITS]}"
        yield Message(subject, msg_id, payload, kind, last, end - start)
        start = end


def decode(payload: bytes) -> Batch:
    try:
        data = json.loads(payload.decode("utf-8", "surrogatepass"), object_hook=_hook)
    except BadMessage:
        raise
    except RecursionError:  # [[[[... a megabyte deep
        raise BadMessage("not JSON: nested too deep") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadMessage(f"not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("v") != VERSION:
        raise BadMessage("not a procevents message (version 1)")
    host, store, kind, columns, rows = (data.get(k) for k in ("host", "store", "kind", "columns", "rows"))
    if not (isinstance(host, str) and isinstance(store, str) and kind in KINDS):
        raise BadMessage("no host, store or kind")
    if not (isinstance(columns, list) and all(isinstance(c, str) for c in columns) and isinstance(rows, list)):
        raise BadMessage("no columns or rows")
    if not all(isinstance(row, list) and len(row) == len(columns) for row in rows):
        raise BadMessage("a row does not match the columns")
    batch = Batch(host, store, str(kind), columns, rows)
    check(batch)
    return batch


@functools.cache
def column_rules(kind: str) -> tuple[tuple[str, str, bool], ...]:
    """(name, declared type, may be NULL) of each column a message of
    ``kind`` ships, read from the schema itself (an in-memory database made
    from store/schema.py's SCHEMA), not from a second list that could
    drift from it.  A row's own id (the table's INTEGER PRIMARY KEY, which
    SQLite declares nullable) is required: it is the row's key here."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.executescript(SCHEMA)
        declared = {
            str(name): (str(kind_).upper(), not notnull and not pk)
            for _, name, kind_, notnull, _, pk in conn.execute(f"PRAGMA table_info({kind})")
        }
    finally:
        conn.close()
    return tuple((name, *declared[name]) for name in COLUMNS[kind])


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (JSON's "\\ud800"): SQLite cannot bind it
        return False
    return True


def _integer(value: object) -> bool:
    return type(value) is int and INT_MIN <= value <= INT_MAX


def _real(value: object) -> bool:
    if type(value) is float:
        return math.isfinite(value)
    return type(value) is int and INT_MIN <= value <= INT_MAX


def _text(value: object) -> bool:
    if isinstance(value, str):
        return value.isascii() or _utf8(value)
    return type(value) is bytes


#: TEXT and BLOB take both: text that is not valid UTF-8 is stored as its
#: bytes (store/schema.py's encode_text), a lost event's reason as text.
_FITS: Final[dict[str, Callable[[object], bool]]] = {"INTEGER": _integer, "REAL": _real, "TEXT": _text, "BLOB": _text}


def fits(value: object, declared: str) -> bool:
    """Can ``value`` (not None) be stored as it is in a column of that type?"""
    test = _FITS.get(declared)
    return test is not None and test(value)


def _nothing(value: object) -> bool:
    return False  # a column type the schema may declare one day: nothing is known to fit it


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check(batch: Batch) -> None:
    """Every column its kind ships is there, every value fits its column,
    and a row's host (procs, events) is the message's: else BadMessage,
    saying which row and column (the caller escapes it: values are the
    sender's)."""
    index = {c: i for i, c in enumerate(batch.columns)}
    rules = column_rules(batch.kind)
    missing = [name for name, _, _ in rules if name not in index]
    if missing:
        raise BadMessage(f"{batch.kind} without {', '.join(missing)}")
    at = [(index[name], name, declared, _FITS.get(declared, _nothing), nullable) for name, declared, nullable in rules]
    at_host = index.get("host") if batch.kind != "sessions" else None
    for number, row in enumerate(batch.rows, 1):
        for i, name, declared, test, nullable in at:
            value = row[i]
            if value is None:
                if not nullable:
                    raise BadMessage(f"row {number}: {name} is null")
            elif not test(value):
                raise BadMessage(f"row {number}: {name} is {_shown(value)}, not {declared}")
        if at_host is not None and row[at_host] not in (None, batch.host):
            raise BadMessage(f"row {number}: host {_shown(row[at_host])} in a message of host {batch.host!r}")

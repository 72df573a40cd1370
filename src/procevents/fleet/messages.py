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
window) is ``HOST:STORE:KIND:FIRST-LAST``: the store's random id tells a
database recreated on the same host from the one before, so ids never
collide, and the collector drops any row it already has by (store, id).
"""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

VERSION: Final = 1
KINDS: Final = ("sessions", "procs", "events")
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
    if len(obj) == 1 and "b64" in obj:
        return base64.b64decode(obj["b64"])
    return obj


def encode(
    prefix: str, host: str, store: str, kind: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
    order: int = 0,
) -> Iterator[Message]:
    """``rows`` (in cursor order; ``order`` is the column that is the
    cursor) as messages of at most MAX_ROWS rows and about MAX_BYTES."""
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
        msg_id = f"{host}:{store}:{kind}:{first}-{last}"
        if kind == "sessions":  # a session row changes (its end): each state is a message of its own
            msg_id += f":{zlib.crc32(payload):08x}"
        yield Message(subject, msg_id, payload, kind, last, end - start)
        start = end


def decode(payload: bytes) -> Batch:
    try:
        data = json.loads(payload.decode("utf-8", "surrogatepass"), object_hook=_hook)
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
    return Batch(host, store, str(kind), columns, rows)

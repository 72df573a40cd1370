"""procevents: watch every process on a Linux host as it is born, changes and dies.

Built on the kernel's process events connector (NETLINK_CONNECTOR,
CN_IDX_PROC)::

    import procevents

    with procevents.watch(events="exec,exit") as records:
        for record in records:
            print(record.event.name, record.pid, record.comm, record.cmdline)

``listen()`` gives the bare kernel events instead.

Names are imported on first use (PEP 562), so ``procevents --help`` does
not pay for the socket and event modules.
"""

from __future__ import annotations

import importlib

# Not typing.TYPE_CHECKING: importing typing costs `procevents --help` 5 ms
# (mypy treats any constant of this name the same way).
TYPE_CHECKING = False

__version__ = "0.1.0"

_EXPORTS = {
    "DEFAULT_RCVBUF": "connector",
    "AsyncStream": "aio",
    "Connector": "connector",
    "ConnectorError": "connector",
    "Terminated": "connector",
    "alisten": "aio",
    "listen": "connector",
    "EVENT_NAMES": "events",
    "Ack": "events",
    "Comm": "events",
    "Coredump": "events",
    "Event": "events",
    "Exec": "events",
    "Exit": "events",
    "Fork": "events",
    "Gid": "events",
    "Lost": "events",
    "Ptrace": "events",
    "Sid": "events",
    "Uid": "events",
    "Unknown": "events",
    "Record": "records",
    "Watch": "records",
    "watch": "records",
    "DecodeError": "wire",
    "decode": "wire",
    "decode_all": "wire",
}

__all__ = [
    "DEFAULT_RCVBUF",
    "EVENT_NAMES",
    "Ack",
    "AsyncStream",
    "Comm",
    "Connector",
    "ConnectorError",
    "Coredump",
    "DecodeError",
    "Event",
    "Exec",
    "Exit",
    "Fork",
    "Gid",
    "Lost",
    "Ptrace",
    "Record",
    "Sid",
    "Terminated",
    "Uid",
    "Unknown",
    "Watch",
    "alisten",
    "decode",
    "decode_all",
    "listen",
    "watch",
]

if TYPE_CHECKING:
    from typing import Any

    from .aio import AsyncStream, alisten
    from .connector import (
        DEFAULT_RCVBUF,
        Connector,
        ConnectorError,
        Terminated,
        listen,
    )
    from .events import (
        EVENT_NAMES,
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
    )
    from .records import Record, Watch, watch
    from .wire import DecodeError, decode, decode_all


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'procevents' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])

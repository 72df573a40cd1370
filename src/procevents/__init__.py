"""procevents: watch every process on a Linux host as it is born, changes and dies.

Built on the kernel's process events connector (NETLINK_CONNECTOR,
CN_IDX_PROC)::

    import procevents

    with procevents.listen(events={"exec", "exit"}) as stream:
        for event in stream:
            print(event.name, event.pid)
"""

from .connector import (
    DEFAULT_RCVBUF,
    AsyncStream,
    Connector,
    ConnectorError,
    Terminated,
    alisten,
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
from .wire import DecodeError, decode, decode_all

__version__ = "0.1.0"

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
    "Sid",
    "Terminated",
    "Uid",
    "Unknown",
    "alisten",
    "decode",
    "decode_all",
    "listen",
]

"""Who a process is, across a fleet: host, boot, start time and pid.

A pid names a process only until it is reused; with the boot's random id and
the start time it names one process on one host for ever.  The start time
is counted in clock ticks since boot, as /proc/PID/stat's ``starttime``:
a process seen from its fork (an event's CLOCK_MONOTONIC stamp) and the
same process found running by a later recorder (/proc) get the same id,
except when its fork fell within microseconds before a tick boundary.
Tetragon calls this ``exec_id``; so do we, in every event and lifetime.
"""

from __future__ import annotations

import os
from typing import Final

from .procfs import CLOCK_TICKS, boot_id
from .proctable import Proc

_NS: Final = 1_000_000_000


def host_name() -> str:
    """This machine's name (the kernel's nodename)."""
    return os.uname().nodename


class Identity:
    """Builds exec ids: ``HOST:BOOT_ID:START_TICKS:PID``."""

    __slots__ = ("_prefix", "boot", "boot_offset_ns", "host")

    def __init__(self, host: str | None = None, boot: str | None = None, *, boot_offset_ns: int = 0) -> None:
        self.host = host or host_name()
        self.boot = boot or boot_id() or "unknown-boot"
        #: CLOCK_BOOTTIME minus CLOCK_MONOTONIC, as the process table uses it.
        self.boot_offset_ns = boot_offset_ns
        self._prefix = f"{self.host}:{self.boot}:"

    def exec_id(self, pid: int, start_ns: int | None) -> str | None:
        """The id of the process ``pid`` started at ``start_ns``
        (CLOCK_MONOTONIC); None when the start is unknown."""
        if start_ns is None:
            return None
        return f"{self._prefix}{(start_ns + self.boot_offset_ns) * CLOCK_TICKS // _NS}:{pid}"

    def of(self, proc: Proc) -> str | None:
        """``proc``'s exec id (kept with it once known)."""
        known = proc.exec_id
        if known is not None:
            return known
        found = proc.exec_id = self.exec_id(proc.pid, proc.start_ns)
        return found

    def parent_of(self, proc: Proc, parent: Proc | None) -> str | None:
        """The exec id of ``proc``'s parent (the one that forked it: kept
        with ``proc`` once known, so reparenting does not change it)."""
        known = proc.parent_exec_id
        if known is not None:
            return known
        if parent is None or parent is proc:
            return None
        found = proc.parent_exec_id = self.of(parent)
        return found

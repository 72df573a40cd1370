"""Fast wall-clock formatting of event timestamps (cached per second)."""

from __future__ import annotations

import time

from ..events import wall_clock_ns


class Clock:
    """Formats CLOCK_MONOTONIC event timestamps; caches the per-second part."""

    __slots__ = ("_iso_prefix", "_iso_sec", "_local_prefix", "_local_sec")

    def __init__(self) -> None:
        self._iso_sec = -1
        self._iso_prefix = ""
        self._local_sec = -1
        self._local_prefix = ""

    def iso_utc(self, timestamp_ns: int) -> str:
        """``2026-11-21T10:40:01.123456Z``."""
        ns = wall_clock_ns(timestamp_ns)
        sec, rem = divmod(ns, 1_000_000_000)
        if sec != self._iso_sec:
            self._iso_sec = sec
            self._iso_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        return f"{self._iso_prefix}.{rem // 1000:06d}Z"

    def local_ms(self, timestamp_ns: int) -> str:
        """``10:40:01.123`` in local time."""
        ns = wall_clock_ns(timestamp_ns)
        sec, rem = divmod(ns, 1_000_000_000)
        if sec != self._local_sec:
            self._local_sec = sec
            self._local_prefix = time.strftime("%H:%M:%S", time.localtime(sec))
        return f"{self._local_prefix}.{rem // 1_000_000:03d}"

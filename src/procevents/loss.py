"""Loss accounting, pure: turns sequence gaps and drop counters into Lost events.

Two sources, reconciled so no loss is counted twice:

* the kernel's per-CPU event counter (``cn_msg.seq``): with an all-events
  subscription every generated event reaches the socket, so a gap between
  consecutive seq values of one CPU is exactly the number of that CPU's
  events lost (a tail loss shows only when the CPU's next event arrives);
* the socket's drop counter (SO_MEMINFO): exact, immediate, and valid with a
  kernel filter too, but it cannot say which CPU.

Both count the same losses, each a lower bound of the truth at any moment, so
``reported`` (the running total put in the stream) is the larger of the two
totals: a source only ever reports what goes beyond it.
"""

from __future__ import annotations

from .events import Event, Lost

_U32 = 1 << 32
_HALF = 1 << 31


class LossTracker:
    """Feed it every decoded event (acks excluded) and every drop-counter read."""

    __slots__ = ("_drops_base", "_gap_total", "_next_seq", "reported", "track_seq")

    def __init__(self, track_seq: bool) -> None:
        #: Only meaningful with an all-events subscription: a kernel filter
        #: makes gaps that are not losses.
        self.track_seq = track_seq
        self.reported = 0
        self._next_seq: list[int] = []
        self._gap_total = 0
        self._drops_base: int | None = None

    def on_event(self, event: Event) -> Lost | None:
        """Return a Lost to put in the stream before ``event``, or None."""
        if not self.track_seq:
            return None
        cpu = event.cpu
        expected = self._next_seq
        if cpu >= len(expected):
            if cpu > 65535:  # not a real CPU number: a malformed datagram
                return None
            expected.extend([-1] * (cpu + 1 - len(expected)))
        want = expected[cpu]
        seq = event.seq
        expected[cpu] = (seq + 1) % _U32
        if want < 0 or seq == want:
            return None
        gap = (seq - want) % _U32
        if gap >= _HALF:  # went backwards: resynchronise, nothing lost
            return None
        self._gap_total += gap
        excess = self._gap_total - self.reported
        if excess <= 0:
            return None
        self.reported = self._gap_total
        return Lost(cpu, seq, event.timestamp_ns, excess, "seq-gap")

    def on_drops(self, drops: int, now_ns: int, reason: str = "drops") -> Lost | None:
        """Read of the socket's cumulative drop counter; the first read is the base."""
        if self._drops_base is None:
            self._drops_base = drops
            return None
        dropped = drops - self._drops_base
        excess = dropped - self.reported
        if excess <= 0:
            return None
        self.reported = dropped
        return Lost(-1, 0, now_ns, excess, reason)

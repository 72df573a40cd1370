"""The wall clock of every view (render/clock.py): its per-second cache and microsecond digits."""

from __future__ import annotations

from helpers import TS

from procevents.events import (
    Exec,
    wall_clock_ns,
)
from procevents.render.clock import Clock
from procevents.render.jsonl import event_fields


def test_clock_cache_across_seconds() -> None:
    clock = Clock()
    a = Exec(0, 0, TS, 1, 1)
    b = Exec(0, 0, TS + 1_000_000_000, 1, 1)
    c = Exec(0, 0, TS + 1000, 1, 1)
    for ev in (a, b, c, a):
        assert event_fields(ev, clock)["time"] == ev.time.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_clock_iso_micro_digits() -> None:
    clock = Clock()
    wall = wall_clock_ns(TS)
    out = clock.iso_utc(TS)
    assert out.endswith(f".{(wall // 1000) % 1_000_000:06d}Z")

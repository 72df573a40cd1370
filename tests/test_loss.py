"""LossTracker: per-CPU sequence gaps and drop counters, reconciled."""

from __future__ import annotations

from procevents.events import Event, Exec, Lost
from procevents.loss import LossTracker

U32 = 0xFFFFFFFF


def ev(cpu: int, seq: int, ts: int = 1000) -> Event:
    return Exec(cpu, seq, ts, 1, 1)


def feed(tracker: LossTracker, events: list[Event]) -> list[Event]:
    """The stream as a consumer sees it: each Lost placed before its event."""
    out: list[Event] = []
    for e in events:
        lost = tracker.on_event(e)
        if lost is not None:
            out.append(lost)
        out.append(e)
    return out


def lost_of(stream: list[Event]) -> list[Lost]:
    return [e for e in stream if isinstance(e, Lost)]


# --------------------------------------------------------------------------
# sequence gaps


def test_first_event_sets_baseline() -> None:
    t = LossTracker(track_seq=True)
    assert t.on_event(ev(0, 5000)) is None
    assert t.on_event(ev(1, 77)) is None
    assert t.reported == 0


def test_consecutive_is_no_loss() -> None:
    t = LossTracker(track_seq=True)
    assert lost_of(feed(t, [ev(0, s) for s in range(10, 20)])) == []
    assert t.reported == 0


def test_gap_reports_lost_before_event() -> None:
    t = LossTracker(track_seq=True)
    a, b, c = ev(2, 10), ev(2, 11), ev(2, 15, ts=5555)
    stream = feed(t, [a, b, c])
    assert len(stream) == 4
    assert stream[:2] == [a, b]
    lost = stream[2]
    assert isinstance(lost, Lost)
    assert lost.count == 3  # 12, 13, 14
    assert lost.cpu == 2
    assert lost.reason == "seq-gap"
    assert lost.timestamp_ns == 5555
    assert stream[3] is c
    assert t.reported == 3


def test_gap_of_one() -> None:
    t = LossTracker(track_seq=True)
    t.on_event(ev(0, 1))
    lost = t.on_event(ev(0, 3))
    assert lost is not None
    assert lost.count == 1


def test_gaps_are_per_cpu() -> None:
    t = LossTracker(track_seq=True)
    events = [
        ev(0, 100),
        ev(1, 500),
        ev(0, 101),
        ev(1, 501),
        ev(0, 102),
        ev(1, 505),  # cpu 1 lost 502..504
        ev(0, 110),  # cpu 0 lost 103..109
        ev(3, 0),  # first on cpu 3: baseline
        ev(3, 1),
    ]
    stream = feed(t, events)
    lost = lost_of(stream)
    assert [(x.cpu, x.count) for x in lost] == [(1, 3), (0, 7)]
    # Each Lost immediately precedes the event that revealed it.
    for i, e in enumerate(stream):
        if isinstance(e, Lost):
            nxt = stream[i + 1]
            assert not isinstance(nxt, Lost)
            assert nxt.cpu == e.cpu
    assert t.reported == 10


def test_interleaved_cpus_no_false_gap() -> None:
    t = LossTracker(track_seq=True)
    events = [ev(cpu, seq) for seq in range(5) for cpu in (0, 7, 3)]
    assert lost_of(feed(t, events)) == []


def test_u32_wraparound_is_no_loss() -> None:
    t = LossTracker(track_seq=True)
    assert t.on_event(ev(0, U32 - 1)) is None
    assert t.on_event(ev(0, U32)) is None
    assert t.on_event(ev(0, 0)) is None
    assert t.on_event(ev(0, 1)) is None
    assert t.reported == 0


def test_gap_across_wraparound() -> None:
    t = LossTracker(track_seq=True)
    t.on_event(ev(0, U32 - 1))
    lost = t.on_event(ev(0, 2))  # lost 0xFFFFFFFF, 0, 1
    assert lost is not None
    assert lost.count == 3
    assert lost.cpu == 0


def test_backwards_jump_is_no_loss() -> None:
    t = LossTracker(track_seq=True)
    t.on_event(ev(0, 1000))
    assert t.on_event(ev(0, 10)) is None
    assert t.reported == 0
    # Resynchronised on the new value.
    assert t.on_event(ev(0, 11)) is None
    lost = t.on_event(ev(0, 13))
    assert lost is not None
    assert lost.count == 1


def test_repeated_seq_is_no_loss() -> None:
    t = LossTracker(track_seq=True)
    t.on_event(ev(0, 50))
    assert t.on_event(ev(0, 50)) is None
    assert t.reported == 0


def test_track_seq_false_ignores_gaps() -> None:
    t = LossTracker(track_seq=False)
    assert lost_of(feed(t, [ev(0, 1), ev(0, 100), ev(1, 5), ev(1, 1_000_000)])) == []
    assert t.reported == 0


def test_reported_accumulates_gaps() -> None:
    t = LossTracker(track_seq=True)
    feed(t, [ev(0, 0), ev(0, 5), ev(1, 0), ev(1, 3), ev(0, 7)])
    assert t.reported == 4 + 2 + 1


# --------------------------------------------------------------------------
# drop counter


def test_first_drops_read_is_base() -> None:
    t = LossTracker(track_seq=True)
    assert t.on_drops(1234, now_ns=1) is None
    assert t.reported == 0


def test_drop_increase_reported_once_with_cpu_minus_one() -> None:
    t = LossTracker(track_seq=False)
    assert t.on_drops(10, now_ns=1) is None
    lost = t.on_drops(15, now_ns=777)
    assert lost is not None
    assert lost.count == 5
    assert lost.cpu == -1
    assert lost.reason == "drops"
    assert lost.timestamp_ns == 777
    # Same counter again: nothing new.
    assert t.on_drops(15, now_ns=778) is None
    lost2 = t.on_drops(18, now_ns=779)
    assert lost2 is not None
    assert lost2.count == 3
    assert t.reported == 8


def test_drops_custom_reason() -> None:
    t = LossTracker(track_seq=False)
    t.on_drops(0, now_ns=0)
    lost = t.on_drops(4, now_ns=1, reason="enobufs")
    assert lost is not None
    assert lost.reason == "enobufs"


def test_drops_base_nonzero_first_read() -> None:
    # Drops before we started reading are not ours to report.
    t = LossTracker(track_seq=False)
    assert t.on_drops(1_000_000, now_ns=0) is None
    assert t.on_drops(1_000_000, now_ns=1) is None
    lost = t.on_drops(1_000_001, now_ns=2)
    assert lost is not None
    assert lost.count == 1


def test_gap_then_drops_not_double_counted() -> None:
    t = LossTracker(track_seq=True)
    t.on_drops(0, now_ns=0)
    t.on_event(ev(0, 0))
    lost = t.on_event(ev(0, 6))  # 5 lost, seen via seq
    assert lost is not None
    assert lost.count == 5
    # The drop counter now says the same 5: already reported.
    assert t.on_drops(5, now_ns=1) is None
    assert t.reported == 5
    # It says 8: only 3 more.
    more = t.on_drops(8, now_ns=2)
    assert more is not None
    assert more.count == 3
    assert more.cpu == -1
    assert t.reported == 8


def test_drops_then_gap_not_double_counted() -> None:
    t = LossTracker(track_seq=True)
    t.on_drops(100, now_ns=0)
    t.on_event(ev(1, 10))
    lost = t.on_drops(104, now_ns=1)
    assert lost is not None
    assert lost.count == 4
    # The gap shows up later for the same 4 losses: nothing new.
    assert t.on_event(ev(1, 15)) is None
    assert t.reported == 4
    # A further gap goes beyond the drop total: only the excess.
    lost2 = t.on_event(ev(1, 18))  # 2 more by seq: gap total 6
    assert lost2 is not None
    assert lost2.count == 2
    assert lost2.cpu == 1
    assert t.reported == 6


def test_reported_is_max_of_totals() -> None:
    t = LossTracker(track_seq=True)
    t.on_drops(0, now_ns=0)
    gap_total = 0
    drops = 0
    total_lost_reported = 0
    seqs = {0: 0, 1: 0}
    for cpu in seqs:
        t.on_event(ev(cpu, 0))
    script = [
        ("gap", 0, 3), ("drops", 2), ("gap", 1, 4), ("drops", 9), ("gap", 0, 1), ("drops", 2), ("gap", 1, 5),
    ]
    for step in script:
        if step[0] == "gap":
            _, cpu, n = step
            seqs[cpu] += n + 1
            gap_total += n
            lost = t.on_event(ev(cpu, seqs[cpu]))
        else:
            drops += step[1]
            lost = t.on_drops(drops, now_ns=0)
        if lost is not None:
            assert lost.count > 0
            total_lost_reported += lost.count
        assert t.reported == max(gap_total, drops)
        assert total_lost_reported == t.reported


def test_drops_with_track_seq_false_still_count() -> None:
    t = LossTracker(track_seq=False)
    t.on_drops(0, now_ns=0)
    t.on_event(ev(0, 0))
    t.on_event(ev(0, 100))
    lost = t.on_drops(3, now_ns=1)
    assert lost is not None
    assert lost.count == 3


def test_lost_events_are_exact() -> None:
    """The whole Lost: the CPU and seq of the event that showed the gap, its
    time, the count and the reason; from the drop counter cpu -1 and seq 0."""
    t = LossTracker(track_seq=True)
    t.on_event(ev(3, 10, ts=100))
    assert t.on_event(ev(3, 15, ts=200)) == Lost(3, 15, 200, 4, "seq-gap")
    assert t.on_drops(0, 300) is None
    assert t.on_drops(9, 400) == Lost(-1, 0, 400, 5, "drops")
    assert t.on_drops(12, 500, "enobufs") == Lost(-1, 0, 500, 3, "enobufs")


def test_gap_right_after_the_last_seq_before_wrapping() -> None:
    """After 0xFFFFFFFF the next seq expected is 0: 0 is no loss, 5 is five."""
    t = LossTracker(track_seq=True)
    t.on_event(ev(0, U32))
    assert t.on_event(ev(0, 0)) is None
    t = LossTracker(track_seq=True)
    t.on_event(ev(0, U32))
    assert t.on_event(ev(0, 5, ts=7)) == Lost(0, 5, 7, 5, "seq-gap")


def test_the_highest_cpu_number_is_tracked_and_beyond_ignored() -> None:
    """CPU numbers up to 65535 are tracked; a larger one is taken for a
    malformed datagram and never reports loss (nor grows the table)."""
    t = LossTracker(track_seq=True)
    t.on_event(ev(65535, 1))
    assert t.on_event(ev(65535, 4, ts=9)) == Lost(65535, 4, 9, 2, "seq-gap")
    t.on_event(ev(65536, 1))
    assert t.on_event(ev(65536, 100)) is None
    assert t.on_event(ev(1 << 31, 1)) is None
    assert t.reported == 2

"""The counting behind ``-S`` (stats.py): events per type and the top
commands by each measure, bounded, checked directly on the observer.  The
table from the real command line, at exit and on SIGUSR1:
test_cli_reporting.py.
"""

from __future__ import annotations

import pytest

from procevents.events import Exec, Exit, Fork, Lost
from procevents.stats import MAX_COMMANDS, OTHER, CommandStats, Summary


def test_counting_is_bounded() -> None:
    stats = CommandStats(top=3)
    for i in range(MAX_COMMANDS + 50):
        stats(Exec(0, i, i, 100 + i, 100 + i), None, {"comm": f"cmd{i}"})
    assert len(stats.commands) == MAX_COMMANDS + 1
    assert stats.commands[OTHER].execs == 50
    assert stats.events["exec"] == MAX_COMMANDS + 50


def test_leaders_are_the_top_by_each_measure() -> None:
    stats = CommandStats(top=2)
    feed = [
        ("forker", Fork(0, 1, 1, 10, 10, 11, 11), {"comm": "forker"}, 5),
        ("busy", Exec(0, 2, 2, 12, 12), {"comm": "busy"}, 4),
        ("flaky", Exit(0, 3, 3, 13, 13, 256, 17, 10, 10), {"comm": "flaky", "duration": 0.5}, 3),
        ("slow", Exit(0, 4, 4, 14, 14, 0, 17, 10, 10), {"comm": "slow", "duration": 100.0}, 1),
        ("quiet", Exec(0, 5, 5, 15, 15), {"comm": "quiet"}, 1),
        ("burner", Exit(0, 8, 8, 16, 16, 0, 17, 10, 10), {"comm": "burner", "utime": 2.0, "stime": 0.5}, 2),
    ]
    for _name, event, info, times in feed:
        for _ in range(times):
            stats(event, None, info)
    # a thread's birth and death count for nothing
    stats(Fork(0, 6, 6, 10, 10, 99, 10), None, {"comm": "forker"})
    stats(Exit(0, 7, 7, 99, 10, 256, -1, 0, 0), None, {"comm": "forker"})
    leaders = dict(stats.leaders())
    assert leaders["forker"].forks == 5
    assert (leaders["busy"].execs, leaders["quiet"].execs) == (4, 1)
    assert leaders["flaky"].failures == 3 and leaders["flaky"].lifetime == pytest.approx(1.5)
    assert leaders["slow"].lifetime == 100.0
    assert leaders["burner"].cpu == 5.0 and leaders["slow"].cpu == 0.0  # CPU only from taskstats' figures
    assert next(iter(leaders)) == "forker"
    burner_row = next(line.split() for line in stats.lines() if line.split()[:1] == ["burner"])
    assert burner_row[-1] == "5.000s"
    lines = stats.lines()
    assert lines[0] == "statistics: events by type"
    assert any(line.split()[:2] == ["fork", "6"] for line in lines)


def test_summary_api_unchanged() -> None:
    summary = Summary()
    summary.add(Exec(0, 1, 1, 2, 2))
    assert summary.line() == "1 event received (exec 1), 0 events lost"



def test_the_table_says_1_event_lost_and_counts_with_commas() -> None:
    stats = CommandStats()
    stats(Lost(-1, 0, 1, 1, "drops"), None, {})
    assert "  (1 event lost)" in stats.lines()
    stats(Lost(-1, 0, 2, 1233, "drops"), None, {})
    assert "  (1,234 events lost)" in stats.lines()

"""``-S``: events per type and the top commands, at exit and on SIGUSR1.

The command line runs against the real kernel with ``-p`` on a root the
test controls, so the table's numbers are exact; the counting's bounds are
checked directly on the observer.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import (
    TIMEOUT,
    Cli,
    Gated,
    cli_processes,
    gated_children_script,
    json_lines,
    links_to,
    skip_unless_connector,
    wait_until,
)

from procevents.events import Exec, Exit, Fork
from procevents.stats import MAX_COMMANDS, OTHER, CommandStats, Summary


@pytest.fixture
def cli() -> Iterator[Callable[..., Cli]]:
    skip_unless_connector()
    yield from cli_processes()


def _table(stderr: str, which: int = -1) -> dict[str, list[str]]:
    """The rows of one printed table (the last by default), by first cell."""
    blocks = stderr.split("procevents: statistics: events by type\n")[1:]
    assert blocks, stderr
    rows: dict[str, list[str]] = {}
    for line in blocks[which].splitlines():
        if not line.startswith("procevents:   ") or "statistics:" in line:
            continue
        cells = line[len("procevents:   ") :].split()
        rows[cells[0]] = cells[1:]
    return rows


def test_stats_table_at_exit_and_on_sigusr1(cli: Callable[..., Cli], tmp_path: Path) -> None:
    spawn = links_to(tmp_path, "pe-spawn", "sh")
    children = [(links_to(tmp_path, "pe-fail", "sh"), "exit 1")] * 3 + [
        (links_to(tmp_path, "pe-ok", "sh"), "exit 0"),
        # renames itself with terminal escapes, then fails
        (links_to(tmp_path, "pe-evil", "sh"), 'printf "\\033[2Jevil" > /proc/$$/comm; exit 1'),
    ]
    root = Gated([spawn, "-c", gated_children_script(children)])
    out = tmp_path / "out.jsonl"
    try:
        # --keep-running: SIGUSR1 is sent again after the tree has exited.
        c = cli("-S", "-p", str(root.pid), "--keep-running", "--json", "-o", str(out))
        c.wait_listening()
        c.proc.send_signal(signal.SIGUSR1)
        c.err.wait_for(lambda line: b"statistics: events by type" in line)
        assert root.proc.stdin is not None
        root.proc.stdin.write(b"start\n")
        root.proc.stdin.flush()

        def execs_read() -> bool:
            return sum(1 for e in json_lines(out) if e["event"] == "exec" and e.get("cmdline")) == len(children)

        wait_until(execs_read, "the children's execs, argv read")
        root.proc.stdin.write(b"go\n" * len(children))
        root.proc.stdin.close()
        assert root.proc.wait(TIMEOUT) == 0
    finally:
        root.cleanup()
    wait_until(lambda: any(e["event"] == "exit" and e["pid"] == root.pid for e in json_lines(out)), "the root's exit")
    c.proc.send_signal(signal.SIGUSR1)
    c.err.wait_for(lambda line: line.startswith(b"procevents:   pe-fail"))
    assert c.stop() == 0, c.err.text
    err = c.err.text
    assert err.count("statistics: events by type") == 3  # two SIGUSR1, one at exit
    # After SIGUSR1 it keeps going, and the summary line comes last.
    assert re.search(r"procevents: \d+ events shown .* of \d+ events received", err.splitlines()[-1])
    assert "\x1b" not in err  # escaped for the terminal
    for which in (1, 2):
        rows = _table(err, which)
        assert rows["fork"] == ["5"] and rows["exec"] == ["5"] and rows["exit"] == ["6"], rows
        assert rows["comm"] == ["1"], rows
        assert rows["pe-spawn"][:3] == ["5", "0", "0"], rows  # forks, execs, failed
        assert rows["pe-fail"][:3] == ["0", "3", "3"], rows
        assert rows["pe-ok"][:3] == ["0", "1", "0"], rows
        assert rows["pe-evil"][:3] == ["0", "1", "0"], rows  # exec'd under this name...
        assert rows["\\x1b[2Jevil"][:3] == ["0", "0", "1"], rows  # ... failed under the new one
        assert rows["COMMAND"] == ["FORKS", "EXECS", "FAILED", "LIFETIME", "CPU"]
    first = _table(err, 0)
    assert "pe-fail" not in first  # nothing happened yet at the first SIGUSR1


def test_without_stats_sigusr1_prints_the_summary_and_goes_on(cli: Callable[..., Cli]) -> None:
    """SIGUSR1 means "statistics" everywhere: without -S, the summary so far;
    it never ends procevents (its default action would leave the kernel
    subscription behind)."""
    c = cli("-o", "/dev/null")
    c.wait_listening()
    os.kill(c.pid, signal.SIGUSR1)
    c.err.wait_for(lambda line: b"events received" in line)
    assert c.proc.poll() is None, "SIGUSR1 ended procevents"
    assert c.stop(signal.SIGTERM) == 0
    assert len(re.findall(r"procevents: \d+ events received", c.err.text)) == 2  # SIGUSR1, then the exit


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

"""-S and --metrics for watch and record (cli/reporting.py): the -S table at
exit and on SIGUSR1 from the real command line, and the Reporting object in
process: SIGUSR1 handled only with -S and given back at the end, a metrics
port already taken one usage error.  The table's counting: test_stats.py;
the metrics themselves: test_metrics.py."""

from __future__ import annotations

import re
import signal
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import (
    TIMEOUT,
    Cli,
    Gated,
    gated_children_script,
    json_lines,
    links_to,
    scrape,
    wait_until,
)

from procevents.cli.options import RuntimeFailure
from procevents.cli.reporting import Reporting
from procevents.events import Exec


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


# -- the Reporting object, in process ---------------------------------------------------------


def test_sigusr1_prints_the_table_only_with_stats_and_is_given_back(capsys: pytest.CaptureFixture[str]) -> None:
    got: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, _frame: got.append(signum))
    try:
        plain = Reporting(stats=False, metrics=None, connector=None)
        plain.start()
        assert plain.observers == []
        signal.raise_signal(signal.SIGUSR1)  # not ours without -S: the runner's handler stays
        assert got == [signal.SIGUSR1]
        plain.close()
        stats = Reporting(stats=True, metrics=None, connector=None)
        assert stats.observers == [stats.stats]
        stats.start()
        stats.observers[0](Exec(0, 1, 1, 10, 10), None, {"comm": "counted"})
        signal.raise_signal(signal.SIGUSR1)
        assert got == [signal.SIGUSR1]
        stats.close()
        signal.raise_signal(signal.SIGUSR1)  # given back
        assert got == [signal.SIGUSR1, signal.SIGUSR1]
    finally:
        signal.signal(signal.SIGUSR1, previous)
    err = capsys.readouterr().err
    assert err.count("procevents: statistics: events by type\n") == 1 and "counted" in err, err


def test_a_metrics_port_already_taken_is_a_runtime_failure() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        reporting = Reporting(stats=False, metrics=("127.0.0.1", port), connector=None)
        with pytest.raises(RuntimeFailure, match=str(port)) as caught:
            reporting.start()
    assert "\n" not in str(caught.value)
    reporting.close()


def test_metrics_are_served_and_the_server_closed(capsys: pytest.CaptureFixture[str]) -> None:
    reporting = Reporting(stats=False, metrics=("127.0.0.1", 0), connector=None)
    assert reporting.observers == [reporting.metrics]
    reporting.start()
    assert reporting.server is not None
    url = reporting.server.url
    assert capsys.readouterr().err == f"procevents: metrics at {url}\n"
    families = scrape(url)
    assert "procevents_events" in families, sorted(families)
    reporting.close()
    assert reporting.server is None
    with pytest.raises(OSError):
        scrape(url)

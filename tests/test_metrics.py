"""Prometheus metrics: a real /metrics page, parsed with prometheus_client's
parser, whose counters match the processes the test made (bench/burst.c's
exact ground truth for the storm)."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    TIMEOUT,
    Cli,
    Gated,
    bench_module,
    burst_tools,
    committed_events,
    gated_children_script,
    json_lines,
    links_to,
    metrics_url,
    run_cli,
    sample,
    scrape,
    skip_unless_connector,
    wait_until,
)
from hypothesis import given
from hypothesis import strategies as st

from procevents.metrics import MAX_CLIENTS, OTHER, CommandCounter, Histogram, LabelSet, parse_address

pytest.importorskip("prometheus_client")

EVENT_TYPES = ("fork", "exec", "uid", "gid", "sid", "ptrace", "comm", "coredump", "exit", "unknown")



# -- pure parts ----------------------------------------------------------------------------


def test_histogram_buckets_are_cumulative_and_bounds_inclusive() -> None:
    histogram = Histogram((0.01, 1.0))
    for value in (0.005, 0.01, 0.5, 1.0, 2.0, 30.0):
        histogram.observe(value)
    assert histogram.cumulative() == [("0.01", 2), ("1.0", 4), ("+Inf", 6)]
    assert (histogram.count, histogram.total) == (6, 33.515)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("9100", ("127.0.0.1", 9100)),
        ("0", ("127.0.0.1", 0)),
        ("0.0.0.0:9100", ("0.0.0.0", 9100)),
        ("localhost:80", ("localhost", 80)),
        ("[::1]:9100", ("::1", 9100)),
        ("[::]:0", ("::", 0)),
    ],
)
def test_parse_address(text: str, want: tuple[str, int]) -> None:
    assert parse_address(text) == want


@pytest.mark.parametrize("text", ["", "abc", "70000", "-1", ":9100", "[::1", "[::1]9100", "::1:9100", "host:"])
def test_parse_address_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_address(text)


@given(st.lists(st.lists(st.sampled_from("abcdefgh"), max_size=30), max_size=12), st.integers(0, 4))
def test_label_set_is_bounded_and_every_series_grows(batches: list[list[str]], top: int) -> None:
    labels = LabelSet(top)
    counts: dict[str, int] = {}
    previous: dict[str, int] = {}
    for batch in batches:
        for name in batch:
            counts[name] = counts.get(name, 0) + 1
        exported = dict(labels.export(counts))
        assert len(exported) <= top + 1 and OTHER in exported
        for name, value in exported.items():
            assert value >= previous.get(name, 0), (name, previous, exported)
            if name != OTHER:
                assert value == counts[name]  # a labelled command's count is exact
        # "other" holds at least everything not labelled now
        assert exported[OTHER] >= sum(c for n, c in counts.items() if n not in exported)
        previous = exported
    if top and any(batches):
        # the first export labels the biggest counts seen by then
        assert labels.labelled


@given(
    st.lists(st.tuples(st.lists(st.sampled_from("abcdefgh"), max_size=30), st.floats(0, 1000)), max_size=12),
    st.integers(0, 4),
)
def test_labels_come_and_go_and_every_series_still_grows(steps: list[tuple[list[str], float]], top: int) -> None:
    labels = LabelSet(top, reclaim_after=100.0)
    counts: dict[str, int] = {}
    seen: dict[str, float] = {}
    now = 0.0
    for batch, later in steps:
        now += later
        for name in batch:
            counts[name] = counts.get(name, 0) + 1
        exported = dict(labels.export(counts, now))
        assert len(exported) <= top + 1 and OTHER in exported
        for name, value in exported.items():
            # A series that comes back comes back at least where it was.
            assert value >= seen.get(name, 0), (name, seen, exported)
            seen[name] = value
            if name != OTHER:
                assert value == counts[name]


def test_a_burst_of_made_up_names_keeps_no_label_for_good() -> None:
    labels = LabelSet(2, reclaim_after=300.0)
    counts = {"made-up-1": 50, "made-up-2": 40}
    assert labels.export(counts, now=0.0) == [("made-up-1", 50), ("made-up-2", 40), (OTHER, 0)]
    # While the burst's names are fresh, a real command waits in "other" ...
    counts["cron"] = 1
    assert labels.export(counts, now=10.0) == [("made-up-1", 50), ("made-up-2", 40), (OTHER, 1)]
    # ... and once they have been quiet RECLAIM_AFTER, it takes a slot: the
    # least recently risen one (made-up-1 rose again at 150).
    counts["made-up-1"] += 1
    assert labels.export(counts, now=150.0) == [("made-up-1", 51), ("made-up-2", 40), (OTHER, 1)]
    counts["cron"] += 1
    assert labels.export(counts, now=400.0) == [("cron", 2), ("made-up-1", 51), (OTHER, 1)]
    counts["cron"] += 1
    counts["made-up-2"] += 5  # back, but without a slot: "other" counts what it adds now
    assert labels.export(counts, now=401.0) == [("cron", 3), ("made-up-1", 51), (OTHER, 6)]
    # A slot that stays busy is never taken.
    counts["cron"] += 1
    counts["made-up-2"] += 1
    assert dict(labels.export(counts, now=2000.0)).keys() == {"cron", "made-up-2", OTHER}


def test_a_label_is_the_name_as_the_terminal_shows_it() -> None:
    counter = CommandCounter()
    for name in ("\x1b[31mred", "tab\there", "a\\b", "x\udcff", "ok", "", None):
        counter.add(name)
    assert sorted(counter.snapshot()) == sorted(
        ["\\x1b[31mred", "tab\\there", "a\\\\b", "x\\xff", "ok", "?"]
    ) and all(name.isprintable() for name in counter.snapshot())


def test_a_command_named_other_is_counted_in_other() -> None:
    labels = LabelSet(5)
    assert labels.export({OTHER: 3, "sh": 1}) == [("sh", 1), (OTHER, 3)]


# -- the page --------------------------------------------------------------------------------


def test_metrics_match_the_processes_made(cli: Callable[..., Cli], tmp_path: Path) -> None:
    children = [(links_to(tmp_path, "pe-fail", "sh"), "exit 1")] * 5 + [(links_to(tmp_path, "pe-ok", "sh"), "exit 0")]
    root = Gated([links_to(tmp_path, "pe-root", "sh"), "-c", gated_children_script(children)])
    out = tmp_path / "out.jsonl"
    try:
        # --keep-running: the page is read after the tree has exited.
        c = cli("--json", "-o", str(out), "--metrics", "0", "-p", str(root.pid), "--keep-running")
        c.wait_listening()
        url = metrics_url(c)
        assert url.startswith("http://127.0.0.1:")  # loopback unless told otherwise
        before = scrape(url)
        assert sample(before, "procevents_events", "procevents_events_total", type="fork") == 0
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

    def exits_counted() -> bool:
        return sample(scrape(url), "procevents_events", "procevents_events_total", type="exit") >= 7

    wait_until(exits_counted, "the exits on the metrics page")
    page = scrape(url)
    events = {t: sample(page, "procevents_events", "procevents_events_total", type=t) for t in EVENT_TYPES}
    assert events == {**dict.fromkeys(EVENT_TYPES, 0.0), "fork": 6.0, "exec": 6.0, "exit": 7.0}
    assert sample(page, "procevents_events_lost", "procevents_events_lost_total") == 0

    def by_command(family: str) -> dict[str, float]:
        return {s.labels["command"]: s.value for s in page[family].samples if s.name == f"{family}_total"}

    assert by_command("procevents_process_starts") == {"pe-root": 6, OTHER: 0}
    assert by_command("procevents_process_execs") == {"pe-fail": 5, "pe-ok": 1, OTHER: 0}
    assert by_command("procevents_process_exits") == {"pe-fail": 5, "pe-ok": 1, "pe-root": 1, OTHER: 0}
    assert by_command("procevents_process_failures") == {"pe-fail": 5, OTHER: 0}
    assert page["procevents_processes_alive"].samples[0].value > 0
    assert sample(page, "procevents_receive_buffer_drops", "procevents_receive_buffer_drops_total") == 0
    assert page["procevents_receive_buffer_bytes"].samples[0].value >= 32 * 1024 * 1024
    assert page["procevents_events"].type == "counter"
    # Every exit observed once in each histogram (CPU from taskstats: run as root here).
    for family in ("procevents_process_lifetime_seconds", "procevents_process_cpu_seconds"):
        assert page[family].type == "histogram"
        buckets = [s for s in page[family].samples if s.name == f"{family}_bucket"]
        counts = [s.value for s in buckets]
        assert counts == sorted(counts) and buckets[-1].labels["le"] == "+Inf" and counts[-1] == 7, family
        assert sample(page, family, f"{family}_count") == 7
    assert 0 < sample(page, "procevents_process_cpu_seconds", "procevents_process_cpu_seconds_sum") < 5
    assert c.stop() == 0, c.err.text


def test_metrics_during_a_storm_match_the_ground_truth(cli: Callable[..., Cli], tmp_path: Path) -> None:
    burst, tiny = burst_tools()
    pidfile = tmp_path / "pids.txt"
    n = 10_000
    # The root execs burst when told: with -p, the page counts exactly the storm.
    root = Gated(["sh", "-c", f'read _; exec "{burst}" -o "{pidfile}" -m exec -n {n} -p 2 -t "{tiny}"'])
    try:
        c = cli("--json", "-o", "/dev/null", "--metrics", "0", "-p", str(root.pid), "--keep-running")
        c.wait_listening()
        url = metrics_url(c)
        assert root.proc.stdin is not None
        root.proc.stdin.write(b"go\n")
        root.proc.stdin.close()
        # Scrape while it runs: every counter only grows.
        pages = []
        while root.proc.poll() is None:
            pages.append(scrape(url))
        assert root.proc.wait(TIMEOUT * 4) == 0
    finally:
        root.cleanup()
    burst_module = bench_module("truth")
    truth = burst_module.GroundTruth.load(pidfile)
    assert truth.children == n and truth.failures == 0
    workers = len(truth.workers)
    want = {"fork": n + workers, "exec": n + 1, "exit": n + workers + 1}

    def counts(page: dict[str, Any]) -> dict[str, float]:
        return {t: sample(page, "procevents_events", "procevents_events_total", type=t) for t in want}

    wait_until(lambda: counts(scrape(url))["exit"] >= want["exit"], "the storm's exits counted", timeout=120)
    final = scrape(url)
    lost = sample(final, "procevents_events_lost", "procevents_events_lost_total")
    assert lost == 0, "the default buffer rides out this storm"
    assert counts(final) == want
    assert sample(final, "procevents_process_starts", "procevents_process_starts_total", command="burst") == n + workers
    # An exec is named after the program when its /proc could be read before
    # it exited (tiny lives microseconds), else it keeps the parent's name.
    execs = {
        sample_.labels["command"]: sample_.value
        for sample_ in final["procevents_process_execs"].samples
        if sample_.name.endswith("_total")
    }
    assert set(execs) <= {"tiny", "burst", OTHER} and execs.get(OTHER, 0) == 0, execs
    assert sum(execs.values()) == n + 1
    assert sum(
        s.value for s in final["procevents_process_failures"].samples if s.name.endswith("_total")
    ) == 0
    assert sample(final, "procevents_receive_buffer_drops", "procevents_receive_buffer_drops_total") == 0
    previous: dict[str, float] = {}
    for page in [*pages, final]:
        now = counts(page)
        assert all(now[k] >= previous.get(k, 0) for k in now), (previous, now)
        previous = now
    assert c.stop() == 0, c.err.text


def test_a_name_that_is_not_utf8_does_not_break_the_page(cli: Callable[..., Cli]) -> None:
    """Any user may call a process b"x\\xff": the page must still encode, and
    say which name it was, escaped as the terminal shows it."""
    c = cli("-o", "/dev/null", "--metrics", "0")
    c.wait_listening()
    url = metrics_url(c)
    rename = "import ctypes; ctypes.CDLL(None).prctl(15, b'x\\xff', 0, 0, 0)"  # PR_SET_NAME
    subprocess.run([sys.executable, "-c", rename], check=True, timeout=TIMEOUT)

    def exits_of_it() -> float:
        page = scrape(url)  # raises if the page cannot be made
        return sum(s.value for s in page["procevents_process_exits"].samples if s.labels.get("command") == "x\\xff")

    wait_until(lambda: exits_of_it() == 1, "the renamed process's exit on the page")
    for _ in range(3):
        assert exits_of_it() == 1  # every later scrape too
    assert c.stop() == 0, c.err.text
    assert "Traceback" not in c.err.text and "Error" not in c.err.text, c.err.text


def test_a_raw_escape_in_a_name_never_reaches_the_page(cli: Callable[..., Cli]) -> None:
    """Any user may call a process "\\x1b]0;...": the page shows it escaped."""
    c = cli("-o", "/dev/null", "--metrics", "0")
    c.wait_listening()
    url = metrics_url(c)
    rename = "import ctypes; ctypes.CDLL(None).prctl(15, b'\\x1b[31mred\\r', 0, 0, 0)"  # PR_SET_NAME
    subprocess.run([sys.executable, "-c", rename], check=True, timeout=TIMEOUT)

    def exits_of_it() -> float:
        page = scrape(url)
        return sum(
            s.value for s in page["procevents_process_exits"].samples if s.labels.get("command") == "\\x1b[31mred\\r"
        )

    wait_until(lambda: exits_of_it() == 1, "the renamed process's exit on the page, its name escaped")
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        raw = response.read()
    assert not any(byte < 0x20 and byte != 0x0A for byte in raw), [b for b in raw if b < 0x20 and b != 0x0A]
    assert c.stop() == 0, c.err.text


def test_slow_clients_are_cut_off_and_scrapes_go_on(cli: Callable[..., Cli]) -> None:
    """Slowloris: 20 clients each sending a header byte every half second
    (each reconnecting when cut off) while 15 scrapes are made: every scrape
    is answered, and every slow client is cut off before it ends its request."""
    c = cli("-o", "/dev/null", "--metrics", "0")
    c.wait_listening()
    url = metrics_url(c)
    host, port = _address(url)
    stop = threading.Event()
    lock = threading.Lock()
    state = {"connected": 0, "bytes": 0, "cut_off": 0, "finished": 0}

    def trickle() -> None:
        while not stop.is_set():
            try:
                conn = socket.create_connection((host, port), timeout=TIMEOUT)
            except OSError:
                continue
            with lock:
                state["connected"] += 1
            try:
                conn.sendall(b"GET /metrics HTTP/1.0\r\n")
                for byte in b"X-Slow: " + b"z" * 120:  # a minute of bytes: far beyond any deadline
                    if stop.wait(0.5):
                        return
                    conn.sendall(bytes([byte]))
                    with lock:
                        state["bytes"] += 1
                with lock:
                    state["finished"] += 1  # never cut off
            except OSError:  # the server closed it (reset or broken pipe)
                with lock:
                    state["cut_off"] += 1
            finally:
                conn.close()

    threads = [threading.Thread(target=trickle) for _ in range(20)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: state["connected"] >= 20, "20 slow clients connected")
        for _ in range(15):
            before = state["bytes"]
            wait_until(lambda before=before: state["bytes"] > before + 10, "the slow clients trickling on")
            scrape(url)  # raises if refused or cut off
        wait_until(lambda: state["cut_off"] >= 20, "every slow client cut off at least once", timeout=TIMEOUT * 2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(TIMEOUT)
    assert not any(thread.is_alive() for thread in threads)
    assert state["finished"] == 0, state
    assert c.stop() == 0, c.err.text
    assert "Traceback" not in c.err.text and "GET" not in c.err.text, c.err.text


def test_clients_are_bounded_and_leave_no_traceback(cli: Callable[..., Cli]) -> None:
    c = cli("-o", "/dev/null", "--metrics", "0")
    c.wait_listening()
    url = metrics_url(c)
    host, port = _address(url)
    # More idle connections than are kept: the oldest are closed, a scrape is answered.
    idle = [socket.create_connection((host, port), timeout=TIMEOUT) for _ in range(MAX_CLIENTS + 8)]
    try:
        assert _served(url)
        for conn in idle[:9]:
            assert conn.recv(1) == b""  # closed unanswered, to make room
        # The others are closed by the deadline, silent as they are.
        for conn in idle[9:]:
            assert conn.recv(1) == b""
    finally:
        for conn in idle:
            conn.close()
    # A client that goes away mid-request, and one that never reads its answer.
    with socket.create_connection((host, port), timeout=TIMEOUT) as half:
        half.sendall(b"GET /metr")
    with socket.create_connection((host, port), timeout=TIMEOUT) as rude:
        rude.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        rude.shutdown(socket.SHUT_RD)
    # Not HTTP, not GET, too long: one answer each, and the server goes on.
    for request, status in ((b"hello\r\n\r\n", b"400"), (b"POST /metrics HTTP/1.0\r\n\r\n", b"405"),
                            (b"GET / HTTP/1.0\r\nX: " + b"y" * 10_000 + b"\r\n\r\n", b"431")):
        with socket.create_connection((host, port), timeout=TIMEOUT) as other:
            other.sendall(request)
            assert other.recv(64).startswith(b"HTTP/1.0 " + status), request[:20]
    assert _served(url)
    assert c.stop() == 0, c.err.text
    assert "Traceback" not in c.err.text and "GET" not in c.err.text, c.err.text  # no log line per request


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").removesuffix("/metrics").rsplit(":", 1)
    return host, int(port)


def _served(url: str) -> bool:
    try:
        scrape(url)
    except OSError:
        return False
    return True


def test_recorder_serves_metrics_too(cli: Callable[..., Cli], tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    root = Gated(["sh", "-c", "read _; sh -c 'exit 3'; exit 0"])
    try:
        c = cli("record", "--db", str(db), "-p", str(root.pid), "--keep-running", "--metrics", "127.0.0.1:0")
        c.wait_listening()
        url = metrics_url(c)
        assert root.release() == 0
    finally:
        root.cleanup()
    wait_until(lambda: committed_events(db, "exit", [root.pid]) == 1, "the exit committed")
    page = scrape(url)
    assert sample(page, "procevents_events", "procevents_events_total", type="exit") == 2
    assert sample(page, "procevents_process_failures", "procevents_process_failures_total", command="sh") == 1
    assert sample(page, "procevents_store_events", "procevents_store_events_total") >= 4
    assert sample(page, "procevents_store_commits", "procevents_store_commits_total") >= 1
    assert "procevents_store_pending_events" in page
    assert c.stop() == 0, c.err.text


# -- errors and laziness -----------------------------------------------------------------------


def test_bad_metrics_address_is_a_usage_error() -> None:
    for value in ("abc", "70000", "[::1"):
        result = run_cli("--metrics", value, "-D", "1")
        assert result.returncode == 2
        assert len(result.stderr.splitlines()) == 1 and b"--metrics" in result.stderr, result.stderr


def test_port_in_use_is_one_line(tmp_path: Path) -> None:
    skip_unless_connector()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for args in (["--metrics", str(port), "-D", "1"], ["record", "--db", str(tmp_path / "x.db"),
                                                           "--metrics", str(port), "-D", "1"]):
            result = run_cli(*args)
            assert result.returncode == 1, result.stderr  # runtime, not usage: the option was good
            assert result.stderr.decode().strip() == (
                f"procevents: error: cannot serve metrics on 127.0.0.1:{port}: Address already in use"
            )


def test_help_imports_no_optional_dependency() -> None:
    code = """
import sys
from procevents import cli
for argv in (["--help"], ["record", "--help"], ["query", "--help"], ["replay", "--help"], ["top", "--help"]):
    try:
        cli.main(argv)
    except SystemExit:
        pass
print(sorted(m for m in ("sqlite3", "rich", "prometheus_client", "procevents.store") if m in sys.modules))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=TIMEOUT, check=True)
    assert result.stdout.splitlines()[-1] == b"[]"

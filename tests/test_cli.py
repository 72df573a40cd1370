"""The command line against the real kernel: subprocess invocations.

Every test filters the output by the pids it created, so other activity on
the machine does not matter.  Output is read line by line in threads; a
command that should end by itself gets TIMEOUT seconds.
"""

from __future__ import annotations

import base64
import calendar
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import pytest
from conftest import CLI

import procevents

SRC = Path(__file__).resolve().parent.parent / "src"
TIMEOUT = 10.0
ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
#: The exit summary: (shown, by type, lost); "of N events received" when some were not shown.
SUMMARY = re.compile(
    r"^procevents: (\d+) events? (?:received|shown)(?: \(([^)]*)\))?(?: of \d+ events? received)?, (\d+) events? lost$"
)
COMMON_KEYS = ("event", "time", "timestamp_ns", "cpu", "pid", "tgid")
EVIL = b"\x1b[2Jevil\n"
NOT_UTF8 = b"bad\xff\xfename"


@pytest.fixture(scope="module", autouse=True)
def _usable() -> None:
    try:
        with procevents.listen():
            pass
    except procevents.ConnectorError as exc:
        pytest.skip(f"the proc connector is not usable here: {exc}")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH", "")) if p)
    return env


def _default_signals() -> None:
    # A runner started in the background of a non-interactive shell inherits
    # SIGINT ignored; the CLI would then never see Ctrl-C.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def _cli() -> list[str]:
    return list(CLI)


class LineReader:
    """Collects a pipe's lines in a thread."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.lines: list[bytes] = []
        self.eof = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._thread.start()

    def _run(self, stream: IO[bytes]) -> None:
        try:
            for line in stream:
                with self._cond:
                    self.lines.append(line)
                    self._cond.notify_all()
        finally:
            with self._cond:
                self.eof = True
                self._cond.notify_all()

    def wait_for(self, pred: Callable[[bytes], bool], timeout: float = TIMEOUT) -> bytes:
        deadline = time.monotonic() + timeout
        checked = 0
        with self._cond:
            while True:
                for line in self.lines[checked:]:
                    if pred(line):
                        return line
                checked = len(self.lines)
                remaining = deadline - time.monotonic()
                if self.eof or remaining <= 0:
                    tail = b"".join(self.lines[-20:]).decode(errors="replace")
                    raise AssertionError(f"no matching line within {timeout} s; last lines:\n{tail}")
                self._cond.wait(remaining)

    def join(self) -> None:
        self._thread.join(TIMEOUT)

    @property
    def data(self) -> bytes:
        with self._cond:
            return b"".join(self.lines)

    @property
    def text(self) -> str:
        return self.data.decode(errors="replace")


class Cli:
    """One ``procevents`` process with its stdout and stderr being read."""

    def __init__(self, args: Sequence[str], argv0: Sequence[str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [*(argv0 or _cli()), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_env(),
            preexec_fn=_default_signals,
            start_new_session=True,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.out = LineReader(self.proc.stdout)
        self.err = LineReader(self.proc.stderr)

    def wait_listening(self) -> None:
        self.err.wait_for(lambda line: line.startswith(b"procevents: listening"))

    def wait(self, timeout: float = TIMEOUT) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"procevents did not end within {timeout} s; stderr:\n{self.err.text}") from None
        self.out.join()
        self.err.join()
        return rc

    def stop(self, sig: int = signal.SIGINT) -> int:
        self.proc.send_signal(sig)
        return self.wait()

    def json(self) -> list[dict[str, Any]]:
        events = []
        for raw in self.out.lines:
            assert raw.endswith(b"\n"), raw
            events.append(json.loads(raw.decode("utf-8")))  # strict UTF-8
        return events

    def wait_json(self, pred: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        line = self.out.wait_for(lambda raw: pred(json.loads(raw)))
        return json.loads(line)  # type: ignore[no-any-return]

    def cleanup(self) -> None:
        # SIGTERM, never SIGKILL first: a subscriber killed outright cannot
        # send IGNORE and the kernel's listener count stays raised.
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def cli() -> Iterator[Callable[..., Cli]]:
    started: list[Cli] = []

    def start(*args: str, argv0: Sequence[str] | None = None) -> Cli:
        c = Cli(args, argv0)
        started.append(c)
        return c

    yield start
    for c in started:
        c.cleanup()


def _run(*args: str, argv0: Sequence[str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*(argv0 or _cli()), *args], capture_output=True, env=_env(), timeout=TIMEOUT,
        stdin=subprocess.DEVNULL, check=False,
    )


def _spawn(argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.Popen(argv, **kwargs)


def _run_child(argv: Sequence[str]) -> int:
    child = _spawn(argv)
    child.wait(TIMEOUT)
    return child.pid


def _text_is(event: str, pid: int) -> Callable[[bytes], bool]:
    def pred(line: bytes) -> bool:
        fields = line.split()
        return len(fields) >= 3 and fields[1] == event.encode() and fields[2] == str(pid).encode()

    return pred


def _exit_of(pid: int) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["event"] == "exit" and e["tgid"] == pid and e["pid"] == pid


def _summary(err: str) -> re.Match[str]:
    lines = err.splitlines()
    assert lines, "no summary on stderr"
    m = SUMMARY.match(lines[-1])
    assert m, f"last stderr line is not the summary: {lines[-1]!r}"
    return m


def _involves(event: dict[str, Any], pids: set[int]) -> bool:
    keys = ("pid", "tgid", "child_pid", "child_tgid", "parent_pid", "parent_tgid", "process_pid", "process_tgid")
    return any(event.get(key) in pids for key in keys)


# -- JSON ------------------------------------------------------------------------------


def test_json_fork_exec_exit_of_a_shell(cli: Callable[..., Cli]) -> None:
    c = cli("--json", "-D", "3")
    c.wait_listening()
    sh = _spawn(["sh", "-c", "exit 3"])
    assert sh.wait(TIMEOUT) == 3
    assert c.wait() == 0, c.err.text
    events = c.json()
    for event in events:
        for key in COMMON_KEYS:
            assert key in event, event
        assert ISO_UTC.match(event["time"]), event["time"]
    mine = [e for e in events if _involves(e, {sh.pid})]
    forks = [e for e in mine if e["event"] == "fork" and e["child_tgid"] == sh.pid]
    execs = [e for e in mine if e["event"] == "exec" and e["tgid"] == sh.pid]
    exits = [e for e in mine if _exit_of(sh.pid)(e)]
    assert len(forks) == 1, mine
    assert forks[0]["child_pid"] == sh.pid
    assert forks[0]["parent_tgid"] == os.getpid()
    assert len(execs) == 1, mine
    assert len(exits) == 1, mine
    exit_event = exits[0]
    assert exit_event["status"] == 3
    assert exit_event["signal"] is None
    assert exit_event["core_dumped"] is False
    assert exit_event["exit_code"] == 768
    assert exit_event["exit_signal"] == 17
    # Causal order on one socket: fork, then exec, then exit.
    assert events.index(forks[0]) < events.index(execs[0]) < events.index(exit_event)
    # The wall-clock conversion is sane (not a performance check).
    stamp = calendar.timegm(time.strptime(exit_event["time"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert abs(stamp - time.time()) < 300
    assert exit_event["timestamp_ns"] <= time.monotonic_ns()
    m = _summary(c.err.text)
    assert int(m[1]) == sum(1 for e in events if e["event"] != "lost")


# -- text -------------------------------------------------------------------------------


@pytest.mark.parametrize("extra", [[], ["--no-enrich"]], ids=["enriched", "no-enrich"])
def test_text_exit_status_and_sigkill(cli: Callable[..., Cli], extra: list[str]) -> None:
    c = cli(*extra)
    c.wait_listening()
    sh_pid = _run_child(["sh", "-c", "exit 3"])
    victim = _spawn(["sleep", "30"])
    victim.kill()
    victim.wait(TIMEOUT)
    exit_line = c.out.wait_for(_text_is("exit", sh_pid)).decode()
    killed_line = c.out.wait_for(_text_is("exit", victim.pid)).decode()
    assert c.stop() == 0, c.err.text
    assert "status 3" in exit_line, exit_line
    assert "killed by SIGKILL" in killed_line, killed_line


# -- selection ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [[], ["--no-enrich"], ["--no-enrich", "--no-kernel-filter"]],
    ids=["enriched", "kernel-filter", "userspace-filter"],
)
def test_event_type_filter(cli: Callable[..., Cli], extra: list[str]) -> None:
    c = cli("--json", "-e", "exec,exit", *extra)
    c.wait_listening()
    pid = _run_child(["sh", "-c", "exit 5"])
    c.wait_json(_exit_of(pid))
    assert c.stop() == 0, c.err.text
    events = c.json()
    assert {e["event"] for e in events} <= {"exec", "exit", "lost"}
    assert any(e["event"] == "exec" and e["tgid"] == pid for e in events)
    m = _summary(c.err.text)
    assert "fork" not in (m[2] or "")


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["-e", "bogus"], id="events-bogus"),
        pytest.param(["-D", "0"], id="duration-0"),
        pytest.param(["-n", "-1"], id="count-negative"),
        pytest.param(["-p", "abc"], id="pid-abc"),
        pytest.param(["-o", "/nonexistent-dir/out.txt"], id="output-unwritable"),
        pytest.param(["trace"], id="trace-no-command"),
    ],
)
def test_bad_arguments_one_line_exit_2(args: list[str]) -> None:
    result = _run(*args)
    err = result.stderr.decode(errors="replace")
    assert result.returncode == 2, err
    assert "Traceback" not in err
    assert result.stdout == b""
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    assert lines[0].startswith("procevents"), lines[0]
    assert "error" in lines[0], lines[0]


def test_pid_follows_descendants(cli: Callable[..., Cli]) -> None:
    # The root waits on stdin so nothing of interest happens before procevents
    # listens.  The inner `sh -c "exit 4"` is forked because a command follows
    # it: a grandchild of this test, child of the root.
    root = _spawn(["sh", "-c", 'read _; sh -c "exit 4"; exit 0'], stdin=subprocess.PIPE)
    try:
        c = cli("--json", "-p", str(root.pid))
        c.wait_listening()
        strangers = {_run_child(["true"]) for _ in range(3)}
        assert root.stdin is not None
        root.stdin.write(b"go\n")
        root.stdin.close()
        assert root.wait(TIMEOUT) == 0
    finally:
        if root.poll() is None:
            root.kill()
            root.wait()
    c.wait_json(_exit_of(root.pid))
    assert c.stop() == 0, c.err.text
    events = [e for e in c.json() if e["event"] != "lost"]
    followed = {root.pid}
    for e in events:
        if e["event"] == "fork" and e["parent_tgid"] in followed:
            followed.add(e["child_tgid"])
    grandchildren = [
        e for e in events if e["event"] == "exit" and e["status"] == 4 and e["tgid"] != root.pid
    ]
    assert grandchildren, events
    assert grandchildren[0]["tgid"] in followed
    assert any(e["event"] == "fork" and e["child_tgid"] == grandchildren[0]["tgid"] for e in events)
    assert any(_exit_of(root.pid)(e) and e["status"] == 0 for e in events)
    for e in events:
        assert e["tgid"] in followed, f"event of an unrelated process: {e}"
        assert not _involves(e, strangers), f"event of a stranger: {e}"


# -- stopping and output ------------------------------------------------------------------


def _feed_until_exit(c: Cli) -> int:
    """Make events until procevents ends by itself; its exit status."""
    deadline = time.monotonic() + TIMEOUT
    while c.proc.poll() is None and time.monotonic() < deadline:
        _run_child(["true"])
        time.sleep(0.02)
    return c.wait()


def test_count_stops_after_n_events(cli: Callable[..., Cli]) -> None:
    c = cli("--json", "-n", "3")
    assert _feed_until_exit(c) == 0, c.err.text
    events = c.json()
    assert len([e for e in events if e["event"] != "lost"]) == 3, events
    m = _summary(c.err.text)
    assert int(m[1]) == 3
    assert int(m[3]) == sum(e["count"] for e in events if e["event"] == "lost")


def test_output_file(cli: Callable[..., Cli], tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text('{"event":"earlier"}\n')
    c = cli("--json", "-n", "3", "-o", str(path))
    assert _feed_until_exit(c) == 0, c.err.text
    assert c.out.data == b""
    lines = path.read_bytes().splitlines()
    assert lines[0] == b'{"event":"earlier"}'  # appended, not truncated
    events = [json.loads(line) for line in lines[1:]]
    assert len([e for e in events if e["event"] != "lost"]) == 3
    assert all(key in e for e in events for key in COMMON_KEYS)


def test_quiet_has_no_notice_or_summary(cli: Callable[..., Cli]) -> None:
    c = cli("-q", "-n", "3")
    assert _feed_until_exit(c) == 0
    assert c.err.data == b""
    assert len(c.out.lines) >= 3


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_signal_ends_cleanly_with_summary(cli: Callable[..., Cli], sig: signal.Signals) -> None:
    c = cli("--json")
    c.wait_listening()
    pid = _run_child(["sh", "-c", "exit 3"])
    c.wait_json(_exit_of(pid))
    assert c.stop(sig) == 0, c.err.text
    err = c.err.text
    assert "Traceback" not in err
    m = _summary(err)
    events = c.json()
    shown = len([e for e in events if e["event"] != "lost"])
    # The signal may land between counting an event and writing it.
    assert shown <= int(m[1]) <= shown + 1, (m[0], shown)
    assert shown >= 3  # at least that shell's fork, exec, exit
    assert int(m[3]) == sum(e["count"] for e in events if e["event"] == "lost")
    assert "exit" in (m[2] or "")


# -- safe output ---------------------------------------------------------------------------

_RENAMER = """
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
for arg in sys.argv[1:]:
    if libc.prctl(15, bytes.fromhex(arg), 0, 0, 0) != 0:  # PR_SET_NAME
        raise OSError(ctypes.get_errno(), "prctl")
"""


def _rename_twice() -> int:
    return _run_child([sys.executable, "-c", _RENAMER, EVIL.hex(), NOT_UTF8.hex()])


@pytest.mark.parametrize("extra", [[], ["--no-enrich"]], ids=["enriched", "no-enrich"])
def test_text_escapes_hostile_comm(cli: Callable[..., Cli], extra: list[str]) -> None:
    c = cli(*extra)
    c.wait_listening()
    pid = _rename_twice()
    c.out.wait_for(_text_is("exit", pid))
    assert c.stop() == 0, c.err.text
    assert b"\x1b" not in c.out.data
    comm_lines = [line for line in c.out.lines if _text_is("comm", pid)(line)]
    assert len(comm_lines) == 2, comm_lines
    evil, odd = comm_lines
    # One line each: the newline inside the name is shown as \n, not emitted.
    assert evil.endswith(b"\n") and evil.count(b"\n") == 1
    assert b"comm \\x1b[2Jevil\\n" in evil, evil
    assert b"comm bad\\xff\\xfename" in odd, odd
    for line in c.out.lines:
        line.decode("utf-8")  # every line is valid UTF-8
        assert not any(b < 0x20 for b in line[:-1]), line


@pytest.mark.parametrize("extra", [[], ["--no-enrich"]], ids=["enriched", "no-enrich"])
def test_json_comm_round_trips(cli: Callable[..., Cli], extra: list[str]) -> None:
    c = cli("--json", *extra)
    c.wait_listening()
    pid = _rename_twice()
    c.wait_json(_exit_of(pid))
    assert c.stop() == 0, c.err.text
    assert b"\x1b" not in c.out.data
    events = c.json()
    comms = [e for e in events if e["event"] == "comm" and e["tgid"] == pid]
    assert len(comms) == 2, comms
    evil, odd = comms
    assert evil["comm"] == EVIL.decode()
    assert "comm_b64" not in evil
    assert odd["comm"] == NOT_UTF8.decode("utf-8", "replace")
    assert base64.b64decode(odd["comm_b64"]) == NOT_UTF8
    exit_event = next(e for e in events if _exit_of(pid)(e))
    if "comm" in exit_event:  # enriched: the name it had when it died
        assert exit_event["comm"] == NOT_UTF8.decode("utf-8", "replace")
        assert base64.b64decode(exit_event["comm_b64"]) == NOT_UTF8


# -- help and version ------------------------------------------------------------------------


def test_help_mentions_examples() -> None:
    result = _run("--help")
    assert result.returncode == 0
    out = result.stdout.decode()
    assert out.startswith("usage: procevents")
    assert "examples:" in out
    assert result.stderr == b""


def test_trace_help() -> None:
    result = _run("trace", "--help")
    assert result.returncode == 0
    assert "examples:" in result.stdout.decode()


def _console_script() -> list[str]:
    """What the ``procevents`` script pip generates runs, from pyproject's [project.scripts],
    on the source tree (the suite never relies on an installed copy)."""
    with open(SRC.parent / "pyproject.toml", "rb") as f:
        target = tomllib.load(f)["project"]["scripts"]["procevents"]
    module, _, func = target.partition(":")
    code = f"import sys; sys.argv[0] = 'procevents'; from {module} import {func}; sys.exit({func}())"
    return [sys.executable, "-c", code]


@pytest.mark.parametrize("how", ["script", "python -m"])
def test_version(how: str) -> None:
    argv0 = _console_script() if how == "script" else [sys.executable, "-m", "procevents"]
    result = _run("--version", argv0=argv0)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().strip() == f"procevents {procevents.__version__}"
    assert _run("--help", argv0=argv0).stdout.decode().startswith("usage: procevents ")


# -- trace ------------------------------------------------------------------------------------


def test_trace_unwritable_output_does_not_run_command(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    result = _run("trace", "-o", str(tmp_path / "missing" / "out.txt"), "--", "touch", str(marker))
    assert result.returncode == 2, result.stderr
    time.sleep(0.2)  # give a wrongly started command time to show
    assert not marker.exists(), "CMD ran although procevents refused to start"


def test_pid_of_no_process_is_a_usage_error() -> None:
    result = _run("-p", "999999999", "-D", "5")
    assert result.returncode == 2
    assert result.stderr.decode().strip().splitlines() == ["procevents: error: no such process: 999999999"]


@pytest.mark.parametrize(
    "args",
    [
        ["-o", "/dev/full", "-D", "0.5"],
        ["--json", "-o", "/dev/full", "-D", "0.5"],
        ["trace", "-o", "/dev/full", "--", "true"],
    ],
    ids=["text", "json", "trace"],
)
def test_an_unwritable_output_is_one_line(args: list[str]) -> None:
    result = _run(*args)
    err = result.stderr.decode()
    assert result.returncode == 1, err
    assert err.count("error: writing output: No space left on device") == 1, err
    assert "Traceback" not in err

"""PROC_CN_MCAST_IGNORE is sent exactly once on every way out, as seen by strace.

The kernel keeps a global count of proc connector listeners and closing a
socket does not lower it: only IGNORE does.  These tests do not trust the
library's own bookkeeping (``Connector.sent``); they run a real process under
``strace -f -e trace=sendto,sendmsg`` and decode what actually went out on
the netlink socket with :func:`procevents.wire.decode_request`.

Expected request sequence on every way out::

    LISTEN (legacy 4-byte, all events)   exactly once, first
    LISTEN (struct proc_input, a mask)   at most once, when events are filtered
    IGNORE                               exactly once, last

A ``kill(getpid(), 0)`` in a script is a marker in the trace, used to show
*when* IGNORE went out (e.g. at the end of the ``with`` block, not at exit).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest
from conftest import CLI

import procevents
from procevents import wire
from procevents.capture import online_cpus
from procevents.events import event_mask
from procevents.guardian import NAME as GUARDIAN

STRACE = shutil.which("strace")
SRC = Path(__file__).resolve().parent.parent / "src"
TIMEOUT = 10.0
LISTEN = wire.PROC_CN_MCAST_LISTEN
IGNORE = wire.PROC_CN_MCAST_IGNORE
EXEC_EXIT_MASK = event_mask(frozenset({"exec", "exit"}))
#: Capture readers the CLI starts by default (one per online CPU).
CPUS = len(online_cpus())
CPU_LIST = online_cpus()

pytestmark = pytest.mark.skipif(STRACE is None, reason="strace is not installed (apt-get install strace)")


# -- environment checks ------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _usable() -> None:
    """Skip (with the reason) when the connector or ptrace is unavailable here."""
    try:
        with procevents.listen():
            pass
    except procevents.ConnectorError as exc:
        pytest.skip(f"the proc connector is not usable here: {exc}")
    assert STRACE is not None
    probe = subprocess.run(
        [STRACE, "-qq", "-e", "trace=none", "true"], capture_output=True, timeout=TIMEOUT, check=False
    )
    if probe.returncode != 0:
        pytest.skip(f"strace cannot trace here: {probe.stderr.decode(errors='replace').strip()}")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH", "")) if p)
    env.pop("PYTHONWARNINGS", None)
    return env


def _default_signals() -> None:
    # A test runner started from a non-interactive shell in the background
    # inherits SIGINT ignored; a Python child would then never see Ctrl-C.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def _cli() -> list[str]:
    return list(CLI)


def _spawn_true(n: int = 3) -> None:
    """Make some process events happen (fork, exec, exit)."""
    for _ in range(n):
        subprocess.run(["true"], check=True, timeout=TIMEOUT)


# -- strace output parsing ----------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One proc connector request as the traced process sent it."""

    pid: int
    fd: int
    op: int
    mask: int | None
    seq: int
    ack: int
    length: int
    result: int | None


@dataclass(frozen=True)
class Marker:
    pid: int


_LINE = re.compile(r"^(?P<pid>\d+)\s+(?P<call>sendto|sendmsg|kill)\((?P<args>.*)\)\s+=\s+(?P<ret>-?\d+|\?)")
_NLMSG = re.compile(
    r"\{nlmsg_len=(?P<len>\d+), nlmsg_type=(?P<type>[^,]+), nlmsg_flags=(?P<flags>[^,]+), "
    r"nlmsg_seq=(?P<seq>\d+), nlmsg_pid=(?P<pid>\d+)\}, \"(?P<data>(?:\\x[0-9a-f]{2})*)\""
)
_STRING = re.compile(r"\"(?P<data>(?:\\x[0-9a-f]{2})*)\"")
_NLMSG_TYPES = {"NLMSG_NOOP": 1, "NLMSG_ERROR": 2, "NLMSG_DONE": 3, "NLMSG_OVERRUN": 4}
_NLM_FLAGS = {"NLM_F_REQUEST": 1, "NLM_F_MULTI": 2, "NLM_F_ACK": 4, "NLM_F_ECHO": 8, "NLM_F_DUMP_INTR": 16}


def _xlat(text: str, table: dict[str, int]) -> int:
    """``NLMSG_DONE``, ``0x3``, ``0x3 /* NLMSG_DONE */``, ``NLM_F_REQUEST|NLM_F_ACK``."""
    text = text.split("/*", 1)[0].strip()
    value = 0
    for token in text.split("|"):
        token = token.strip()
        value |= table[token] if token in table else int(token, 0)
    return value


def _unhex(escaped: str) -> bytes:
    return bytes.fromhex(escaped.replace("\\x", ""))


def _payloads(args: str) -> list[bytes]:
    """The datagrams a sendto/sendmsg line shows (strace -xx)."""
    found = []
    matched = False
    for m in _NLMSG.finditer(args):
        matched = True
        kind = m["type"].split("/*", 1)[0].strip()
        if kind not in _NLMSG_TYPES and not kind.startswith("0x"):
            continue  # a generic netlink family's (nlctrl, TASKSTATS: the exit costs socket), not the connector's
        header = struct.pack(
            "<IHHII",
            int(m["len"]),
            _xlat(m["type"], _NLMSG_TYPES),
            _xlat(m["flags"], _NLM_FLAGS),
            int(m["seq"]),
            int(m["pid"]),
        )
        found.append(header + _unhex(m["data"]))
    if not matched:
        # strace did not decode the netlink header: the buffer is one string.
        plain = _STRING.search(args)
        if plain:
            found.append(_unhex(plain["data"]))
    return found


def _merge_unfinished(lines: Sequence[str]) -> list[str]:
    pending: dict[str, str] = {}
    merged = []
    for line in lines:
        pid = line.split(None, 1)[0] if line.strip() else ""
        if line.endswith("<unfinished ...>"):
            pending[pid] = line[: -len("<unfinished ...>")].rstrip()
            continue
        resumed = re.search(r"<\.\.\. \w+ resumed>", line)
        if resumed and pid in pending:
            line = pending.pop(pid) + line[resumed.end() :]
        merged.append(line)
    return merged


def parse_trace(path: Path) -> list[Request | Marker]:
    """Proc connector requests and ``kill(pid, 0)`` markers, in order."""
    items: list[Request | Marker] = []
    for line in _merge_unfinished(path.read_text(errors="replace").splitlines()):
        m = _LINE.match(line)
        if not m:
            continue
        pid = int(m["pid"])
        args = m["args"]
        if m["call"] == "kill":
            if re.fullmatch(r"\d+, 0", args.strip()):
                items.append(Marker(pid))
            continue
        ret = None if m["ret"] == "?" else int(m["ret"])
        fd_match = re.match(r"(\d+)", args)
        fd = int(fd_match[1]) if fd_match else -1
        for data in _payloads(args):
            try:
                op, mask, seq, ack = wire.decode_request(data)
            except wire.DecodeError:
                continue  # not a proc connector request
            items.append(Request(pid, fd, op, mask, seq, ack, len(data), ret))
    return items


def describe(items: Sequence[Request | Marker]) -> str:
    out = []
    for item in items:
        if isinstance(item, Marker):
            out.append(f"  [pid {item.pid}] marker")
        else:
            name = {LISTEN: "LISTEN", IGNORE: "IGNORE"}.get(item.op, f"op {item.op}")
            mask = "" if item.mask is None else f" mask 0x{item.mask:08x}"
            out.append(f"  [pid {item.pid} fd {item.fd}] {name}{mask} -> {item.result}")
    return "\n".join(out) or "  (nothing)"


def assert_ignored_once(
    items: Sequence[Request | Marker],
    *,
    mask: int | None = None,
    ignore_before_marker: bool | None = None,
    readers: int = 0,
) -> None:
    """The request sequence rule, for every socket that subscribed.

    ``mask``: the filter LISTEN expected on the main socket (None: none).
    ``readers``: how many capture readers (their own sockets, in forked
    processes) must have subscribed beside the main socket.
    ``ignore_before_marker``: True if the main socket's IGNORE must precede
    the script's marker (sent by close/with/GC), False if it must follow it
    (atexit).
    """
    requests = [item for item in items if isinstance(item, Request)]
    seen = "requests sent:\n" + describe(items)
    assert requests, seen
    sockets: dict[tuple[int, int], list[Request]] = {}
    for r in requests:
        sockets.setdefault((r.pid, r.fd), []).append(r)
    assert len(sockets) == 1 + readers, f"expected {1 + readers} subscribed sockets, got {len(sockets)}\n{seen}"
    with_mask = [sent for sent in sockets.values() if any(r.mask is not None for r in sent)]
    assert len(with_mask) == (mask is not None), f"expected a filter on the main socket only\n{seen}"
    for sent in sockets.values():
        first = sent[0]
        assert (first.op, first.mask) == (LISTEN, None), f"first request is not LISTEN (all events)\n{seen}"
        assert [r for r in sent if r.op == LISTEN and r.mask is None] == [first], seen
        masked = [r for r in sent if r.op == LISTEN and r.mask is not None]
        if masked:
            assert [r.mask for r in masked] == [mask], seen
            assert sent.index(masked[0]) == 1, seen
        ignores = [r for r in sent if r.op == IGNORE]
        assert len(ignores) == 1, f"expected exactly one IGNORE, got {len(ignores)}\n{seen}"
        assert sent[-1] is ignores[0], f"IGNORE is not the last request\n{seen}"
        assert len(sent) == 2 + len(masked), seen
    assert all(r.result == r.length for r in requests), f"a request failed or was short\n{seen}"
    if ignore_before_marker is not None:
        markers = [i for i, item in enumerate(items) if isinstance(item, Marker)]
        assert len(markers) == 1, seen
        # The main socket is the one of the process that wrote the marker.
        marker = items[markers[0]]
        mains = [sent for (pid, _fd), sent in sockets.items() if pid == marker.pid]
        assert len(mains) == 1, seen
        where = items.index(mains[0][-1])
        if ignore_before_marker:
            assert where < markers[0], f"IGNORE was sent only after the marker\n{seen}"
        else:
            assert where > markers[0], f"IGNORE was sent before the marker\n{seen}"


# -- running a process under strace ---------------------------------------------


class LineReader:
    """Collects a pipe's lines in a thread; optionally closes it after N lines."""

    def __init__(self, stream: IO[bytes], close_after: int | None = None) -> None:
        self.stream = stream
        self.lines: list[bytes] = []
        self.close_after = close_after
        self._cond = threading.Condition()
        self.eof = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for line in self.stream:
                with self._cond:
                    self.lines.append(line)
                    self._cond.notify_all()
                if self.close_after is not None and len(self.lines) >= self.close_after:
                    break
        finally:
            if self.close_after is not None:
                self.stream.close()
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
                    got = b"".join(self.lines[-20:]).decode(errors="replace")
                    raise AssertionError(f"no matching line within {timeout} s; last lines:\n{got}")
                self._cond.wait(remaining)

    def join(self, timeout: float = TIMEOUT) -> None:
        self._thread.join(timeout)

    def text(self) -> str:
        with self._cond:
            return b"".join(self.lines).decode(errors="replace")


class Traced:
    """A command running under strace; stderr always read, stdout on request."""

    def __init__(
        self,
        argv: Sequence[str],
        tmp_path: Path,
        *,
        stdout: int = subprocess.PIPE,
        close_stdout_after: int | None = None,
    ) -> None:
        assert STRACE is not None
        self.trace = tmp_path / "strace.txt"
        cmd = [
            STRACE, "-f", "-qq", "-e", "trace=sendto,sendmsg,kill", "-e", "signal=none",
            "-xx", "-s", "256", "-o", str(self.trace), *argv,
        ]
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.PIPE,
            env=_env(),
            preexec_fn=_default_signals,
            start_new_session=True,
        )
        assert self.proc.stderr is not None
        self.err = LineReader(self.proc.stderr)
        self.out = (
            LineReader(self.proc.stdout, close_after=close_stdout_after) if self.proc.stdout is not None else None
        )
        self.argv = list(argv)
        self._tracee: int | None = None

    def tracee(self) -> int:
        """The pid of the traced command: strace's child running our argv.

        Not simply strace's first child: strace forks short-lived probes of
        its own at startup (their cmdline is strace's, which ends with our
        argv).  A ``#!`` script runs as [interpreter, *argv].
        """
        if self._tracee is None:
            deadline = time.monotonic() + TIMEOUT
            while self._tracee is None:
                for pid in _children(self.proc.pid):
                    cmdline = _cmdline(pid)
                    if cmdline in (self.argv, cmdline[:1] + self.argv):
                        self._tracee = pid
                        break
                else:
                    if time.monotonic() > deadline or self.proc.poll() is not None:
                        raise AssertionError(f"strace is not running {self.argv}")
                    time.sleep(0.01)
        return self._tracee

    def signal(self, sig: int) -> None:
        os.kill(self.tracee(), sig)

    def wait(self, timeout: float = TIMEOUT) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"the traced process did not end within {timeout} s; stderr:\n{self.err.text()}"
            ) from None
        self.err.join()
        if self.out is not None:
            self.out.join()
        return rc

    def requests(self) -> list[Request | Marker]:
        return parse_trace(self.trace)

    def cleanup(self) -> None:
        """Never leave a subscriber behind: SIGTERM the tracee so it can send
        IGNORE; SIGKILL only as a last resort."""
        if self.proc.poll() is not None:
            return
        tracee = None
        with contextlib.suppress(AssertionError):
            tracee = self.tracee()
        for sig in (signal.SIGTERM, signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(OSError):
                # Without a known tracee, SIGTERM strace: it passes that
                # signal on to the command it started, then detaches.
                os.kill(tracee if tracee is not None else self.proc.pid, sig)
            try:
                self.proc.wait(TIMEOUT / 2)
                return
            except subprocess.TimeoutExpired:
                continue
        self.proc.kill()
        self.proc.wait(TIMEOUT)


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [os.fsdecode(arg) for arg in f.read().split(b"\0")[:-1]]
    except OSError:
        return []


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        pass
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry))
    return kids


def _guardians(pid: int, expected: int = 1) -> list[int]:
    """``pid``'s guardian children, once ``expected`` of them have named
    themselves (a forked guardian renames itself right after the fork)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        found = [child for child in _children(pid) if _comm(child) == GUARDIAN]
        if len(found) >= expected or time.monotonic() > deadline:
            return found
        time.sleep(0.01)


def _readers(pid: int) -> list[int]:
    """The capture readers among ``pid``'s children (not its guardian)."""
    guardians = set(_guardians(pid))
    return [child for child in _children(pid) if child not in guardians]


Start = Callable[..., "Traced"]


@pytest.fixture
def traced(tmp_path: Path) -> Iterator[Start]:
    started: list[Traced] = []

    def start(argv: Sequence[str], *, stdout: int = subprocess.PIPE, close_stdout_after: int | None = None) -> Traced:
        t = Traced(argv, tmp_path, stdout=stdout, close_stdout_after=close_stdout_after)
        started.append(t)
        return t

    yield start
    for t in started:
        t.cleanup()


def _script(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "script.py"
    path.write_text(textwrap.dedent(body))
    return [sys.executable, str(path)]


def _ready_pid(t: Traced) -> int:
    assert t.out is not None
    line = t.out.wait_for(lambda line: line.startswith(b"READY"))
    return int(line.split()[1])


# -- the parser itself ------------------------------------------------------------


def test_parse_trace_decodes_strace_netlink_lines(tmp_path: Path) -> None:
    listen_req = wire.encode_request(LISTEN, seq=7, ack=7)
    masked_req = wire.encode_request(LISTEN, EXEC_EXIT_MASK)
    ignore_req = wire.encode_request(IGNORE)

    def hexs(data: bytes) -> str:
        return "".join(f"\\x{b:02x}" for b in data)

    def decoded(data: bytes, type_text: str = "NLMSG_DONE") -> str:
        length, _t, _f, seq, pid = struct.unpack_from("<IHHII", data)
        return (
            f"[{{nlmsg_len={length}, nlmsg_type={type_text}, nlmsg_flags=0, nlmsg_seq={seq}, "
            f"nlmsg_pid={pid}}}, \"{hexs(data[16:])}\"]"
        )

    trace = tmp_path / "t.txt"
    trace.write_text(
        f"100  sendto(3, {decoded(listen_req)}, 40, 0, NULL, 0) = 40\n"
        f"100  sendto(3, {decoded(masked_req, '0x3 /* NLMSG_DONE */')}, 44, 0, NULL, 0 <unfinished ...>\n"
        "101  sendto(5, \"\\x68\\x69\", 2, 0, NULL, 0) = 2\n"
        "100  <... sendto resumed>) = 44\n"
        "100  kill(100, 0) = 0\n"
        "100  kill(100, SIGTERM) = 0\n"
        f"100  sendto(3, \"{hexs(ignore_req)}\", 40, 0, NULL, 0) = 40\n"
    )
    items = parse_trace(trace)
    assert items == [
        Request(100, 3, LISTEN, None, 7, 7, 40, 40),
        Request(100, 3, LISTEN, EXEC_EXIT_MASK, 0, 0, 44, 44),
        Marker(100),
        Request(100, 3, IGNORE, None, 0, 0, 40, 40),
    ]
    assert_ignored_once(items, mask=EXEC_EXIT_MASK, ignore_before_marker=False)
    with pytest.raises(AssertionError, match="exactly one IGNORE"):
        assert_ignored_once([*items, items[-1]], mask=EXEC_EXIT_MASK)
    with pytest.raises(AssertionError, match="exactly one IGNORE"):
        assert_ignored_once(items[:-1], mask=EXEC_EXIT_MASK)


# -- 1..4: the library, leaving without a signal -----------------------------------


def test_with_block_normal_end(traced: Start, tmp_path: Path) -> None:
    t = traced(_script(tmp_path, """
        import os, procevents
        with procevents.listen() as stream:
            stream.read_batch(0.05)
            print("READY", os.getpid(), flush=True)
        assert stream.closed
        os.kill(os.getpid(), 0)  # marker
        print("DONE", flush=True)
    """))
    assert t.wait() == 0, t.err.text()
    assert t.out is not None and "DONE" in t.out.text()
    assert_ignored_once(t.requests(), ignore_before_marker=True)


def test_with_block_filtered_events(traced: Start, tmp_path: Path) -> None:
    t = traced(_script(tmp_path, """
        import os, procevents
        with procevents.listen(events={"exec", "exit"}) as stream:
            assert stream.kernel_filtered
            stream.read_batch(0.05)
        os.kill(os.getpid(), 0)  # marker
    """))
    assert t.wait() == 0, t.err.text()
    assert_ignored_once(t.requests(), mask=EXEC_EXIT_MASK, ignore_before_marker=True)


def test_close_twice(traced: Start, tmp_path: Path) -> None:
    t = traced(_script(tmp_path, """
        import os, procevents
        stream = procevents.listen()
        stream.close()
        stream.close()
        assert stream.closed
        with stream:  # entering a closed connector must not reopen or resend
            pass
        stream.close()
        os.kill(os.getpid(), 0)  # marker
    """))
    assert t.wait() == 0, t.err.text()
    assert_ignored_once(t.requests(), ignore_before_marker=True)


def test_exception_inside_with_block(traced: Start, tmp_path: Path) -> None:
    t = traced(_script(tmp_path, """
        import os, procevents
        try:
            with procevents.listen(events="fork,exit"):
                raise RuntimeError("boom")
        finally:
            os.kill(os.getpid(), 0)  # marker
    """))
    assert t.wait() == 1
    assert "RuntimeError: boom" in t.err.text()
    mask = event_mask(frozenset({"fork", "exit"}))
    assert_ignored_once(t.requests(), mask=mask, ignore_before_marker=True)


def test_dropped_without_close(traced: Start, tmp_path: Path) -> None:
    t = traced(_script(tmp_path, """
        import os, procevents
        stream = procevents.listen()
        del stream  # the last reference: the finalizer sends IGNORE now
        os.kill(os.getpid(), 0)  # marker
    """))
    assert t.wait() == 0, t.err.text()
    assert_ignored_once(t.requests(), ignore_before_marker=True)


def test_dropped_in_a_reference_cycle(traced: Start, tmp_path: Path) -> None:
    t = traced(_script(tmp_path, """
        import gc, os, procevents
        class Holder:
            pass
        holder = Holder()
        holder.me = holder
        holder.stream = procevents.listen()
        del holder
        gc.collect()
        os.kill(os.getpid(), 0)  # marker
    """))
    assert t.wait() == 0, t.err.text()
    assert_ignored_once(t.requests(), ignore_before_marker=True)


def test_interpreter_exit_without_close(traced: Start, tmp_path: Path) -> None:
    t = traced(_script(tmp_path, """
        import os, procevents
        stream = procevents.listen(events=["exec", "exit"])
        os.kill(os.getpid(), 0)  # marker; then the module ends with the stream open
    """))
    assert t.wait() == 0, t.err.text()
    assert_ignored_once(t.requests(), mask=EXEC_EXIT_MASK, ignore_before_marker=False)


def test_sys_exit_with_open_connector(traced: Start, tmp_path: Path) -> None:
    t = traced(_script(tmp_path, """
        import sys, procevents
        stream = procevents.listen()
        sys.exit(7)
    """))
    assert t.wait() == 7, t.err.text()
    assert_ignored_once(t.requests())


def test_async_with_and_break(traced: Start, tmp_path: Path) -> None:
    t = traced(_script(tmp_path, """
        import asyncio, os, subprocess, procevents
        async def main():
            async with procevents.alisten() as stream:
                subprocess.run(["true"])
                async for ev in stream:
                    break
            os.kill(os.getpid(), 0)  # marker
        asyncio.run(main())
    """))
    assert t.wait() == 0, t.err.text()
    assert_ignored_once(t.requests(), ignore_before_marker=True)


def test_unsubscribe_then_close(traced: Start, tmp_path: Path) -> None:
    t = traced(_script(tmp_path, """
        import os, procevents
        with procevents.listen() as stream:
            stream.unsubscribe()
            assert not stream.subscribed
            os.kill(os.getpid(), 0)  # marker: IGNORE already sent
            stream.read_batch(0)  # what was queued can still be read
            stream.unsubscribe()
    """))
    assert t.wait() == 0, t.err.text()
    assert_ignored_once(t.requests(), ignore_before_marker=True)


def test_forked_child_does_not_unsubscribe_the_parent(traced: Start, tmp_path: Path) -> None:
    """A child shares the socket and the subscription: its close() and its
    exit (atexit finalizer) must not send IGNORE; the parent's close does."""
    t = traced(_script(tmp_path, """
        import os, sys, procevents
        with procevents.listen() as stream:
            pid = os.fork()
            if pid == 0:
                stream.close()
                sys.exit(0)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
            assert not stream.closed
            os.kill(os.getpid(), 0)  # marker: the child is gone, we still listen
    """))
    assert t.wait() == 0, t.err.text()
    items = t.requests()
    main_pid = next(item.pid for item in items if isinstance(item, Request))
    strays = [item for item in items if item.pid != main_pid]
    assert not strays, "the forked child sent requests:\n" + describe(items)
    assert_ignored_once(items, ignore_before_marker=False)


# -- 5..7: signals while blocked iterating ------------------------------------------

_LOOP_SCRIPT = """
    import os, procevents
    for i, ev in enumerate(procevents.listen()):
        if i == 0:
            print("READY", os.getpid(), flush=True)
"""


@pytest.mark.parametrize(
    ("sig", "expected"),
    [
        pytest.param(signal.SIGTERM, {143}, id="SIGTERM"),
        pytest.param(signal.SIGHUP, {129}, id="SIGHUP"),
        pytest.param(signal.SIGQUIT, {131}, id="SIGQUIT"),
        pytest.param(signal.SIGUSR2, {128 + signal.SIGUSR2}, id="SIGUSR2"),
        # KeyboardInterrupt: Python re-raises SIGINT at exit; strace passes the
        # death on (-2), a shell would report 130.
        pytest.param(signal.SIGINT, {-signal.SIGINT, 130}, id="SIGINT"),
    ],
)
def test_signal_while_iterating(traced: Start, tmp_path: Path, sig: int, expected: set[int]) -> None:
    t = traced(_script(tmp_path, _LOOP_SCRIPT))
    assert t.out is not None
    deadline = time.monotonic() + TIMEOUT
    while not any(line.startswith(b"READY") for line in t.out.lines):
        assert time.monotonic() < deadline and t.proc.poll() is None, t.err.text()
        _spawn_true(1)  # the first event prints READY
        time.sleep(0.02)
    pid = _ready_pid(t)
    time.sleep(0.2)  # back to waiting in the loop
    os.kill(pid, sig)
    rc = t.wait()
    assert rc in expected, f"exit status {rc}; stderr:\n{t.err.text()}"
    if sig == signal.SIGINT:
        assert "KeyboardInterrupt" in t.err.text()
    else:
        assert "Traceback" not in t.err.text()  # Terminated is a quiet SystemExit
    assert_ignored_once(t.requests())


def test_sigterm_inside_with_block(traced: Start, tmp_path: Path) -> None:
    t = traced(_script(tmp_path, """
        import os, procevents
        try:
            with procevents.listen(events="exec,exit") as stream:
                print("READY", os.getpid(), flush=True)
                for ev in stream:
                    pass
        except procevents.Terminated as exc:
            os.kill(os.getpid(), 0)  # marker: the with block has been left
            print("TERMINATED", exc.signum, exc.code, flush=True)
            raise
    """))
    pid = _ready_pid(t)
    os.kill(pid, signal.SIGTERM)
    assert t.wait() == 143, t.err.text()
    assert t.out is not None and f"TERMINATED {int(signal.SIGTERM)} 143" in t.out.text()
    assert_ignored_once(t.requests(), mask=EXEC_EXIT_MASK, ignore_before_marker=True)


def test_sigterm_after_connector_was_dropped_is_default_again(traced: Start, tmp_path: Path) -> None:
    """Terminated is for "while a connector is open": once the only connector
    has been garbage collected (IGNORE sent), SIGTERM must kill as usual."""
    t = traced(_script(tmp_path, """
        import gc, os, time, procevents
        stream = procevents.listen()
        del stream
        gc.collect()
        print("READY", os.getpid(), flush=True)
        time.sleep(30)
    """))
    pid = _ready_pid(t)
    os.kill(pid, signal.SIGTERM)
    rc = t.wait()
    assert_ignored_once(t.requests())
    assert rc == -signal.SIGTERM, f"exit status {rc}: SIGTERM still raised Terminated after the connector was gone"


# -- 8: the command line ------------------------------------------------------------


def _wait_listening(t: Traced) -> None:
    t.err.wait_for(lambda line: line.startswith(b"procevents: listening"))


def test_cli_broken_pipe(traced: Start) -> None:
    t = traced([*_cli()], close_stdout_after=1)
    _wait_listening(t)
    deadline = time.monotonic() + TIMEOUT
    while t.proc.poll() is None and time.monotonic() < deadline:
        _spawn_true(2)  # output for the closed pipe
        time.sleep(0.02)
    rc = t.wait()
    assert t.out is not None and len(t.out.lines) == 1
    assert rc == 0, t.err.text()
    assert "Traceback" not in t.err.text()
    assert_ignored_once(t.requests(), readers=CPUS)


@pytest.mark.parametrize(
    ("args", "mask"),
    [
        pytest.param(["-n", "1"], None, id="count"),
        pytest.param(["-D", "0.5"], None, id="duration"),
        # Enrichment (the default) needs every fork and exit: -e filters in userspace.
        pytest.param(["-e", "exec,exit", "-n", "1"], None, id="filtered-count"),
        pytest.param(["--no-enrich", "-e", "exec,exit", "-n", "1"], EXEC_EXIT_MASK, id="kernel-filtered-count"),
        pytest.param(["--no-enrich", "-D", "0.5"], None, id="no-enrich-duration"),
        pytest.param(["--json", "-o", "{tmp}/out.jsonl", "-n", "2"], None, id="output-file"),
    ],
)
def test_cli_ends_by_itself(traced: Start, tmp_path: Path, args: list[str], mask: int | None) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    t = traced([*_cli(), *args], stdout=subprocess.DEVNULL)
    _wait_listening(t)
    deadline = time.monotonic() + TIMEOUT
    while t.proc.poll() is None and time.monotonic() < deadline:
        _spawn_true(1)
        time.sleep(0.05)
    assert t.wait() == 0, t.err.text()
    assert re.search(r"\d+ events? received", t.err.text()), t.err.text()  # "1 event" with -n 1
    assert_ignored_once(t.requests(), mask=mask, readers=0 if "--no-enrich" in args else CPUS)


# Every signal whose default action would end procevents (and leave the
# kernel subscription behind), an RT signal too.
_ENDING_SIGNALS = [
    signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR2, signal.SIGALRM,
    signal.SIGXCPU, signal.SIGXFSZ, signal.SIGVTALRM, signal.SIGPROF, signal.SIGPWR, signal.SIGRTMIN + 3,
]


@pytest.mark.parametrize("sig", _ENDING_SIGNALS, ids=lambda s: signal.strsignal(s) or str(s))
def test_cli_signal(traced: Start, sig: int) -> None:
    t = traced([*_cli(), "--json"], stdout=subprocess.DEVNULL)
    _wait_listening(t)
    _spawn_true(2)
    t.signal(sig)
    assert t.wait() == 0, t.err.text()
    assert "Traceback" not in t.err.text()
    assert re.search(r"^procevents: \d+ events received.*, \d+ events lost$", t.err.text(), re.M), t.err.text()
    assert_ignored_once(t.requests(), readers=CPUS)


@pytest.mark.parametrize("sig", [signal.SIGQUIT, signal.SIGUSR2, signal.SIGTERM], ids=lambda s: s.name)
def test_cli_record_signal(traced: Start, tmp_path: Path, sig: signal.Signals) -> None:
    t = traced([*_cli(), "record", "--db", str(tmp_path / "a.db")], stdout=subprocess.DEVNULL)
    _wait_listening(t)
    _spawn_true(2)
    t.signal(sig)
    assert t.wait() == 0, t.err.text()
    assert "Traceback" not in t.err.text() and "events recorded" in t.err.text()
    assert_ignored_once(t.requests(), readers=CPUS)


def test_cli_sigusr1_does_not_end_it(traced: Start) -> None:
    t = traced([*_cli(), "--no-enrich"], stdout=subprocess.DEVNULL)
    _wait_listening(t)
    t.signal(signal.SIGUSR1)
    t.err.wait_for(lambda line: re.search(rb"\d+ events? received", line) is not None)
    assert t.proc.poll() is None, t.err.text()
    t.signal(signal.SIGTERM)
    assert t.wait() == 0, t.err.text()
    assert_ignored_once(t.requests())


def test_cli_kill_9_guardian_says_ignore(traced: Start) -> None:
    """What no handler catches: the guardian shares the socket and says IGNORE."""
    t = traced([*_cli(), "--no-enrich"], stdout=subprocess.DEVNULL)
    _wait_listening(t)
    main = t.tracee()
    guardians = _guardians(main)
    assert len(guardians) == 1, _children(main)
    os.kill(main, signal.SIGKILL)
    t.wait()
    requests = [r for r in t.requests() if isinstance(r, Request)]
    assert [(r.pid, r.op) for r in requests] == [(main, LISTEN), (guardians[0], IGNORE)], describe(requests)
    assert requests[0].fd == requests[1].fd  # the same socket, shared
    assert _comm(guardians[0]) in ("", GUARDIAN)  # gone (or a zombie reaped by init)


def test_cli_clean_exit_guardian_stays_silent(traced: Start) -> None:
    t = traced([*_cli(), "--no-enrich", "-D", "0.5"], stdout=subprocess.DEVNULL)
    _wait_listening(t)
    main = t.tracee()
    guardians = _guardians(main)
    assert t.wait() == 0, t.err.text()
    requests = [r for r in t.requests() if isinstance(r, Request)]
    assert [(r.pid, r.op) for r in requests] == [(main, LISTEN), (main, IGNORE)], describe(requests)
    assert len(guardians) == 1 and not Path(f"/proc/{guardians[0]}").exists()


def test_cli_python_m_signal_with_filter(traced: Start) -> None:
    t = traced([sys.executable, "-m", "procevents", "--no-enrich", "-e", "exec,exit"], stdout=subprocess.DEVNULL)
    _wait_listening(t)
    t.signal(signal.SIGTERM)
    assert t.wait() == 0, t.err.text()
    assert_ignored_once(t.requests(), mask=EXEC_EXIT_MASK)


# -- the trace subcommand ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        pytest.param(["true"], 0, id="true"),
        pytest.param(["sh", "-c", "exit 3"], 3, id="exit-3"),
        pytest.param(["/nonexistent/command"], 127, id="not-found"),
    ],
)
def test_cli_trace_ends(traced: Start, command: list[str], expected: int) -> None:
    t = traced([*_cli(), "trace", "-q", "--", *command], stdout=subprocess.DEVNULL)
    assert t.wait() == expected, t.err.text()
    assert "Traceback" not in t.err.text()
    assert_ignored_once(t.requests(), readers=CPUS)


def test_cli_trace_sigterm_is_forwarded(traced: Start) -> None:
    t = traced([*_cli(), "trace", "--", "sleep", "30"], stdout=subprocess.DEVNULL)
    tracee = t.tracee()
    deadline = time.monotonic() + TIMEOUT
    while True:  # the subscription is made before CMD starts
        sleepers = [pid for pid in _children(tracee) if _comm(pid) == "sleep"]
        if sleepers:
            break
        kids = {pid: _comm(pid) for pid in _children(tracee)}
        assert t.proc.poll() is None, t.err.text()
        assert time.monotonic() < deadline, f"CMD not started; children {kids}; stderr:\n{t.err.text()}"
        time.sleep(0.02)
    time.sleep(0.2)
    os.kill(tracee, signal.SIGTERM)
    assert t.wait() == 128 + signal.SIGTERM, t.err.text()
    assert_ignored_once(t.requests(), readers=CPUS)


def test_cli_trace_unwritable_output(traced: Start, tmp_path: Path) -> None:
    t = traced(
        [*_cli(), "trace", "-o", str(tmp_path / "missing" / "out.txt"), "--", "true"], stdout=subprocess.DEVNULL
    )
    assert t.wait() == 2, t.err.text()
    assert_ignored_once(t.requests(), readers=CPUS)


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


# -- the kernel's own witness: a leaked subscription keeps every CPU's seq moving --------------


def _pinned_true(cpu: int) -> int:
    child = subprocess.Popen(["/bin/true"], preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))
    child.wait()
    return child.pid


def _seq_marks() -> dict[int, int]:
    """Each CPU's event counter now: a process pinned to each CPU, seen by a
    short subscription of our own (which says IGNORE when it closes)."""
    marks: dict[int, int] = {}
    with procevents.listen(events="exit", kernel_filter=False) as conn:
        pids = {_pinned_true(cpu): cpu for cpu in CPU_LIST}
        deadline = time.monotonic() + TIMEOUT
        while len(marks) < len(pids) and time.monotonic() < deadline:
            for event in conn.read_batch(0.1):
                if event.tgid in pids and event.pid == event.tgid:
                    marks[pids[event.tgid]] = event.seq
    assert len(marks) == len(CPU_LIST), marks
    return marks


def _numbered_while_nobody_listened(runs: int = 100) -> int:
    """Events the kernel numbered on the quietest CPU while we did not listen:
    about 0 with no subscriber anywhere, about 3 x ``runs`` when one leaked."""
    before = _seq_marks()
    for cpu in CPU_LIST:
        for _ in range(runs):
            _pinned_true(cpu)
    after = _seq_marks()
    return min(after[cpu] - before[cpu] for cpu in CPU_LIST)


def test_no_leaked_subscription_after_kill_9(traced: Start) -> None:
    """The doc's seq test: after procevents is killed with SIGKILL (its guardian
    says IGNORE), the kernel stops numbering events again."""
    if _numbered_while_nobody_listened() > 150:
        pytest.skip("this machine already has another subscriber, or a leaked one (e.g. a killed forkstat)")
    t = traced([*_cli(), "--no-enrich"], stdout=subprocess.DEVNULL)
    _wait_listening(t)
    main = t.tracee()
    (guardian,) = _guardians(main)
    os.kill(main, signal.SIGKILL)
    t.wait()
    assert not Path(f"/proc/{guardian}").exists() or _comm(guardian) == ""
    assert _numbered_while_nobody_listened() < 150  # 100 processes per CPU: 300 events if it had leaked

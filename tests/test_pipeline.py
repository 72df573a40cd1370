"""The main loop's waiting: events gather for the linger before a read, a
signal ends a wait at once, and each output says how long it may wait.

Kernel tests subscribe for real; processes are held on a pipe until the
reader waits.  No wall-clock assertion but "well before the timeout".
"""

from __future__ import annotations

import io
import os
import select
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import skip_unless_connector

import procevents
from procevents.events import Exit
from procevents.pipeline import STREAM_LINGER, TERMINAL_LINGER, Output
from procevents.store import StoreWriter


def _forker(count: int) -> tuple[int, int, int]:
    """A child that, once released (a byte on the first fd), forks ``count``
    children that exit at once, and writes their pids to the second fd."""
    go_r, go_w = os.pipe()
    pids_r, pids_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(go_w)
            os.close(pids_r)
            os.read(go_r, 1)
            born = []
            for _ in range(count):
                child = os.fork()
                if child == 0:
                    os._exit(0)
                born.append(child)
            for child in born:
                os.waitpid(child, 0)
            os.write(pids_w, " ".join(map(str, born)).encode())
        finally:
            os._exit(0)
    os.close(go_r)
    os.close(pids_w)
    return pid, go_w, pids_r


def test_events_gather_during_the_linger() -> None:
    """Reads are spaced out while events keep coming (10 ms after a quiet
    spell, doubling): a burst of 10 exits comes in a few batches, not one
    by one."""
    skip_unless_connector()
    with procevents.listen(events={"exit"}) as conn:
        pid, go, pids_fd = _forker(10)
        try:
            # Released once the reader is surely waiting (if late, the
            # events are queued before the wait: the test still holds).
            release = threading.Timer(0.2, os.write, (go, b"x"))
            release.start()
            batches: list[set[int]] = []
            born: set[int] | None = None
            seen: set[int] = set()
            while (born is None or not born <= seen) and len(batches) < 50:
                batches.append({e.tgid for e in conn.read_batch(timeout=30, linger=1.0) if type(e) is Exit})
                seen |= batches[-1]
                if born is None and select.select([pids_fd], [], [], 0)[0]:
                    born = {int(p) for p in os.read(pids_fd, 4096).split()}
            release.join()
        finally:
            os.close(go)
            os.close(pids_fd)
            os.waitpid(pid, 0)
    assert born is not None and len(born) == 10 and born <= seen
    with_burst = [batch & born for batch in batches if batch & born]
    assert len(with_burst) <= 4, with_burst


def test_a_signal_ends_the_wait_at_once() -> None:
    """The CLI stops on SIGTERM without a periodic tick: the signal's byte on
    the wakeup pipe ends the wait."""
    skip_unless_connector()
    got: list[int] = []
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    previous_fd = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    previous = signal.signal(signal.SIGUSR1, lambda signum, _frame: got.append(signum))
    try:
        with procevents.listen(events={"ptrace"}) as conn:  # rare events (filtered in the kernel)
            conn.wake_on(wake_r)
            timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGUSR1))
            timer.start()
            started = time.monotonic()
            while not got:
                conn.read_batch(timeout=30)
                assert time.monotonic() - started < 29, "the signal did not end the wait"
            timer.join()
            conn.wake_on(None)
    finally:
        signal.signal(signal.SIGUSR1, previous)
        signal.set_wakeup_fd(previous_fd)
        os.close(wake_r)
        os.close(wake_w)
    assert got == [signal.SIGUSR1]


def test_linger_by_destination(tmp_path: Path) -> None:
    """A terminal sees each line within 100 ms; a pipe or file may wait longer."""
    assert TERMINAL_LINGER <= 0.1 < STREAM_LINGER
    main, sub = os.openpty()
    pipe_r, pipe_w = os.pipe()
    try:
        with os.fdopen(os.dup(sub), "wb") as tty, os.fdopen(os.dup(pipe_w), "wb") as pipe:
            assert Output(tty).linger == TERMINAL_LINGER
            assert Output(pipe).linger == STREAM_LINGER
        with open(tmp_path / "out", "wb") as file:
            assert Output(file).linger == STREAM_LINGER
        assert Output(io.BytesIO()).linger == TERMINAL_LINGER  # no descriptor: as soon as asked
    finally:
        for fd in (main, sub, pipe_r, pipe_w):
            os.close(fd)


def test_an_idle_recorder_needs_no_wakeup(tmp_path: Path) -> None:
    writer = StoreWriter(str(tmp_path / "a.db"))
    try:
        assert writer.flush_due_in is None  # nothing waiting: sleep until an event
        writer.touch(writer.new_life(4242, 1, 0, True))
        assert writer.flush_due_in == 0.0  # a changed lifetime: commit now
        writer.flush()
        assert writer.flush_due_in is None
    finally:
        writer.close()
    pruning = StoreWriter(str(tmp_path / "b.db"), retain_ns=3600 * 10**9)
    try:
        pruning.prune()  # the first prune is due at once; the next in PRUNE_INTERVAL
        due = pruning.flush_due_in
        assert due is not None and 0 < due <= 60.0
    finally:
        pruning.close()


@pytest.mark.parametrize("pending", [False, True])
def test_a_regular_file_is_written_when_due(tmp_path: Path, pending: bool) -> None:
    with open(tmp_path / "out", "wb") as file:
        out = Output(file)
        if pending:
            out.write(b"x\n")
            due = out.flush_due_in
            assert due is not None and 0 <= due <= 0.2
        else:
            assert out.flush_due_in is None


def test_choose_sink() -> None:
    from procevents.pipeline import JsonSink, TextSink, TreeSink, choose_sink
    from procevents.render.clock import Clock

    out = Output(io.BytesIO())
    clock = Clock()
    json_sink = choose_sink(out, json=True, lineage=lambda _proc: [], clock=clock)
    assert isinstance(json_sink, JsonSink) and json_sink.clock is clock
    assert isinstance(choose_sink(out, json=False, lineage=lambda _proc: []), TreeSink)
    text_sink = choose_sink(out, json=False, lineage=None, clock=clock)
    assert isinstance(text_sink, TextSink) and text_sink.renderer.clock is clock


def _encoders() -> list[Any]:
    from procevents.render import jsonl

    found: list[Any] = [jsonl._stdlib_dumps]
    try:
        import orjson
    except ImportError:
        pass
    else:
        found.append(orjson.dumps)
    return found


@pytest.mark.parametrize("dumps", _encoders(), ids=lambda f: f.__module__)
def test_json_keeps_every_odd_text_exactly(dumps: Any) -> None:
    """Bug caught: cwd (or exe, user, comm, cmdline) not escaped in JSON: a
    process whose cwd is not UTF-8 broke the line, or the program."""
    import base64
    import json

    from procevents.events import Exec
    from procevents.pipeline import JsonSink

    buf = io.BytesIO()
    sink = JsonSink(Output(buf))
    sink.dumps = dumps
    odd = "/tmp/x\udcff"  # the byte 0xff, as os.fsdecode shows it
    info = {"cwd": odd, "exe": odd, "user": "u\udcfe", "comm": "c\udcfd", "cmdline": ["a\udcfc", "b"]}
    sink.emit(Exec(0, 1, 0, 7, 7), None, info)
    sink.output.flush()
    line = json.loads(buf.getvalue())
    for key, raw in (("cwd", b"/tmp/x\xff"), ("exe", b"/tmp/x\xff"), ("user", b"u\xfe"), ("comm", b"c\xfd")):
        assert line[key] == raw.decode("utf-8", "replace"), key
        assert base64.b64decode(line[f"{key}_b64"]) == raw, key
    assert line["cmdline"] == ["a\ufffd", "b"]


def test_on_batch_runs_after_each_batch_then_stop_is_asked() -> None:
    """A view's redraw is not a stop condition: on_batch runs after every
    batch (and tick), and stop() is asked right after it."""
    from procevents.pipeline import Pipeline

    skip_unless_connector()
    seen: set[int] = set()
    calls: list[tuple[str, int]] = []

    class Exits:
        def emit(self, event: Any, proc: Any, info: Any) -> bool:
            seen.add(event.tgid)
            return True

    with procevents.listen(events={"exit"}) as conn:
        pid, go, pids_fd = _forker(3)
        born: set[int] = set()
        try:
            os.write(go, b"x")  # subscribed already: the exits will come
            born = {int(p) for p in os.read(pids_fd, 4096).split()}

            def stop() -> bool:
                calls.append(("stop", len(seen)))
                return born <= seen

            pipeline = Pipeline(conn, Exits())
            pipeline.run(duration=30, stop=stop, tick=0.1, on_batch=lambda: calls.append(("batch", len(seen))))
        finally:
            os.close(go)
            os.close(pids_fd)
            os.waitpid(pid, 0)
    assert len(born) == 3 and born <= seen
    assert calls[0] == ("stop", 0)  # asked once before the first read
    rest = calls[1:]
    assert rest and len(rest) % 2 == 0
    for (first, count), (then, asked) in zip(rest[::2], rest[1::2], strict=True):
        assert (first, then) == ("batch", "stop") and count == asked
    assert any(count > 0 for kind, count in rest if kind == "batch")

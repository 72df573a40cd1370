"""The main loop (pipeline.py): each output says how long it may wait, the
sink each view chooses, JSON keeping odd text exactly, and a view's redraw
after every batch.  The socket's own waiting (the linger, a signal ending a
wait): test_connector.py.

Kernel tests subscribe for real; processes are held on a pipe until the
reader waits.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import Cli, burst_tools, forker, skip_unless_connector, summary

import procevents
from procevents.pipeline import STREAM_LINGER, TERMINAL_LINGER, Output


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
        pid, go, pids_fd = forker(3)
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



def test_every_lost_event_carries_the_running_total(cli: Callable[..., Cli], tmp_path: Path) -> None:
    """A real loss (a 16 KiB receive buffer under a fork storm): each lost
    event's total is every loss so far, this one included, and the last is
    the summary's count."""
    burst, _tiny = burst_tools()
    out = tmp_path / "events.jsonl"
    c = cli("--json", "--no-enrich", "--buffer", "16K", "-o", str(out))
    c.wait_listening()
    subprocess.run(
        [str(burst), "-o", str(tmp_path / "pids"), "-m", "fork", "-n", "20000", "-p", "2"],
        stdout=subprocess.DEVNULL, check=True, timeout=120,
    )
    assert c.stop() == 0, c.err.text
    lost = [e for e in map(json.loads, out.read_bytes().splitlines()) if e["event"] == "lost"]
    assert lost, "no loss with a 16 KiB buffer: nothing was tested"
    running = 0
    for event in lost:
        running += event["count"]
        assert event["total"] == running, (event, running)
    assert int(summary(c.err.text)[3]) == running

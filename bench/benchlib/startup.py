"""procevents' start-up: ``--help`` wall time, the interpreter's own start
for scale, and the time from starting ``procevents --json`` to its
'listening' notice and to its first line about a process started after it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from queue import Empty, Queue

from . import BenchError
from .host import stop_tree
from .outputs import LISTENING


def help_time(cmd: list[str], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([*cmd, "--help"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        out.append(time.perf_counter() - t0)
    return out


def interpreter_time(runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        out.append(time.perf_counter() - t0)
    return out


def first_event_time(cmd: list[str], timeout: float = 10.0) -> tuple[float, float | None, list[str]]:
    """Start ``procevents --json`` while /bin/true is spawned every ~2 ms;
    seconds from the start until (its first line about one of those
    processes, its 'listening' notice), and processes of its tree still
    running after it was stopped."""
    spawned: set[int] = set()
    lock = threading.Lock()
    stop = threading.Event()

    def spawner() -> None:
        while not stop.is_set():
            pid = os.posix_spawn("/bin/true", ["true", "first-event"], os.environ)
            with lock:
                spawned.add(pid)
            os.waitpid(pid, 0)
            time.sleep(0.002)

    lines: Queue[tuple[float, bytes]] = Queue()
    listening: list[float] = []
    spawn_thread = threading.Thread(target=spawner, daemon=True)
    spawn_thread.start()
    time.sleep(0.05)
    t0 = time.perf_counter()
    proc = subprocess.Popen([*cmd, "--json"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)

    def read_out() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put((time.perf_counter(), line))

    def read_err() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if LISTENING.encode() in line and not listening:
                listening.append(time.perf_counter())

    readers = [threading.Thread(target=read_out, daemon=True), threading.Thread(target=read_err, daemon=True)]
    for r in readers:
        r.start()
    seen: list[tuple[float, int]] = []
    found: float | None = None
    try:
        deadline = time.monotonic() + timeout
        while found is None and time.monotonic() < deadline:
            try:
                at, raw = lines.get(timeout=0.1)
                ev = json.loads(raw)
                pid = ev.get("child_pid") if ev.get("event") == "fork" else ev.get("pid")
                if isinstance(pid, int):
                    seen.append((at, pid))
            except Empty:
                pass
            except ValueError:
                continue
            with lock:
                hits = [at for at, pid in seen if pid in spawned]
            if hits:
                found = min(hits)
    finally:
        stop.set()
        _status, leftover = stop_tree(proc, None, 10)
        spawn_thread.join(5)
        for r in readers:
            r.join(5)
    if found is None:
        raise BenchError(f"procevents showed none of the spawned processes within {timeout:g} s")
    return found - t0, (listening[0] - t0 if listening else None), leftover

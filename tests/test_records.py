"""The enriched Python API, ``procevents.watch`` (records.py), against the real
kernel: records carry the JSON fields (exit costs included), asyncio, a bad mode is refused, the
readers stop when a Watch is dropped."""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from helpers import WATCH_TIMEOUT, needs_root, nonce

import procevents
from procevents.capture import online_cpus
from procevents.costs import COST_KEYS


@needs_root
def test_watch_api_gives_the_json_fields() -> None:
    with procevents.watch(events="exec,exit", env=True) as records:
        p = subprocess.Popen(["/bin/sh", "-c", "exit 3", nonce()], env={"K": "v"})
        p.wait()
        got: dict[str, procevents.Record] = {}
        deadline = time.monotonic() + WATCH_TIMEOUT
        while len(got) < 2:
            assert time.monotonic() < deadline
            for record in records.read_batch(0.2):
                if record.pid == p.pid:
                    got[record.event.name] = record
    exec_rec, exit_rec = got["exec"], got["exit"]
    assert isinstance(exec_rec.event, procevents.Exec)
    assert exec_rec.cmdline == p.args and exec_rec["comm"] == "sh" and exec_rec.env == ["K=v"]
    assert exec_rec.user == "root" and exec_rec.exe == os.path.realpath("/bin/sh")
    assert exit_rec.status == 3 and exit_rec.cmdline == p.args and exit_rec.duration > 0
    assert set(exec_rec) >= {"event", "time", "pid", "tgid", "cmdline", "exe", "cwd", "ppid", "uid", "user", "comm"}


@needs_root
def test_watch_api_asyncio() -> None:
    import asyncio

    async def main() -> list[str]:
        async with procevents.watch(events="exec") as records:
            p = subprocess.Popen(["/bin/true", "from-asyncio"])
            async for record in records:
                if record.pid == p.pid:
                    p.wait()
                    return list(record.cmdline)
        return []

    assert asyncio.run(main()) == ["/bin/true", "from-asyncio"]


def test_watch_api_rejects_a_bad_mode() -> None:
    with pytest.raises(ValueError, match="capture"):
        procevents.watch(capture="fast")


@needs_root
def test_a_dropped_watch_stops_its_readers() -> None:
    records = procevents.watch()
    records.open()
    assert records.capture is not None
    readers = [reader.pid for reader in records.capture.readers.values()]
    assert len(readers) == len(online_cpus())
    del records
    import gc

    gc.collect()
    deadline = time.monotonic() + WATCH_TIMEOUT
    for pid in readers:
        while True:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            assert time.monotonic() < deadline, f"reader {pid} still running after its Watch was dropped"
            time.sleep(0.01)


@needs_root
def test_watch_api_exits_have_the_costs_the_json_has() -> None:
    # The child starts once the watch is open: its whole life, and its
    # taskstats record, come after the registration.
    with procevents.watch(events="exit") as records:
        p = subprocess.Popen(["/bin/sh", "-c", "exit 0", nonce()])
        p.wait()
        found = None
        deadline = time.monotonic() + WATCH_TIMEOUT
        while found is None:
            assert time.monotonic() < deadline, "no exit record"
            found = next((r for r in records.read_batch(0.2) if r.pid == p.pid), None)
    assert set(COST_KEYS) <= set(found), found
    assert found.utime is not None and found.stime is not None and found.max_rss > 0, found
    assert getattr(records, "costs_unavailable", "no such attribute") is None


@needs_root
def test_watch_api_without_costs() -> None:
    with procevents.watch(events="exit", costs=False) as records:
        p = subprocess.Popen(["/bin/true", nonce()])
        p.wait()
        found = None
        deadline = time.monotonic() + WATCH_TIMEOUT
        while found is None:
            assert time.monotonic() < deadline, "no exit record"
            found = next((r for r in records.read_batch(0.2) if r.pid == p.pid), None)
    assert not set(COST_KEYS) & set(found), found

"""Shipping to NATS JetStream and collecting many hosts into one store
(issue 11), against a real nats-server on 127.0.0.1 started for each test.

The measure of every test is exact: the rows each recorder committed and
the rows the central store holds for that host, compared one by one
(nothing lost, nothing twice), across a NATS outage, kill -9 of the
recorder and of the collector, and two recorders with different host names.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    Cli,
    Gated,
    NatsServer,
    db_rows,
    env,
    nats,
    run_cli,
    wait_until,
)

__all__ = ["nats"]  # the fixture, imported to be used here

#: Shipping and collecting may take their time on a loaded machine; a bound, not a pace.
SHIP_TIMEOUT = 60.0



def _workload(tag: str, count: int = 3) -> None:
    """``count`` processes (the last one fails) under a shell, each held
    until it is released, so every exec is seen by name."""
    kids = [Gated(["sh", "-c", f"read _; exec sh -c 'exit {3 if i == count - 1 else 0}' {tag}-{i}"])
            for i in range(count)]
    for kid in kids:
        kid.release()


def _has_argv(db: Path, word: str) -> bool:
    return db_rows(db, "SELECT count(*) FROM events WHERE instr(argv, CAST(? AS BLOB))", (word,)) not in ([], [(0,)])


def _local(db: Path) -> list[tuple[Any, ...]]:
    return db_rows(
        db, "SELECT id, event, pid, tgid, ts, cpu, seq, argv, exe, comm, cgroup, host FROM events ORDER BY id"
    )


def _central(db: Path, host: str) -> list[tuple[Any, ...]]:
    return db_rows(
        db, "SELECT e.remote_id, e.event, e.pid, e.tgid, e.ts, e.cpu, e.seq, e.argv, e.exe, e.comm, e.cgroup, e.host "
        "FROM events e JOIN sources s ON s.id = e.source WHERE s.host = ? ORDER BY e.remote_id", (host,),
    )


def _lifetimes(db: Path, where: str = "", params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    return sorted(db_rows(
        db, "SELECT p.exec_id, p.parent_exec_id, p.pid, p.ppid, p.comm, p.argv, p.exit_code, p.start_ns, p.end_ns, "
        f"p.cgroup, q.exec_id FROM procs p LEFT JOIN procs q ON q.id = p.parent {where}", params,
    ), key=repr)


def _wait_collected(central: Path, host: str, local: Path) -> None:
    want = _local(local)
    assert want, "nothing was recorded"
    wait_until(lambda: len(_central(central, host)) >= len(want), f"{len(want)} events of {host} collected",
               timeout=SHIP_TIMEOUT)


def _assert_same(central: Path, host: str, local: Path) -> None:
    """Every event and lifetime of ``local``, exactly once, nothing else."""
    assert _central(central, host) == _local(local)
    assert db_rows(central, "SELECT count(*) - count(DISTINCT e.remote_id) FROM events e JOIN sources s "
                   "ON s.id = e.source WHERE s.host = ?", (host,)) == [(0,)]
    assert _lifetimes(central, "WHERE p.host = ?", (host,)) == _lifetimes(local)
    assert db_rows(central, "SELECT count(*) FROM procs WHERE pid = 0") == [(0,)]  # no placeholder left


def _recorder(cli: Callable[..., Cli], db: Path, host: str, nats: NatsServer, *extra: str) -> Cli:
    rec = cli("record", "--db", str(db), "--host", host, "--nats", nats.url, "-p", str(os.getpid()), *extra)
    rec.wait_listening()
    return rec


def test_two_hosts_into_one_collector(cli: Callable[..., Cli], nats: NatsServer, tmp_path: Path) -> None:
    central = tmp_path / "central.db"
    collector = cli("collect", "--nats", nats.url, "--db", str(central))
    alpha = _recorder(cli, tmp_path / "alpha.db", "alpha", nats)
    beta = _recorder(cli, tmp_path / "beta.db", "beta.example", nats)
    _workload(uuid.uuid4().hex[:8])
    for rec in (alpha, beta):
        assert rec.stop() == 0, rec.err.text
        assert b"lifetime updates shipped to stream PROCEVENTS\n" in rec.err.data, rec.err.text
    _wait_collected(central, "alpha", tmp_path / "alpha.db")
    _wait_collected(central, "beta.example", tmp_path / "beta.db")
    assert collector.stop() == 0, collector.err.text
    assert b"from 2 hosts into" in collector.err.data, collector.err.text
    _assert_same(central, "alpha", tmp_path / "alpha.db")
    _assert_same(central, "beta.example", tmp_path / "beta.db")
    # query answers for each host as it does on that host's own file.
    for host, local in (("alpha", "alpha.db"), ("beta.example", "beta.db")):
        for view in (["--failed", "--tree"], ["--json"]):
            there = run_cli("query", "--db", str(central), "--host", host, *view)
            here = run_cli("query", "--db", str(tmp_path / local), *view)
            assert there.returncode == 0 and here.returncode == 0, there.stderr
            assert there.stdout == here.stdout and b"status 3" in run_cli(
                "query", "--db", str(central), "--host", host, "--failed").stdout
    # replay too: each host's events as its own recording shows them.
    for host, local in (("alpha", "alpha.db"), ("beta.example", "beta.db")):
        mine = [e for e in _replayed(central) if (e.get("exec_id") or "").startswith(f"{host}:")]
        theirs = [e for e in _replayed(tmp_path / local) if e.get("exec_id")]
        assert [{k: v for k, v in e.items() if k != "time"} for e in mine] == [
            {k: v for k, v in e.items() if k != "time"} for e in theirs]


def _replayed(db: Path) -> list[dict[str, Any]]:
    result = run_cli("replay", "--db", str(db), "--json")
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_nats_down_while_recording_then_back(cli: Callable[..., Cli], nats: NatsServer, tmp_path: Path) -> None:
    local = tmp_path / "events.db"
    central = tmp_path / "central.db"
    secret = "s3cret-" + uuid.uuid4().hex[:6]
    url = nats.url.replace("nats://", f"nats://procevents:{secret}@")
    proc_env = env() | {"PROCEVENTS_NATS_URL": url}
    rec = Cli(["record", "--db", str(local), "--host", "h1", "-p", str(os.getpid())], environ=proc_env)
    try:
        rec.wait_listening()
        rec.err.wait_for(lambda line: b"nats: shipping to" in line)
        shipper = _shipper_of(rec.pid)
        for pid in (rec.pid, shipper):
            assert secret.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        _workload("before")
        nats.stop()
        rec.err.wait_for(lambda line: b"events wait in the outbox" in line)
        _workload("during")
        # Recorded meanwhile, and waiting: the cursor is behind the last committed event.
        wait_until(lambda: _has_argv(local, "during-2"), "the outage's workload recorded")
        assert db_rows(local, "SELECT (SELECT max(id) FROM events) > events FROM outbox") == [(1,)]
        nats.start()
        collector = cli("collect", "--nats", nats.url, "--db", str(central))
        _workload("after")
        assert rec.stop() == 0, rec.err.text
        _wait_collected(central, "h1", local)
        assert collector.stop() == 0
        _assert_same(central, "h1", local)
        assert db_rows(local, "SELECT (SELECT max(id) FROM events) = events FROM outbox") == [(1,)]
        assert secret.encode() not in rec.err.data and b"Traceback" not in rec.err.data, rec.err.text
    finally:
        rec.cleanup()


def _shipper_of(pid: int) -> int:
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        if b"procevents.fleet.shipper" in Path(f"/proc/{child}/cmdline").read_bytes():
            return int(child)
    raise AssertionError("no shipper process")


def test_kill_9_of_the_recorder_and_of_the_collector(cli: Callable[..., Cli], nats: NatsServer, tmp_path: Path) -> None:
    local = tmp_path / "events.db"
    central = tmp_path / "central.db"
    rec = _recorder(cli, local, "h2", nats)
    shipper = _shipper_of(rec.pid)
    _workload("first")
    wait_until(lambda: _has_argv(local, "first-2"), "the first workload committed")
    rec.proc.kill()  # its guardian unsubscribes; its shipper ships what is committed and ends
    rec.wait()
    wait_until(lambda: not Path(f"/proc/{shipper}").exists() or b"Z" in _state(shipper), "the shipper's end")
    rec = _recorder(cli, local, "h2", nats)
    collector = cli("collect", "--nats", nats.url, "--db", str(central))
    _workload("second", 20)
    wait_until(lambda: db_rows(central, "SELECT count(*) FROM events") not in ([], [(0,)]), "a first commit")
    collector.proc.kill()  # wherever it is: between fetch, commit and acknowledgement
    collector.wait()
    assert rec.stop() == 0, rec.err.text
    collector = cli("collect", "--nats", nats.url, "--db", str(central))
    _wait_collected(central, "h2", local)
    assert collector.stop() == 0, collector.err.text
    _assert_same(central, "h2", local)
    # Both sessions of the recorder are there, the killed one without an end.
    assert db_rows(central, "SELECT ended FROM sessions WHERE source IS NOT NULL ORDER BY remote_id") == [
        (None,), ("clean",)]


def _state(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1][:3]
    except OSError:
        return b"Z"


def test_everything_delivered_again_changes_nothing(cli: Callable[..., Cli], nats: NatsServer, tmp_path: Path) -> None:
    local = tmp_path / "events.db"
    central = tmp_path / "central.db"
    rec = _recorder(cli, local, "h3", nats)
    _workload("again")
    assert rec.stop() == 0
    for durable in ("first", "second"):  # the second consumer reads the whole stream again
        collector = cli("collect", "--nats", nats.url, "--db", str(central), "--durable", durable)
        _wait_collected(central, "h3", local)
        if durable == "second":
            collector.err.wait_for(lambda line: b"collecting from" in line)
            wait_until(lambda: _consumer_done(nats, "second"), "the second consumer at the end of the stream")
        assert collector.stop() == 0, collector.err.text
    assert b" 0 events and 0 lifetime updates collected from 1 host" in collector.err.data, collector.err.text
    assert b"already stored" in collector.err.data
    _assert_same(central, "h3", local)


def _consumer_done(nats: NatsServer, durable: str) -> bool:
    import asyncio

    import nats as nats_py

    async def ask() -> bool:
        nc = await nats_py.connect(nats.url)
        try:
            info = await nc.jetstream().consumer_info("PROCEVENTS", durable)
            return bool(info.num_pending == 0 and info.num_ack_pending == 0)
        finally:
            await nc.close()

    return asyncio.run(ask())



#: README "On many hosts", per-host permissions (passwords aside): a user per
#: host may publish only its own subjects (and ask for the stream's info);
#: the collector reads the stream and acknowledges.
PERMISSIONS = """
authorization {
  users = [
    { user: collector, password: "c-pass",
      permissions: { publish: ["$JS.API.>", "$JS.ACK.>"], subscribe: ["_INBOX.>"] } }
    { user: web-1, password: "w1-pass",
      permissions: { publish: ["procevents.web-1.>", "$JS.API.STREAM.INFO.PROCEVENTS"], subscribe: ["_INBOX.>"] } }
    { user: web-2, password: "w2-pass",
      permissions: { publish: ["procevents.web-2.>", "$JS.API.STREAM.INFO.PROCEVENTS"], subscribe: ["_INBOX.>"] } }
  ]
}
"""


def _denied(url: str, subject: str, *, subscribe: bool = False) -> str:
    """What the server says to a publish (or subscription) on ``subject``."""
    import asyncio

    import nats as nats_py

    async def go() -> str:
        said: list[str] = []

        async def error_cb(exc: Exception) -> None:
            said.append(str(exc))

        nc = await nats_py.connect(url, allow_reconnect=False, error_cb=error_cb)
        try:
            if subscribe:
                await nc.subscribe(subject)
            else:
                await nc.publish(subject, b"{}")
            await nc.flush()
            for _ in range(int(SHIP_TIMEOUT / 0.05)):  # the violation comes back asynchronously
                if said:
                    return said[0]
                await asyncio.sleep(0.05)
            return ""
        finally:
            await nc.close()

    return asyncio.run(go())


def test_per_host_permissions_on_a_real_server(cli: Callable[..., Cli], tmp_path: Path) -> None:
    """The permissions of the README on a real nats-server: each host ships
    as its own user, may not publish another host's subjects nor read the
    stream, and what it says in a payload about another host is refused by
    the collector (the subject names the host)."""
    from helpers import NATS_SERVER

    if NATS_SERVER is None:
        pytest.skip("nats-server is not installed (scripts/test installs it)")
    nats = NatsServer(tmp_path / "jetstream", PERMISSIONS)
    try:
        central = tmp_path / "central.db"
        collector = cli("collect", "--nats", nats.url_of("collector", "c-pass"), "--db", str(central))
        collector.err.wait_for(lambda line: b"collecting from" in line)
        local = tmp_path / "web-1.db"
        rec = _recorder_as(local, "web-1", nats.url_of("web-1", "w1-pass"))
        _workload(uuid.uuid4().hex[:8])
        assert rec.stop() == 0, rec.err.text
        assert b"lifetime updates shipped to stream PROCEVENTS\n" in rec.err.data, rec.err.text
        _wait_collected(central, "web-1", local)
        web2 = nats.url_of("web-2", "w2-pass")
        assert 'permissions violation for publish to "procevents.web-1.events"' in _denied(
            web2, "procevents.web-1.events"), "web-2 published as web-1"
        assert 'permissions violation for subscription to "procevents.>"' in _denied(
            web2, "procevents.>", subscribe=True), "web-2 read the stream"
        # Its own subject, a payload about web-1: the collector refuses it.
        from procevents.fleet.outbox import SHIPPED_EVENT_COLUMNS

        lie = json.dumps({"v": 1, "host": "web-1", "store": "x", "kind": "events",
                          "columns": SHIPPED_EVENT_COLUMNS, "rows": []})
        (ack,) = nats.publish([("procevents.web-2.events", lie.encode(), None)], web2, create=False)
        assert not isinstance(ack, Exception), ack
        collector.err.wait_for(lambda line: b"refusing a message on procevents.web-2.events: its payload says "
                               b"host 'web-1'" in line)
        assert collector.stop() == 0, collector.err.text
        assert collector.err.data.endswith(b"collected from 1 host into " + str(central).encode()
                                           + b", 1 message refused\n"), collector.err.text
        _assert_same(central, "web-1", local)
    finally:
        nats.stop()


def _recorder_as(db: Path, host: str, url: str) -> Cli:
    """A recorder shipping with a user's URL (from the environment, as the README's EnvironmentFile does)."""
    rec = Cli(["record", "--db", str(db), "--host", host, "-p", str(os.getpid())],
              environ=env() | {"PROCEVENTS_NATS_URL": url})
    rec.wait_listening()
    rec.err.wait_for(lambda line: b"nats: shipping to" in line)
    return rec

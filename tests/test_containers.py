"""Container context and process identity (issue 11, items 3 and 4).

The parsing is checked on the paths each runtime writes; the kernel side
puts real processes into real cgroups (v2 and v1) made by the test, and
checks that the live view, its --container filter, the recorder and query
name them.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import Cli, Gated, db_rows, run_cli, wait_rows

from procevents.containers import Container, container_of
from procevents.frames import CAPTURE, FLAG_CGROUP, Frame, encode_frame, split_frames
from procevents.procfs import RawExec, parse_cgroup
from procevents.store import SCHEMA, SCHEMA_VERSION, LifetimeQuery, StoreError, StoreReader, StoreWriter
from procevents.store.schema import APPLICATION_ID, FLEET_COLUMNS

ID = "3f2a9c1b" + "0123456789abcdef" * 3 + "01234567"
POD = "5d1e8f2a-7b3c-4d9e-8f01-23456789abcd"


# -- parsing -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "want"),
    [
        (f"/system.slice/docker-{ID}.scope", Container(ID, "docker", None)),
        (f"/docker/{ID}", Container(ID, "docker", None)),
        (f"/docker/{ID}/init.scope", Container(ID, "docker", None)),
        (f"/system.slice/cri-containerd-{ID}.scope", Container(ID, "containerd", None)),
        (f"/machine.slice/crio-{ID}.scope", Container(ID, "cri-o", None)),
        (f"/machine.slice/libpod-{ID}.scope/container", Container(ID, "podman", None)),
        (f"/libpod_parent/libpod-{ID}", Container(ID, "podman", None)),
        (
            "/kubepods.slice/kubepods-besteffort.slice/"
            f"kubepods-besteffort-pod{POD.replace('-', '_')}.slice/cri-containerd-{ID}.scope",
            Container(ID, "containerd", POD),
        ),
        (f"/kubepods.slice/kubepods-pod{POD.replace('-', '_')}.slice/crio-{ID}.scope", Container(ID, "cri-o", POD)),
        (f"/kubepods/burstable/pod{POD}/{ID}", Container(ID, None, POD)),
        (f"/kubepods/besteffort/pod{POD}", Container(None, None, POD)),
        # A container in a container: the inner one.
        (f"/docker/{'e' * 64}/docker/{ID}", Container(ID, "docker", None)),
    ],
)
def test_each_runtime_names_its_containers(path: str, want: Container) -> None:
    assert container_of(path) == want


@pytest.mark.parametrize(
    "path",
    [
        "/", "", None, "/user.slice/user-0.slice/session-3.scope", "/system.slice/docker.service",
        f"/machine.slice/libpod-conmon-{ID}.scope",  # podman's monitor, not the container
        f"/machine.slice/crio-conmon-{ID}.scope",
        f"/{ID}",  # a bare id outside docker and kubepods says nothing
        f"/system.slice/docker-{ID[:-1]}.scope",  # 63 digits
        f"/system.slice/docker-{ID.upper()}.scope",
    ],
)
def test_host_paths_name_no_container(path: str | None) -> None:
    assert container_of(path) is None


def test_cgroup_v1_and_hybrid_paths() -> None:
    v1 = f"12:pids:/docker/{ID}\n11:memory:/docker/{ID}\n1:name=systemd:/docker/{ID}\n".encode()
    assert container_of(parse_cgroup(v1)) == Container(ID, "docker", None)
    # Hybrid: the v2 line at the root, the process placed in a v1 hierarchy.
    hybrid = f"9:name=systemd:/\n8:pids:/kubepods/besteffort/pod{POD}/{ID}\n4:memory:/other\n0::/\n".encode()
    assert parse_cgroup(hybrid) == f"/kubepods/besteffort/pod{POD}/{ID}"
    assert parse_cgroup(b"9:name=systemd:/\n8:pids:/\n0::/\n") == "/"


def test_a_capture_frame_carries_the_cgroup_after_the_old_fields() -> None:
    raw = RawExec(None, b"sh\0-c\0x\0", b"sh\n", b"/bin/sh", b"/", (0, 0), cgroup=f"0::/docker/{ID}\n".encode())
    plain = RawExec(None, b"true\0", b"true\n", b"/bin/true", b"/tmp", (0, 0))
    buffer = bytearray(encode_frame(CAPTURE, 1, 7, 42, raw) + encode_frame(CAPTURE, 1, 8, 43, plain))
    first, second = split_frames(buffer)
    assert not buffer
    assert first.flags & FLAG_CGROUP and first.cgroup == raw.cgroup
    assert first.snapshot(0).cgroup == f"/docker/{ID}"
    assert (first.cwd, first.environ) == (b"/", None)  # the fields before it are where they were
    assert second.cgroup is None and second.snapshot(0).cgroup is None and second.cwd == b"/tmp"
    # A frame is decoded at any offset, the cgroup ending where its length says.
    data = b"junk" + encode_frame(CAPTURE, 0, 9, 44, raw)
    assert Frame(data, 4).cgroup == raw.cgroup


# -- the schema ------------------------------------------------------------------------------------


def _schema_2() -> str:
    """SCHEMA as procevents wrote it before hosts and identities (schema 2)."""
    columns = "|".join((*FLEET_COLUMNS, "source", "remote_id"))
    lines = [
        line for line in SCHEMA.splitlines()
        if not re.match(rf"\s+({columns}) (TEXT|INTEGER)", line)
        and "who and where" not in line and not re.match(r"\s+(host|cgroup) TEXT", line)
        and not line.startswith(("CREATE TABLE meta", "CREATE TABLE outbox", "CREATE TABLE sources"))
        and "procs_rev" not in line and "procs_host" not in line and "procs_container" not in line
        and "_remote ON" not in line
    ]
    text = "\n".join(lines).replace(", host, cgroup\nFROM events", "\nFROM events")
    # The last column of each table lost its comma with what followed it.
    text = re.sub(r",(\s*--[^\n]*)?\n\);", r"\1\n);", text)
    return text.replace("sessions INTEGER NOT NULL);", "")


def _make_schema_2(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(f"BEGIN; {_schema_2()}; PRAGMA application_id={APPLICATION_ID}; PRAGMA user_version=2; COMMIT;")
    conn.execute("INSERT INTO sessions (started_wall, clock_offset, hostname) VALUES (1, 0, 'oldhost')")
    conn.execute(
        "INSERT INTO procs (id, session, pid, start_wall, end_wall, forked, execs, comm, exit_code, duration) "
        "VALUES (1, 1, 4242, 1000, 2000, 1, 1, 'old', 0, 0.5)"
    )
    conn.execute("INSERT INTO events (proc, ts, wall, event, pid, tgid) VALUES (1, 5, 1500, 'exec', 4242, 4242)")
    conn.close()
    path.chmod(0o600)  # as procevents made its files


def test_a_schema_2_file_is_read_as_it_is_and_upgraded_when_recorded_into(tmp_path: Path) -> None:
    db = tmp_path / "v2.db"
    _make_schema_2(db)
    assert "host" not in {row[1] for row in sqlite3.connect(db).execute("PRAGMA table_info(procs)")}
    with StoreReader(str(db)) as reader:
        assert not reader.has_fleet and reader.has_costs
        (life,) = reader.lifetimes(LifetimeQuery())
        assert (life.pid, life.host, life.exec_id, life.container_id) == (4242, None, None, None)
        with pytest.raises(StoreError, match="without hosts and containers"):
            reader.lifetimes(LifetimeQuery(host="oldhost"))
        (recorded,) = list(reader.events())
        assert "exec_id" not in recorded.info and "cgroup" not in recorded.info
    result = run_cli("query", "--db", str(db), "--container", "3f2a")
    assert result.returncode == 1 and result.stderr.count(b"\n") == 1, result.stderr
    StoreWriter(str(db), host="newhost").close()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    # Rows recorded before carry the host of their session, and a revision to ship them by.
    assert conn.execute("SELECT host, rev FROM procs").fetchall() == [("oldhost", 1)]
    assert conn.execute("SELECT host FROM events").fetchall() == [("oldhost",)]
    assert conn.execute("SELECT hostname FROM sessions ORDER BY id").fetchall() == [("oldhost",), ("newhost",)]
    assert len(conn.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()[0]) == 16
    assert {"host", "cgroup"} <= {row[1] for row in conn.execute("PRAGMA table_info(events_named)")}
    conn.close()
    with StoreReader(str(db)) as reader:
        assert reader.has_fleet
        assert [life.pid for life in reader.lifetimes(LifetimeQuery(host="oldhost"))] == [4242]
        assert reader.lifetimes(LifetimeQuery(host="newhost")) == []


# -- the kernel: real processes in real cgroups ------------------------------------------------------


def _mount_of(kind: str, option: str | None = None) -> Path | None:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = right.split()
            if fields and fields[0] == kind and (option is None or option in fields[2].split(",")):
                return Path(left.split()[4])
    return None


@pytest.fixture
def cgroups() -> Iterator[Callable[[Path, str], Path]]:
    """Make cgroup directories (removed at the end, deepest first, once
    their processes are gone)."""
    made: list[Path] = []

    def make(mount: Path, relative: str) -> Path:
        path = mount
        for part in relative.strip("/").split("/"):
            path = path / part
            if not path.exists():
                try:
                    path.mkdir()
                except OSError as exc:
                    pytest.skip(f"cannot make a cgroup under {mount}: {exc.strerror}")
                made.append(path)
        return path

    yield make
    for path in reversed(made):
        try:
            path.rmdir()
        except OSError:
            pass



def _in_cgroup(group: Path, argv: list[str]) -> Gated:
    """A child held before its exec, moved into ``group``, then let go."""
    child = Gated(["sh", "-c", f"read _; exec {' '.join(argv)}"])
    (group / "cgroup.procs").write_text(str(child.pid))
    return child


def test_live_view_names_the_container_and_filters_by_it(
    cli: Callable[..., Cli], cgroups: Callable[[Path, str], Path], tmp_path: Path
) -> None:
    v2 = _mount_of("cgroup2")
    if v2 is None:
        pytest.skip("no cgroup v2 mount")
    tag = uuid.uuid4().hex[:8]
    group = cgroups(v2, f"procevents-test-{tag}/docker-{ID}.scope")
    out = tmp_path / "live.jsonl"
    me = str(os.getpid())
    live = cli("--json", "-e", "exec", "-p", me, "--container", ID[:8], "-o", str(out))
    every = cli("--json", "-e", "exec", "-p", me)
    live.wait_listening()
    every.wait_listening()
    inside = _in_cgroup(group, ["/bin/echo", tag])
    outside = Gated(["sh", "-c", f"read _; exec /bin/echo {tag}"])
    assert inside.release() == 0 and outside.release() == 0
    every.out.wait_for(lambda line: f'"pid":{outside.pid},'.encode() in line and b'"cmdline":["/bin/echo"' in line)
    every.out.wait_for(lambda line: f'"pid":{inside.pid},'.encode() in line and b'"cmdline":["/bin/echo"' in line)
    assert live.stop() == 0 and every.stop() == 0
    # The unfiltered view saw both: --container let through only the one inside.
    shown = [json.loads(line) for line in out.read_bytes().splitlines()]
    ours = [e for e in shown if e.get("cmdline") == ["/bin/echo", tag]]
    assert [e["pid"] for e in ours] == [inside.pid], shown
    (event,) = ours
    assert event["cgroup"] == f"/procevents-test-{tag}/docker-{ID}.scope"
    assert (event["container_id"], event["container_runtime"]) == (ID, "docker")
    assert "pod_uid" not in event
    host, boot, ticks, pid = event["exec_id"].split(":")
    assert (host, boot, int(pid)) == (os.uname().nodename, Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
                                      inside.pid)
    assert int(ticks) > 0 and event["parent_exec_id"].endswith(f":{me}")
    other = [json.loads(line) for line in every.out.lines if f'"pid":{outside.pid},'.encode() in line][-1]
    assert other["cgroup"] != event["cgroup"] and "container_id" not in other


def _exec_of(pid: int) -> Callable[[bytes], bool]:
    mark = f'"pid":{pid},'.encode()
    return lambda raw: mark in raw and b'"cmdline":["/bin/echo"' in raw


def test_a_cgroup_name_with_a_carriage_return_forges_neither_cgroup_nor_container(
    cli: Callable[..., Cli], cgroups: Callable[[Path, str], Path]
) -> None:
    # The kernel refuses "\n" in a cgroup name but not "\r": split as
    # str.splitlines does, the tail of such a name read as a line of its
    # own, so a process was shown in a cgroup it is not in (the first: in
    # "/docker/ID", a path nobody made), or in no container when it is in
    # one (the second).
    v2 = _mount_of("cgroup2")
    if v2 is None:
        pytest.skip("no cgroup v2 mount")
    tag = uuid.uuid4().hex[:8]
    other = "e" * 64
    forging = f"/procevents-test-{tag}/forge/hide\r0::/docker/{ID}"
    hiding = f"/procevents-test-{tag}/docker/{ID}/hide\r0::/{other}"
    groups = {path: cgroups(v2, path) for path in (forging, hiding)}
    me = str(os.getpid())
    live = cli("--json", "-e", "exec", "-p", me)
    live.wait_listening()
    seen = {}
    for path, group in groups.items():
        child = _in_cgroup(group, ["/bin/echo", tag])
        assert child.release() == 0
        seen[path] = json.loads(live.out.wait_for(_exec_of(child.pid)))
    assert live.stop() == 0, live.err.text
    # The whole path, as the kernel keeps it (JSON escapes the \r) ...
    assert [event["cgroup"] for event in seen.values()] == [forging, hiding]
    # ... and the container that path names: the docker one both are in,
    # never the one the \r's tail pretends (none, or a bare id's).
    for event in seen.values():
        assert (event.get("container_id"), event.get("container_runtime")) == (ID, "docker"), event
        assert container_of(event["cgroup"]) == Container(ID, "docker", None)


def test_recorder_and_query_know_the_container_and_host(
    cli: Callable[..., Cli], cgroups: Callable[[Path, str], Path], tmp_path: Path
) -> None:
    v1 = _mount_of("cgroup", "pids")
    if v1 is None:
        pytest.skip("no cgroup v1 pids hierarchy")
    tag = uuid.uuid4().hex[:8]
    group = cgroups(v1, f"procevents-test-{tag}/kubepods/besteffort/pod{POD}/{ID}")
    db = tmp_path / "events.db"
    rec = cli("record", "--db", str(db), "--host", "node-7", "-p", str(os.getpid()))
    rec.wait_listening()
    inside = _in_cgroup(group, ["/bin/echo", tag])
    outside = Gated(["sh", "-c", "read _; exec /bin/true"])
    assert inside.release() == 0 and outside.release() == 0
    wait_rows(db, "SELECT count(*) FROM procs WHERE pid IN (?, ?) AND end_wall IS NOT NULL",
              (inside.pid, outside.pid), 2, "both lifetimes")
    assert rec.stop() == 0, rec.err.text
    result = run_cli("query", "--db", str(db), "--container", ID[:12], "--json")
    assert result.returncode == 0, result.stderr
    (row,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert (row["pid"], row["host"], row["container_id"], row["pod_uid"]) == (inside.pid, "node-7", ID, POD)
    assert row["cgroup"].endswith(f"/pod{POD}/{ID}")
    assert row["exec_id"].startswith("node-7:") and row["exec_id"].endswith(f":{inside.pid}")
    result = run_cli("query", "--db", str(db), "--host", "node-7", "--json", "--pid", str(outside.pid))
    (row,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert row["container_id"] is None and row["host"] == "node-7"
    assert run_cli("query", "--db", str(db), "--host", "elsewhere", "--json").stdout == b""
    # Every event row knows its host; the exec rows their cgroup.
    assert db_rows(db, "SELECT count(*) FROM events WHERE host IS NOT 'node-7'") == [(0,)]
    # (sh, before it was moved; then echo, inside)
    execs = db_rows(db, "SELECT cgroup FROM events WHERE event = 'exec' AND tgid = ? ORDER BY id", (inside.pid,))
    assert len(execs) == 2 and not execs[0][0].endswith(f"/{ID}") and execs[1][0].endswith(f"/{ID}")
    # Replay gives the recorded exec as the live view did.
    result = run_cli("replay", "--db", str(db), "--json", "-e", "exec")
    assert result.returncode == 0, result.stderr
    sh_exec, event = [e for e in map(json.loads, result.stdout.splitlines()) if e["pid"] == inside.pid]
    assert "container_id" not in sh_exec and event["cmdline"] == ["/bin/echo", tag]
    assert (event["container_id"], event["pod_uid"]) == (ID, POD)
    assert "container_runtime" not in event  # a bare id under kubepods: the path does not say


def test_bad_container_and_host_values_are_one_line(tmp_path: Path) -> None:
    for args in (["--container", "xyz"], ["query", "--container", "g00d"], ["record", "--host", "a b"]):
        result = run_cli(*args)
        assert result.returncode == 2 and result.stderr.count(b"\n") == 1, (args, result.stderr)
        assert b"Traceback" not in result.stderr

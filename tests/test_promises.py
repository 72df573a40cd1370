"""Promises of README.md and ``--help`` that had no test (issue 15, item 3).

docs/promises.md lists every promise with the test that checks it; these are
the ones written for it.  Real kernel, real processes: every workload that
must be seen is gated (it waits on a pipe until the test releases it) or is
the command trace itself starts, and every wait is for a line, a row or an
exit, never for time to pass.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import CLI, NOBODY, SRC_DIR
from helpers import (
    CPUS,
    IGNORE,
    LISTEN,
    SH,
    STRACE,
    TIMEOUT,
    Cli,
    Gated,
    Request,
    Start,
    assert_ignored_once,
    committed_events,
    json_lines,
    links_to,
    metrics_url,
    netlink_connector_fds,
    parse_trace,
    probe_as,
    run_cli,
    sample,
    scrape,
    skip_unless_connector,
    traced,
    unprivileged_refusal,
    wait_until,
)

from procevents import wire
from procevents.connector import DEFAULT_RCVBUF
from procevents.events import Exec

TEXT_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} (\w+) +(\d*) +(\d*) ")
needs_strace = pytest.mark.skipif(STRACE is None, reason="needs strace")
__all__ = ["traced"]  # the fixture, imported to be used here


@pytest.fixture(scope="module", autouse=True)
def _usable() -> None:
    skip_unless_connector()



@pytest.fixture
def gated() -> Iterator[Callable[..., Gated]]:
    kids: list[Gated] = []

    def start(argv: list[str | bytes], cwd: Path | bytes | None = None) -> Gated:
        kid = Gated(argv, cwd)  # type: ignore[arg-type]
        kids.append(kid)
        return kid

    yield start
    for kid in kids:
        kid.cleanup()


def _lines_of(pid: int, data: bytes) -> list[str]:
    """Text lines (strictly UTF-8) about process ``pid``."""
    out = []
    for line in data.decode("utf-8").splitlines():
        m = TEXT_LINE.match(line)
        if m and m.group(2) == str(pid):
            out.append(line)
    return out


# -- IGNORE on the way out of top ----------------------------------------------------------------


@needs_strace
@pytest.mark.parametrize("how", ["SIGTERM", "duration"])
def test_top_says_ignore_on_the_way_out(traced: Start, how: str) -> None:
    pytest.importorskip("rich")
    args = ["top", "--interval", "0.2"] + (["-D", "0.5"] if how == "duration" else [])
    t = traced([*CLI, *args], stdout=subprocess.DEVNULL)
    t.err.wait_for(lambda line: line.startswith(b"procevents: listening"))
    if how == "SIGTERM":
        t.signal(signal.SIGTERM)
    assert t.wait() == 0, t.err.text
    assert "Traceback" not in t.err.text
    assert_ignored_once(t.requests(), readers=CPUS)


# -- trace: signals passed on, --flat, --slowest, -o -----------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_trace_passes_ctrl_c_sigterm_and_sighup_to_cmd(cli: Callable[..., Cli], sig: signal.Signals) -> None:
    c = cli("trace", "--flat", "--", "sleep", "1000")
    # CMD's exec is shown: trace knows its child, the signal has somewhere to go.
    c.out.wait_for(lambda line: b" exec " in line and line.rstrip().endswith(b"sleep 1000"))
    c.proc.send_signal(sig)
    assert c.wait() == 128 + sig, c.err.text
    assert "0 failed, 1 killed by a signal" in c.err.text, c.err.text
    assert f"killed by {sig.name}" in c.out.text, c.out.text


def test_trace_flat_is_one_text_line_per_event() -> None:
    done = run_cli("trace", "--flat", "--", "sh", "-c", 'sh -c "exit 3"; exit 5')
    assert done.returncode == 5, done.stderr
    lines = done.stdout.decode("utf-8").splitlines()
    parsed = [TEXT_LINE.match(line) for line in lines]
    assert all(parsed), lines
    kinds = [(m.group(1), m.group(2)) for m in parsed if m]
    pids = list(dict.fromkeys(pid for _, pid in kinds))
    assert len(pids) == 2, lines  # CMD and its one child, nothing else on the machine
    root, child = pids
    assert [k for k, p in kinds if p == child] == ["fork", "exec", "exit"], lines
    assert [k for k, p in kinds if p == root][-1] == "exit", lines
    assert any(line.endswith("sh -c 'exit 3'") and " exec " in line for line in lines), lines
    assert any(" status 3 " in line for line in lines) and any(" status 5 " in line for line in lines), lines
    both = run_cli("trace", "--json", "--flat", "--", "true")
    assert (both.returncode, both.stderr) == (2, b"procevents: error: choose one of --json and --flat\n")


@pytest.mark.parametrize("n", [0, 1, 2])
def test_trace_slowest_lists_the_n_slowest(n: int) -> None:
    done = run_cli("trace", "--slowest", str(n), "--", "sh", "-c", 'sh -c "exit 3"; exit 5')
    assert done.returncode == 5, done.stderr
    err = done.stderr.decode().splitlines()
    assert err[0] == "procevents: 2 processes started, 2 failed, 0 killed by a signal", err
    if n == 0:
        assert "procevents: slowest:" not in err, err
        return
    assert err[1] == "procevents: slowest:", err
    ranked = list(itertools.takewhile(lambda line: line.startswith("procevents:  "), err[2:]))  # indented
    assert len(ranked) == n, err
    # CMD outlives its child: it is first.
    assert ranked[0].endswith("status 5  sh -c 'sh -c \"exit 3\"; exit 5'"), ranked


def test_trace_output_goes_to_the_file_appending(tmp_path: Path) -> None:
    out = tmp_path / "trace.jsonl"
    out.write_bytes(b'{"kept":true}\n')
    os.chmod(out, 0o644)
    done = run_cli("trace", "--json", "-o", str(out), "--", "sh", "-c", "exit 2")
    assert done.returncode == 2, done.stderr
    assert done.stdout == b""
    lines = [json.loads(line) for line in out.read_bytes().splitlines()]
    assert lines[0] == {"kept": True}
    assert [e["event"] for e in lines[1:]][-1] == "exit" and lines[-1]["status"] == 2, lines
    assert {e["tgid"] for e in lines[1:]} == {lines[-1]["tgid"]}
    fresh = tmp_path / "new.txt"
    assert run_cli("trace", "-o", str(fresh), "--", "true").returncode == 0
    assert fresh.stat().st_mode & 0o777 == 0o600
    assert b"exit status 0" in fresh.read_bytes()


# -- malformed datagrams: reported, skipped, the stream goes on -----------------------------------


def _port_of(pid: int) -> int:
    """The netlink port id of ``pid``'s proc connector socket (/proc/net/netlink)."""
    (fd,) = netlink_connector_fds(pid)
    inode = int(os.readlink(f"/proc/{pid}/fd/{fd}")[8:-1])
    with open("/proc/net/netlink") as f:
        for line in f.read().splitlines()[1:]:
            cols = line.split()
            if int(cols[9]) == inode:
                return int(cols[2])
    raise AssertionError(f"no netlink socket with inode {inode}")


def test_a_foreign_datagram_is_reported_and_skipped(cli: Callable[..., Cli]) -> None:
    """A datagram another process sent (even one whose header claims another
    sender) never reaches the decoder; the stream goes on, and the end says
    how many were refused and from where."""
    c = cli("--no-enrich", "--json", "-e", "exec")
    c.wait_listening()
    forged = wire.encode_event(Exec(0, 1, 0, 4242, 4242), nlmsg_pid=4321)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, wire.NETLINK_CONNECTOR) as sock:
        sock.sendto(forged, (_port_of(c.pid), 0))
        port = sock.getsockname()[0]
    # The stream goes on: a real exec after the forged one is shown.
    true = subprocess.Popen(["/bin/true"])
    true.wait()
    c.out.wait_for(lambda line: f'"pid":{true.pid},'.encode() in line)
    assert c.stop(signal.SIGTERM) == 0, c.err.text
    assert f"procevents: refused 1 datagram not sent by the kernel (from netlink port {port})\n" in c.err.text
    assert c.json()[-1] == {"event": "refused", "count": 1, "ports": [port]}
    assert '"pid":4242,' not in c.out.text
    assert "malformed" not in c.err.text
    assert "Traceback" not in c.err.text


# -- the ack timeout ------------------------------------------------------------------------------


@needs_strace
def test_no_answer_from_the_kernel_is_one_line_and_ignore(tmp_path: Path) -> None:
    """Every read of the socket fails (strace injects EAGAIN into recvfrom), so
    the subscription's ack never comes: one line after the ack timeout, status
    1, and IGNORE is still sent."""
    assert STRACE is not None
    log = tmp_path / "strace.txt"
    done = subprocess.run(
        [STRACE, "-f", "-qq", "-o", str(log), "-e", "trace=sendto,sendmsg,recvfrom", "-e",
         "inject=recvfrom:error=EAGAIN", "-e", "signal=none", "-xx", "-s", "256", *CLI, "--no-enrich", "-D", "30"],
        capture_output=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL, check=False,
    )
    err = done.stderr.decode()
    assert done.returncode == 1, err
    assert err.splitlines() == [
        "procevents: error: no answer from the proc connector within 1 s: the kernel may lack "
        "CONFIG_PROC_EVENTS, or procevents runs in a container/namespace the kernel ignores"
    ]
    requests = [r for r in parse_trace(log) if isinstance(r, Request)]
    assert [r.op for r in requests] == [LISTEN, IGNORE], requests


# -- the library keeps a program's own signal handlers ---------------------------------------------


def test_a_programs_own_sigterm_handler_is_kept(tmp_path: Path) -> None:
    script = tmp_path / "own.py"
    script.write_text(textwrap.dedent("""
        import os, signal, sys, procevents
        got = []
        def mine(signum, frame):
            got.append(signum)
        signal.signal(signal.SIGTERM, mine)
        with procevents.listen() as conn:
            assert signal.getsignal(signal.SIGTERM) is mine, "replaced while open"
            assert signal.getsignal(signal.SIGHUP) is not signal.SIG_DFL, "the default one is handled"
            print("READY", flush=True)
            while not got:
                conn.read_batch(0.1)
        assert signal.getsignal(signal.SIGTERM) is mine, "replaced after close"
        print("MINE", got, flush=True)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"READY\n"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()
    assert out == f"MINE [{int(signal.SIGTERM)}]\n".encode(), (out, err)


# -- the receive buffer --------------------------------------------------------------------------


def _rmem_max() -> int:
    return int(Path("/proc/sys/net/core/rmem_max").read_text())


@pytest.mark.parametrize(("args", "mib"), [([], 128), (["--buffer", "16M"], 32)], ids=["default", "16M"])
def test_the_buffer_as_root_is_what_was_asked_doubled(cli: Callable[..., Cli], args: list[str], mib: int) -> None:
    assert DEFAULT_RCVBUF == 64 * 1024 * 1024  # the documented default, 64M
    c = cli("--no-enrich", *args)
    line = c.err.wait_for(lambda line: line.startswith(b"procevents: listening")).decode()
    assert f"receive buffer {mib} MiB)" in line, line
    assert c.stop(signal.SIGTERM) == 0


def test_the_buffer_of_another_user_is_capped_by_rmem_max(nobody_python: str) -> None:
    probe = textwrap.dedent("""
        import sys
        sys.path.insert(0, sys.argv[1])
        import procevents
        try:
            conn = procevents.listen()
        except procevents.ConnectorError as exc:
            print("SKIP", exc)
        else:
            with conn:
                print(conn.rcvbuf)
    """)
    done = subprocess.run(
        [nobody_python, "-c", probe, str(SRC_DIR)], user=65534, group=65534, extra_groups=[], cwd="/",
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )
    assert done.returncode == 0, done.stderr
    refused = probe_as(nobody_python, NOBODY)["subscribe"]
    if refused is not None:
        # Asked by procevents' own trial: this kernel keeps the group to
        # CAP_NET_ADMIN, which lifts the cap, so the refusal is what to hold.
        assert done.stdout == f"SKIP [Errno 1] {unprivileged_refusal()}\n"
        return
    # SO_RCVBUF as the kernel grants it to a user without CAP_NET_ADMIN: capped, then doubled.
    want = 2 * min(DEFAULT_RCVBUF, _rmem_max())
    assert int(done.stdout) == want, (done.stdout, _rmem_max())
    default = int(Path("/proc/sys/net/core/rmem_default").read_text())
    assert want != 2 * default, "rmem_max = rmem_default here: the cap proves nothing"


# -- replay --until, -p, -u, -c -----------------------------------------------------------------


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_replay_selects_by_until_pid_user_and_command(
    cli: Callable[..., Cli], gated: Callable[..., Gated], tmp_path: Path
) -> None:
    db = tmp_path / "events.db"
    marked = links_to(tmp_path, "pe-replay-mark", "sh")
    rec = cli("record", "--db", str(db), "-p", str(os.getpid()))
    rec.wait_listening()
    # early: before the --until mark; a tree of two (root and a child it forks)
    early = gated([SH, "-c", "read _; sh -c 'exit 0'; exit 0"])
    wait_until(lambda: committed_events(db, "exec", [early.pid]) == 1, "the early exec")
    assert early.release() == 0
    wait_until(lambda: committed_events(db, "exit", [early.pid]) == 1, "the early exit")
    mark = time.time()
    named = gated([marked, "-c", "read _; exit 0"])
    nobody = gated(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", SH, "-c", "read _; exit 0"])
    kids = [named, nobody]
    wait_until(lambda: committed_events(db, "exec", [k.pid for k in kids]) >= 3, "the later execs")
    assert [k.release() for k in kids] == [0, 0]
    wait_until(lambda: committed_events(db, "exit", [k.pid for k in kids]) == 2, "the later exits")
    assert rec.stop() == 0, rec.err.text
    mine = {early.pid, named.pid, nobody.pid}

    def tgids(*args: str) -> set[int]:
        done = run_cli("replay", "--db", str(db), "--json", *args)
        assert done.returncode == 0, done.stderr
        events = [json.loads(line) for line in done.stdout.splitlines()]
        return {e["tgid"] for e in events}

    everything = tgids()
    assert mine <= everything
    early_tree = {e for e in tgids("-p", str(early.pid))}
    assert early.pid in early_tree and len(early_tree) == 2, early_tree  # the root and the child it forked
    assert not early_tree & {named.pid, nobody.pid}
    assert tgids("--until", f"@{mark}") & mine == {early.pid}
    assert tgids("--since", f"@{mark}") & mine == {named.pid, nobody.pid}
    assert tgids("-c", "^pe-replay-mark$") & mine == {named.pid}
    assert tgids("-u", "nobody") & mine == {nobody.pid}
    assert tgids("-u", "65534") & mine == {nobody.pid}


# -- metrics count what passes -e, -u and -c -------------------------------------------------------


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
@pytest.mark.parametrize("selection", ["-e", "-u", "-c"])
def test_metrics_count_only_what_passes_the_selection(
    cli: Callable[..., Cli], gated: Callable[..., Gated], tmp_path: Path, selection: str
) -> None:
    pytest.importorskip("prometheus_client")
    marked = links_to(tmp_path, "pe-metric-mark", "sh")
    other = links_to(tmp_path, "pe-metric-other", "sh")
    root_of = {"-e": ["-e", "exec"], "-u": ["-u", "nobody"], "-c": ["-c", "^pe-metric-mark$"]}[selection]
    out = tmp_path / "out.jsonl"
    c = cli("--json", "-o", str(out), "--metrics", "0", "-p", str(os.getpid()), *root_of)
    c.wait_listening()
    url = metrics_url(c)
    if selection == "-u":
        kids = [gated(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", marked, "-c", "read _"]),
                gated([other, "-c", "read _"])]
    else:
        kids = [gated([marked, "-c", "read _"]), gated([other, "-c", "read _"])]
    shown = kids[0]
    wait_until(lambda: any(e["event"] == "exec" and e["tgid"] == shown.pid for e in json_lines(out)), "the exec shown")
    assert [k.release() for k in kids] == [0, 0]
    if selection != "-e":  # -e exec shows no exit
        wait_until(lambda: any(e["event"] == "exit" and e["tgid"] == shown.pid for e in json_lines(out)), "the exit")
    kinds = ("fork", "exec", "exit")
    seen: dict[str, Any] = {}

    def page_counts_what_is_shown() -> bool:
        # The file may lag the page by a flush: wait until they agree.
        seen["page"] = scrape(url)
        seen["shown"] = json_lines(out)
        seen["events"] = {t: sample(seen["page"], "procevents_events", "procevents_events_total", type=t)
                          for t in kinds}
        seen["counted"] = {t: float(sum(1 for e in seen["shown"] if e["event"] == t)) for t in kinds}
        return bool(seen["events"] == seen["counted"])

    try:
        wait_until(page_counts_what_is_shown, "the page counting what is shown")
    except AssertionError:
        raise AssertionError(f"page {seen['events']}, shown {seen['counted']}") from None
    assert c.stop(signal.SIGTERM) == 0, c.err.text
    page, events = seen["page"], seen["events"]
    if selection != "-e":
        assert not any(e.get("tgid") == kids[1].pid for e in seen["shown"])
    if selection == "-e":
        assert events["fork"] == 0 and events["exit"] == 0 and events["exec"] >= 2
    else:
        execs = {s.labels["command"]: s.value for s in page["procevents_process_execs"].samples
                 if s.name == "procevents_process_execs_total"}
        assert "pe-metric-other" not in execs, execs


# -- text that is not UTF-8 in every output ---------------------------------------------------------

ODD_DIR = b"pe\xffdir"
ODD_EXE = b"pe\xfesh"
ODD_ARG = b"arg\xfd"


def _hide_orjson(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The standard library's encoder: orjson made unimportable for the CLI's children."""
    shadow = tmp_path / "shadow"
    (shadow / "orjson").mkdir(parents=True)
    (shadow / "orjson" / "__init__.py").write_text("raise ImportError('orjson hidden by the test')\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join((str(shadow), os.environ["PYTHONPATH"])))


def _odd_program(tmp_path: Path) -> tuple[bytes, bytes]:
    """(directory, program): a copy of sh whose exe, cwd and comm are not UTF-8."""
    directory = os.fsencode(tmp_path) + b"/" + ODD_DIR
    os.mkdir(directory)
    program = directory + b"/" + ODD_EXE
    shutil.copy(SH, program)
    os.chmod(program, 0o755)
    return directory, program


def _assert_odd_json(line: dict[str, Any], directory: bytes, program: bytes, argv: list[bytes]) -> None:
    for key, raw in (("exe", program), ("cwd", directory), ("comm", ODD_EXE)):
        assert base64.b64decode(line[f"{key}_b64"]) == raw, (key, line)
        assert line[key] == raw.decode("utf-8", "replace"), (key, line)
    assert base64.b64decode(line["cmdline_b64"]) == b"\0".join(argv), line


def _assert_odd_text(lines: list[str], what: str) -> None:
    assert lines, f"nothing about the process in {what}"
    for line in lines:
        assert line.isprintable(), (what, ascii(line))
    joined = "\n".join(lines)
    assert "pe\\xfesh" in joined, (what, joined)


@pytest.mark.parametrize("encoder", ["orjson", "stdlib"])
def test_odd_exe_cwd_comm_and_argv_in_every_output(
    cli: Callable[..., Cli], gated: Callable[..., Gated], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    encoder: str,
) -> None:
    if encoder == "stdlib":
        _hide_orjson(tmp_path, monkeypatch)
    directory, program = _odd_program(tmp_path)
    argv = [program, b"-c", b"read _; exit 4", ODD_ARG]
    db = tmp_path / "events.db"
    json_out, text_out, tree_out = tmp_path / "live.jsonl", tmp_path / "live.txt", tmp_path / "live.tree"
    me = str(os.getpid())
    watchers = [
        cli("record", "--db", str(db), "-p", me),
        cli("--json", "-o", str(json_out), "-p", me),
        cli("-o", str(text_out), "-p", me, "-S"),
        cli("--tree", "-o", str(tree_out), "-p", me),
    ]
    for w in watchers:
        w.wait_listening()
    kid = gated(argv, cwd=directory)  # type: ignore[list-item]

    def exec_seen() -> bool:
        return any(e["event"] == "exec" and e["tgid"] == kid.pid for e in json_lines(json_out)) and committed_events(
            db, "exec", [kid.pid]) == 1

    wait_until(exec_seen, "the exec in the live JSON and the database")
    assert kid.release() == 4
    wait_until(lambda: committed_events(db, "exit", [kid.pid]) == 1, "the recorded exit")
    wait_until(lambda: any(e["event"] == "exit" and e["tgid"] == kid.pid for e in json_lines(json_out)), "the exit")
    for w in watchers:
        assert w.stop(signal.SIGTERM) == 0, w.err.text

    # live JSON: exec and exit keep every byte
    live = [e for e in json_lines(json_out) if e["tgid"] == kid.pid]
    (exec_line,) = [e for e in live if e["event"] == "exec"]
    _assert_odd_json(exec_line, directory, program, argv)
    (exit_line,) = [e for e in live if e["event"] == "exit"]
    assert base64.b64decode(exit_line["comm_b64"]) == ODD_EXE
    # live text, tree and -S statistics: escaped, printable
    _assert_odd_text(_lines_of(kid.pid, text_out.read_bytes()), "the live text")
    tree = [line for line in tree_out.read_bytes().decode("utf-8").splitlines() if str(kid.pid) in line]
    _assert_odd_text(tree, "the live tree")
    stats = watchers[2].err.data.decode("utf-8").splitlines()
    assert all(line.isprintable() for line in stats), stats
    # query: JSON, table, tree
    done = run_cli("query", "--db", str(db), "--json", "--pid", str(kid.pid))
    assert done.returncode == 0, done.stderr
    (life,) = [json.loads(line) for line in done.stdout.splitlines()]
    _assert_odd_json(life, directory, program, argv)
    for args in ([], ["--tree"]):
        done = run_cli("query", "--db", str(db), "--pid", str(kid.pid), *args)
        assert done.returncode == 0, done.stderr
        _assert_odd_text([line for line in done.stdout.decode("utf-8").splitlines() if str(kid.pid) in line],
                         f"query {args}")
    # replay: JSON, text, tree
    done = run_cli("replay", "--db", str(db), "--json", "-p", str(kid.pid))
    assert done.returncode == 0, done.stderr
    replayed = [json.loads(line) for line in done.stdout.splitlines()]
    (exec_again,) = [e for e in replayed if e["event"] == "exec" and e["tgid"] == kid.pid]
    _assert_odd_json(exec_again, directory, program, argv)
    done = run_cli("replay", "--db", str(db), "-p", str(kid.pid))
    _assert_odd_text(_lines_of(kid.pid, done.stdout), "replay")
    done = run_cli("replay", "--db", str(db), "--tree", "-p", str(kid.pid))
    _assert_odd_text([line for line in done.stdout.decode("utf-8").splitlines() if str(kid.pid) in line],
                     "replay --tree")


@pytest.mark.parametrize("encoder", ["orjson", "stdlib"])
def test_odd_exe_cwd_comm_and_argv_in_every_trace_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, encoder: str
) -> None:
    if encoder == "stdlib":
        _hide_orjson(tmp_path, monkeypatch)
    directory, program = _odd_program(tmp_path)
    argv = [program, b"-c", b"exit 4", ODD_ARG]

    def trace(*args: str) -> subprocess.CompletedProcess[bytes]:
        done = subprocess.run([*CLI, "trace", *args, "--", *argv], cwd=directory, capture_output=True,  # type: ignore[list-item]
                              timeout=TIMEOUT, stdin=subprocess.DEVNULL, check=False)
        assert done.returncode == 4, done.stderr
        summary = done.stderr.decode("utf-8").splitlines()
        assert summary and all(line.isprintable() for line in summary), summary
        assert "pe\\xfesh" in done.stderr.decode(), summary  # the slowest list names it
        return done

    events = [json.loads(line) for line in trace("--json").stdout.splitlines()]
    (exec_line,) = [e for e in events if e["event"] == "exec"]
    _assert_odd_json(exec_line, directory, program, argv)
    flat = trace("--flat").stdout.decode("utf-8").splitlines()
    _assert_odd_text(flat, "trace --flat")
    _assert_odd_text(trace().stdout.decode("utf-8").splitlines(), "trace")

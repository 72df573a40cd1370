"""Unit tests of the /proc readers (procfs.py).  The process table, snapshot
validation and the Enricher on the same fixtures: test_proctable.py,
test_snapshot.py, test_enrich.py.

Everything here runs against a fixture tree built in ``tmp_path`` (directories
``<pid>/`` holding cmdline, comm, stat, status, cgroup and the exe/cwd
symlinks, helpers.FixtureProc) through ``ProcFS(root=...)``.  Only the DENIED tests touch real
processes: as root nothing is denied, so they read from a child that dropped
to uid 65534.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import NOBODY
from helpers import (
    FixtureProc,
    fx,
    procfs,
    stat_line,
    status_text,
)

from procevents.procfs import (
    CLOCK_TICKS,
    EMPTY,
    GONE,
    Creds,
    ProcessHandle,
    ProcFS,
    Stat,
    Unavailable,
    parse_cgroup,
    parse_cmdline,
    parse_creds,
    parse_stat,
    read_exec_raw,
)
from procevents.snapshot import ExecSnapshot, read_exec_snapshots

__all__ = ["fx", "procfs"]  # fixtures, imported to be used here



# -- parse_cmdline ----------------------------------------------------------------------


class TestParseCmdline:
    def test_trailing_nul(self) -> None:
        assert parse_cmdline(b"/bin/sleep\x0010\x00") == ["/bin/sleep", "10"]

    def test_without_trailing_nul(self) -> None:
        # a process that rewrote its argv area (setproctitle) may leave none
        assert parse_cmdline(b"nginx: worker process") == ["nginx: worker process"]
        assert parse_cmdline(b"a\x00b") == ["a", "b"]

    def test_empty_is_zombie_or_kernel_thread(self) -> None:
        assert parse_cmdline(b"") is EMPTY
        assert parse_cmdline(b"") is Unavailable.EMPTY
        assert not parse_cmdline(b"")

    def test_empty_arguments_kept(self) -> None:
        assert parse_cmdline(b"\x00") == [""]
        assert parse_cmdline(b"prog\x00\x00") == ["prog", ""]
        assert parse_cmdline(b"prog\x00\x00x\x00") == ["prog", "", "x"]

    def test_spaces_quotes_newlines_kept(self) -> None:
        raw = b"sh\x00arg with space\x00q\"uote\x00new\nline\x00\x1b[31m\x00"
        assert parse_cmdline(raw) == ["sh", "arg with space", 'q"uote', "new\nline", "\x1b[31m"]

    def test_non_utf8_is_lossless(self) -> None:
        argv = parse_cmdline(b"prog\x00\xff\xfe\x00caf\xc3\xa9\x00")
        assert isinstance(argv, list)
        assert argv[2] == "café"
        # surrogate escapes: the exact bytes come back
        assert [os.fsencode(arg) for arg in argv] == [b"prog", b"\xff\xfe", "café".encode()]


# -- parse_stat ---------------------------------------------------------------------------


class TestParseStat:
    def test_fields(self) -> None:
        line = stat_line(4242, "bash", state="R", ppid=17, pgrp=4240, session=4000, tty_nr=34816,
                         num_threads=3, starttime=123456)
        st = parse_stat(line)
        assert st == Stat(comm="bash", state="R", ppid=17, pgrp=4240, session=4000, tty_nr=34816,
                          starttime=123456, num_threads=3)

    @pytest.mark.parametrize(
        "comm",
        ["a) b) c", "a b", ")", "((", "x) S 99 99 99", "(sd-pam)", "kworker/0:1H", "tab\there", "nl\nhere"],
    )
    def test_comm_split_at_last_paren(self, comm: str) -> None:
        st = parse_stat(stat_line(123, comm, ppid=77, starttime=555))
        assert st.comm == comm
        assert st.state == "S"
        assert st.ppid == 77
        assert st.starttime == 555

    def test_literal_example_from_the_brief(self) -> None:
        line = b"123 (a) b) c) S 1 123 123 0 -1 4194560 100 0 0 0 3 1 0 0 20 0 1 0 999 " + b"0 " * 30
        st = parse_stat(line.rstrip() + b"\n")
        assert (st.comm, st.state, st.ppid, st.num_threads, st.starttime) == ("a) b) c", "S", 1, 1, 999)

    def test_non_utf8_comm(self) -> None:
        st = parse_stat(stat_line(5, b"\xffname"))
        assert os.fsencode(st.comm) == b"\xffname"

    def test_start_boottime_ns(self) -> None:
        st = parse_stat(stat_line(5, "x", starttime=250))
        assert st.start_boottime_ns == 250 * 1_000_000_000 // CLOCK_TICKS

    @pytest.mark.parametrize("data", [b"", b"garbage", b"12 (x) S 1 2"])
    def test_not_a_stat_line(self, data: bytes) -> None:
        with pytest.raises((ValueError, IndexError)):
            parse_stat(data)


# -- parse_creds / parse_cgroup ---------------------------------------------------------------


class TestParseCreds:
    def test_real_and_effective(self) -> None:
        assert parse_creds(status_text("x", 1000, 1001, 2000, 2001)) == Creds(1000, 1001, 2000, 2001)

    def test_uid_line_not_first(self) -> None:
        data = b"Name:\tUid: 5 5\nUid:\t7\t8\t9\t10\nGid:\t11\t12\t13\t14\n"
        assert parse_creds(data) == Creds(7, 8, 11, 12)

    def test_large_ids(self) -> None:
        assert parse_creds(b"Uid:\t4294967294\t65534\t0\t0\nGid:\t65534\t65534\t0\t0\n") == Creds(
            4294967294, 65534, 65534, 65534
        )

    @pytest.mark.parametrize("data", [b"", b"Name:\tx\n", b"Uid:\t1\t1\t1\t1\n", b"Gid:\t1\t1\t1\t1\n"])
    def test_missing_lines(self, data: bytes) -> None:
        with pytest.raises(ValueError):
            parse_creds(data)


class TestParseCgroup:
    def test_v2(self) -> None:
        assert parse_cgroup(b"0::/user.slice/user-0.slice/session-3.scope\n") == (
            "/user.slice/user-0.slice/session-3.scope"
        )

    def test_v2_root(self) -> None:
        assert parse_cgroup(b"0::/\n") == "/"

    def test_v1_prefers_name_systemd(self) -> None:
        data = (
            b"12:cpu,cpuacct:/cpu-path\n"
            b"11:memory:/mem-path\n"
            b"1:name=systemd:/user.slice/user-1000.slice/session-2.scope\n"
        )
        assert parse_cgroup(data) == "/user.slice/user-1000.slice/session-2.scope"

    def test_v1_without_systemd_takes_first(self) -> None:
        assert parse_cgroup(b"4:pids:/first\n3:memory:/second\n") == "/first"

    def test_hybrid_prefers_v2_line(self) -> None:
        data = b"12:cpu,cpuacct:/v1\n1:name=systemd:/v1-systemd\n0::/v2/path\n"
        assert parse_cgroup(data) == "/v2/path"

    def test_path_with_colons(self) -> None:
        assert parse_cgroup(b"0::/weird:name/x:y\n") == "/weird:name/x:y"

    def test_empty(self) -> None:
        assert parse_cgroup(b"") == ""

    # The kernel refuses only "\n" in a cgroup name: any other line break a
    # name holds is part of the path, never the start of a forged line.
    @pytest.mark.parametrize("brk", ["\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"])
    def test_only_newline_ends_a_line(self, brk: str) -> None:
        path = f"/user.slice/hide{brk}0::/docker/{'a' * 64}"
        assert parse_cgroup(f"0::{path}\n".encode()) == path

    def test_a_v1_name_cannot_forge_the_v2_line(self) -> None:
        data = b"8:pids:/hide\r0::/forged\n1:name=systemd:/\n0::/\n"
        assert parse_cgroup(data) == "/hide\r0::/forged"


# -- ProcFS on a fixture tree ------------------------------------------------------------------


class TestProcFSFixture:
    def test_cmdline_and_comm(self, fx: FixtureProc, procfs: ProcFS) -> None:
        fx.add(10, comm="sleep", cmdline=b"/bin/sleep\x0010\x00")
        fx.add(11, comm="title", cmdline=b"postgres: writer")  # no trailing NUL
        fx.add(12, comm="bytes", cmdline=b"prog\x00\xff\xfe\x00")
        assert procfs.cmdline(10) == ["/bin/sleep", "10"]
        assert procfs.cmdline(11) == ["postgres: writer"]
        argv = procfs.cmdline(12)
        assert isinstance(argv, list)
        assert os.fsencode(argv[1]) == b"\xff\xfe"
        assert procfs.comm(10) == "sleep"

    def test_zombie_or_kernel_thread_is_empty(self, fx: FixtureProc, procfs: ProcFS) -> None:
        fx.add(2, comm="kthreadd", cmdline=b"", ppid=0, exe=None)
        fx.add(20, comm="defunct", cmdline=b"", state="Z")
        assert procfs.cmdline(2) is EMPTY
        assert procfs.cmdline(20) is EMPTY
        assert procfs.comm(2) == "kthreadd"

    def test_missing_pid_is_gone(self, procfs: ProcFS) -> None:
        for read in (procfs.cmdline, procfs.comm, procfs.stat, procfs.creds, procfs.cgroup, procfs.exe, procfs.cwd):
            assert read(99999) is GONE, read
        assert procfs.open_process(99999) is GONE

    def test_missing_file_is_gone(self, fx: FixtureProc, procfs: ProcFS) -> None:
        d = fx.add(10)
        for name in ("cmdline", "comm", "stat", "status", "cgroup"):
            (d / name).unlink()
        assert procfs.cmdline(10) is GONE
        assert procfs.comm(10) is GONE
        assert procfs.stat(10) is GONE
        assert procfs.creds(10) is GONE
        assert procfs.cgroup(10) is GONE

    def test_comm_strips_the_one_newline(self, fx: FixtureProc, procfs: ProcFS) -> None:
        fx.add(10, comm="with space")
        assert procfs.comm(10) == "with space"
        (fx.root / "10" / "comm").write_bytes(b"\xffx\n")
        assert os.fsencode(procfs.comm(10)) == b"\xffx"  # type: ignore[arg-type]

    def test_comm_ending_in_newline_is_kept(self, fx: FixtureProc, procfs: ProcFS) -> None:
        # The kernel writes "<comm>\n"; a comm set to "a\n" (PR_SET_NAME takes
        # any bytes) reads "a\n\n" and must come back as "a\n".
        fx.add(10)
        (fx.root / "10" / "comm").write_bytes(b"a\n\n")
        assert procfs.comm(10) == "a\n"

    def test_stat_with_parens_in_comm(self, fx: FixtureProc, procfs: ProcFS) -> None:
        fx.add(123, comm="a) b) c", ppid=45, starttime=777)
        st = procfs.stat(123)
        assert isinstance(st, Stat)
        assert (st.comm, st.ppid, st.starttime) == ("a) b) c", 45, 777)

    def test_stat_garbage_is_gone(self, fx: FixtureProc, procfs: ProcFS) -> None:
        fx.add(10, stat=b"10 (x) S 1\n")
        assert procfs.stat(10) is GONE

    def test_creds(self, fx: FixtureProc, procfs: ProcFS) -> None:
        fx.add(10, uid=1000, euid=0, gid=100, egid=50)
        assert procfs.creds(10) == Creds(ruid=1000, euid=0, rgid=100, egid=50)
        fx.add(11, status=b"Name:\tx\n")
        assert procfs.creds(11) is GONE

    def test_cgroup(self, fx: FixtureProc, procfs: ProcFS) -> None:
        fx.add(10, cgroup=b"0::/user.slice/user-0.slice/session-1.scope\n")
        fx.add(11, cgroup=b"5:memory:/m\n1:name=systemd:/init.scope\n")
        assert procfs.cgroup(10) == "/user.slice/user-0.slice/session-1.scope"
        assert procfs.cgroup(11) == "/init.scope"

    def test_exe_and_cwd_symlinks(self, fx: FixtureProc, procfs: ProcFS) -> None:
        fx.add(10, exe="/usr/bin/dash", cwd="/home/user dir")
        fx.add(11, exe="/usr/bin/gone (deleted)", cwd="/")
        fx.add(12, exe=None, cwd=None)  # kernel thread: no links
        assert procfs.exe(10) == "/usr/bin/dash"
        assert procfs.cwd(10) == "/home/user dir"
        assert procfs.exe(11) == "/usr/bin/gone (deleted)"
        assert procfs.exe(12) is GONE
        assert procfs.cwd(12) is GONE

    def test_pids_lists_only_digit_names(self, fx: FixtureProc, procfs: ProcFS, tmp_path: Path) -> None:
        for pid in (1, 42, 300, 32768):
            fx.add(pid)
        for name in ("sys", "net", "acpi", "12abc", "-5", "1.5", "0x10"):
            (tmp_path / name).mkdir()
        (tmp_path / "self").symlink_to("42")
        (tmp_path / "thread-self").symlink_to("42/task/42")
        (tmp_path / "uptime").write_text("1.0 2.0\n")
        assert procfs.pids() == [1, 42, 300, 32768]

    def test_pids_of_missing_root(self, tmp_path: Path) -> None:
        assert ProcFS(root=str(tmp_path / "nope")).pids() == []

    def test_root_trailing_slash(self, fx: FixtureProc, tmp_path: Path) -> None:
        fx.add(7, comm="seven")
        assert ProcFS(root=str(tmp_path) + "/").comm(7) == "seven"

    def test_handle_reads_are_pinned(self, fx: FixtureProc, procfs: ProcFS) -> None:
        d = fx.add(10, comm="first", cmdline=b"first\x00")
        handle = procfs.open_process(10)
        assert isinstance(handle, ProcessHandle)
        with handle:
            assert handle.comm() == "first"
            # the directory goes away (the process exited) and a new one takes
            # its name: the handle still names the old one, which is gone
            shutil.rmtree(d)
            fx.add(10, comm="second", cmdline=b"second\x00")
            assert handle.cmdline() is GONE
            assert handle.comm() is GONE
            assert handle.stat() is GONE
            assert handle.exe() is GONE
        assert handle.fd == -1
        handle.close()  # closing twice is harmless
        assert procfs.comm(10) == "second"


# -- DENIED (simulated: as root nothing is denied, so read as uid 65534) ----------------------------


def run_as_nobody(func: Callable[[], object]) -> object:
    """Run ``func`` in a forked child that dropped to uid/gid 65534; return its JSON-able result."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 0
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            result = func()
            os.write(write_fd, json.dumps(result).encode())
        except BaseException as exc:
            os.write(write_fd, json.dumps({"error": repr(exc)}).encode())
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    chunks = []
    while chunk := os.read(read_fd, 65536):
        chunks.append(chunk)
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    result = json.loads(b"".join(chunks) or b"null")
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, result
    return result


def _describe(value: object) -> object:
    if isinstance(value, Unavailable):
        return f"Unavailable.{value.name}"
    if isinstance(value, ExecSnapshot):
        return {"argv": value.argv, "missing": value.missing, "comm": value.comm}
    return value


@pytest.fixture
def open_fixture_root() -> Iterator[Path]:
    """A fixture root other users can traverse (pytest's tmp_path is 0700)."""
    if os.geteuid() != 0:
        pytest.skip("simulating DENIED needs root (to drop to uid 65534)")
    root = Path(tempfile.mkdtemp(prefix="procevents-denied-"))
    try:
        root.chmod(0o755)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


class TestDenied:
    def test_unreadable_files_are_denied(self, open_fixture_root: Path) -> None:
        fx = FixtureProc(open_fixture_root)
        d = fx.add(10, comm="secret", cmdline=b"secret\x00--token\x00")
        d.chmod(0o755)
        for name in ("cmdline", "comm", "stat", "status", "cgroup"):
            (d / name).chmod(0)
        procfs = ProcFS(root=str(open_fixture_root))

        def reads() -> object:
            return {
                name: _describe(getattr(procfs, name)(10))
                for name in ("cmdline", "comm", "stat", "creds", "cgroup")
            }

        assert run_as_nobody(reads) == {
            "cmdline": "Unavailable.DENIED",
            "comm": "Unavailable.DENIED",
            "stat": "Unavailable.DENIED",
            "creds": "Unavailable.DENIED",
            "cgroup": "Unavailable.DENIED",
        }

    def test_unreadable_directory_is_denied(self, open_fixture_root: Path) -> None:
        fx = FixtureProc(open_fixture_root)
        d = fx.add(10)
        d.chmod(0)
        procfs = ProcFS(root=str(open_fixture_root))
        assert run_as_nobody(lambda: _describe(procfs.open_process(10))) == "Unavailable.DENIED"
        d.chmod(0o755)

    def test_exec_snapshot_reports_denied(self, open_fixture_root: Path) -> None:
        fx = FixtureProc(open_fixture_root)
        d = fx.add(10, comm="secret")
        d.chmod(0o755)
        (d / "cmdline").chmod(0)
        fx.add(11, comm="open", cmdline=b"open\x00arg\x00").chmod(0o755)
        procfs = ProcFS(root=str(open_fixture_root))

        def snapshots() -> object:
            return [_describe(s) for s in read_exec_snapshots(procfs, [10, 11, 12])]

        assert run_as_nobody(snapshots) == [
            {"argv": None, "missing": "denied", "comm": "secret"},
            {"argv": ["open", "arg"], "missing": None, "comm": "open"},
            {"argv": None, "missing": "gone", "comm": None},
        ]

    def test_real_proc_links_of_another_user_are_denied(self) -> None:
        if os.geteuid() != 0:
            pytest.skip("needs root to drop to uid 65534")
        procfs = ProcFS()

        def reads() -> object:
            return {"exe": _describe(procfs.exe(1)), "cwd": _describe(procfs.cwd(1)),
                    "argv_is_list": isinstance(procfs.cmdline(1), list)}

        assert run_as_nobody(reads) == {"exe": "Unavailable.DENIED", "cwd": "Unavailable.DENIED",
                                        "argv_is_list": True}


def test_cmdline_b64_matches_nul_joined_raw_bytes() -> None:
    """The JSON encoding the kernel tests rely on: cmdline_b64 is the raw argv."""
    from procevents.render.jsonl import put_argv

    argv = parse_cmdline(b"sh\x00new\nline\x00\xff\xfe\x00")
    assert isinstance(argv, list)
    out: dict[str, object] = {}
    put_argv(out, "cmdline", argv)
    assert out["cmdline"] == ["sh", "new\nline", "\ufffd\ufffd"]
    assert base64.b64decode(out["cmdline_b64"]) == b"sh\x00new\nline\x00\xff\xfe"  # type: ignore[arg-type]


# -- host facts, read through procfs like everything else ------------------------------------------


def test_a_process_names_itself() -> None:
    from procevents import procfs

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child renames itself, as the guardian does, then reports
        os.close(read)
        named = procfs.name_self("renamed-by-procfs-test")
        comm = Path("/proc/self/comm").read_text().strip()
        os.write(write, f"{named} {comm}".encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as answer:
        said = answer.read()
    os.waitpid(pid, 0)
    assert said == "True renamed-by-proc"  # the kernel keeps 15 bytes
    assert procfs.name_self("x", root="/nonexistent") is False


def test_a_reader_reads_only_what_the_output_uses() -> None:
    """comm instead of stat when held; exe and cwd only when shown."""
    me = os.getpid()
    lean = read_exec_raw(me, argv_limit=4096, comm_only=True, paths=False)
    full = read_exec_raw(me, argv_limit=4096)
    assert lean.stat == Path(f"/proc/{me}/comm").read_bytes() and (lean.exe, lean.cwd) == (b"", b"")
    assert full.stat.startswith(f"{me} (".encode()) and full.exe == os.fsencode(os.readlink(f"/proc/{me}/exe"))
    assert lean.cmdline == full.cmdline == Path(f"/proc/{me}/cmdline").read_bytes()


def test_host_facts() -> None:
    from procevents import procfs

    boot = procfs.boot_id()
    assert boot is not None and len(boot) == 36 and boot.count("-") == 4
    assert procfs.rmem_max() == int(Path("/proc/sys/net/core/rmem_max").read_text())
    assert procfs.pid_exists(os.getpid()) and not procfs.pid_exists(2**22 + 1)
    assert procfs.namespace_inode("pid") == os.stat("/proc/self/ns/pid").st_ino
    assert procfs.namespace_inode("no-such-kind") is None
    assert procfs.boot_id(root="/nonexistent") is None and procfs.rmem_max(root="/nonexistent") == 212992

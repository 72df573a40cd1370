"""Unit tests of the /proc readers, the process table and snapshot validation.

Everything here runs against a fixture tree built in ``tmp_path`` (directories
``<pid>/`` holding cmdline, comm, stat, status, cgroup and the exe/cwd
symlinks) through ``ProcFS(root=...)``, and against synthetic events built
directly from :mod:`procevents.events`.  Only the DENIED tests touch real
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

from procevents.enrich import Enricher
from procevents.events import Comm, Event, Exec, Exit, Fork, Gid, Uid
from procevents.identity import Identity
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
)
from procevents.proctable import ProcessTable
from procevents.snapshot import ExecSnapshot, read_exec_snapshots, validate_snapshots

NOBODY = 65534
#: CLOCK_BOOTTIME - CLOCK_MONOTONIC used by the fixture ProcFS, so start
#: times computed from a fixture stat are exact.
BOOT_OFFSET_NS = 7_000_000_000


# -- building a fixture /proc --------------------------------------------------------


def stat_line(
    pid: int,
    comm: bytes | str,
    *,
    state: str = "S",
    ppid: int = 1,
    pgrp: int | None = None,
    session: int | None = None,
    tty_nr: int = 0,
    num_threads: int = 1,
    starttime: int = 1000,
) -> bytes:
    """A complete 52-field /proc/PID/stat line, as the kernel writes it."""
    raw_comm = comm.encode("utf-8", "surrogateescape") if isinstance(comm, str) else comm
    pgrp = pid if pgrp is None else pgrp
    session = pid if session is None else session
    # fields 3..52 of proc(5); field N sits at index N - 3
    fields: list[str] = [state, str(ppid), str(pgrp), str(session), str(tty_nr)]
    fields += ["-1", "4194560", "100", "0", "0", "0", "3", "1", "0", "0", "20", "0"]  # 8..19
    fields += [str(num_threads), "0", str(starttime)]  # 20 num_threads, 21 itrealvalue, 22 starttime
    fields += ["2654208"] * (52 - 22)  # 23..52: vsize, rss, ... (values do not matter)
    assert len(fields) == 50
    return b"%d (%s) %s\n" % (pid, raw_comm, " ".join(fields).encode())


def status_text(name: str, ruid: int, euid: int, rgid: int, egid: int) -> bytes:
    return (
        f"Name:\t{name}\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t1\nNgid:\t0\nPid:\t1\nPPid:\t0\n"
        f"TracerPid:\t0\nUid:\t{ruid}\t{euid}\t{euid}\t{euid}\nGid:\t{rgid}\t{egid}\t{egid}\t{egid}\n"
        "FDSize:\t64\nGroups:\t\nVmPeak:\t   1000 kB\nThreads:\t1\n"
    ).encode()


class FixtureProc:
    """Writes fake /proc/<pid>/ directories under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def add(
        self,
        pid: int,
        *,
        comm: str = "proc",
        cmdline: bytes | None = None,
        ppid: int = 1,
        uid: int = 0,
        euid: int | None = None,
        gid: int = 0,
        egid: int | None = None,
        starttime: int = 1000,
        state: str = "S",
        exe: str | None = "/usr/bin/proc",
        cwd: str | None = "/",
        cgroup: bytes = b"0::/system.slice/fixture.service\n",
        stat: bytes | None = None,
        status: bytes | None = None,
    ) -> Path:
        d = self.root / str(pid)
        d.mkdir()
        raw_comm = comm.encode("utf-8", "surrogateescape")
        (d / "comm").write_bytes(raw_comm + b"\n")
        (d / "cmdline").write_bytes(raw_comm + b"\0" if cmdline is None else cmdline)
        (d / "stat").write_bytes(
            stat_line(pid, raw_comm, ppid=ppid, starttime=starttime, state=state) if stat is None else stat
        )
        (d / "status").write_bytes(
            status_text(comm, uid, uid if euid is None else euid, gid, gid if egid is None else egid)
            if status is None
            else status
        )
        (d / "cgroup").write_bytes(cgroup)
        if exe is not None:
            os.symlink(exe, d / "exe")
        if cwd is not None:
            os.symlink(cwd, d / "cwd")
        return d


class FixedOffsetProcFS(ProcFS):
    """A ProcFS whose boot-time offset is a constant (exact start times)."""

    def boottime_offset_ns(self) -> int:
        return BOOT_OFFSET_NS


@pytest.fixture
def fx(tmp_path: Path) -> FixtureProc:
    return FixtureProc(tmp_path)


@pytest.fixture
def procfs(tmp_path: Path) -> ProcFS:
    return FixedOffsetProcFS(root=str(tmp_path))


def start_ns(starttime: int) -> int:
    """The CLOCK_MONOTONIC start time the table should derive from a stat starttime."""
    return starttime * 1_000_000_000 // CLOCK_TICKS - BOOT_OFFSET_NS


# -- synthetic events ---------------------------------------------------------------

_SEQ = iter(range(1, 1 << 30))


def fork(parent: int, child: int, ts: int = 1_000, *, thread_of: int | None = None) -> Fork:
    """A process fork (or, with ``thread_of``, a new thread ``child`` in process ``thread_of``)."""
    tgid = child if thread_of is None else thread_of
    return Fork(0, next(_SEQ), ts, parent, parent, child, tgid)


def exec_(pid: int, ts: int = 2_000) -> Exec:
    return Exec(0, next(_SEQ), ts, pid, pid)


def exit_(pid: int, ts: int = 3_000, *, code: int = 0, parent: int = 0, tgid: int | None = None) -> Exit:
    return Exit(0, next(_SEQ), ts, pid, pid if tgid is None else tgid, code, 17, parent, parent)


def comm_event(pid: int, name: bytes, ts: int = 2_500, *, tgid: int | None = None) -> Comm:
    return Comm(0, next(_SEQ), ts, pid, pid if tgid is None else tgid, name)


def uid_event(pid: int, ruid: int, euid: int, ts: int = 2_500) -> Uid:
    return Uid(0, next(_SEQ), ts, pid, pid, ruid, euid)


def snap(argv: list[str] | None, comm: str | None = "prog", missing: str | None = None) -> ExecSnapshot:
    return ExecSnapshot(
        argv=argv,
        comm=comm,
        exe="/usr/bin/prog" if argv is not None else None,
        cwd="/tmp" if argv is not None else None,
        owner=(1000, 1000) if argv is not None else None,
        missing=missing,
    )


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


# -- ProcessTable: seeding from a fixture --------------------------------------------------------


@pytest.fixture
def seeded(fx: FixtureProc, procfs: ProcFS) -> ProcessTable:
    """init(1) -> sshd(100) -> bash(101) -> make(102) -> cc(103); init -> nobody's job(200);
    a zombie (300) and a kernel thread (2); a pid without stat (400)."""
    fx.add(1, comm="systemd", cmdline=b"/sbin/init\x00splash\x00", ppid=0, starttime=1, exe="/usr/lib/systemd/systemd")
    fx.add(2, comm="kthreadd", cmdline=b"", ppid=0, starttime=1, exe=None, cwd=None)
    fx.add(100, comm="sshd", cmdline=b"sshd: root@pts/0\x00", ppid=1, starttime=500)
    fx.add(101, comm="bash", cmdline=b"-bash\x00", ppid=100, starttime=600, uid=1000, gid=1000,
           exe="/usr/bin/bash", cwd="/home/u")
    fx.add(102, comm="make", cmdline=b"make\x00-j4\x00", ppid=101, starttime=700, uid=1000, gid=1000)
    fx.add(103, comm="a) b) c", cmdline=b"cc\x00-c\x00x.c\x00", ppid=102, starttime=701, uid=1000, euid=0)
    fx.add(200, comm="job", cmdline=b"job\x00\xff\x00", ppid=1, starttime=900, uid=NOBODY, gid=NOBODY)
    fx.add(300, comm="defunct", cmdline=b"", ppid=101, starttime=800, state="Z", exe=None)
    (fx.add(400, comm="half") / "stat").unlink()
    return ProcessTable(procfs)


class TestSeed:
    def test_entries(self, seeded: ProcessTable) -> None:
        assert sorted(seeded.procs) == [1, 2, 100, 101, 102, 103, 200, 300]
        assert len(seeded) == 8
        assert 101 in seeded and 400 not in seeded

    def test_fields(self, seeded: ProcessTable) -> None:
        bash = seeded.get(101)
        assert bash is not None
        assert bash.pid == 101
        assert bash.ppid == 100
        assert bash.comm == "bash"
        assert bash.argv == ["-bash"]
        assert bash.argv_source == "seed"
        assert bash.exe == "/usr/bin/bash"
        assert (bash.ruid, bash.euid, bash.rgid, bash.egid) == (1000, 1000, 1000, 1000)
        assert bash.start_ns == start_ns(600)
        assert bash.execs == 0

    def test_comm_from_stat_with_parens(self, seeded: ProcessTable) -> None:
        cc = seeded.get(103)
        assert cc is not None
        assert cc.comm == "a) b) c"
        assert cc.ppid == 102
        assert (cc.ruid, cc.euid) == (1000, 0)
        assert cc.argv == ["cc", "-c", "x.c"]

    def test_non_utf8_argv(self, seeded: ProcessTable) -> None:
        job = seeded.get(200)
        assert job is not None
        assert [os.fsencode(a) for a in job.argv or []] == [b"job", b"\xff"]
        assert job.ruid == NOBODY

    def test_zombie_and_kernel_thread_have_no_argv(self, seeded: ProcessTable) -> None:
        for pid in (2, 300):
            proc = seeded.get(pid)
            assert proc is not None
            assert proc.argv is None
            assert proc.argv_source is None
        assert seeded.get(2).exe is None  # type: ignore[union-attr]

    def test_no_seed(self, fx: FixtureProc, procfs: ProcFS) -> None:
        fx.add(5)
        table = ProcessTable(procfs, seed=False)
        assert len(table) == 0
        table.seed()
        assert 5 in table

    def test_load(self, seeded: ProcessTable) -> None:
        assert seeded.load(99999) is None
        assert seeded.load(400) is None
        fresh = seeded.load(102)
        assert fresh is not None and fresh.argv == ["make", "-j4"]


class TestRelationships:
    def test_descendants(self, seeded: ProcessTable) -> None:
        assert seeded.descendants({100}) == {100, 101, 102, 103, 300}
        assert seeded.descendants({102}) == {102, 103}
        assert seeded.descendants({103}) == {103}
        assert seeded.descendants({1}) == {1, 100, 101, 102, 103, 200, 300}
        assert seeded.descendants({102, 200}) == {102, 103, 200}
        assert seeded.descendants({77777}) == {77777}
        assert seeded.descendants(set()) == set()

    def test_ancestors(self, seeded: ProcessTable) -> None:
        assert [p.pid for p in seeded.ancestors(103)] == [102, 101, 100, 1]
        assert [p.pid for p in seeded.ancestors(200)] == [1]
        assert list(seeded.ancestors(1)) == []
        assert list(seeded.ancestors(77777)) == []

    def test_ancestors_stop_on_a_cycle(self, fx: FixtureProc, procfs: ProcFS) -> None:
        # lost events can leave the table with a parent loop; it must not hang
        fx.add(10, ppid=11)
        fx.add(11, ppid=12)
        fx.add(12, ppid=10)
        table = ProcessTable(procfs)
        assert [p.pid for p in table.ancestors(10)] == [11, 12]
        assert table.descendants({10}) == {10, 11, 12}

    def test_relationships_follow_events(self, seeded: ProcessTable) -> None:
        seeded.update(fork(103, 500, ts=10))
        seeded.update(fork(500, 501, ts=11))
        assert seeded.descendants({102}) == {102, 103, 500, 501}
        assert [p.pid for p in seeded.ancestors(501)] == [500, 103, 102, 101, 100, 1]
        seeded.update(exit_(500, ts=12, parent=103))
        assert 500 not in seeded.descendants({102})


# -- ProcessTable.update with synthetic events ------------------------------------------------------


class TestUpdate:
    def test_fork_copies_the_parent(self, seeded: ProcessTable) -> None:
        child = seeded.update(fork(101, 600, ts=123_456_789))
        assert child is not None
        assert seeded.get(600) is child
        assert child.pid == 600
        assert child.ppid == 101
        assert child.start_ns == 123_456_789
        assert child.comm == "bash"
        assert child.argv == ["-bash"]
        assert child.argv_source == "fork"
        assert child.exe == "/usr/bin/bash"
        assert (child.ruid, child.euid, child.rgid, child.egid) == (1000, 1000, 1000, 1000)
        assert child.execs == 0

    def test_fork_of_an_unknown_parent_loads_it(self, fx: FixtureProc, procfs: ProcFS) -> None:
        fx.add(50, comm="late", cmdline=b"late\x00x\x00", uid=7)
        table = ProcessTable(procfs, seed=False)
        child = table.update(fork(50, 51, ts=5))
        assert child is not None
        assert (child.comm, child.argv, child.ruid) == ("late", ["late", "x"], 7)
        assert 50 in table

    def test_fork_of_a_vanished_parent(self, procfs: ProcFS) -> None:
        table = ProcessTable(procfs, seed=False)
        child = table.update(fork(50, 51, ts=5))
        assert child is not None
        assert (child.ppid, child.comm, child.argv, child.ruid, child.start_ns) == (50, None, None, None, 5)
        assert child.argv_source is None

    def test_thread_fork_adds_no_process(self, seeded: ProcessTable) -> None:
        before = set(seeded.procs)
        proc = seeded.update(fork(101, 5000, thread_of=101))
        assert proc is seeded.get(101)
        assert set(seeded.procs) == before

    def test_exec_with_snapshot(self, seeded: ProcessTable) -> None:
        seeded.update(fork(101, 600, ts=1))
        proc = seeded.update(exec_(600, ts=2), snap(["/usr/bin/prog", "--flag"], comm="prog"))
        assert proc is seeded.get(600)
        assert proc is not None
        assert proc.argv == ["/usr/bin/prog", "--flag"]
        assert proc.argv_source == "exec"
        assert proc.comm == "prog"
        assert proc.exe == "/usr/bin/prog"
        assert proc.cwd == "/tmp"
        assert (proc.ruid, proc.euid) == (1000, 1000)
        assert proc.execs == 1
        assert proc.start_ns == 1  # exec keeps the process's start
        seeded.update(exec_(600, ts=3), snap(["second"]))
        assert proc.execs == 2 and proc.argv == ["second"]

    def test_exec_without_argv_forgets_the_inherited_one(self, seeded: ProcessTable) -> None:
        seeded.update(fork(101, 600, ts=1))
        proc = seeded.update(exec_(600), snap(None, comm=None, missing="gone"))
        assert proc is not None
        assert proc.argv is None
        assert proc.argv_source is None
        assert proc.exe is None
        assert proc.comm is None  # unknown, never the name it had before the exec

    def test_exec_of_an_unknown_gone_process(self, procfs: ProcFS) -> None:
        table = ProcessTable(procfs, seed=False)
        proc = table.update(exec_(77), snap(None, comm=None, missing="gone"))
        assert proc is not None and proc.pid == 77 and proc.argv is None
        assert 77 in table

    def test_exit_removes_and_returns(self, seeded: ProcessTable) -> None:
        bash = seeded.get(101)
        proc = seeded.update(exit_(101, code=256, parent=100))
        assert proc is bash
        assert 101 not in seeded
        assert seeded.get(101) is None

    def test_exit_of_a_thread_keeps_the_process(self, seeded: ProcessTable) -> None:
        seeded.update(fork(101, 5000, thread_of=101))
        proc = seeded.update(exit_(5000, tgid=101))
        assert proc is seeded.get(101)
        assert 101 in seeded

    def test_exit_of_an_unknown_process(self, seeded: ProcessTable) -> None:
        proc = seeded.update(exit_(4444, parent=101))
        assert proc is not None
        assert (proc.pid, proc.ppid, proc.argv, proc.comm) == (4444, 101, None, None)
        assert 4444 not in seeded

    def test_comm_event(self, seeded: ProcessTable) -> None:
        proc = seeded.update(comm_event(101, b"renamed"))
        assert proc is not None and proc.comm == "renamed"
        seeded.update(comm_event(101, b"\xffbin"))
        assert os.fsencode(seeded.get(101).comm) == b"\xffbin"  # type: ignore[union-attr, arg-type]

    def test_comm_of_a_thread_keeps_the_process_name(self, seeded: ProcessTable) -> None:
        seeded.update(comm_event(5000, b"worker", tgid=101))
        assert seeded.get(101).comm == "bash"  # type: ignore[union-attr]

    def test_uid_and_gid_events(self, seeded: ProcessTable) -> None:
        proc = seeded.update(uid_event(101, NOBODY, 0))
        assert proc is not None and (proc.ruid, proc.euid) == (NOBODY, 0)
        seeded.update(Gid(0, next(_SEQ), 1, 101, 101, 5, 6))
        assert (proc.rgid, proc.egid) == (5, 6)
        child = seeded.update(fork(101, 600))
        assert child is not None and (child.ruid, child.euid, child.rgid, child.egid) == (NOBODY, 0, 5, 6)

    def test_pid_reuse_gives_a_fresh_entry(self, seeded: ProcessTable) -> None:
        pid = 600
        a = seeded.update(fork(101, pid, ts=1_000))
        seeded.update(exec_(pid, ts=1_100), snap(["program-A", "--a"], comm="progA"))
        gone = seeded.update(exit_(pid, ts=1_500, parent=101))
        assert gone is a
        assert gone is not None and gone.argv == ["program-A", "--a"]
        assert pid not in seeded
        # the pid comes back, as a child of another process
        b = seeded.update(fork(200, pid, ts=2_000))
        assert b is not None and b is not a
        assert b.argv == ["job", "\udcff"]  # the new parent's, never A's
        assert b.comm == "job"
        assert b.start_ns == 2_000
        assert b.ppid == 200
        assert b.execs == 0
        assert b.ruid == NOBODY
        exited = seeded.update(exit_(pid, ts=2_500, parent=200))
        assert exited is b and exited.argv != ["program-A", "--a"]

    def test_pid_reuse_without_the_exit(self, seeded: ProcessTable) -> None:
        # the exit was lost: the new fork still replaces the old entry
        seeded.update(fork(101, 600, ts=1))
        seeded.update(exec_(600), snap(["program-A"]))
        b = seeded.update(fork(102, 600, ts=9))
        assert b is not None and b.argv == ["make", "-j4"] and b.ppid == 102 and b.start_ns == 9

    def test_resync_drops_dead_and_replaces_reused(self, fx: FixtureProc, procfs: ProcFS, tmp_path: Path) -> None:
        fx.add(10, comm="old", starttime=100)
        fx.add(11, comm="dies", starttime=100)
        table = ProcessTable(procfs)
        table.update(exec_(10), snap(["argv-of-old"]))
        shutil.rmtree(tmp_path / "11")
        shutil.rmtree(tmp_path / "10")
        fx.add(10, comm="new", cmdline=b"new\x00", starttime=100_000)  # a different start time
        fx.add(12, comm="born", starttime=200)
        table.resync()
        assert sorted(table.procs) == [10, 12]
        assert table.get(10).comm == "new"  # type: ignore[union-attr]
        assert table.get(10).argv == ["new"]  # type: ignore[union-attr]


# -- validate_snapshots ------------------------------------------------------------------------------


def validate(batch: list[Event], snapshots: dict[int, ExecSnapshot], later: list[Event] | None = None) -> None:
    indexes = sorted(snapshots)
    assert all(type(batch[i]) is Exec for i in indexes)
    validate_snapshots(batch, indexes, [snapshots[i] for i in indexes], later or [])


class TestValidateSnapshots:
    def assert_kept(self, s: ExecSnapshot, argv: list[str]) -> None:
        assert s.argv == argv
        assert s.missing is None
        assert s.exe is not None and s.owner is not None

    def assert_superseded(self, s: ExecSnapshot) -> None:
        assert s.argv is None
        assert s.missing == "superseded"
        assert (s.exe, s.cwd, s.owner, s.comm) == (None, None, None, None)

    def test_lone_exec_kept(self) -> None:
        s = snap(["a"])
        validate([exec_(10)], {0: s})
        self.assert_kept(s, ["a"])

    def test_exec_again_in_batch(self) -> None:
        first, second = snap(["newest"]), snap(["newest"])
        validate([exec_(10), exec_(10)], {0: first, 1: second})
        self.assert_superseded(first)
        self.assert_kept(second, ["newest"])

    def test_refork_in_batch(self) -> None:
        s = snap(["b-argv"])
        validate([exec_(10), exit_(10), fork(1, 10)], {0: s})
        self.assert_superseded(s)

    def test_thread_taking_the_pid_in_batch(self) -> None:
        s = snap(["x"])
        validate([exec_(10), exit_(10), fork(20, 10, thread_of=20)], {0: s})
        self.assert_superseded(s)

    def test_exec_again_later(self) -> None:
        s = snap(["x"])
        validate([exec_(10)], {0: s}, later=[exec_(10)])
        self.assert_superseded(s)

    def test_refork_later(self) -> None:
        s = snap(["x"])
        validate([exec_(10)], {0: s}, later=[exit_(10), fork(1, 10)])
        self.assert_superseded(s)

    def test_events_before_the_exec_do_not_count(self) -> None:
        s = snap(["x"])
        validate([fork(1, 10), exec_(10), exit_(11)], {1: s})
        self.assert_kept(s, ["x"])
        t = snap(["y"])
        validate([exec_(10), exit_(10), fork(1, 10), exec_(10)], {0: snap(["y"]), 3: t})
        self.assert_kept(t, ["y"])

    def test_exit_alone_does_not_supersede(self) -> None:
        s = snap(["x"])
        validate([exec_(10), exit_(10)], {0: s})
        self.assert_kept(s, ["x"])

    def test_other_pids_do_not_interfere(self) -> None:
        a, b = snap(["a"]), snap(["b"])
        validate([exec_(10), fork(10, 11), exec_(12), exec_(11)], {0: a, 2: b}, later=[fork(1, 13), exec_(14)])
        self.assert_kept(a, ["a"])
        self.assert_kept(b, ["b"])

    def test_interleaved(self) -> None:
        p0, q1, q3, r4 = snap(["p0"]), snap(["q1"]), snap(["q3"]), snap(["r4"])
        batch: list[Event] = [exec_(10), exec_(20), fork(1, 10), exec_(20), exec_(30)]
        validate(batch, {0: p0, 1: q1, 3: q3, 4: r4}, later=[fork(5, 30)])
        self.assert_superseded(p0)
        self.assert_superseded(q1)
        self.assert_kept(q3, ["q3"])
        self.assert_superseded(r4)

    def test_gone_stays_gone(self) -> None:
        s = snap(None, comm=None, missing="gone")
        validate([exec_(10), fork(1, 10)], {0: s})
        assert s.argv is None and s.missing == "gone"

    def test_a_name_read_without_argv_is_checked_too(self) -> None:
        """argv already gone, but comm and cwd were read: after a re-fork of
        the pid they may be the new process's, so they are dropped."""
        s = ExecSnapshot(argv=None, comm="other", exe=None, cwd="/elsewhere", owner=(0, 0), missing="gone")
        validate([exec_(10), exit_(10), fork(1, 10)], {0: s})
        assert (s.comm, s.cwd, s.owner, s.missing) == (None, None, None, "gone")
        kept = ExecSnapshot(argv=None, comm="tiny", exe=None, cwd="/", owner=(0, 0), missing="gone")
        validate([exec_(10), exit_(10)], {0: kept})
        assert (kept.comm, kept.cwd, kept.missing) == ("tiny", "/", "gone")

    def test_no_execs(self) -> None:
        validate_snapshots([fork(1, 2)], [], [], [exec_(2)])


# -- Enricher on a fixture tree --------------------------------------------------------------------


class TestEnricher:
    def test_prefetch_and_apply(self, fx: FixtureProc, procfs: ProcFS) -> None:
        fx.add(1, comm="init", ppid=0, starttime=1)
        fx.add(600, comm="prog", cmdline=b"prog\x00arg one\x00\xff\x00", ppid=1, uid=0, cwd="/srv")
        table = ProcessTable(procfs)
        enricher = Enricher(table, identity=Identity("h", "b", boot_offset_ns=table.boot_offset_ns))
        batch: list[Event] = [fork(1, 600, ts=1_000_000_000), exec_(600, ts=1_100_000_000),
                              exit_(600, ts=1_600_000_000, code=3 << 8, parent=1)]
        snapshots = enricher.read_execs(batch)
        assert set(snapshots) == {1}
        infos = [enricher.apply(ev, snapshots.get(i))[1] for i, ev in enumerate(batch)]
        # Started 8 s after boot (the fork's CLOCK_MONOTONIC plus the offset),
        # in 10 ms ticks; init's 1 tick is /proc's starttime as it is.
        ids = {"exec_id": "h:b:800:600", "parent_exec_id": "h:b:1:1"}
        assert infos[0] == {"comm": "init", "ppid": 1, **ids}
        assert all(info["exec_id"] == ids["exec_id"] for info in infos)
        exec_info = infos[1]
        assert exec_info["cmdline"] == ["prog", "arg one", "\udcff"]
        assert exec_info["exe"] == "/usr/bin/proc"
        assert exec_info["cwd"] == "/srv"
        assert exec_info["ppid"] == 1
        assert exec_info["uid"] == 0
        assert exec_info["user"] == "root"
        assert exec_info["comm"] == "prog"
        assert "missing" not in exec_info
        exit_info = infos[2]
        assert exit_info["cmdline"] == ["prog", "arg one", "\udcff"]
        assert exit_info["comm"] == "prog"
        assert exit_info["duration"] == pytest.approx(0.6)
        assert exit_info["ppid"] == 1
        assert exit_info["user"] == "root"
        assert (enricher.execs, enricher.argv_captured) == (1, 1)

    def test_gone_exec(self, fx: FixtureProc, procfs: ProcFS) -> None:
        fx.add(1, comm="sh", cmdline=b"sh\x00-c\x00x\x00", ppid=0)
        enricher = Enricher(ProcessTable(procfs))
        batch: list[Event] = [fork(1, 600, ts=1), exec_(600, ts=2), exit_(600, ts=3, parent=1)]
        snapshots = enricher.read_execs(batch)
        infos = [enricher.apply(ev, snapshots.get(i))[1] for i, ev in enumerate(batch)]
        assert infos[1]["cmdline"] is None
        assert infos[1]["missing"] == "gone"
        assert infos[1]["comm"] is None  # unknown: not the name it had before the exec
        assert infos[2]["cmdline"] is None  # not the parent's argv inherited at fork
        assert (enricher.execs, enricher.argv_captured) == (1, 0)

    def test_reused_pid_read_is_discarded(self, fx: FixtureProc, procfs: ProcFS) -> None:
        # A's exec is in the batch, but by the time /proc is read, pid 600
        # belongs to B (whose fork the socket delivers as `later`).
        fx.add(1, comm="init", ppid=0)
        fx.add(600, comm="progB", cmdline=b"program-B\x00")
        enricher = Enricher(ProcessTable(procfs, seed=False))
        batch: list[Event] = [fork(1, 600, ts=1), exec_(600, ts=2)]
        later: list[Event] = [exit_(600, ts=3, parent=1), fork(1, 600, ts=4), exec_(600, ts=5)]
        snapshots = enricher.read_execs(batch)
        enricher.check_snapshots(batch, snapshots, later, complete=True)
        _, info = enricher.apply(batch[1], snapshots[1])
        assert info["cmdline"] is None
        assert info["missing"] == "superseded"
        _, exit_info = enricher.apply(later[0], None)
        assert exit_info["cmdline"] is None

    def test_exec_without_snapshot_reports_no_argv(self, fx: FixtureProc, procfs: ProcFS) -> None:
        fx.add(1, comm="sh", cmdline=b"sh\x00", ppid=0)
        enricher = Enricher(ProcessTable(procfs))
        enricher.apply(fork(1, 600), None)
        _, info = enricher.apply(exec_(600), None)
        assert info["cmdline"] is None

    def test_unknown_uid_shown_as_number(self, fx: FixtureProc, procfs: ProcFS) -> None:
        fx.add(600, uid=4_000_000_001)
        enricher = Enricher(ProcessTable(procfs))
        snapshots = enricher.read_execs([exec_(600)])
        _, info = enricher.apply(exec_(600), snapshots[0])
        assert info["user"] == "4000000001"


def test_cmdline_b64_matches_nul_joined_raw_bytes() -> None:
    """The JSON encoding the kernel tests rely on: cmdline_b64 is the raw argv."""
    from procevents.render.jsonl import put_argv

    argv = parse_cmdline(b"sh\x00new\nline\x00\xff\xfe\x00")
    assert isinstance(argv, list)
    out: dict[str, object] = {}
    put_argv(out, "cmdline", argv)
    assert out["cmdline"] == ["sh", "new\nline", "\ufffd\ufffd"]
    assert base64.b64decode(out["cmdline_b64"]) == b"sh\x00new\nline\x00\xff\xfe"  # type: ignore[arg-type]


class TestValidateIncompleteDrain:
    """When peek() stopped short (reader far behind), start times decide."""

    def test_start_matching_the_fork_in_the_batch_is_kept(self) -> None:
        s = snap(["a"])
        s.start_ns = 1_000 + 5_000_000  # within a tick of the fork at ts 1_000
        validate_snapshots([fork(1, 10), exec_(10)], [1], [s], [], complete=False)
        assert s.argv == ["a"]

    def test_start_far_from_the_known_start_is_dropped(self) -> None:
        s = snap(["stranger"])
        s.start_ns = 5_000_000_000
        validate_snapshots([exec_(10)], [0], [s], [], complete=False, known_start=lambda pid: 1_000)
        assert s.argv is None and s.missing == "superseded"

    def test_unknown_start_is_dropped(self) -> None:
        s = snap(["who"])
        s.start_ns = 1_000
        validate_snapshots([exec_(10)], [0], [s], [], complete=False, known_start=lambda pid: None)
        assert s.argv is None

    def test_complete_drain_needs_no_start_time(self) -> None:
        s = snap(["a"])
        validate_snapshots([exec_(10)], [0], [s], [], complete=True, known_start=lambda pid: None)
        assert s.argv == ["a"]


class TestResyncAfterLoss:
    """A Lost event makes the pipeline rescan /proc, at most once a second."""

    def test_lost_exit_and_fork_are_repaired(self, fx: FixtureProc, procfs: ProcFS) -> None:
        import shutil

        fx.add(100, comm="old", cmdline=b"old\0", starttime=1000)
        enricher = Enricher(ProcessTable(procfs))
        assert enricher.table.get(100) is not None and enricher.table.get(100).comm == "old"  # type: ignore[union-attr]
        # Meanwhile (events lost): 100 exited, a new 100 started, 200 appeared.
        shutil.rmtree(fx.root / "100")
        fx.add(100, comm="new", cmdline=b"new\0arg\0", starttime=9000, ppid=200)
        fx.add(200, comm="parent", starttime=8000)
        enricher.request_resync()
        assert enricher.maybe_resync(now=10.0)
        proc = enricher.table.get(100)
        assert proc is not None and (proc.comm, proc.argv, proc.ppid) == ("new", ["new", "arg"], 200)
        assert enricher.table.get(200) is not None
        # A second loss within the interval waits; after it, it rescans.
        enricher.request_resync()
        assert not enricher.maybe_resync(now=10.5)
        assert enricher.maybe_resync(now=11.1)
        assert enricher.resyncs == 2
        assert not enricher.maybe_resync(now=20.0)  # nothing asked


# -- host facts, read through procfs like everything else ------------------------------------------


def test_host_facts() -> None:
    from procevents import procfs

    boot = procfs.boot_id()
    assert boot is not None and len(boot) == 36 and boot.count("-") == 4
    assert procfs.rmem_max() == int(Path("/proc/sys/net/core/rmem_max").read_text())
    assert procfs.pid_exists(os.getpid()) and not procfs.pid_exists(2**22 + 1)
    assert procfs.namespace_inode("pid") == os.stat("/proc/self/ns/pid").st_ino
    assert procfs.namespace_inode("no-such-kind") is None
    assert procfs.boot_id(root="/nonexistent") is None and procfs.rmem_max(root="/nonexistent") == 212992


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

"""What a capture reader sends the main process, and the socket filter that
wakes it: pure codecs, no I/O (the processes are in :mod:`.capture`).

A frame: a fixed header (length, kind, why argv is missing, flags, cpu,
seq, pid, euid, egid, then the lengths of cmdline, stat or comm, exe, cwd,
environ), followed by those bytes as read from /proc, then (FLAG_CGROUP)
/proc/PID/cgroup: its length is what the frame's length leaves, so the
header is as it was before the cgroup was sent and a decoder that knows
nothing of it skips it."""

from __future__ import annotations

import os
import struct
from typing import Final

from .procfs import EMPTY, GONE, RawExec, Unavailable, parse_cgroup, parse_cmdline, parse_stat
from .snapshot import ExecSnapshot

U32: Final = 0xFFFFFFFF
U32_AT: Final = struct.Struct("<I")

# Frame kinds.
CAPTURE: Final = 0
READY: Final = 1
FAILED: Final = 2
#: A datagram the reader dropped because the kernel did not send it; pid is the sender's port.
REFUSED: Final = 3
FLAG_REALTIME: Final = 1  # on READY
FLAG_ARGV_CUT: Final = 1
FLAG_ENV: Final = 2
FLAG_ENV_CUT: Final = 4
FLAG_OWNER: Final = 8
FLAG_LATE: Final = 16  # read after the reader was busy: maybe not held
FLAG_COMM: Final = 32  # the stat field holds /proc/PID/comm (a held read)
FLAG_CGROUP: Final = 64  # /proc/PID/cgroup follows the other fields
MISSING_CODES: Final = {None: 0, GONE: 1, Unavailable.DENIED: 2, EMPTY: 3}
MISSING_NAMES: Final = (None, "gone", "denied", "gone")  # a zombie has exited
FRAME: Final = struct.Struct("<IBBHIIiIIIHHHI")


def exec_filter(cpu: int) -> bytes:
    """Classic BPF: accept EXEC events generated on ``cpu``, and acks.

    BPF_LD|BPF_W|BPF_ABS loads in network byte order, so the little-endian
    fields are compared byte-swapped."""

    def swapped(value: int) -> int:
        return int.from_bytes(value.to_bytes(4, "little"), "big")

    ld_w_abs, jeq_k, ret_k = 0x20, 0x15, 0x06
    program = [
        (ld_w_abs, 0, 0, 36),  # what
        (jeq_k, 2, 0, swapped(0x00000002)),  # EXEC -> check the cpu
        (jeq_k, 3, 0, 0),  # NONE (an ack) -> accept
        (ret_k, 0, 0, 0),  # anything else: drop
        (ld_w_abs, 0, 0, 40),  # cpu
        (jeq_k, 0, 1, swapped(cpu)),
        (ret_k, 0, 0, 0xFFFF),  # accept the whole datagram
        (ret_k, 0, 0, 0),
    ]
    return b"".join(struct.pack("=HBBI", *insn) for insn in program)


def encode_frame(kind: int, cpu: int, seq: int, pid: int, raw: RawExec | None = None, *, flags: int = 0) -> bytes:
    """One reader -> main frame (pure)."""
    if raw is None:
        return FRAME.pack(FRAME.size, kind, 0, flags, cpu, seq, pid, 0, 0, 0, 0, 0, 0, 0)
    environ = raw.environ
    if raw.argv_truncated:
        flags |= FLAG_ARGV_CUT
    if environ is not None:
        flags |= FLAG_ENV
        if raw.env_truncated:
            flags |= FLAG_ENV_CUT
    euid = egid = 0
    if raw.owner is not None:
        flags |= FLAG_OWNER
        euid, egid = raw.owner
    env = environ or b""
    cgroup = raw.cgroup
    if cgroup is not None:
        flags |= FLAG_CGROUP
    else:
        cgroup = b""
    size = FRAME.size + len(raw.cmdline) + len(raw.stat) + len(raw.exe) + len(raw.cwd) + len(env) + len(cgroup)
    head = FRAME.pack(
        size, kind, MISSING_CODES[raw.missing], flags, cpu, seq, pid, euid, egid,
        len(raw.cmdline), len(raw.stat), len(raw.exe), len(raw.cwd), len(env),
    )
    return b"".join((head, raw.cmdline, raw.stat, raw.exe, raw.cwd, env, cgroup))


class Frame:
    """A decoded frame; ``snapshot()`` turns a capture into an ExecSnapshot."""

    __slots__ = (
        "cgroup", "cmdline", "cpu", "cwd", "environ", "exe", "flags", "kind", "missing", "owner", "pid", "seq", "stat",
    )

    def __init__(self, data: bytes | bytearray | memoryview, offset: int = 0) -> None:
        (size, self.kind, missing, self.flags, self.cpu, self.seq, self.pid, euid, egid,
         n_cmd, n_stat, n_exe, n_cwd, n_env) = FRAME.unpack_from(data, offset)
        self.missing = MISSING_NAMES[missing] if missing < len(MISSING_NAMES) else "gone"
        self.owner = (euid, egid) if self.flags & FLAG_OWNER else None
        at = offset + FRAME.size
        self.cmdline = bytes(data[at : at + n_cmd])
        at += n_cmd
        self.stat = bytes(data[at : at + n_stat])
        at += n_stat
        self.exe = bytes(data[at : at + n_exe])
        at += n_exe
        self.cwd = bytes(data[at : at + n_cwd])
        at += n_cwd
        self.environ = bytes(data[at : at + n_env]) if self.flags & FLAG_ENV else None
        at += n_env
        self.cgroup = bytes(data[at : offset + size]) if self.flags & FLAG_CGROUP else None

    @property
    def text_bytes(self) -> int:
        """What the frame's argv and environment take (the budgets count these)."""
        return len(self.cmdline) + len(self.environ or b"")

    def cut(self, limit: int) -> None:
        """Cut argv and the environment to ``limit`` bytes each, marked as cut."""
        if len(self.cmdline) > limit:
            self.cmdline = self.cmdline[:limit]
            self.flags |= FLAG_ARGV_CUT
        if self.environ is not None and len(self.environ) > limit:
            self.environ = self.environ[:limit]
            self.flags |= FLAG_ENV_CUT

    def snapshot(self, boot_offset_ns: int) -> ExecSnapshot:
        argv = parse_cmdline(self.cmdline) if self.cmdline else None
        comm = start_ns = None
        if self.flags & FLAG_COMM:
            comm = self.stat.rstrip(b"\n").decode("utf-8", "surrogateescape") or None
        elif self.stat:
            try:
                stat = parse_stat(self.stat)
            except (ValueError, IndexError):
                pass
            else:
                comm = stat.comm
                start_ns = stat.start_boottime_ns - boot_offset_ns
        env = None
        if self.environ is not None:
            parsed = parse_cmdline(self.environ)
            env = parsed if isinstance(parsed, list) else []
        return ExecSnapshot(
            argv=argv if isinstance(argv, list) else None,
            comm=comm,
            exe=os.fsdecode(self.exe) if self.exe else None,
            cwd=os.fsdecode(self.cwd) if self.cwd else None,
            owner=self.owner,
            start_ns=start_ns,
            missing=None if isinstance(argv, list) else (self.missing or "gone"),
            env=env,
            argv_truncated=bool(self.flags & FLAG_ARGV_CUT),
            env_truncated=bool(self.flags & FLAG_ENV_CUT),
            held=True,
            cgroup=None if self.cgroup is None else parse_cgroup(self.cgroup) or None,
        )


def split_frames(buffer: bytearray) -> list[Frame]:
    """Complete frames at the front of ``buffer`` (removed from it)."""
    frames = []
    at = 0
    size = len(buffer)
    while size - at >= FRAME.size:
        length = U32_AT.unpack_from(buffer, at)[0]
        if size - at < length:
            break
        frames.append(Frame(buffer, at))
        at += length
    if at:
        del buffer[:at]
    return frames


def seq_after(a: int, b: int) -> bool:
    """Is per-CPU sequence number ``a`` later than ``b`` (u32, wrapping)?"""
    return 0 < ((a - b) & U32) < 0x80000000


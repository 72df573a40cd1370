"""The reader-to-main frame codec, the per-CPU exec socket filter and sequence order (frames.py): pure, from bytes."""

from __future__ import annotations

import os
import struct

import pytest

from procevents import wire
from procevents.frames import FLAG_COMM, Frame, encode_frame, exec_filter, seq_after, split_frames
from procevents.procfs import GONE, RawExec


def test_frame_round_trip() -> None:
    stat = b"4242 (my prog) R 1 4242 4242 0 -1 4194304 0 0 0 0 0 0 0 0 20 0 1 0 12345 0 0\n"
    raw = RawExec(None, b"prog\0a b\0\xff\0", stat, b"/usr/bin/prog", b"/tmp", (1000, 100), b"A=1\0B=2\0")
    data = encode_frame(0, 1, 77, 4242, raw)
    frame = Frame(data)
    assert (frame.kind, frame.cpu, frame.seq, frame.pid, frame.owner) == (0, 1, 77, 4242, (1000, 100))
    snap = frame.snapshot(boot_offset_ns=0)
    assert snap.argv == ["prog", "a b", "\udcff"]
    assert snap.comm == "my prog"
    assert snap.start_ns == 12345 * 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    assert (snap.exe, snap.cwd, snap.env) == ("/usr/bin/prog", "/tmp", ["A=1", "B=2"])
    assert snap.missing is None and not snap.argv_truncated and not snap.env_truncated


def test_frame_of_a_gone_process_and_of_a_cut_argv() -> None:
    gone = Frame(encode_frame(0, 0, 5, 9, RawExec(GONE))).snapshot(0)
    assert (gone.argv, gone.comm, gone.exe, gone.missing, gone.env) == (None, None, None, "gone", None)
    cut = Frame(encode_frame(0, 0, 6, 9, RawExec(None, b"x\0", argv_truncated=True))).snapshot(0)
    assert cut.argv == ["x"] and cut.argv_truncated


def test_split_frames_keeps_a_partial_frame() -> None:
    frames = [encode_frame(0, 0, seq, 100 + seq, RawExec(None, f"p{seq}\0".encode())) for seq in range(3)]
    data = b"".join(frames)
    buffer = bytearray(data[:-5])
    got = split_frames(buffer)
    assert [f.seq for f in got] == [0, 1]
    assert bytes(buffer) == frames[2][:-5]
    buffer += data[-5:]
    assert [f.cmdline for f in split_frames(buffer)] == [b"p2\0"]
    assert buffer == bytearray()


def test_a_held_frame_carries_comm_and_no_start_time() -> None:
    """A held read takes /proc/PID/comm, not stat: the name, newline dropped."""
    raw = RawExec(None, b"prog\0", b"my prog\n", b"/usr/bin/prog", b"/", (0, 0))
    snap = Frame(encode_frame(0, 0, 3, 77, raw, flags=FLAG_COMM)).snapshot(0)
    assert (snap.comm, snap.start_ns, snap.argv) == ("my prog", None, ["prog"])


def test_seq_after_wraps() -> None:
    assert seq_after(5, 4) and not seq_after(4, 5) and not seq_after(4, 4)
    assert seq_after(2, 0xFFFFFFFE)  # past the wrap
    assert not seq_after(0xFFFFFFFE, 2)


def _run_filter(program: bytes, packet: bytes) -> int:
    """A tiny classic-BPF interpreter for the instructions exec_filter uses."""
    insns = [struct.unpack_from("=HBBI", program, i) for i in range(0, len(program), 8)]
    acc = pc = 0
    while True:
        code, jt, jf, k = insns[pc]
        if code == 0x20:  # ld [k], network byte order
            acc = int.from_bytes(packet[k : k + 4], "big")
            pc += 1
        elif code == 0x15:  # jeq #k
            pc += 1 + (jt if acc == k else jf)
        elif code == 0x06:  # ret #k
            return k
        else:
            raise AssertionError(f"unexpected instruction {code:#x}")


@pytest.mark.parametrize("cpu", [0, 1, 3, 255])
def test_exec_filter_takes_only_its_cpus_execs_and_acks(cpu: int) -> None:
    program = exec_filter(cpu)

    def packet(what: int, on_cpu: int) -> bytes:
        data = bytearray(wire.EVENT_SIZE)
        struct.pack_into("<II", data, 36, what, on_cpu)  # proc_event.what, .cpu (little-endian)
        return bytes(data)

    assert _run_filter(program, packet(2, cpu)) > 0
    assert _run_filter(program, packet(2, cpu + 1)) == 0
    for what in (1, 0x80000000, 0x4, 0x200):  # fork, exit, uid, comm
        assert _run_filter(program, packet(what, cpu)) == 0
    assert _run_filter(program, bytes(76)) > 0  # what == NONE: an ack

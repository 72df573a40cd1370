"""Wire codec tests.

Every datagram here is built by hand with ``struct.pack`` from the layout
table in docs/kernel-interface.md, never with :func:`procevents.wire.encode_event`,
so an encoder and a decoder that share a mistake cannot hide it.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from procevents.events import (
    Ack,
    Comm,
    Coredump,
    Event,
    Exec,
    Exit,
    Fork,
    Gid,
    Ptrace,
    Sid,
    Uid,
    Unknown,
)
from procevents.wire import (
    PROC_CN_MCAST_IGNORE,
    PROC_CN_MCAST_LISTEN,
    DecodeError,
    decode,
    decode_all,
    decode_request,
    encode_event,
    encode_request,
)

# what values, spelled out from the table rather than imported.
W_NONE = 0x0
W_FORK = 0x1
W_EXEC = 0x2
W_UID = 0x4
W_GID = 0x40
W_SID = 0x80
W_PTRACE = 0x100
W_COMM = 0x200
W_COREDUMP = 0x40000000
W_EXIT = 0x80000000

CPU = 3
SEQ = 123456
TS = 0x0123_4567_89AB_CDEF  # all bytes distinct: catches a misplaced/misaligned u64


def datagram(
    what: int,
    union: bytes,
    *,
    cpu: int = CPU,
    seq: int = SEQ,
    ts: int = TS,
    ack: int = 0,
    nlmsg_len: int = 76,
    nlmsg_type: int = 3,
    nlmsg_pid: int = 0,
    idx: int = 1,
    val: int = 1,
    cn_len: int = 40,
) -> bytes:
    """One event datagram, field by field as in the layout table."""
    assert len(union) <= 24
    union = union.ljust(24, b"\0")
    out = b"".join(
        [
            struct.pack("<I", nlmsg_len),  # 0 nlmsg_len
            struct.pack("<H", nlmsg_type),  # 4 nlmsg_type
            struct.pack("<H", 0),  # 6 nlmsg_flags
            struct.pack("<I", seq),  # 8 nlmsg_seq
            struct.pack("<I", nlmsg_pid),  # 12 nlmsg_pid
            struct.pack("<II", idx, val),  # 16 cb_id
            struct.pack("<I", seq),  # 24 seq
            struct.pack("<I", ack),  # 28 ack
            struct.pack("<H", cn_len),  # 32 len
            struct.pack("<H", 0),  # 34 flags
            struct.pack("<I", what),  # 36 what
            struct.pack("<I", cpu),  # 40 cpu
            struct.pack("<Q", ts),  # 44 timestamp_ns
            union,  # 52 event_data
        ]
    )
    assert len(out) == 76
    return out


def exit_union(pid: int, tgid: int, code: int, exit_signal: int, ppid: int, ptgid: int) -> bytes:
    return struct.pack("<iiIIii", pid, tgid, code, exit_signal, ppid, ptgid)


def assert_common(ev: Event, *, cpu: int = CPU, seq: int = SEQ, ts: int = TS) -> None:
    assert ev.cpu == cpu
    assert ev.seq == seq
    assert ev.timestamp_ns == ts


# --------------------------------------------------------------------------
# decode, one test per type


def test_ack() -> None:
    ev = decode(datagram(W_NONE, struct.pack("<I", 0), ack=43))
    assert type(ev) is Ack
    assert_common(ev)
    assert ev.err == 0
    assert ev.ack == 43


def test_ack_with_error() -> None:
    ev = decode(datagram(W_NONE, struct.pack("<I", 22), ack=1))
    assert type(ev) is Ack
    assert ev.err == 22
    assert ev.ack == 1


def test_fork() -> None:
    ev = decode(datagram(W_FORK, struct.pack("<iiii", 100, 101, 2000, 2001)))
    assert type(ev) is Fork
    assert_common(ev)
    assert (ev.parent_pid, ev.parent_tgid, ev.child_pid, ev.child_tgid) == (100, 101, 2000, 2001)


def test_fork_signed_pids() -> None:
    ev = decode(datagram(W_FORK, struct.pack("<iiii", -1, -2, 2**31 - 1, -(2**31))))
    assert isinstance(ev, Fork)
    assert (ev.parent_pid, ev.parent_tgid, ev.child_pid, ev.child_tgid) == (-1, -2, 2**31 - 1, -(2**31))


def test_exec() -> None:
    ev = decode(datagram(W_EXEC, struct.pack("<ii", 4242, 4240)))
    assert type(ev) is Exec
    assert_common(ev)
    assert (ev.process_pid, ev.process_tgid) == (4242, 4240)


def test_exec_ignores_trailing_union_bytes() -> None:
    # The kernel zero-fills, but a decoder must only read the fields it names.
    ev = decode(datagram(W_EXEC, struct.pack("<ii", 7, 7) + b"\xaa" * 16))
    assert type(ev) is Exec
    assert (ev.process_pid, ev.process_tgid) == (7, 7)


def test_sid() -> None:
    ev = decode(datagram(W_SID, struct.pack("<ii", 555, 555)))
    assert type(ev) is Sid
    assert_common(ev)
    assert (ev.process_pid, ev.process_tgid) == (555, 555)


def test_uid() -> None:
    ev = decode(datagram(W_UID, struct.pack("<iiII", 10, 11, 1000, 0)))
    assert type(ev) is Uid
    assert_common(ev)
    assert (ev.process_pid, ev.process_tgid, ev.ruid, ev.euid) == (10, 11, 1000, 0)


def test_uid_u32_values() -> None:
    ev = decode(datagram(W_UID, struct.pack("<iiII", 10, 10, 4294967294, 0xFFFFFFFF)))
    assert isinstance(ev, Uid)
    assert ev.ruid == 4294967294
    assert ev.euid == 0xFFFFFFFF


def test_gid() -> None:
    ev = decode(datagram(W_GID, struct.pack("<iiII", 20, 21, 100, 4294967294)))
    assert type(ev) is Gid
    assert_common(ev)
    assert (ev.process_pid, ev.process_tgid, ev.rgid, ev.egid) == (20, 21, 100, 4294967294)


def test_ptrace_attach() -> None:
    ev = decode(datagram(W_PTRACE, struct.pack("<iiii", 30, 31, 40, 41)))
    assert type(ev) is Ptrace
    assert_common(ev)
    assert (ev.process_pid, ev.process_tgid, ev.tracer_pid, ev.tracer_tgid) == (30, 31, 40, 41)
    assert ev.attached


def test_ptrace_detach() -> None:
    ev = decode(datagram(W_PTRACE, struct.pack("<iiii", 30, 30, 0, 0)))
    assert isinstance(ev, Ptrace)
    assert (ev.tracer_pid, ev.tracer_tgid) == (0, 0)
    assert not ev.attached


def test_comm_ascii() -> None:
    ev = decode(datagram(W_COMM, struct.pack("<ii", 50, 51) + b"worker".ljust(16, b"\0")))
    assert type(ev) is Comm
    assert_common(ev)
    assert (ev.process_pid, ev.process_tgid) == (50, 51)
    assert ev.comm == b"worker"
    assert ev.comm_text == "worker"


def test_comm_non_utf8_kept_exactly_up_to_first_nul() -> None:
    raw = b"\xff\x1b[2J\x80\xfe\x00junk\x00xyz"
    assert len(raw) == 16
    ev = decode(datagram(W_COMM, struct.pack("<ii", 50, 50) + raw))
    assert isinstance(ev, Comm)
    assert ev.comm == b"\xff\x1b[2J\x80\xfe"
    assert ev.comm_text.encode("utf-8", "surrogateescape") == ev.comm


def test_comm_16_bytes_without_nul() -> None:
    raw = bytes(range(0x41, 0x51))  # "ABCDEFGHIJKLMNOP"
    ev = decode(datagram(W_COMM, struct.pack("<ii", 50, 50) + raw))
    assert isinstance(ev, Comm)
    assert ev.comm == raw
    assert len(ev.comm) == 16


def test_comm_16_high_bytes_without_nul() -> None:
    raw = b"\xff" * 16
    ev = decode(datagram(W_COMM, struct.pack("<ii", 1, 1) + raw))
    assert isinstance(ev, Comm)
    assert ev.comm == raw


def test_comm_empty() -> None:
    ev = decode(datagram(W_COMM, struct.pack("<ii", 1, 1)))
    assert isinstance(ev, Comm)
    assert ev.comm == b""


def test_coredump() -> None:
    ev = decode(datagram(W_COREDUMP, struct.pack("<iiii", 60, 61, 1, 1)))
    assert type(ev) is Coredump
    assert_common(ev)
    assert (ev.process_pid, ev.process_tgid, ev.parent_pid, ev.parent_tgid) == (60, 61, 1, 1)


def test_exit_status() -> None:
    ev = decode(datagram(W_EXIT, exit_union(70, 70, 768, 17, 1, 1)))
    assert type(ev) is Exit
    assert_common(ev)
    assert (ev.process_pid, ev.process_tgid) == (70, 70)
    assert ev.exit_code == 768
    assert ev.exit_signal == 17
    assert (ev.parent_pid, ev.parent_tgid) == (1, 1)
    assert ev.status == 3
    assert ev.signal is None
    assert ev.core_dumped is False


def test_exit_sigkill() -> None:
    ev = decode(datagram(W_EXIT, exit_union(70, 70, 9, 17, 1, 1)))
    assert isinstance(ev, Exit)
    assert ev.exit_code == 9
    assert ev.status is None
    assert ev.signal == 9
    assert ev.core_dumped is False


def test_exit_sigsegv_core() -> None:
    ev = decode(datagram(W_EXIT, exit_union(70, 70, 139, 17, 1, 1)))
    assert isinstance(ev, Exit)
    assert ev.exit_code == 139
    assert ev.status is None
    assert ev.signal == 11
    assert ev.core_dumped is True


def test_exit_thread_signal_minus_one() -> None:
    ev = decode(datagram(W_EXIT, exit_union(72, 70, 0, 0xFFFFFFFF, 0, 0)))
    assert isinstance(ev, Exit)
    assert ev.exit_signal == -1
    assert (ev.parent_pid, ev.parent_tgid) == (0, 0)
    assert ev.is_thread
    assert ev.status == 0


def test_exit_code_is_unsigned() -> None:
    # exit_code is a u32 in the kernel struct; high bits must not go negative.
    ev = decode(datagram(W_EXIT, exit_union(1, 1, 0xFFFFFF00, 17, 1, 1)))
    assert isinstance(ev, Exit)
    assert ev.exit_code == 0xFFFFFF00


def test_header_fields_extremes() -> None:
    ev = decode(
        datagram(W_EXEC, struct.pack("<ii", 1, 1), cpu=0xFFFFFFFF, seq=0xFFFFFFFF, ts=2**64 - 1)
    )
    assert_common(ev, cpu=0xFFFFFFFF, seq=0xFFFFFFFF, ts=2**64 - 1)


def test_timestamp_is_read_at_offset_44_unaligned() -> None:
    data = bytearray(datagram(W_EXEC, struct.pack("<ii", 1, 1), ts=0))
    data[44:52] = bytes([1, 2, 3, 4, 5, 6, 7, 8])
    ev = decode(bytes(data))
    assert ev.timestamp_ns == 0x0807060504030201


def test_cn_seq_is_used_not_nlmsg_seq() -> None:
    data = bytearray(datagram(W_EXEC, struct.pack("<ii", 1, 1), seq=5))
    struct.pack_into("<I", data, 8, 999)  # nlmsg_seq differs
    assert decode(bytes(data)).seq == 5


# --------------------------------------------------------------------------
# buffer handling


@pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview"])
def test_decode_accepts_buffer_types(kind: str) -> None:
    data = datagram(W_FORK, struct.pack("<iiii", 1, 2, 3, 4))
    buf: bytes | bytearray | memoryview
    buf = {"bytes": data, "bytearray": bytearray(data), "memoryview": memoryview(data)}[kind]
    ev = decode(buf)
    assert isinstance(ev, Fork)
    assert (ev.parent_pid, ev.parent_tgid, ev.child_pid, ev.child_tgid) == (1, 2, 3, 4)


def test_decode_reused_larger_buffer() -> None:
    buf = bytearray(b"\xee" * 4096)
    first = datagram(W_FORK, struct.pack("<iiii", 1, 2, 3, 4), seq=1)
    buf[: len(first)] = first
    ev = decode(buf, len(first))
    assert isinstance(ev, Fork)
    assert ev.seq == 1
    assert ev.child_pid == 3

    second = datagram(W_COMM, struct.pack("<ii", 9, 9) + b"abc", seq=2)
    buf[: len(second)] = second
    ev2 = decode(buf, len(second))
    assert isinstance(ev2, Comm)
    assert ev2.comm == b"abc"
    assert ev2.seq == 2


def test_decode_size_limits_a_larger_buffer() -> None:
    # A valid datagram sits in the buffer, but size says only 60 bytes came in.
    buf = bytearray(4096)
    data = datagram(W_EXEC, struct.pack("<ii", 1, 1))
    buf[:76] = data
    with pytest.raises(DecodeError):
        decode(buf, 60)


def test_decode_comm_in_reused_buffer_does_not_read_past_union() -> None:
    buf = bytearray(b"Z" * 256)
    data = datagram(W_COMM, struct.pack("<ii", 1, 1) + b"q" * 16)
    buf[:76] = data
    ev = decode(buf, 76)
    assert isinstance(ev, Comm)
    assert ev.comm == b"q" * 16


# --------------------------------------------------------------------------
# unknown types


def test_unknown_what_keeps_raw_union() -> None:
    union = bytes(range(1, 25))
    ev = decode(datagram(0x400, union))
    assert type(ev) is Unknown
    assert_common(ev)
    assert ev.what == 0x400
    assert ev.data == union


def test_unknown_what_high_bit_values() -> None:
    union = b"\x01\x02\x03\x04" + b"\0" * 20
    ev = decode(datagram(0x20000000, union))  # NONZERO_EXIT is a filter bit, not a type
    assert isinstance(ev, Unknown)
    assert ev.what == 0x20000000
    assert ev.data == union
    ev2 = decode(datagram(0xFFFFFFFF, union))
    assert isinstance(ev2, Unknown)
    assert ev2.what == 0xFFFFFFFF


# --------------------------------------------------------------------------
# DecodeError


VALID = datagram(W_EXIT, exit_union(70, 70, 768, 17, 1, 1))


@pytest.mark.parametrize("length", range(76))
def test_truncated_at_every_length(length: int) -> None:
    with pytest.raises(DecodeError):
        decode(VALID[:length])


@pytest.mark.parametrize("length", range(76))
def test_truncated_with_consistent_nlmsg_len(length: int) -> None:
    # Truncated, and nlmsg_len rewritten to match, so only the inner checks catch it.
    data = bytearray(VALID[:length])
    if length >= 4:
        struct.pack_into("<I", data, 0, length)
    with pytest.raises(DecodeError):
        decode(bytes(data))


@pytest.mark.parametrize("length", range(76))
def test_truncated_reused_buffer_at_every_size(length: int) -> None:
    buf = bytearray(256)
    buf[:76] = VALID
    with pytest.raises(DecodeError):
        decode(buf, length)


@pytest.mark.parametrize("nlmsg_len", [77, 80, 1000, 0xFFFFFFFF])
def test_nlmsg_len_larger_than_data(nlmsg_len: int) -> None:
    with pytest.raises(DecodeError):
        decode(datagram(W_EXEC, struct.pack("<ii", 1, 1), nlmsg_len=nlmsg_len))


@pytest.mark.parametrize("nlmsg_len", [0, 1, 15, 16, 51, 52, 75])
def test_nlmsg_len_too_small(nlmsg_len: int) -> None:
    with pytest.raises(DecodeError):
        decode(datagram(W_EXEC, struct.pack("<ii", 1, 1), nlmsg_len=nlmsg_len))


@pytest.mark.parametrize("pid", [1, 4242, 0xFFFFFFFF])
def test_nlmsg_pid_not_kernel(pid: int) -> None:
    with pytest.raises(DecodeError):
        decode(datagram(W_EXEC, struct.pack("<ii", 1, 1), nlmsg_pid=pid))


@pytest.mark.parametrize(("idx", "val"), [(0, 1), (1, 0), (2, 1), (1, 2), (0, 0), (0xFFFFFFFF, 1)])
def test_wrong_idx_val(idx: int, val: int) -> None:
    with pytest.raises(DecodeError):
        decode(datagram(W_EXEC, struct.pack("<ii", 1, 1), idx=idx, val=val))


@pytest.mark.parametrize("cn_len", [0, 4, 8, 16, 39])
def test_cn_len_too_small(cn_len: int) -> None:
    with pytest.raises(DecodeError):
        decode(datagram(W_EXEC, struct.pack("<ii", 1, 1), cn_len=cn_len))


@pytest.mark.parametrize("cn_len", [41, 48, 0xFFFF])
def test_cn_len_overruns_message(cn_len: int) -> None:
    with pytest.raises(DecodeError):
        decode(datagram(W_EXEC, struct.pack("<ii", 1, 1), cn_len=cn_len))


def nlmsg_error(error: int, *, nlmsg_len: int = 36, pid: int = 0) -> bytes:
    """struct nlmsghdr + struct nlmsgerr {int error; struct nlmsghdr msg}."""
    inner = struct.pack("<IHHII", 40, 3, 0, 0, 0)
    body = struct.pack("<i", error) + inner
    return struct.pack("<IHHII", nlmsg_len, 2, 0, 0, pid) + body


@pytest.mark.parametrize("error", [-1, -105, -22, 0])
def test_nlmsg_error(error: int) -> None:
    with pytest.raises(DecodeError):
        decode(nlmsg_error(error))


@pytest.mark.parametrize("error", [5, -(2**31), 2**31 - 1])
def test_nlmsg_error_odd_errno_values(error: int) -> None:
    # A forged or odd error value is still just a DecodeError.
    with pytest.raises(DecodeError):
        decode(nlmsg_error(error))


def test_nlmsg_error_padded_to_event_size() -> None:
    # An NLMSG_ERROR as large as an event, with proc connector ids, is still an error.
    data = bytearray(VALID)
    struct.pack_into("<H", data, 4, 2)
    struct.pack_into("<i", data, 16, -105)
    with pytest.raises(DecodeError):
        decode(bytes(data))


def test_nlmsg_error_that_looks_like_an_event_is_still_an_error() -> None:
    """Bug caught: the fast path accepting NLMSG_ERROR (an error message whose
    body happens to carry the proc connector's idx and val)."""
    data = bytearray(VALID)
    struct.pack_into("<H", data, 4, 2)  # only the type differs from a valid event
    with pytest.raises(DecodeError):
        decode(bytes(data))


@given(st.binary(min_size=60, max_size=200))
def test_nlmsg_error_always_raises(body: bytes) -> None:
    data = struct.pack("<IHHII", 16 + len(body), 2, 0, 0, 0) + body
    with pytest.raises(DecodeError):
        decode(data)


def test_decode_error_is_value_error() -> None:
    assert issubclass(DecodeError, ValueError)


# --------------------------------------------------------------------------
# decode_all


def test_decode_all_two_messages() -> None:
    a = datagram(W_FORK, struct.pack("<iiii", 1, 1, 2, 2), seq=10)
    b = datagram(W_EXIT, exit_union(2, 2, 9, 17, 1, 1), seq=11, cpu=1)
    events = decode_all(a + b)
    assert len(events) == 2
    first, second = events
    assert isinstance(first, Fork)
    assert first.seq == 10
    assert first.child_pid == 2
    assert isinstance(second, Exit)
    assert second.seq == 11
    assert second.cpu == 1
    assert second.signal == 9


def test_decode_all_single() -> None:
    events = decode_all(VALID)
    assert len(events) == 1
    assert isinstance(events[0], Exit)


def test_decode_all_with_size_in_reused_buffer() -> None:
    a = datagram(W_EXEC, struct.pack("<ii", 5, 5), seq=1)
    b = datagram(W_SID, struct.pack("<ii", 6, 6), seq=2)
    buf = bytearray(b"\xee" * 1024)
    buf[:152] = a + b
    events = decode_all(buf, 152)
    assert [type(e) for e in events] == [Exec, Sid]
    assert [e.pid for e in events] == [5, 6]


def test_decode_all_bad_second_message() -> None:
    a = datagram(W_EXEC, struct.pack("<ii", 5, 5))
    b = datagram(W_EXEC, struct.pack("<ii", 6, 6), nlmsg_pid=77)
    with pytest.raises(DecodeError):
        decode_all(a + b)


def test_decode_all_trailing_garbage() -> None:
    with pytest.raises(DecodeError):
        decode_all(VALID + b"\x01\x02\x03")


# --------------------------------------------------------------------------
# requests


def test_encode_request_listen_exact_bytes() -> None:
    data = encode_request(PROC_CN_MCAST_LISTEN)
    expected = (
        struct.pack("<IHHII", 40, 3, 0, 0, 0)
        + struct.pack("<IIIIHH", 1, 1, 0, 0, 4, 0)
        + struct.pack("<I", 1)
    )
    assert len(data) == 40
    assert data == expected


def test_encode_request_ignore_exact_bytes() -> None:
    data = encode_request(PROC_CN_MCAST_IGNORE)
    expected = (
        struct.pack("<IHHII", 40, 3, 0, 0, 0)
        + struct.pack("<IIIIHH", 1, 1, 0, 0, 4, 0)
        + struct.pack("<I", 2)
    )
    assert data == expected


def test_encode_request_seq_ack_exact_bytes() -> None:
    data = encode_request(PROC_CN_MCAST_LISTEN, seq=7, ack=99)
    expected = (
        struct.pack("<IHHII", 40, 3, 0, 7, 0)
        + struct.pack("<IIIIHH", 1, 1, 7, 99, 4, 0)
        + struct.pack("<I", 1)
    )
    assert data == expected


def test_encode_request_listen_with_mask_exact_bytes() -> None:
    mask = W_EXEC | W_EXIT | 0x20000000
    data = encode_request(PROC_CN_MCAST_LISTEN, mask, seq=1, ack=2)
    expected = (
        struct.pack("<IHHII", 44, 3, 0, 1, 0)
        + struct.pack("<IIIIHH", 1, 1, 1, 2, 8, 0)
        + struct.pack("<II", 1, mask)
    )
    assert len(data) == 44
    assert struct.unpack_from("<H", data, 32)[0] == 8
    assert data == expected


def test_literal_constants() -> None:
    assert PROC_CN_MCAST_LISTEN == 1
    assert PROC_CN_MCAST_IGNORE == 2


@pytest.mark.parametrize("op", [PROC_CN_MCAST_LISTEN, PROC_CN_MCAST_IGNORE])
@pytest.mark.parametrize("mask", [None, 0, W_FORK, W_EXEC | W_EXIT, 0xFFFFFFFF])
@pytest.mark.parametrize(("seq", "ack"), [(0, 0), (1, 2), (0xFFFFFFFF, 0xFFFFFFFF)])
def test_request_round_trip(op: int, mask: int | None, seq: int, ack: int) -> None:
    assert decode_request(encode_request(op, mask, seq=seq, ack=ack)) == (op, mask, seq, ack)


def test_decode_request_hand_built() -> None:
    data = struct.pack("<IHHII", 44, 3, 0, 5, 0) + struct.pack("<IIIIHH", 1, 1, 5, 6, 8, 0)
    data += struct.pack("<II", 2, 0x80000000)
    assert decode_request(data) == (2, 0x80000000, 5, 6)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        encode_request(PROC_CN_MCAST_LISTEN)[:35],
        encode_request(PROC_CN_MCAST_LISTEN)[:39],  # nlmsg_len 40 > 39 bytes
        struct.pack("<IHHII", 40, 3, 0, 0, 0) + struct.pack("<IIIIHH", 2, 1, 0, 0, 4, 0) + b"\1\0\0\0",
        struct.pack("<IHHII", 42, 3, 0, 0, 0) + struct.pack("<IIIIHH", 1, 1, 0, 0, 6, 0) + b"\1\0\0\0\0\0",
    ],
)
def test_decode_request_errors(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_request(data)


# --------------------------------------------------------------------------
# encode_event


ALL_EVENTS: list[Event] = [
    Ack(0, 1, 2, 0, 44),
    Ack(1, 2, 3, 95, 1),
    Fork(1, 10, TS, 100, 101, 200, 201),
    Fork(0, 0, 0, -1, -(2**31), 2**31 - 1, 0),
    Exec(2, 11, TS, 300, 300),
    Uid(3, 12, TS, 301, 302, 4294967294, 0),
    Gid(4, 13, TS, 303, 303, 0xFFFFFFFF, 65534),
    Sid(5, 14, TS, 304, 304),
    Ptrace(6, 15, TS, 305, 306, 307, 308),
    Ptrace(6, 15, TS, 305, 306, 0, 0),
    Comm(7, 16, TS, 309, 310, b"bash"),
    Comm(7, 16, TS, 309, 310, b"\xff\x1b[2J\x80"),
    Comm(7, 16, TS, 309, 310, b"ABCDEFGHIJKLMNOP"),
    Comm(7, 16, TS, 309, 310, b""),
    Coredump(8, 17, TS, 311, 312, 1, 1),
    Exit(9, 18, TS, 313, 313, 768, 17, 1, 1),
    Exit(9, 18, TS, 313, 313, 9, 17, 1, 1),
    Exit(9, 18, TS, 313, 313, 139, 17, 1, 1),
    Exit(9, 18, TS, 314, 313, 0, -1, 0, 0),
    Unknown(10, 19, TS, 0x400, bytes(range(24))),
    Exec(0xFFFFFFFF, 0xFFFFFFFF, 2**64 - 1, 1, 1),
]


@pytest.mark.parametrize("event", ALL_EVENTS, ids=lambda e: f"{type(e).__name__}")
def test_encode_event_round_trip(event: Event) -> None:
    data = encode_event(event)
    assert len(data) == 76
    decoded = decode(data)
    assert type(decoded) is type(event)
    assert decoded == event


def test_encode_event_covers_every_type() -> None:
    covered = {type(e) for e in ALL_EVENTS}
    assert covered == {Ack, Fork, Exec, Uid, Gid, Sid, Ptrace, Comm, Coredump, Exit, Unknown}


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (
            Fork(CPU, SEQ, TS, 100, 101, 2000, 2001),
            datagram(W_FORK, struct.pack("<iiii", 100, 101, 2000, 2001)),
        ),
        (
            Exit(CPU, SEQ, TS, 72, 70, 139, -1, 0, 0),
            datagram(W_EXIT, exit_union(72, 70, 139, 0xFFFFFFFF, 0, 0)),
        ),
        (
            Comm(CPU, SEQ, TS, 5, 5, b"\xffab"),
            datagram(W_COMM, struct.pack("<ii", 5, 5) + b"\xffab"),
        ),
        (
            Uid(CPU, SEQ, TS, 5, 5, 4294967294, 1000),
            datagram(W_UID, struct.pack("<iiII", 5, 5, 4294967294, 1000)),
        ),
        (Ack(CPU, SEQ, TS, 0, 43), datagram(W_NONE, b"", ack=43)),
        (
            Coredump(CPU, SEQ, TS, 1, 2, 3, 4),
            datagram(W_COREDUMP, struct.pack("<iiii", 1, 2, 3, 4)),
        ),
        (Sid(CPU, SEQ, TS, 9, 9), datagram(W_SID, struct.pack("<ii", 9, 9))),
        (
            Gid(CPU, SEQ, TS, 5, 5, 7, 8),
            datagram(W_GID, struct.pack("<iiII", 5, 5, 7, 8)),
        ),
        (
            Ptrace(CPU, SEQ, TS, 5, 5, 7, 8),
            datagram(W_PTRACE, struct.pack("<iiii", 5, 5, 7, 8)),
        ),
        (Exec(CPU, SEQ, TS, 9, 8), datagram(W_EXEC, struct.pack("<ii", 9, 8))),
    ],
    ids=lambda v: type(v).__name__,
)
def test_encode_event_exact_bytes(event: Event, expected: bytes) -> None:
    assert encode_event(event) == expected


def test_encode_event_forged_sender() -> None:
    data = encode_event(Exec(0, 0, 0, 1, 1), nlmsg_pid=1234)
    assert struct.unpack_from("<I", data, 12)[0] == 1234
    with pytest.raises(DecodeError):
        decode(data)


# --------------------------------------------------------------------------
# property tests: decode never raises anything but DecodeError


def _decode_or_error(data: bytes | bytearray, size: int | None = None) -> None:
    try:
        ev = decode(data, size)
    except DecodeError:
        return
    assert isinstance(ev, Event)
    try:
        events = decode_all(data, size)
    except DecodeError:
        return
    assert all(isinstance(e, Event) for e in events)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes_decode_or_decode_error(data: bytes) -> None:
    _decode_or_error(data)


# Valid datagrams to mutate: every type, a few odd headers.
_SEEDS = [encode_event(e) for e in ALL_EVENTS]


@st.composite
def mutated_datagrams(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(_SEEDS)))
    n = draw(st.integers(min_value=1, max_value=8))
    for _ in range(n):
        kind = draw(st.sampled_from(["byte", "u16", "u32", "truncate", "extend"]))
        if kind == "byte" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        elif kind == "u16" and len(data) >= 2:
            i = draw(st.sampled_from([o for o in (4, 6, 32, 34) if o + 2 <= len(data)] or [0]))
            struct.pack_into("<H", data, i, draw(st.integers(0, 0xFFFF)))
        elif kind == "u32" and len(data) >= 4:
            offsets = [o for o in (0, 8, 12, 16, 20, 24, 28, 36, 40, 52, 56, 60) if o + 4 <= len(data)]
            i = draw(st.sampled_from(offsets))
            v = draw(
                st.one_of(
                    st.integers(0, 0xFFFFFFFF),
                    st.sampled_from([0, 1, 2, 3, 15, 16, 36, 40, 52, 75, 76, 77, 0x80000000, 0xFFFFFFFF]),
                )
            )
            struct.pack_into("<I", data, i, v)
        elif kind == "truncate":
            del data[draw(st.integers(0, len(data))) :]
        elif kind == "extend":
            data += draw(st.binary(max_size=100))
    return bytes(data)


@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_datagrams())
def test_mutated_datagrams_decode_or_decode_error(data: bytes) -> None:
    _decode_or_error(data)


@settings(max_examples=300)
@given(mutated_datagrams(), st.binary(max_size=64))
def test_mutated_in_reused_buffer(data: bytes, tail: bytes) -> None:
    buf = bytearray(data + tail + b"\0" * 256)
    _decode_or_error(buf, len(data))


@settings(max_examples=300)
@given(st.sampled_from(_SEEDS), st.integers(-(2**31), 2**31 - 1))
def test_nlmsg_error_any_errno(seed: bytes, error: int) -> None:
    data = bytearray(seed)
    struct.pack_into("<H", data, 4, 2)  # NLMSG_ERROR
    struct.pack_into("<i", data, 16, error)
    _decode_or_error(bytes(data))



# --------------------------------------------------------------------------
# what a malformed datagram is reported as (the warning shows this text)


def _patched(fmt: str, offset: int, *values: int) -> bytes:
    data = bytearray(VALID)
    struct.pack_into(fmt, data, offset, *values)
    return bytes(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (VALID[:10], "truncated datagram: 10 bytes, a netlink header needs 16"),
        (_patched("<I", 0, 8), "bad netlink length 8 in a datagram of 76 bytes"),
        (_patched("<I", 0, 80), "bad netlink length 80 in a datagram of 76 bytes"),
        (nlmsg_error(-105), "netlink error message: No buffer space available"),
        (nlmsg_error(-5000), "netlink error message: error 5000"),
        (struct.pack("<IHHII", 16, 2, 0, 0, 0), "netlink error message: error 0"),
        (_patched("<I", 12, 7), "datagram not from the kernel (sender port 7)"),
        (_patched("<I", 0, 40)[:40], "truncated event: 40 bytes, headers need 52"),
        (_patched("<I", 16, 2), "not a proc connector message (idx/val 2/1)"),
        (_patched("<I", 20, 9), "not a proc connector message (idx/val 1/9)"),
        (_patched("<H", 32, 100), "cn_msg.len 100 overruns the 76-byte message"),
        (_patched("<H", 32, 20), "truncated proc_event: 20 bytes, need 40"),
    ],
    ids=[
        "short", "len-small", "len-large", "enobufs", "big-errno", "no-errno", "sender", "headers", "idx", "val",
        "cn-overrun", "cn-short",
    ],
)
def test_malformed_datagrams_say_what_is_wrong(data: bytes, message: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(data)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\0" * 20, "request truncated: 20 bytes, need at least 36"),
        (
            encode_request(PROC_CN_MCAST_LISTEN)[:16] + struct.pack("<IIIIHH", 2, 1, 0, 0, 4, 0) + b"\1\0\0\0",
            "not a proc connector request (idx/val 2/1)",
        ),
        (encode_request(PROC_CN_MCAST_LISTEN)[:38], "request truncated"),
        (
            struct.pack("<IHHII", 42, 3, 0, 0, 0) + struct.pack("<IIIIHH", 1, 1, 0, 0, 6, 0) + b"\0" * 6,
            "request payload of 6 bytes; expected 4 or 8",
        ),
    ],
    ids=["short", "idx", "overrun", "payload"],
)
def test_malformed_requests_say_what_is_wrong(data: bytes, message: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_request(data)
    assert str(caught.value) == message


# --------------------------------------------------------------------------
# edges the cases above leave open


def _headers_only(cn_len: int) -> bytes:
    """A 52-byte message: nlmsghdr, cn_msg and the proc_event header."""
    data = bytearray(VALID[:52])
    struct.pack_into("<I", data, 0, 52)
    struct.pack_into("<H", data, 32, cn_len)
    return bytes(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        # an nlmsgerr cut right after its error field: the errno is still read
        (struct.pack("<IHHIIi", 20, 2, 0, 0, 0, -1), "netlink error message: Operation not permitted"),
        (struct.pack("<IHHIIi", 19, 2, 0, 0, 0, -1)[:19], "netlink error message: error 0"),
        (nlmsg_error(-4095), "netlink error message: Unknown error 4095"),
        (nlmsg_error(-4096), "netlink error message: error 4096"),
        # the headers and nothing more: complete headers, a short proc_event
        (_headers_only(40), "cn_msg.len 40 overruns the 52-byte message"),
        (_headers_only(16), "truncated proc_event: 16 bytes, need 40"),
        # the cn_msg val checked on its own (a seq of 1 is no proc connector val)
        (datagram(W_EXEC, struct.pack("<ii", 1, 1), val=2, seq=1), "not a proc connector message (idx/val 1/2)"),
        (datagram(W_EXEC, struct.pack("<ii", 1, 1), idx=0, seq=0), "not a proc connector message (idx/val 0/1)"),
    ],
    ids=["errno-at-20", "errno-cut", "errno-4095", "errno-4096", "headers-only", "cn-16-at-52", "val", "idx"],
)
def test_more_malformed_datagrams(data: bytes, message: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(data)
    assert str(caught.value) == message
    with pytest.raises(DecodeError) as caught:
        decode_all(data)
    assert str(caught.value) == message


def test_decode_all_checks_the_second_message_s_own_header() -> None:
    a = datagram(W_EXEC, struct.pack("<ii", 5, 5))
    b = datagram(W_EXEC, struct.pack("<ii", 6, 6), idx=2)
    with pytest.raises(DecodeError) as caught:
        decode_all(a + b)
    assert str(caught.value) == "not a proc connector message (idx/val 2/1)"


def test_unknown_data_is_the_union_only() -> None:
    """An unknown type's data: cn_len - 16 bytes after the header, never
    what lies beyond the message in a reused buffer."""
    union = bytes(range(1, 25))
    buf = bytearray(b"\xee" * 256)
    buf[:76] = datagram(0x400, union)
    assert decode(buf, 76) == Unknown(CPU, SEQ, TS, 0x400, union)
    (ev,) = decode_all(buf, 76)
    assert ev == Unknown(CPU, SEQ, TS, 0x400, union)
    (ev,) = decode_all(datagram(0x400, union))
    assert ev == Unknown(CPU, SEQ, TS, 0x400, union)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        # headers only, no payload
        (struct.pack("<IHHII", 36, 3, 0, 0, 0) + struct.pack("<IIIIHH", 1, 1, 0, 0, 0, 0),
         "request payload of 0 bytes; expected 4 or 8"),
        # cn_msg.len says 8, the message holds 4
        (struct.pack("<IHHII", 40, 3, 0, 0, 0) + struct.pack("<IIIIHH", 1, 1, 0, 0, 8, 0) + b"\1\0\0\0",
         "request truncated"),
    ],
    ids=["no-payload", "payload-overrun"],
)
def test_more_malformed_requests(data: bytes, message: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_request(data)
    assert str(caught.value) == message


@pytest.mark.parametrize("op", [0, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF])
def test_request_op_is_a_u32(op: int) -> None:
    data = encode_request(op)
    assert data[36:] == struct.pack("<I", op)
    assert decode_request(data) == (op, None, 0, 0)


def test_encode_event_refuses_what_has_no_wire_form() -> None:
    from procevents.events import Lost

    with pytest.raises(TypeError) as caught:
        encode_event(Lost(-1, 0, 5, 3, "drops"))
    assert str(caught.value) == "Lost has no wire form"


# Each field at the ends of its wire type: pids are s32, ids, the exit code
# and the ack's errno u32.
_EXTREMES: list[Event] = [
    Exec(0, 1, 2, -(2**31), 2**31 - 1),
    Exec(0, 1, 2, -1, -1),
    Sid(0, 1, 2, -(2**31), -1),
    Uid(0, 1, 2, -1, -(2**31), 0xFFFFFFFF, 0),
    Gid(0, 1, 2, -(2**31), -1, 0, 0xFFFFFFFF),
    Ptrace(0, 1, 2, -1, -(2**31), -1, -(2**31)),
    Coredump(0, 1, 2, -(2**31), -1, -1, -(2**31)),
    Exit(0, 1, 2, -1, -(2**31), 0xFFFFFFFF, -(2**31), -1, -(2**31)),
    Exit(0, 1, 2, 2**31 - 1, 2**31 - 1, 0x80000000, 2**31 - 1, 2**31 - 1, 2**31 - 1),
    Comm(0, 1, 2, -(2**31), -1, b"x"),
    Ack(0, 1, 2, 0xFFFFFFFF, 0xFFFFFFFF),
    Ack(0, 1, 2, 0x80000000, 0),
]


@pytest.mark.parametrize("event", _EXTREMES, ids=lambda e: type(e).__name__)
def test_encode_event_round_trips_the_ends_of_every_field(event: Event) -> None:
    assert decode(encode_event(event)) == event
    assert decode_all(encode_event(event)) == [event]

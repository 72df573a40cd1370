"""The proc connector's wire format: bytes in, events out; requests out.

Pure functions, no I/O (sans-I/O, like h11): the socket code lives in
:mod:`procevents.connector`.  Layout, per ``linux/netlink.h``,
``linux/connector.h`` and ``linux/cn_proc.h`` (all little-endian here; the
u64 timestamp at offset 44 is not 8-aligned, hence explicit ``<`` formats)::

    0  nlmsghdr  len u32, type u16, flags u16, seq u32, pid u32
    16 cn_msg    idx u32, val u32, seq u32, ack u32, len u16, flags u16
    36 proc_event what u32, cpu u32, timestamp_ns u64, event_data[24]
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from typing import Final

from .events import (
    EVENT_TYPES,
    PAYLOAD_FIELDS,
    PROC_EVENT_COMM,
    PROC_EVENT_COREDUMP,
    PROC_EVENT_EXEC,
    PROC_EVENT_EXIT,
    PROC_EVENT_FORK,
    PROC_EVENT_GID,
    PROC_EVENT_NONE,
    PROC_EVENT_PTRACE,
    PROC_EVENT_SID,
    PROC_EVENT_UID,
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

NETLINK_CONNECTOR: Final = 11
CN_IDX_PROC: Final = 1
CN_VAL_PROC: Final = 1
NLMSG_ERROR: Final = 2
NLMSG_DONE: Final = 3

PROC_CN_MCAST_LISTEN: Final = 1
PROC_CN_MCAST_IGNORE: Final = 2

NLMSG_HDR: Final = struct.Struct("<IHHII")
CN_MSG: Final = struct.Struct("<IIIIHH")
PROC_EVENT_HDR: Final = struct.Struct("<IIQ")
#: Everything up to event_data: nlmsghdr, cn_msg and the proc_event header.
_HEAD: Final = struct.Struct("<IHHIIIIIIHHIIQ")
#: One whole event datagram, the union read as six signed 32-bit words.
_EVENT: Final = struct.Struct("<IHHIIIIIIHHIIQiiiiii")

HEADER_SIZE: Final = _HEAD.size  # 52
PROC_EVENT_SIZE: Final = 40  # sizeof(struct proc_event), every type
EVENT_SIZE: Final = _EVENT.size  # 76: one datagram as the kernel sends it
_CN_OFFSET: Final = NLMSG_HDR.size  # 16
_DATA_OFFSET: Final = NLMSG_HDR.size + CN_MSG.size  # 36
_UNION_OFFSET: Final = HEADER_SIZE  # 52
_COMM_OFFSET: Final = _UNION_OFFSET + 8
_U32: Final = 0xFFFFFFFF


class DecodeError(ValueError):
    """A datagram that is not a well-formed proc connector event.

    Raised for truncated or malformed datagrams and for datagrams that did
    not come from the kernel's proc connector (a forged or foreign message).
    The stream that hits one reports it and goes on with the next datagram.
    """


def _align(n: int) -> int:
    return (n + 3) & ~3


def encode_request(
    op: int, event_mask: int | None = None, *, seq: int = 0, ack: int = 0
) -> bytes:
    """A subscription request: PROC_CN_MCAST_LISTEN or _IGNORE.

    Without ``event_mask`` the legacy 4-byte form (all events, answered by an
    ack); with it ``struct proc_input`` (kernel 6.6+), which makes the kernel
    drop every event outside the mask before it reaches the socket.
    """
    if event_mask is None:
        payload = struct.pack("<I", op)
    else:
        payload = struct.pack("<II", op, event_mask & _U32)
    cn = CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, seq & _U32, ack & _U32, len(payload), 0)
    total = NLMSG_HDR.size + len(cn) + len(payload)
    return NLMSG_HDR.pack(total, NLMSG_DONE, 0, seq & _U32, 0) + cn + payload


def decode_request(data: bytes) -> tuple[int, int | None, int, int]:
    """Inverse of :func:`encode_request`: (op, event_mask or None, seq, ack)."""
    if len(data) < _DATA_OFFSET:
        raise DecodeError(f"request truncated: {len(data)} bytes, need at least {_DATA_OFFSET}")
    nl_len, _type, _flags, _nl_seq, _pid = NLMSG_HDR.unpack_from(data, 0)
    idx, val, seq, ack, cn_len, _cn_flags = CN_MSG.unpack_from(data, _CN_OFFSET)
    if (idx, val) != (CN_IDX_PROC, CN_VAL_PROC):
        raise DecodeError(f"not a proc connector request (idx/val {idx}/{val})")
    if nl_len > len(data) or _DATA_OFFSET + cn_len > nl_len:
        raise DecodeError("request truncated")
    if cn_len == 4:
        return struct.unpack_from("<I", data, _DATA_OFFSET)[0], None, seq, ack
    if cn_len == 8:
        op, mask = struct.unpack_from("<II", data, _DATA_OFFSET)
        return op, mask, seq, ack
    raise DecodeError(f"request payload of {cn_len} bytes; expected 4 or 8")


def _check_header(buf: bytes | bytearray | memoryview, size: int, offset: int) -> tuple[int, ...]:
    """Validate one message at ``offset``; return its unpacked header."""
    remaining = size - offset
    if remaining < NLMSG_HDR.size:
        raise DecodeError(f"truncated datagram: {remaining} bytes, a netlink header needs 16")
    nl_len, nl_type, _flags, _seq, nl_pid = NLMSG_HDR.unpack_from(buf, offset)
    if nl_len < NLMSG_HDR.size or nl_len > remaining:
        raise DecodeError(f"bad netlink length {nl_len} in a datagram of {remaining} bytes")
    if nl_type == NLMSG_ERROR:
        errno = -struct.unpack_from("<i", buf, offset + 16)[0] if nl_len >= 20 else 0
        reason = os.strerror(errno) if 0 < errno < 4096 else f"error {errno}"
        raise DecodeError(f"netlink error message: {reason}")
    if nl_pid != 0:
        raise DecodeError(f"datagram not from the kernel (sender port {nl_pid})")
    if nl_len < HEADER_SIZE:
        raise DecodeError(f"truncated event: {nl_len} bytes, headers need {HEADER_SIZE}")
    head = _HEAD.unpack_from(buf, offset)
    idx, val, cn_len = head[5], head[6], head[9]
    if idx != CN_IDX_PROC or val != CN_VAL_PROC:
        raise DecodeError(f"not a proc connector message (idx/val {idx}/{val})")
    if _DATA_OFFSET + cn_len > nl_len:
        raise DecodeError(f"cn_msg.len {cn_len} overruns the {nl_len}-byte message")
    if cn_len < PROC_EVENT_SIZE:
        raise DecodeError(f"truncated proc_event: {cn_len} bytes, need {PROC_EVENT_SIZE}")
    return head


def _comm(buf: bytes | bytearray | memoryview, offset: int) -> bytes:
    start = offset + _COMM_OFFSET
    return bytes(buf[start : start + 16]).split(b"\0", 1)[0]


#: what -> the event built from (cpu, seq, ts, the six union words a-f, the
#: ack number, the buffer and the message's offset in it).
_BUILDERS: Final[dict[int, Callable[..., Event]]] = {
    PROC_EVENT_FORK: lambda cpu, seq, ts, a, b, c, d, e, f, ack, buf, at: Fork(cpu, seq, ts, a, b, c, d),
    PROC_EVENT_EXIT: lambda cpu, seq, ts, a, b, c, d, e, f, ack, buf, at: Exit(cpu, seq, ts, a, b, c & _U32, d, e, f),
    PROC_EVENT_EXEC: lambda cpu, seq, ts, a, b, c, d, e, f, ack, buf, at: Exec(cpu, seq, ts, a, b),
    PROC_EVENT_UID: lambda cpu, seq, ts, a, b, c, d, e, f, ack, buf, at: Uid(cpu, seq, ts, a, b, c & _U32, d & _U32),
    PROC_EVENT_GID: lambda cpu, seq, ts, a, b, c, d, e, f, ack, buf, at: Gid(cpu, seq, ts, a, b, c & _U32, d & _U32),
    PROC_EVENT_COMM: lambda cpu, seq, ts, a, b, c, d, e, f, ack, buf, at: Comm(cpu, seq, ts, a, b, _comm(buf, at)),
    PROC_EVENT_SID: lambda cpu, seq, ts, a, b, c, d, e, f, ack, buf, at: Sid(cpu, seq, ts, a, b),
    PROC_EVENT_PTRACE: lambda cpu, seq, ts, a, b, c, d, e, f, ack, buf, at: Ptrace(cpu, seq, ts, a, b, c, d),
    PROC_EVENT_COREDUMP: lambda cpu, seq, ts, a, b, c, d, e, f, ack, buf, at: Coredump(cpu, seq, ts, a, b, c, d),
    PROC_EVENT_NONE: lambda cpu, seq, ts, a, b, c, d, e, f, ack, buf, at: Ack(cpu, seq, ts, a & _U32, ack),
}


def _build(
    buf: bytes | bytearray | memoryview, offset: int, cn_len: int, fields: tuple[int, ...] | None = None
) -> Event:
    (
        _nl_len, _t, _f, _s, _p, _idx, _val, seq, ack, _len, _flags, what, cpu, ts,
        a, b, c, d, e, f,
    ) = fields or _EVENT.unpack_from(buf, offset)
    build = _BUILDERS.get(what)
    if build is not None:
        return build(cpu, seq, ts, a, b, c, d, e, f, ack, buf, offset)
    start = offset + _UNION_OFFSET
    return Unknown(cpu, seq, ts, what, bytes(buf[start : start + cn_len - 16]))


def decode(buf: bytes | bytearray | memoryview, size: int | None = None) -> Event:
    """Decode the first (normally the only) event in a datagram.

    ``size`` is how many bytes of ``buf`` are valid, so a receive buffer can
    be reused without slicing.  Raises :class:`DecodeError`.
    """
    size = len(buf) if size is None else min(size, len(buf))
    if size >= EVENT_SIZE:
        # Fast path: one unpack covers every check for an event as the
        # kernel sends it; anything unusual takes the careful path below.
        fields = _EVENT.unpack_from(buf, 0)
        nl_len, cn_len = fields[0], fields[9]
        if (
            nl_len <= size
            and fields[4] == 0
            and fields[5] == CN_IDX_PROC
            and fields[6] == CN_VAL_PROC
            and fields[1] != NLMSG_ERROR
            and PROC_EVENT_SIZE <= cn_len <= nl_len - _DATA_OFFSET
        ):
            return _build(buf, 0, cn_len, fields)
    head = _check_header(buf, size, 0)
    return _build(buf, 0, head[9])


def decode_all(buf: bytes | bytearray | memoryview, size: int | None = None) -> list[Event]:
    """Decode every message of a datagram (the kernel sends one, but a
    datagram may legally carry several).  Raises :class:`DecodeError` on the
    first bad one."""
    size = len(buf) if size is None else min(size, len(buf))
    events = []
    offset = 0
    while offset < size:
        head = _check_header(buf, size, offset)
        events.append(_build(buf, offset, head[9]))
        offset += _align(head[0])
    return events


#: Event class -> its union member's layout: the class's PAYLOAD_FIELDS, in
#: order (uids, gids and the wait status are u32; comm is 16 bytes).
_UNIONS: Final[dict[type[Event], struct.Struct]] = {
    Ack: struct.Struct("<I"),
    Fork: struct.Struct("<iiii"),
    Exec: struct.Struct("<ii"),
    Uid: struct.Struct("<iiII"),
    Gid: struct.Struct("<iiII"),
    Sid: struct.Struct("<ii"),
    Ptrace: struct.Struct("<iiii"),
    Comm: struct.Struct("<ii16s"),
    Coredump: struct.Struct("<iiii"),
    Exit: struct.Struct("<iiIiii"),
}
_WHAT: Final[dict[type[Event], int]] = {cls: what for what, cls in EVENT_TYPES.items()}


def encode_event(event: Event, *, nlmsg_pid: int = 0, idx: int = CN_IDX_PROC, val: int = CN_VAL_PROC) -> bytes:
    """Encode an event as the kernel would send it (tests and replay)."""
    if type(event) is Unknown:
        what, union = event.what, event.data
    else:
        cls = type(event)
        layout = _UNIONS.get(cls)
        if layout is None:
            raise TypeError(f"{cls.__name__} has no wire form")
        what = _WHAT[cls]
        union = layout.pack(*[getattr(event, name) for name in PAYLOAD_FIELDS[cls]])
    union = union.ljust(24, b"\0")
    ack = event.ack if isinstance(event, Ack) else 0
    body = PROC_EVENT_HDR.pack(what & _U32, event.cpu, event.timestamp_ns) + union
    cn = CN_MSG.pack(idx, val, event.seq & _U32, ack, len(body), 0)
    total = NLMSG_HDR.size + len(cn) + len(body)
    return NLMSG_HDR.pack(total, NLMSG_DONE, 0, event.seq & _U32, nlmsg_pid) + cn + body

"""What each task cost, from the kernel's taskstats: the generic-netlink
messages and ``struct taskstats``, decoded from bytes (no sockets here).

The kernel sends one message per exiting task to every listener registered
for the CPU it exits on (``linux/taskstats.h``, ``kernel/taskstats.c``).  The
struct is versioned and only grows at its end, with one exception: version 15
inserted the delay maxima and minima in the middle; version 16 moved them to
the end.  :func:`struct_layout` builds the field offsets for a version, and
:func:`decode_stats` reads only the fields that version has and the payload
holds; :func:`decode_datagram` turns what the socket received into
:class:`~procevents.costs.TaskCost` records.
"""

from __future__ import annotations

import operator
import struct
from collections.abc import Iterator, Sequence
from typing import Any, Final

from .costs import TaskCost, adjusted_cpu

# linux/netlink.h and linux/genetlink.h
NETLINK_GENERIC: Final = 16
NLMSG_ERROR: Final = 2
NLMSG_DONE: Final = 3
NLM_F_REQUEST: Final = 0x1
NLM_F_ACK: Final = 0x4
NLA_TYPE_MASK: Final = 0x3FFF
GENL_ID_CTRL: Final = 0x10
CTRL_CMD_GETFAMILY: Final = 3
CTRL_ATTR_FAMILY_ID: Final = 1
CTRL_ATTR_FAMILY_NAME: Final = 2

# linux/taskstats.h
TASKSTATS_GENL_NAME: Final = b"TASKSTATS"
TASKSTATS_GENL_VERSION: Final = 1
TASKSTATS_CMD_GET: Final = 1
TASKSTATS_CMD_NEW: Final = 2
TASKSTATS_TYPE_PID: Final = 1
TASKSTATS_TYPE_TGID: Final = 2
TASKSTATS_TYPE_STATS: Final = 3
TASKSTATS_TYPE_AGGR_PID: Final = 4
TASKSTATS_TYPE_AGGR_TGID: Final = 5
TASKSTATS_TYPE_NULL: Final = 6
TASKSTATS_CMD_ATTR_REGISTER_CPUMASK: Final = 3
TASKSTATS_CMD_ATTR_DEREGISTER_CPUMASK: Final = 4
TS_COMM_LEN: Final = 32

_NLMSGHDR = struct.Struct("=IHHII")
_GENLHDR = struct.Struct("=BBH")
_NLATTR = struct.Struct("=HH")
_U16 = struct.Struct("=H")
_U32 = struct.Struct("=I")
_I32 = struct.Struct("=i")


class DecodeError(ValueError):
    """A message that is not what the taskstats protocol sends."""


# -- requests ------------------------------------------------------------------


def _attr(kind: int, payload: bytes) -> bytes:
    size = _NLATTR.size + len(payload)
    return _NLATTR.pack(size, kind) + payload + b"\0" * (-size % 4)


def _request(family: int, command: int, attrs: bytes, seq: int, port: int, version: int) -> bytes:
    body = _GENLHDR.pack(command, version, 0) + attrs
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), family, NLM_F_REQUEST | NLM_F_ACK, seq, port) + body


def encode_get_family(name: bytes = TASKSTATS_GENL_NAME, *, seq: int = 1, port: int = 0) -> bytes:
    """CTRL_CMD_GETFAMILY: ask the generic-netlink controller for a family's id."""
    return _request(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, _attr(CTRL_ATTR_FAMILY_NAME, name + b"\0"), seq, port, 1)


def encode_cpumask(family: int, cpus: str, *, register: bool, seq: int = 1, port: int = 0) -> bytes:
    """TASKSTATS_CMD_GET registering (or deregistering) for exits on ``cpus`` ("0-3")."""
    kind = TASKSTATS_CMD_ATTR_REGISTER_CPUMASK if register else TASKSTATS_CMD_ATTR_DEREGISTER_CPUMASK
    return _request(family, TASKSTATS_CMD_GET, _attr(kind, cpus.encode("ascii") + b"\0"), seq, port,
                    TASKSTATS_GENL_VERSION)


def cpu_list(cpus: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2,5"`` (the kernel's cpulist syntax)."""
    parts: list[str] = []
    ordered = sorted(set(cpus))
    index = 0
    while index < len(ordered):
        first = last = ordered[index]
        while index + 1 < len(ordered) and ordered[index + 1] == last + 1:
            index += 1
            last = ordered[index]
        parts.append(str(first) if first == last else f"{first}-{last}")
        index += 1
    return ",".join(parts)


# -- messages --------------------------------------------------------------------


def iter_attrs(data: bytes | memoryview, start: int = 0, end: int | None = None) -> Iterator[tuple[int, int, int]]:
    """(type, payload start, payload end) of each netlink attribute in data[start:end]."""
    end = len(data) if end is None else end
    offset = start
    while offset + _NLATTR.size <= end:
        size, kind = _NLATTR.unpack_from(data, offset)
        if size < _NLATTR.size or offset + size > end:
            raise DecodeError(f"attribute of {size} bytes at offset {offset} overruns its message")
        yield kind & NLA_TYPE_MASK, offset + _NLATTR.size, offset + size
        offset += (size + 3) & ~3


def iter_messages(data: bytes | memoryview) -> Iterator[tuple[int, int, int, int]]:
    """(type, seq, body start, body end) of each netlink message in a datagram."""
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        size, kind, _flags, seq, _port = _NLMSGHDR.unpack_from(data, offset)
        if size < _NLMSGHDR.size or offset + size > len(data):
            raise DecodeError(f"netlink message of {size} bytes at offset {offset} overruns the datagram")
        yield kind, seq, offset + _NLMSGHDR.size, offset + size
        offset += (size + 3) & ~3


def error_code(data: bytes | memoryview, start: int, end: int) -> int:
    """The positive errno of an NLMSG_ERROR body (0: an acknowledgement)."""
    if end - start < _I32.size:
        raise DecodeError("NLMSG_ERROR too short for its error code")
    return -int(_I32.unpack_from(data, start)[0])


def decode_family_id(data: bytes | memoryview) -> int:
    """The family id in the controller's answer; OSError with its errno on refusal."""
    for kind, _seq, start, end in iter_messages(data):
        if kind == NLMSG_ERROR:
            err = error_code(data, start, end)
            if err:
                raise OSError(err, f"generic netlink controller refused: errno {err}")
            continue
        if kind != GENL_ID_CTRL or end - start < _GENLHDR.size:
            continue
        for attr, a, b in iter_attrs(data, start + _GENLHDR.size, end):
            if attr == CTRL_ATTR_FAMILY_ID and b - a >= _U16.size:
                return int(_U16.unpack_from(data, a)[0])
    raise DecodeError("the controller's answer has no family id")


# -- struct taskstats --------------------------------------------------------------

# (name, C type, first version that has it).  The order is the struct's;
# "a8" marks a member declared __attribute__((aligned(8))).
_U64_DELAYS_V16: Final = tuple(
    (f"{what}_delay_{end}", "u64", 16)
    for what in ("cpu", "blkio", "swapin", "freepages", "thrashing", "compact", "wpcopy", "irq")
    for end in ("max", "min")
)
_FIELDS: Final[tuple[tuple[str, str, int], ...]] = (
    ("version", "u16", 1),
    ("ac_exitcode", "u32", 1),
    ("ac_flag", "u8", 1),
    ("ac_nice", "u8", 1),
    ("cpu_count", "u64a8", 1),
    ("cpu_delay_total", "u64", 1),
    ("blkio_count", "u64", 1),
    ("blkio_delay_total", "u64", 1),
    ("swapin_count", "u64", 1),
    ("swapin_delay_total", "u64", 1),
    ("cpu_run_real_total", "u64", 1),
    ("cpu_run_virtual_total", "u64", 1),
    ("ac_comm", "comm", 2),
    ("ac_sched", "u8a8", 2),
    ("ac_pad", "pad3", 2),
    ("ac_uid", "u32a8", 2),
    ("ac_gid", "u32", 2),
    ("ac_pid", "u32", 2),
    ("ac_ppid", "u32", 2),
    ("ac_btime", "u32", 2),
    ("ac_etime", "u64a8", 2),
    ("ac_utime", "u64", 2),
    ("ac_stime", "u64", 2),
    ("ac_minflt", "u64", 2),
    ("ac_majflt", "u64", 2),
    ("coremem", "u64", 3),
    ("virtmem", "u64", 3),
    ("hiwater_rss", "u64", 3),
    ("hiwater_vm", "u64", 3),
    ("read_char", "u64", 3),
    ("write_char", "u64", 3),
    ("read_syscalls", "u64", 3),
    ("write_syscalls", "u64", 3),
    ("read_bytes", "u64", 4),
    ("write_bytes", "u64", 4),
    ("cancelled_write_bytes", "u64", 4),
    ("nvcsw", "u64", 5),
    ("nivcsw", "u64", 5),
    ("ac_utimescaled", "u64", 6),
    ("ac_stimescaled", "u64", 6),
    ("cpu_scaled_run_real_total", "u64", 6),
    ("freepages_count", "u64", 7),
    ("freepages_delay_total", "u64", 7),
    ("thrashing_count", "u64", 9),
    ("thrashing_delay_total", "u64", 9),
    ("ac_btime64", "u64", 10),
    ("compact_count", "u64", 11),
    ("compact_delay_total", "u64", 11),
    ("ac_tgid", "u32", 12),
    ("ac_tgetime", "u64a8", 12),
    ("ac_exe_dev", "u64", 12),
    ("ac_exe_inode", "u64", 12),
    ("wpcopy_count", "u64", 13),
    ("wpcopy_delay_total", "u64", 13),
    ("irq_count", "u64", 14),
    ("irq_delay_total", "u64", 14),
    *_U64_DELAYS_V16,
)

_SIZES: Final = {"u8": 1, "u16": 2, "u32": 4, "u64": 8, "comm": TS_COMM_LEN, "pad3": 3}
_FORMATS: Final = {"u8": "B", "u16": "H", "u32": "I", "u64": "Q"}

#: The newest version whose layout this module knows; later ones only append.
KNOWN_VERSION: Final = 16


def _version15_order() -> list[tuple[str, str, int]]:
    # Version 15 put each delay's max and min right after its total.
    fields = [field for field in _FIELDS if field[2] != 16]
    ordered: list[tuple[str, str, int]] = []
    for name, kind, since in fields:
        ordered.append((name, kind, since))
        if name.endswith("_delay_total"):
            what = name.removesuffix("_delay_total")
            ordered += [(f"{what}_delay_max", "u64", 15), (f"{what}_delay_min", "u64", 15)]
    return ordered


def struct_layout(version: int) -> dict[str, tuple[int, str]]:
    """name -> (offset, kind) for the fields ``struct taskstats`` has in ``version``."""
    fields = _version15_order() if version == 15 else [field for field in _FIELDS if field[2] <= version]
    layout: dict[str, tuple[int, str]] = {}
    offset = 0
    for name, kind, _since in fields:
        base = kind.removesuffix("a8")
        align = 8 if kind.endswith("a8") else (_SIZES[base] if base in _FORMATS else 1)
        offset = (offset + align - 1) // align * align
        layout[name] = (offset, base)
        offset += _SIZES[base]
    return layout


def struct_size(version: int) -> int:
    """sizeof(struct taskstats) in ``version`` (the struct is 8-byte aligned)."""
    layout = struct_layout(version)
    last_offset, kind = max(layout.values())
    return (last_offset + _SIZES[kind] + 7) // 8 * 8


_LAYOUTS: dict[int, dict[str, tuple[int, str]]] = {}


def decode_stats(payload: bytes | memoryview) -> dict[str, int | bytes]:
    """The fields of a ``struct taskstats`` that its version has and the payload holds.

    Integers for the numbers, bytes (up to the first NUL) for ``ac_comm``.
    A version newer than :data:`KNOWN_VERSION` is read with the newest
    known layout (versions only append, except 15, which is known).
    """
    if len(payload) < 2:
        raise DecodeError(f"taskstats of {len(payload)} bytes has no version")
    version = int(_U16.unpack_from(payload, 0)[0])
    if version < 1:
        raise DecodeError("taskstats version 0")
    known = min(version, KNOWN_VERSION)
    layout = _LAYOUTS.get(known)
    if layout is None:
        layout = _LAYOUTS[known] = struct_layout(known)
    size = len(payload)
    out: dict[str, int | bytes] = {}
    for name, (offset, kind) in layout.items():
        width = _SIZES[kind]
        if offset + width > size:
            continue
        if kind == "comm":
            raw = bytes(payload[offset:offset + width])
            out[name] = raw.split(b"\0", 1)[0]
        elif kind != "pad3":
            out[name] = struct.unpack_from("=" + _FORMATS[kind], payload, offset)[0]
    out["version"] = version
    return out


def _seconds(value: object, scale: float) -> float | None:
    return None if not isinstance(value, int) else value / scale


def _int(value: object) -> int | None:
    return value if isinstance(value, int) else None


def _kib(value: object) -> int | None:
    return value * 1024 if isinstance(value, int) else None


#: The fields a :class:`TaskCost` is made of.
_COST_FIELDS: Final = (
    "ac_exitcode", "ac_comm", "ac_btime", "ac_btime64", "ac_tgid", "ac_etime", "ac_utime", "ac_stime",
    "ac_minflt", "ac_majflt", "hiwater_rss", "hiwater_vm", "read_char", "write_char", "read_bytes",
    "write_bytes", "nvcsw", "nivcsw", "cpu_delay_total", "blkio_delay_total", "swapin_delay_total",
    "freepages_delay_total", "thrashing_delay_total", "compact_delay_total", "cpu_run_virtual_total",
)
_MEMORY_DELAYS: Final = ("swapin_delay_total", "freepages_delay_total", "thrashing_delay_total",
                         "compact_delay_total")


def cost_from_stats(pid: int, stats: dict[str, int | bytes], *, thread_group: bool) -> TaskCost:
    """A :class:`TaskCost` from :func:`decode_stats`'s fields (or any subset of them)."""
    get = stats.get
    present = [value for name in _MEMORY_DELAYS if isinstance(value := get(name), int)]
    comm = get("ac_comm")
    btime = get("ac_btime64", get("ac_btime"))
    utime_us, stime_us = get("ac_utime"), get("ac_stime")
    utime = stime = None
    if isinstance(utime_us, int) and isinstance(stime_us, int):
        runtime = get("cpu_run_virtual_total")
        utime, stime = adjusted_cpu(utime_us, stime_us, runtime if isinstance(runtime, int) else None)
    return TaskCost(
        pid=pid,
        tgid=_int(get("ac_tgid")),
        thread_group=thread_group,
        version=int(stats["version"]),
        comm=comm if isinstance(comm, bytes) else None,
        exit_code=_int(get("ac_exitcode")),
        btime=_int(btime),
        elapsed=_seconds(get("ac_etime"), 1e6),
        utime=utime,
        stime=stime,
        max_rss=_kib(get("hiwater_rss")),
        max_vm=_kib(get("hiwater_vm")),
        rchar=_int(get("read_char")),
        wchar=_int(get("write_char")),
        read_bytes=_int(get("read_bytes")),
        write_bytes=_int(get("write_bytes")),
        minflt=_int(get("ac_minflt")),
        majflt=_int(get("ac_majflt")),
        nvcsw=_int(get("nvcsw")),
        nivcsw=_int(get("nivcsw")),
        cpu_delay=_seconds(get("cpu_delay_total"), 1e9),
        io_delay=_seconds(get("blkio_delay_total"), 1e9),
        mem_delay=sum(present) / 1e9 if present else None,
    )


_COST_READERS: dict[tuple[int, int], tuple[struct.Struct, tuple[str, ...]]] = {}
#: The cost fields in struct order (offsets are the same in every version
#: that has them all, 12 and later, 15 aside, whose order is the same too).
_ALL_COST_FIELDS: Final = tuple(sorted(_COST_FIELDS, key=struct_layout(KNOWN_VERSION).__getitem__))
_UNPACKED_ORDER: Final = (
    "ac_exitcode", "ac_comm", "ac_btime", "ac_etime", "ac_utime", "ac_stime", "ac_minflt", "ac_majflt",
    "hiwater_rss", "hiwater_vm", "read_char", "write_char", "read_bytes", "write_bytes", "nvcsw", "nivcsw",
    "ac_btime64", "ac_tgid", "cpu_delay_total", "blkio_delay_total", "swapin_delay_total",
    "freepages_delay_total", "thrashing_delay_total", "compact_delay_total", "cpu_run_virtual_total",
)
_reorder: Final = operator.itemgetter(*(_ALL_COST_FIELDS.index(name) for name in _UNPACKED_ORDER))


def _cost_reader(version: int, size: int) -> tuple[struct.Struct, tuple[str, ...]]:
    """One precompiled struct reading, in a single call, the cost fields that
    ``version`` has and ``size`` bytes hold (cached: one per kernel, in practice)."""
    key = (version, size)
    found = _COST_READERS.get(key)
    if found is None:
        layout = struct_layout(min(version, KNOWN_VERSION))
        wanted = sorted(
            (offset, name, kind) for name in _COST_FIELDS if name in layout
            for offset, kind in [layout[name]] if offset + _SIZES[kind] <= size
        )
        fmt = "="
        at = 0
        for offset, _name, kind in wanted:
            fmt += "x" * (offset - at) + (f"{TS_COMM_LEN}s" if kind == "comm" else _FORMATS[kind])
            at = offset + _SIZES[kind]
        found = _COST_READERS[key] = (struct.Struct(fmt), tuple(name for _o, name, _k in wanted))
    return found


def _complete_cost(pid: int, version: int, thread_group: bool, values: tuple[Any, ...]) -> TaskCost:
    (exitcode, comm, _btime, etime, utime_us, stime_us, minflt, majflt, rss, vm, rchar, wchar, read_bytes,
     write_bytes, nvcsw, nivcsw, btime64, tgid, cpu_delay, blkio_delay, swapin, freepages, thrashing, compact,
     runtime) = _reorder(values)
    utime, stime = adjusted_cpu(utime_us, stime_us, runtime)
    return TaskCost(
        pid, tgid, thread_group, version, comm.split(b"\0", 1)[0], exitcode, btime64, etime / 1e6, utime, stime,
        rss * 1024, vm * 1024, rchar, wchar, read_bytes, write_bytes, minflt, majflt, nvcsw, nivcsw,
        cpu_delay / 1e9, blkio_delay / 1e9, (swapin + freepages + thrashing + compact) / 1e9,
    )


def decode_cost(pid: int, payload: bytes | memoryview, *, thread_group: bool) -> TaskCost:
    """The :class:`TaskCost` of one ``struct taskstats`` (the fast path of
    :func:`decode_stats` plus :func:`cost_from_stats`)."""
    if len(payload) < 2:
        raise DecodeError(f"taskstats of {len(payload)} bytes has no version")
    version = int(_U16.unpack_from(payload, 0)[0])
    if version < 1:
        raise DecodeError("taskstats version 0")
    reader, names = _cost_reader(version, len(payload))
    values = reader.unpack_from(payload)
    if names == _ALL_COST_FIELDS:  # every field there (version 12 and later): no lookups
        return _complete_cost(pid, version, thread_group, values)
    stats: dict[str, int | bytes] = dict(zip(names, values, strict=True))
    comm = stats.get("ac_comm")
    if isinstance(comm, bytes):
        stats["ac_comm"] = comm.split(b"\0", 1)[0]
    stats["version"] = version
    return cost_from_stats(pid, stats, thread_group=thread_group)


def decode_exit_message(data: bytes | memoryview, start: int, end: int) -> list[TaskCost]:
    """The records in one TASKSTATS_CMD_NEW message body (after the nlmsghdr)."""
    if end - start < _GENLHDR.size:
        raise DecodeError("generic netlink message without its header")
    command = data[start]
    if command != TASKSTATS_CMD_NEW:
        return []
    costs: list[TaskCost] = []
    for kind, a, b in iter_attrs(data, start + _GENLHDR.size, end):
        if kind not in (TASKSTATS_TYPE_AGGR_PID, TASKSTATS_TYPE_AGGR_TGID):
            continue  # TASKSTATS_TYPE_NULL: alignment padding on some architectures
        pid: int | None = None
        stats: memoryview | None = None
        for inner, c, d in iter_attrs(data, a, b):
            if inner in (TASKSTATS_TYPE_PID, TASKSTATS_TYPE_TGID) and d - c >= _U32.size:
                pid = int(_U32.unpack_from(data, c)[0])
            elif inner == TASKSTATS_TYPE_STATS:
                stats = memoryview(data)[c:d]
        if pid is None or stats is None:
            raise DecodeError("taskstats aggregate without its pid or its stats")
        costs.append(decode_cost(pid, stats, thread_group=kind == TASKSTATS_TYPE_AGGR_TGID))
    return costs


# One message, one task: nlmsghdr, genlmsghdr, the AGGR_PID nest, its PID
# and the STATS attribute's header, then the struct (36 bytes in).
_ONE_TASK = struct.Struct("=IHHII BBH HH HHI HH")
_ONE_TASK_STATS = _ONE_TASK.size


def decode_datagram(data: bytes | bytearray | memoryview, size: int) -> list[TaskCost]:
    """The records in one received datagram (its first ``size`` bytes).

    Nearly every datagram is one task's exit laid out the same way: that one
    is read at fixed offsets; anything else (a thread group's aggregate too,
    padding attributes, several messages) the general way.
    """
    if size >= _ONE_TASK_STATS:
        (length, kind, _flags, _seq, _port, command, _version, _reserved, nest_len, nest_type, pid_len, pid_type,
         pid, stats_len, stats_type) = _ONE_TASK.unpack_from(data)
        if (
            length == size and kind >= 16 and command == TASKSTATS_CMD_NEW
            and nest_type & NLA_TYPE_MASK == TASKSTATS_TYPE_AGGR_PID and nest_len == size - 20
            and pid_type == TASKSTATS_TYPE_PID and pid_len == 8 and stats_type == TASKSTATS_TYPE_STATS
            and stats_len == nest_len - 12
        ):
            return [decode_cost(pid, memoryview(data)[_ONE_TASK_STATS:_ONE_TASK_STATS + stats_len - 4],
                                thread_group=False)]
    costs: list[TaskCost] = []
    view = memoryview(data)[:size]
    for kind, _seq, start, end in iter_messages(view):
        if kind >= 16:  # below: NLMSG_NOOP, NLMSG_ERROR (an ack), NLMSG_DONE, NLMSG_OVERRUN
            costs += decode_exit_message(view, start, end)
    return costs


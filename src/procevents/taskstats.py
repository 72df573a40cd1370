"""What each task cost, from the kernel's taskstats: the generic-netlink
messages and ``struct taskstats``, decoded from bytes (no sockets here).

The kernel sends one message per exiting task to every listener registered
for the CPU it exits on (``linux/taskstats.h``, ``kernel/taskstats.c``).  The
struct is versioned and only grows at its end, with one exception: version 15
inserted the delay maxima and minima in the middle; version 16 moved them to
the end.  :func:`struct_layout` builds the field offsets for a version, and
:func:`decode_stats` reads only the fields that version has and the payload
holds.

:class:`CostJoin` pairs each record with the exit event of the same task.
The record is queued before the kernel even generates the exit event
(``taskstats_exit`` runs before ``proc_exit_connector`` in ``do_exit``), so
once the socket has been read after a batch of exits, every record for them
is at hand; records are taken per pid in arrival order and checked against
the life they are offered to (see :meth:`CostJoin.take`).
"""

from __future__ import annotations

import operator
import struct
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

# linux/netlink.h and linux/genetlink.h
NETLINK_GENERIC: Final = 16
NLMSG_ERROR: Final = 2
NLMSG_DONE: Final = 3
NLM_F_REQUEST: Final = 0x1
NLM_F_ACK: Final = 0x4
NLA_TYPE_MASK: Final = 0x3FFF
GENL_ID_CTRL: Final = 0x10
CTRL_CMD_NEWFAMILY: Final = 1
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


# -- records ------------------------------------------------------------------------


# Not frozen: a frozen dataclass's __init__ took 6 of a record's 11 us.
@dataclass(slots=True)
class TaskCost:
    """One task's figures at its exit, in the units people read.

    Times in seconds, memory and I/O in bytes; None where the kernel's
    version does not report the figure.  ``thread_group`` is True for the
    kernel's aggregate of a whole multi-threaded process (sent with the
    exit of its last thread), False for one task's own figures.
    """

    pid: int
    tgid: int | None
    thread_group: bool
    version: int
    comm: bytes | None
    exit_code: int | None
    btime: int | None
    elapsed: float | None
    utime: float | None
    stime: float | None
    max_rss: int | None
    max_vm: int | None
    rchar: int | None
    wchar: int | None
    read_bytes: int | None
    write_bytes: int | None
    minflt: int | None
    majflt: int | None
    nvcsw: int | None
    nivcsw: int | None
    cpu_delay: float | None
    io_delay: float | None
    mem_delay: float | None

    @property
    def cpu(self) -> float | None:
        """User plus system CPU time, seconds."""
        if self.utime is None or self.stime is None:
            return None
        return self.utime + self.stime

    @property
    def comm_text(self) -> str | None:
        return None if self.comm is None else self.comm.decode("utf-8", "surrogateescape")


#: The figures an exit carries in JSON, the store and summaries, in this order.
COST_KEYS: Final = (
    "utime", "stime", "max_rss", "rchar", "wchar", "read_bytes", "write_bytes",
    "cpu_delay", "io_delay", "mem_delay",
)
_SUMMED: Final = ("utime", "stime", "rchar", "wchar", "read_bytes", "write_bytes", "minflt", "majflt",
                  "nvcsw", "nivcsw", "cpu_delay", "io_delay", "mem_delay")


_cost_values: Final = operator.attrgetter(*COST_KEYS)


def cost_fields(cost: TaskCost) -> dict[str, float | int | None]:
    """The :data:`COST_KEYS` of one record (None: not reported by this kernel)."""
    return dict(zip(COST_KEYS, _cost_values(cost), strict=True))


def whole_process(leader: TaskCost, threads: Sequence[TaskCost]) -> TaskCost:
    """A process's figures from its main thread's record and those of its
    threads that ended before it: times, I/O and faults add up; the peak
    memory is the address space's, shared, so the largest one seen."""
    if not threads:
        return leader
    changes: dict[str, object] = {}
    for key in _SUMMED:
        values = [getattr(cost, key) for cost in (leader, *threads)]
        known = [value for value in values if value is not None]
        changes[key] = sum(known) if known else None
    for key in ("max_rss", "max_vm"):
        known = [value for cost in (leader, *threads) if (value := getattr(cost, key)) is not None]
        changes[key] = max(known) if known else None
    return replace(leader, **changes)  # type: ignore[arg-type]


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


def adjusted_cpu(utime_us: int, stime_us: int, runtime_ns: int | None) -> tuple[float, float]:
    """User and system seconds scaled so that they add up to the scheduler's
    exact runtime, as the kernel does for /proc/PID/stat and getrusage
    (cputime_adjust): the tick-sampled split is kept, not its total, which
    misses a process that runs between ticks on a busy CPU."""
    if not runtime_ns:
        return utime_us / 1e6, stime_us / 1e6
    runtime = runtime_ns / 1e9
    if stime_us == 0:
        return runtime, 0.0
    if utime_us == 0:
        return 0.0, runtime
    stime = runtime * stime_us / (utime_us + stime_us)
    return runtime - stime, stime


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


@dataclass(slots=True, eq=False)  # by identity: CostJoin removes this very one
class _Pending:
    cost: TaskCost
    received_ns: int


#: A record claiming a life longer than the one observed by more than this
#: (ns) belongs to another life: the fork event is stamped within
#: microseconds of the task's start, so only a different task can exceed it.
LONGER_SLACK_NS: Final = 50_000_000
#: Records older than this (ns) with no exit to join are dropped.
PENDING_TTL_NS: Final = 30_000_000_000


class CostJoin:
    """Records waiting for the exit event of the same task.

    Per pid, records wait in arrival order.  The one offered to an exit is
    the oldest that fits the life ending: it was received after that life
    began (a record read before a fork cannot be that child's), and its
    elapsed time is not longer than the life's.  Records that fit no exit
    (a thread group's aggregate, a task whose exit event was filtered or
    lost) leave after :data:`PENDING_TTL_NS`.  The kernel's aggregate of a
    thread group is not kept: it carries only delays on many kernels, so a
    process's figures are summed from its threads' (:func:`whole_process`).
    """

    def __init__(self) -> None:
        self._pending: dict[int, deque[_Pending]] = {}
        #: tgid -> its threads' records not taken yet (see :meth:`threads_of`).
        self._threads: dict[int, list[_Pending]] = {}
        self.joined = 0
        self.unmatched = 0
        self._oldest_ns: int | None = None

    def __len__(self) -> int:
        return sum(len(queue) for queue in self._pending.values())

    def add(self, costs: Sequence[TaskCost], received_ns: int) -> None:
        table = self._pending
        for cost in costs:
            if cost.thread_group:
                continue  # the process's figures are summed from its threads' (whole_process)
            queue = table.get(cost.pid)
            if queue is None:
                queue = table[cost.pid] = deque()
            pending = _Pending(cost, received_ns)
            queue.append(pending)
            if cost.tgid is not None and cost.tgid != cost.pid:
                self._threads.setdefault(cost.tgid, []).append(pending)
        if costs and self._oldest_ns is None:
            self._oldest_ns = received_ns

    def take(self, pid: int, start_ns: int | None, end_ns: int) -> TaskCost | None:
        """The record of the task ``pid`` whose life ran from ``start_ns``
        (CLOCK_MONOTONIC, None when unknown) to its exit event at ``end_ns``."""
        queue = self._pending.get(pid)
        if not queue:
            return None
        while queue:
            pending = queue.popleft()
            self._unindex(pending)
            if start_ns is None or self._fits(pending, start_ns, end_ns):
                if not queue:
                    del self._pending[pid]
                self.joined += 1
                return pending.cost
            self.unmatched += 1  # an earlier life's record whose exit never came
        del self._pending[pid]
        return None

    def threads_of(self, tgid: int, start_ns: int | None) -> list[TaskCost]:
        """The records of threads of process ``tgid`` (begun at ``start_ns``)
        whose exit events have not come yet.  A thread's record is queued
        before a joining thread can go on, so when a process's exit event
        comes every thread's record is here, even if its exit event is not."""
        found = self._threads.get(tgid, ())
        return [p.cost for p in found if start_ns is None or p.received_ns >= start_ns]

    def _unindex(self, pending: _Pending) -> None:
        tgid = pending.cost.tgid
        if tgid is None or tgid == pending.cost.pid:
            return
        siblings = self._threads.get(tgid)
        if siblings is not None:
            siblings.remove(pending)
            if not siblings:
                del self._threads[tgid]

    @staticmethod
    def _fits(pending: _Pending, start_ns: int, end_ns: int) -> bool:
        if pending.received_ns < start_ns:
            return False
        elapsed = pending.cost.elapsed
        return elapsed is None or elapsed * 1e9 <= end_ns - start_ns + LONGER_SLACK_NS

    def expire(self, now_ns: int) -> int:
        """Drop records older than :data:`PENDING_TTL_NS`; return how many."""
        if self._oldest_ns is None or now_ns - self._oldest_ns < PENDING_TTL_NS:
            return 0
        limit = now_ns - PENDING_TTL_NS
        dropped = 0
        oldest: int | None = None
        table = self._pending
        for pid in list(table):
            queue = table[pid]
            while queue and queue[0].received_ns < limit:
                self._unindex(queue.popleft())
                dropped += 1
            if not queue:
                del table[pid]
            elif oldest is None or queue[0].received_ns < oldest:
                oldest = queue[0].received_ns
        self._oldest_ns = oldest
        self.unmatched += dropped
        return dropped

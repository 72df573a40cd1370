"""A second subscriber to the proc connector, beside the tool measured:
acks (which take seq numbers that are no loss) and an independent record of
what the kernel delivered."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from array import array
from typing import TYPE_CHECKING

from .host import NETLINK_CONNECTOR

if TYPE_CHECKING:
    from .truth import BurstAnalysis

CN_IDX_PROC = 1
PROC_CN_MCAST_LISTEN = 1
PROC_CN_MCAST_IGNORE = 2
SOL_NETLINK = 270
NETLINK_NO_ENOBUFS = 5
SO_RCVBUFFORCE = 33
SO_MEMINFO = 55
SK_MEMINFO_DROPS = 8
# nlmsg_pid @12, cb_id.idx @16, cb_id.val @20, seq @24, (ack, len, flags), what @36, cpu @40
CN_FIELDS = struct.Struct("<12xIIII8xII")

class RefListener:
    """A second all-events subscriber: records the (cpu, seq) of every datagram.

    Acks (what=0, the kernel's answer to any listener's LISTEN or IGNORE) take
    a number from the same per-CPU counter as events; procevents reads them and
    writes nothing, so each one is a seq gap in its output that is no loss.  On
    a busy host other programs' subscriptions make dozens per run.  The other
    events it sees are an independent record of what the kernel delivered (as
    long as this listener drops nothing).  It costs the kernel one more
    delivery per event, and this process some CPU, while it runs.
    """

    def __init__(self) -> None:
        self.acks: list[tuple[int, int]] = []
        self.events: dict[int, array[int]] = {}  # cpu -> seqs of non-ack events
        self.datagrams = 0
        self.drops = 0
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_CONNECTOR)
        self._subscribed = False
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
            self._sock.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)
            self._sock.bind((0, CN_IDX_PROC))
            self._sock.settimeout(0.1)
            self._request(PROC_CN_MCAST_LISTEN)
            self._subscribed = True
        except BaseException:
            self._sock.close()
            raise
        self._thread = threading.Thread(target=self._run, name="acks", daemon=True)
        self._thread.start()

    def _request(self, op: int) -> None:
        # nlmsghdr(len, NLMSG_DONE, 0, seq, 0) + cn_msg(idx, val, seq, ack, len=4, 0) + op
        self._sock.send(struct.pack("<IHHIIIIIIHHI", 40, 3, 0, 0, 0, CN_IDX_PROC, 1, 0, 0, 4, 0, op))

    def _run(self) -> None:
        buf = bytearray(16384)
        recv_into = self._sock.recv_into
        unpack = CN_FIELDS.unpack_from
        while not self._stop.is_set():
            try:
                size = recv_into(buf)
            except (TimeoutError, BlockingIOError, InterruptedError):
                continue
            except OSError:
                break
            self.datagrams += 1
            if size < 52:
                continue
            portid, idx, val, seq, what, cpu = unpack(buf)
            if portid != 0 or idx != CN_IDX_PROC or val != 1:
                continue
            if what == 0:
                self.acks.append((cpu, seq))
            else:
                seqs = self.events.get(cpu)
                if seqs is None:
                    seqs = self.events[cpu] = array("L")
                seqs.append(seq)

    def close(self) -> None:
        """Stop, unsubscribe (exactly once: the kernel's listener count), close."""
        self._stop.set()
        self._thread.join(5)
        if self._subscribed:
            self._subscribed = False
            with contextlib.suppress(OSError):
                self._request(PROC_CN_MCAST_IGNORE)
            with contextlib.suppress(OSError):
                raw = self._sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 4 * (SK_MEMINFO_DROPS + 1))
                self.drops = struct.unpack_from("<I", raw, 4 * SK_MEMINFO_DROPS)[0]
        self._sock.close()

    def explain_gaps(self, a: BurstAnalysis) -> tuple[int, int, int]:
        """Split the output's seq gaps: (acks, events the reference got, seen by neither)."""
        acks = sum(1 for cpu, seq in self.acks if cpu in a.seq_min and a.seq_min[cpu] <= seq <= a.seq_max[cpu])
        ref_only = 0
        for cpu, seqs in self.events.items():
            if cpu not in a.seq_min:
                continue
            lo, hi, got = a.seq_min[cpu], a.seq_max[cpu], a.seqs[cpu]
            ref_only += sum(1 for seq in set(seqs) if lo <= seq <= hi and seq not in got)
        return acks, ref_only, a.seq_loss - acks - ref_only

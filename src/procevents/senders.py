"""Believe only the kernel: datagrams refused because another process sent them.

Any root process can send a well-formed datagram to a netlink socket's port
id (it is listed in /proc/net/netlink), and the socket receives it like the
kernel's.  The header's own ``nlmsg_pid`` is whatever the sender wrote; the
address recvfrom() returns is not: the kernel sends with port 0.  So every
socket procevents reads (the connector, each capture reader, taskstats)
takes the sender's address, drops any other datagram before decoding it and
counts it here, once per datagram and by port, for the one line of the
summary and the one in-band JSON record at the end.

Pure bookkeeping, no I/O.
"""

from __future__ import annotations

from typing import Any, Final

#: The sender address of every datagram the kernel itself sends.
KERNEL_PORT: Final = 0
#: Ports named one by one; past that, refusals are still counted in the total.
MAX_PORTS: Final = 16


class Refusals:
    """How many datagrams were refused, and from which ports.

    Bounded: at most :data:`MAX_PORTS` ports are kept by name, however many a
    sender uses; every refusal counts in :attr:`total`."""

    __slots__ = ("by_port", "total")

    def __init__(self) -> None:
        self.total = 0
        #: port -> datagrams refused from it (the first MAX_PORTS ports seen).
        self.by_port: dict[int, int] = {}

    def __bool__(self) -> bool:
        return self.total > 0

    def note(self, port: int, count: int = 1) -> None:
        """``count`` datagrams from ``port`` were refused."""
        self.total += count
        if port in self.by_port or len(self.by_port) < MAX_PORTS:
            self.by_port[port] = self.by_port.get(port, 0) + count

    def merge(self, other: Refusals) -> None:
        """Add another socket's refusals to these."""
        unnamed = other.total - sum(other.by_port.values())
        for port, count in other.by_port.items():
            self.note(port, count)
        self.total += unnamed

    @property
    def ports(self) -> list[int]:
        return sorted(self.by_port)

    def line(self) -> str:
        """``refused 3 datagrams not sent by the kernel (from netlink port 4242)``."""
        ports = self.ports
        named = ", ".join(map(str, ports))
        if self.total > sum(self.by_port.values()):
            named += ", and others"
        datagrams = "datagram" if self.total == 1 else "datagrams"
        port_word = "port" if len(ports) == 1 else "ports"
        return f"refused {self.total:,} {datagrams} not sent by the kernel (from netlink {port_word} {named})"

    def record(self) -> dict[str, Any]:
        """The in-band JSON record: ``{"event": "refused", "count": 3, "ports": [4242]}``."""
        return {"event": "refused", "count": self.total, "ports": self.ports}


__all__ = ["KERNEL_PORT", "MAX_PORTS", "Refusals"]

"""What one socket has asked of the proc connector, and what it still owes.

Pure bookkeeping, in the sans-I/O style: :class:`Subscription` builds the
requests and records those sent; the connector does the sending.  The
kernel counts listeners globally and only PROC_CN_MCAST_IGNORE lowers the
count, so the one rule kept here is that a subscription owes exactly one
IGNORE, paid by the process that subscribed (a forked child shares the
socket, and its exit must not switch its parent's events off).
"""

from __future__ import annotations

from typing import Final

from . import wire
from .events import Ack

IGNORE_REQUEST: Final = wire.encode_request(wire.PROC_CN_MCAST_IGNORE)


class Subscription:
    """The requests of one socket, in the order sent.

    ``ack_seq`` numbers the first LISTEN, which the kernel answers with an
    ack carrying ``ack_seq + 1``: that ack, and no other subscriber's,
    confirms it.  ``owner_pid`` is the process that may send IGNORE.
    """

    __slots__ = ("ack_seq", "owner_pid", "sent")

    def __init__(self, ack_seq: int, owner_pid: int) -> None:
        self.ack_seq = ack_seq & 0x7FFFFFFF
        self.owner_pid = owner_pid
        #: Requests sent, in order (the IGNORE included once sent).
        self.sent: list[bytes] = []

    def listen_requests(self, event_mask: int | None = None) -> list[bytes]:
        """The LISTEN requests to send: always the legacy all-events form
        first (every kernel acks it, so the subscription is confirmed), then,
        given a mask, the filtered form (6.6+ keeps one subscription per
        socket: it narrows the first rather than counting a second listener)."""
        requests = [wire.encode_request(wire.PROC_CN_MCAST_LISTEN, seq=self.ack_seq, ack=self.ack_seq)]
        if event_mask is not None:
            requests.append(wire.encode_request(wire.PROC_CN_MCAST_LISTEN, event_mask))
        return requests

    def record(self, request: bytes) -> None:
        """``request`` went out on the socket."""
        self.sent.append(request)

    def confirms(self, ack: Ack) -> bool:
        """Whether ``ack`` is the kernel's answer to our first LISTEN."""
        return ack.ack == (self.ack_seq + 1) & 0xFFFFFFFF

    @property
    def ignored(self) -> bool:
        return bool(self.sent) and self.sent[-1] == IGNORE_REQUEST

    @property
    def subscribed(self) -> bool:
        """A LISTEN went out and no IGNORE after it."""
        return bool(self.sent) and not self.ignored

    def ignore_due(self, pid: int) -> bytes | None:
        """The IGNORE request the process ``pid`` must send now, or None: it
        never subscribed, already sent it, or is not the subscriber."""
        if pid != self.owner_pid or not self.subscribed:
            return None
        return IGNORE_REQUEST

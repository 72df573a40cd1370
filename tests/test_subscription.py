"""procevents.subscription: the requests of one socket and the IGNORE it owes (pure)."""

from __future__ import annotations

from procevents import wire
from procevents.events import PROC_EVENT_EXEC, PROC_EVENT_EXIT, Ack
from procevents.subscription import IGNORE_REQUEST, Subscription


def test_listen_is_the_acked_legacy_form_then_the_filter() -> None:
    sub = Subscription(0x1234, owner_pid=10)
    plain = sub.listen_requests()
    assert [wire.decode_request(r) for r in plain] == [(wire.PROC_CN_MCAST_LISTEN, None, 0x1234, 0x1234)]
    mask = PROC_EVENT_EXEC | PROC_EVENT_EXIT
    filtered = sub.listen_requests(mask)
    assert [wire.decode_request(r)[:2] for r in filtered] == [
        (wire.PROC_CN_MCAST_LISTEN, None), (wire.PROC_CN_MCAST_LISTEN, mask),
    ]
    assert sub.sent == []  # built, not sent: the connector records what went out


def test_only_the_answer_to_our_listen_confirms_it() -> None:
    sub = Subscription(0x7FFFFFFF, owner_pid=10)
    assert sub.confirms(Ack(0, 0, 0, 0, ack=0x80000000))
    assert not sub.confirms(Ack(0, 0, 0, 0, ack=0x7FFFFFFF))  # another subscriber's, or none
    wrapped = Subscription(0xFFFFFFFF, owner_pid=10)  # kept to 31 bits, as sent
    assert wrapped.ack_seq == 0x7FFFFFFF and wrapped.confirms(Ack(0, 0, 0, 0, ack=0x80000000))


def test_ignore_is_owed_once_and_only_by_the_subscriber() -> None:
    sub = Subscription(1, owner_pid=10)
    assert sub.ignore_due(10) is None and not sub.subscribed  # never subscribed: nothing owed
    for request in sub.listen_requests():
        sub.record(request)
    assert sub.subscribed and not sub.ignored
    assert sub.ignore_due(11) is None  # a forked child shares the socket: not its to send
    assert sub.ignore_due(10) == IGNORE_REQUEST
    assert wire.decode_request(IGNORE_REQUEST)[0] == wire.PROC_CN_MCAST_IGNORE
    sub.record(IGNORE_REQUEST)
    assert sub.ignored and not sub.subscribed
    assert sub.ignore_due(10) is None  # exactly once

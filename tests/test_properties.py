"""Properties that mean something, over generated input (issue 15, item 4).

* the loss tracker against a reference model built from the ground truth of
  which events the kernel generated and which reached the socket;
* escaping over arbitrary text and bytes: nothing non-printable reaches a
  terminal, every JSON line is valid UTF-8, and the original is recoverable
  where the code promises it (JSON's ``_b64`` keys, shell-style quoting);
* ``encode_event`` / ``decode`` round trips for every event type, alone, in
  multi-message datagrams and in reused buffers;
* NLMSG_ERROR always raises, however much it looks like an event.

Example counts are moderate: the whole file runs in a few seconds.
"""

from __future__ import annotations

import base64
import io
import json
import shlex
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from procevents.escape import escape, json_text, quote_arg
from procevents.events import (
    EVENT_TYPES,
    Ack,
    Comm,
    Coredump,
    Event,
    Exec,
    Exit,
    Fork,
    Gid,
    Lost,
    Ptrace,
    Sid,
    Uid,
    Unknown,
)
from procevents.loss import LossTracker
from procevents.pipeline import JsonSink, Output, TextSink, TreeSink
from procevents.proctable import Proc
from procevents.render import jsonl
from procevents.wire import (
    CN_IDX_PROC,
    CN_VAL_PROC,
    NLMSG_ERROR,
    DecodeError,
    decode,
    decode_all,
    decode_request,
    encode_event,
    encode_request,
)

U32 = 1 << 32
MODERATE = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------------------------------------
# the loss tracker against a reference model


@dataclass
class _Truth:
    """What the kernel did: every event it generated, whether each reached the socket, and
    the socket's drop counter; plus what a correct tracker can have seen of it so far."""

    drops_base: int
    next_seq: dict[int, int]
    dropped: int = 0  # the socket's drop counter, from drops_base
    first_read: int | None = None  # ``dropped`` at the first counter read
    last_read: int | None = None
    seen_cpu: set[int] = field(default_factory=set)
    unseen_since: dict[int, int] = field(default_factory=dict)  # per CPU, losses since its last delivery
    seq_visible: int = 0  # losses a gap between two delivered events of one CPU shows

    @property
    def drops_visible(self) -> int:
        if self.first_read is None or self.last_read is None:
            return 0
        return self.last_read - self.first_read


_CPU = st.one_of(st.just(0), st.integers(0, 3))  # one busy CPU, so a CPU's losses and reads interleave
_OP = st.one_of(
    st.tuples(st.just("event"), _CPU, st.booleans()),
    st.tuples(st.just("event"), _CPU, st.just(True)),  # deliveries outnumber losses
    st.tuples(st.just("read"), st.just(0), st.just(True)),
)
_DELIVER, _LOSE, _READ = ("event", 0, True), ("event", 0, False), ("read", 0, True)


@MODERATE
@given(
    track_seq=st.booleans(),
    starts=st.lists(st.one_of(st.integers(0, U32 - 1), st.integers(U32 - 8, U32 - 1)), min_size=4, max_size=4),
    drops_base=st.integers(0, 10**6),
    ops=st.lists(_OP, min_size=10, max_size=120),
)
# The counter reports part of a gap before the gap shows: the seq-gap Lost carries only the rest.
@example(track_seq=True, starts=[0, 0, 0, 0], drops_base=5, ops=[_DELIVER, _READ, _LOSE, _READ, _LOSE, _DELIVER])
def test_loss_tracker_matches_a_reference_model(
    track_seq: bool, starts: list[int], drops_base: int, ops: list[tuple[str, int, bool]]
) -> None:
    truth = _Truth(drops_base, dict(enumerate(starts)))
    tracker = LossTracker(track_seq=track_seq)
    reported_total = 0
    ts = 0
    for kind, cpu, delivered in ops:
        ts += 1
        if kind == "read":
            lost = tracker.on_drops(truth.drops_base + truth.dropped, ts)
            if truth.first_read is None:
                truth.first_read = truth.dropped
            truth.last_read = truth.dropped
            if lost is not None:
                assert (lost.cpu, lost.seq, lost.timestamp_ns, lost.reason) == (-1, 0, ts, "drops")
        else:
            seq = truth.next_seq[cpu]
            truth.next_seq[cpu] = (seq + 1) % U32
            if not delivered:
                truth.dropped += 1
                truth.unseen_since[cpu] = truth.unseen_since.get(cpu, 0) + 1
                continue
            if cpu in truth.seen_cpu:
                truth.seq_visible += truth.unseen_since.get(cpu, 0)
            truth.seen_cpu.add(cpu)
            truth.unseen_since[cpu] = 0
            event = Exec(cpu, seq, ts, 1, 1)
            lost = tracker.on_event(event)
            if lost is not None:
                assert (lost.cpu, lost.seq, lost.timestamp_ns, lost.reason) == (cpu, seq, ts, "seq-gap")
        if lost is not None:
            assert lost.count > 0
            reported_total += lost.count
        expected = max(truth.seq_visible if track_seq else 0, truth.drops_visible)
        assert tracker.reported == expected
        assert reported_total == expected, "the Lost events in the stream add up to the running total"
        assert expected <= truth.dropped, "never more reported than lost"
    if truth.first_read == 0 and truth.last_read == truth.dropped:
        # The counter was read before the first loss and after the last: exact.
        assert tracker.reported == truth.dropped


@MODERATE
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, U32 - 1)), max_size=60))
def test_loss_tracker_without_seq_tracking_never_reports_a_gap(events: list[tuple[int, int]]) -> None:
    # Under a kernel filter seq gaps are other subscribers' events, not losses.
    tracker = LossTracker(track_seq=False)
    assert all(tracker.on_event(Exec(cpu, seq, 0, 1, 1)) is None for cpu, seq in events)
    assert tracker.reported == 0


# ---------------------------------------------------------------------------------------------
# escaping: text and bytes from other processes

#: Any code point, surrogates included (os.fsdecode makes U+DC80-U+DCFF of bad bytes).
ANY_CHAR = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())
HOSTILE = st.sampled_from(list("\x00\x07\x1b\n\r\t\x7f\x85\x9b\u200e\u202e\u2028\u2029\ufeff\\x'\" $;#"))
ANY_TEXT = st.one_of(
    st.text(ANY_CHAR, max_size=40),
    st.text(st.one_of(HOSTILE, ANY_CHAR), max_size=40),
    st.binary(max_size=40).map(lambda raw: raw.decode("utf-8", "surrogateescape")),
)
#: What /proc gives: bytes, decoded as os.fsdecode does.
PROC_BYTES = st.binary(max_size=40)


def _unescape(text: str) -> str:
    """The inverse of escape(), written from its promise: a backslash always starts an
    escape; ``\\xNN`` at or above 0x80 stands for the raw byte (U+DC00+NN) or the C1
    control U+00NN, which the test compares as the same thing (see _fold)."""
    out: list[str] = []
    i = 0
    named = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\"}
    while i < len(text):
        ch = text[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        kind = text[i + 1]
        if kind in named:
            out.append(named[kind])
            i += 2
            continue
        width = {"x": 2, "u": 4, "U": 8}[kind]
        out.append(chr(int(text[i + 2 : i + 2 + width], 16)))
        i += 2 + width
    return "".join(out)


def _fold(text: str) -> str:
    """Identify a surrogate-escaped byte with the C1 control of the same number."""
    return "".join(chr(ord(c) - 0xDC00) if 0xDC80 <= ord(c) <= 0xDCFF else c for c in text)


@settings(max_examples=300, deadline=None)
@given(ANY_TEXT)
def test_escape_leaves_only_printable_text_and_loses_nothing(text: str) -> None:
    safe = escape(text)
    assert safe.isprintable(), ascii(safe)
    safe.encode("utf-8")  # a terminal can be given it: no surrogate left
    assert _fold(_unescape(safe)) == _fold(text)


@settings(max_examples=300, deadline=None)
@given(PROC_BYTES)
def test_escape_bytes_leaves_only_printable_text(raw: bytes) -> None:
    safe = escape(raw.decode("utf-8", "surrogateescape"))
    assert safe.isprintable(), ascii(safe)
    assert _fold(_unescape(safe)) == _fold(raw.decode("utf-8", "surrogateescape"))


@MODERATE
@given(st.lists(ANY_TEXT, max_size=6))
def test_a_quoted_command_line_is_printable_one_line(argv: list[str]) -> None:
    line = " ".join(quote_arg(arg) for arg in argv)
    assert line.isprintable(), ascii(line)


SHELL_SPECIAL = st.sampled_from(list(" '\"$`|&;<>(){}*?[]#~=!%^"))
PRINTABLE = st.characters(exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"))


#: Arguments printable and free of backslashes: a mix, or one shell-special character among plain ones.
PLAIN_ARG = st.one_of(
    st.text(st.one_of(SHELL_SPECIAL, PRINTABLE), max_size=12),
    st.tuples(st.text("ab_1", max_size=2), SHELL_SPECIAL, st.text("ab_1", max_size=2)).map("".join),
).filter(lambda a: a.isprintable() and "\\" not in a)


@MODERATE
@given(st.lists(PLAIN_ARG, max_size=6))
def test_a_quoted_command_line_splits_back_into_its_argv(argv: list[str]) -> None:
    # Where nothing needed escaping, the display is a shell command line for the same argv.
    # sh's view: words, quotes, comments, and the operators ; | & < > ( ) that end a word.
    lexer = shlex.shlex(" ".join(quote_arg(arg) for arg in argv), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    assert list(lexer) == argv


@settings(max_examples=300, deadline=None)
@given(ANY_TEXT)
def test_json_text_is_valid_utf8_and_keeps_the_bytes(text: str) -> None:
    safe, b64 = json_text(text)
    safe.encode("utf-8")
    if b64 is None:
        assert safe == text
    else:
        raw = base64.b64decode(b64)
        assert safe == raw.decode("utf-8", "replace")
        if all(not 0xD800 <= ord(c) <= 0xDFFF or 0xDC80 <= ord(c) <= 0xDCFF for c in text):
            # Text from bytes (os.fsdecode): exactly those bytes.
            assert raw.decode("utf-8", "surrogateescape") == text


def _encoders() -> list[Callable[[Any], bytes]]:
    found: list[Callable[[Any], bytes]] = [jsonl._stdlib_dumps]
    try:
        import orjson
    except ImportError:  # pragma: no cover - the test extra installs it
        pytest.fail("orjson is not installed: JSON would be tested under one encoder only")
    found.append(orjson.dumps)
    return found


_TEXT_KEYS = ("comm", "exe", "cwd", "user")


@pytest.mark.parametrize("dumps", _encoders(), ids=["stdlib", "orjson"])
@MODERATE
@given(texts=st.fixed_dictionaries({k: PROC_BYTES for k in _TEXT_KEYS}),
       argv=st.lists(st.binary(max_size=20).filter(lambda b: b"\0" not in b), max_size=5))
def test_json_lines_are_valid_and_keep_every_byte(
    dumps: Callable[[Any], bytes], texts: dict[str, bytes], argv: list[bytes]
) -> None:
    buf = io.BytesIO()
    sink = JsonSink(Output(buf))
    sink.dumps = dumps
    info: dict[str, Any] = {k: v.decode("utf-8", "surrogateescape") for k, v in texts.items()}
    info["cmdline"] = [a.decode("utf-8", "surrogateescape") for a in argv]
    sink.emit(Exec(0, 1, 0, 7, 7), None, info)
    sink.output.flush()
    data = buf.getvalue()
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    line = json.loads(data.decode("utf-8"))  # strict: valid UTF-8, valid JSON
    for key, raw in texts.items():
        kept = base64.b64decode(line[f"{key}_b64"]) if f"{key}_b64" in line else line[key].encode()
        assert kept == raw, key
    if "cmdline_b64" in line:
        assert base64.b64decode(line["cmdline_b64"]) == b"\0".join(argv)
    else:
        assert [a.encode() for a in line["cmdline"]] == argv


@MODERATE
@given(comm=PROC_BYTES, argv=st.lists(st.binary(max_size=20), max_size=4), user=PROC_BYTES,
       event_comm=st.binary(max_size=16).filter(lambda b: b"\0" not in b), duration=st.floats(0, 1e6))
def test_terminal_lines_hold_nothing_unprintable(
    comm: bytes, argv: list[bytes], user: bytes, event_comm: bytes, duration: float
) -> None:
    fs = lambda raw: raw.decode("utf-8", "surrogateescape")  # noqa: E731
    info: dict[str, Any] = {"comm": fs(comm), "cmdline": [fs(a) for a in argv] or None, "user": fs(user)}
    proc = Proc(7, 1, comm=fs(comm), argv=info["cmdline"])
    text_buf, tree_buf = io.BytesIO(), io.BytesIO()
    text, tree = TextSink(Output(text_buf)), TreeSink(Output(tree_buf), lambda _proc: [])
    for event, extra in (
        (Exec(0, 1, 0, 7, 7), {}),
        (Exit(0, 2, 0, 7, 7, 0x8B, 17, 1, 1), {"duration": duration}),
        (Comm(0, 3, 0, 7, 7, event_comm), {}),
    ):
        text.emit(event, proc, {**info, **extra})
        tree.emit(event, proc, {**info, **extra})
    text.output.flush()
    tree.output.flush()
    # strict decoding: valid UTF-8; three text lines, the tree's exec and exit
    lines = (text_buf.getvalue() + tree_buf.getvalue()).decode("utf-8").split("\n")
    assert lines[-1] == "" and len(lines) == 6
    for line in lines[:-1]:
        assert line.isprintable(), ascii(line)


# ---------------------------------------------------------------------------------------------
# encode_event / decode: every type


# The edges of each width (sign bit, all ones) as often as anything else.
I32 = st.one_of(st.integers(-(2**31), 2**31 - 1), st.sampled_from([-(2**31), -1, 0, 1, 2**31 - 1]))
U32S = st.one_of(st.integers(0, U32 - 1), st.sampled_from([0, 1, 2**31 - 1, 2**31, U32 - 1]))
HEAD = {"cpu": U32S, "seq": U32S, "timestamp_ns": st.integers(0, 2**64 - 1)}

EVENT_STRATEGIES: dict[type[Event], st.SearchStrategy[Event]] = {
    Fork: st.builds(Fork, **HEAD, parent_pid=I32, parent_tgid=I32, child_pid=I32, child_tgid=I32),
    Exec: st.builds(Exec, **HEAD, process_pid=I32, process_tgid=I32),
    Sid: st.builds(Sid, **HEAD, process_pid=I32, process_tgid=I32),
    Uid: st.builds(Uid, **HEAD, process_pid=I32, process_tgid=I32, ruid=U32S, euid=U32S),
    Gid: st.builds(Gid, **HEAD, process_pid=I32, process_tgid=I32, rgid=U32S, egid=U32S),
    Ptrace: st.builds(Ptrace, **HEAD, process_pid=I32, process_tgid=I32, tracer_pid=I32, tracer_tgid=I32),
    Comm: st.builds(Comm, **HEAD, process_pid=I32, process_tgid=I32,
                    comm=st.binary(max_size=16).filter(lambda b: b"\0" not in b)),
    Coredump: st.builds(Coredump, **HEAD, process_pid=I32, process_tgid=I32, parent_pid=I32, parent_tgid=I32),
    Exit: st.builds(Exit, **HEAD, process_pid=I32, process_tgid=I32, exit_code=U32S, exit_signal=I32,
                    parent_pid=I32, parent_tgid=I32),
    Ack: st.builds(Ack, **HEAD, err=U32S, ack=U32S),
    # The union is 24 bytes; a longer payload is carried whole.
    Unknown: st.builds(Unknown, **HEAD, what=U32S.filter(lambda w: w not in EVENT_TYPES),
                       data=st.binary(min_size=24, max_size=80)),
}
ANY_EVENT = st.one_of(*EVENT_STRATEGIES.values())


def test_every_event_type_has_a_strategy() -> None:
    assert set(EVENT_STRATEGIES) == {*EVENT_TYPES.values(), Unknown}


def _padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


@pytest.mark.parametrize("cls", list(EVENT_STRATEGIES), ids=lambda c: c.__name__)
@settings(max_examples=60, deadline=None)
@given(data=st.data(), junk=st.binary(max_size=40))
def test_encode_decode_round_trip(cls: type[Event], data: st.DataObject, junk: bytes) -> None:
    event = data.draw(EVENT_STRATEGIES[cls])
    wire = encode_event(event)
    assert decode(wire) == event
    assert decode_all(wire) == [event]
    # A reused receive buffer: only ``size`` bytes are the datagram.
    assert decode(bytearray(wire + junk), len(wire)) == event


@MODERATE
@given(event=ANY_EVENT, cut=st.integers(0, 200))
def test_a_short_read_never_decodes_from_stale_bytes(event: Event, cut: int) -> None:
    # The buffer still holds a whole datagram (a previous read's); only ``size`` bytes are new.
    wire = encode_event(event)
    size = cut % len(wire)
    with pytest.raises(DecodeError):
        decode(bytearray(wire), size)
    if size == 0:
        assert decode_all(bytearray(wire), size) == []  # no message at all
        return
    with pytest.raises(DecodeError):
        decode_all(bytearray(wire), size)


@MODERATE
@given(st.lists(ANY_EVENT, min_size=1, max_size=6))
def test_decode_all_round_trips_a_multi_message_datagram(events: list[Event]) -> None:
    assert decode_all(b"".join(_padded(encode_event(e)) for e in events)) == events


@MODERATE
@given(op=st.sampled_from([1, 2]), mask=st.one_of(st.none(), U32S), seq=U32S, ack=U32S)
def test_request_round_trip(op: int, mask: int | None, seq: int, ack: int) -> None:
    assert decode_request(encode_request(op, mask, seq=seq, ack=ack)) == (op, mask, seq, ack)


# ---------------------------------------------------------------------------------------------
# NLMSG_ERROR always raises


@MODERATE
@given(event=ANY_EVENT, flags=st.integers(0, 0xFFFF), nl_seq=U32S, errno=I32, junk=st.binary(max_size=40),
       before=st.lists(ANY_EVENT, max_size=2))
def test_nlmsg_error_always_raises(
    event: Event, flags: int, nl_seq: int, errno: int, junk: bytes, before: list[Event]
) -> None:
    # A valid event in every other respect (proc connector idx/val, sender 0,
    # full length) whose type says NLMSG_ERROR: the careful and the fast path both refuse it.
    data = bytearray(encode_event(event))
    struct.pack_into("<HHI", data, 4, NLMSG_ERROR, flags, nl_seq)
    assert struct.unpack_from("<II", data, 16) == (CN_IDX_PROC, CN_VAL_PROC)
    with pytest.raises(DecodeError):
        decode(bytes(data))
    with pytest.raises(DecodeError):
        decode(bytearray(bytes(data) + junk), len(data))
    with pytest.raises(DecodeError):
        decode_all(b"".join(_padded(encode_event(e)) for e in before) + bytes(data))
    struct.pack_into("<i", data, 16, errno)  # any errno in place of the idx
    with pytest.raises(DecodeError):
        decode(bytes(data))


def test_lost_has_no_wire_form() -> None:
    # Lost is made by the tracker, never sent by the kernel: encode refuses it.
    with pytest.raises(TypeError):
        encode_event(Lost(0, 0, 0, 1, "drops"))

"""JSON Lines: one object per event, keys as in linux/cn_proc.h.

Every line is valid UTF-8.  Text another process controls (comm, argv,
paths) is emitted as a string; where its bytes are not valid UTF-8, the
string carries U+FFFD in their place and a sibling key ``<name>_b64`` holds
the exact bytes, base64-encoded, so nothing is lost.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from ..escape import json_text
from ..events import (
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
    decode_wait_status,
)
from .clock import Clock


def event_fields(event: Event, clock: Clock) -> dict[str, Any]:
    """The JSON object for one event, before enrichment."""
    out: dict[str, Any] = {
        "event": event.name,
        "time": clock.iso_utc(event.timestamp_ns),
        "timestamp_ns": event.timestamp_ns,
        "cpu": event.cpu,
        "seq": event.seq,
        "pid": event.pid,
        "tgid": event.tgid,
    }
    cls = type(event)
    if cls is Fork:
        assert isinstance(event, Fork)
        out["parent_pid"] = event.parent_pid
        out["parent_tgid"] = event.parent_tgid
        out["child_pid"] = event.child_pid
        out["child_tgid"] = event.child_tgid
    elif cls is Exit:
        assert isinstance(event, Exit)
        out["exit_code"] = event.exit_code
        out["exit_signal"] = event.exit_signal
        out["parent_pid"] = event.parent_pid
        out["parent_tgid"] = event.parent_tgid
        out["status"], out["signal"], out["core_dumped"] = decode_wait_status(event.exit_code)
    elif cls is Exec or cls is Sid:
        pass
    elif cls is Uid:
        assert isinstance(event, Uid)
        out["ruid"] = event.ruid
        out["euid"] = event.euid
    elif cls is Gid:
        assert isinstance(event, Gid)
        out["rgid"] = event.rgid
        out["egid"] = event.egid
    elif cls is Ptrace:
        assert isinstance(event, Ptrace)
        out["tracer_pid"] = event.tracer_pid
        out["tracer_tgid"] = event.tracer_tgid
    elif cls is Comm:
        assert isinstance(event, Comm)
        put_text(out, "comm", event.comm_text)
    elif cls is Coredump:
        assert isinstance(event, Coredump)
        out["parent_pid"] = event.parent_pid
        out["parent_tgid"] = event.parent_tgid
    elif cls is Lost:
        assert isinstance(event, Lost)
        out["count"] = event.count
        out["reason"] = event.reason
        out["cpu"] = event.cpu if event.cpu >= 0 else None
        out["pid"] = out["tgid"] = out["seq"] = None
    elif cls is Unknown:
        assert isinstance(event, Unknown)
        out["what"] = event.what
        out["data"] = event.data.hex()
    elif cls is Ack:
        assert isinstance(event, Ack)
        out["err"] = event.err
    return out


def put_text(out: dict[str, Any], key: str, text: str | None) -> None:
    """Store process-controlled text under ``key`` (and ``key_b64`` if needed)."""
    if text is None:
        out[key] = None
        return
    safe, b64 = json_text(text)
    out[key] = safe
    if b64 is not None:
        out[key + "_b64"] = b64


def put_argv(out: dict[str, Any], key: str, argv: list[str] | None) -> None:
    """Store an argv list; ``key_b64`` holds the NUL-joined raw bytes if needed."""
    if argv is None:
        out[key] = None
        return
    safe_args = []
    lossy = False
    for arg in argv:
        safe, b64 = json_text(arg)
        safe_args.append(safe)
        lossy = lossy or b64 is not None
    out[key] = safe_args
    if lossy:
        import base64

        raw = b"\0".join(arg.encode("utf-8", "surrogateescape") for arg in argv)
        out[key + "_b64"] = base64.b64encode(raw).decode("ascii")


def _stdlib_dumps(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def choose_dumps() -> Callable[[Mapping[str, Any]], bytes]:
    """orjson when installed (about 15x faster), else the standard library."""
    try:
        import orjson
    except ImportError:
        return _stdlib_dumps
    dumps: Callable[[Mapping[str, Any]], bytes] = orjson.dumps
    return dumps

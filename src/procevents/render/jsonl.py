"""JSON Lines: one object per event, keys as in linux/cn_proc.h.

Every line is valid UTF-8.  Text another process controls (comm, argv,
paths) is emitted as a string; where its bytes are not valid UTF-8, the
string carries U+FFFD in their place and a sibling key ``<name>_b64`` holds
the exact bytes, base64-encoded, so nothing is lost.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Final

from ..escape import json_text
from ..events import PAYLOAD_FIELDS, Comm, Event, Exit, Lost, Unknown, decode_wait_status
from .clock import Clock


def _exit_status(out: dict[str, Any], event: Exit) -> None:
    out["status"], out["signal"], out["core_dumped"] = decode_wait_status(event.exit_code)


def _comm_text(out: dict[str, Any], event: Comm) -> None:
    put_text(out, "comm", event.comm_text)


def _lost_nulls(out: dict[str, Any], event: Lost) -> None:
    # A loss is about no task and no sequence number; its CPU is known
    # only when a sequence gap showed it.
    out["cpu"] = event.cpu if event.cpu >= 0 else None
    out["pid"] = out["tgid"] = out["seq"] = None


def _data_hex(out: dict[str, Any], event: Unknown) -> None:
    out["data"] = event.data.hex()


#: The special cases, applied after the fields are copied; a key one of them
#: replaces keeps its place.
_FINISH: Final[dict[type[Event], Callable[[dict[str, Any], Any], None]]] = {
    Exit: _exit_status,
    Comm: _comm_text,
    Lost: _lost_nulls,
    Unknown: _data_hex,
}

# Already there as pid and tgid.
_SAME_AS_PID: Final = ("process_pid", "process_tgid")


def _copier(cls: type[Event]) -> Callable[[Event, Clock], dict[str, Any]]:
    """A function returning the common keys and the class's PAYLOAD_FIELDS."""
    keys = ("timestamp_ns", "cpu", "seq", "pid", "tgid", *(n for n in PAYLOAD_FIELDS[cls] if n not in _SAME_AS_PID))
    items = "".join(f"{key!r}: event.{key}, " for key in keys)
    # Compiled once per class, as dataclasses and namedtuple compile their
    # methods: a dict display is CPython's fastest way to build the object,
    # and --json's cost is counted per event (attrgetter with zip measured
    # 0.3-0.7 us slower per event).
    source = (
        "def copy(event, clock):\n"
        f"    return {{'event': {cls.name!r}, 'time': clock.iso_utc(event.timestamp_ns), {items}}}\n"
    )
    namespace: dict[str, Any] = {}
    exec(source, namespace)
    copy: Callable[[Event, Clock], dict[str, Any]] = namespace["copy"]
    return copy


_BUILD: Final = {cls: (_copier(cls), _FINISH.get(cls)) for cls in PAYLOAD_FIELDS}


def event_fields(event: Event, clock: Clock) -> dict[str, Any]:
    """The JSON object for one event, before enrichment."""
    copy, finish = _BUILD[type(event)]
    out = copy(event, clock)
    if finish is not None:
        finish(out, event)
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

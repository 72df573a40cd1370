"""Make text from other processes safe for a terminal and for JSON.

Anything another process controls (comm, argv, paths) can hold control
characters that move the cursor, clear the screen or fake a new line.
Text output shows such characters as backslash escapes; undecodable bytes
(surrogate escapes, as produced by ``os.fsdecode``) are shown as ``\\xNN``.
"""

from __future__ import annotations

import base64

_SURROGATE_LOW = 0xDC80
_SURROGATE_HIGH = 0xDCFF
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def _escape_char(ch: str) -> str:
    named = _NAMED.get(ch)
    if named:
        return named
    code = ord(ch)
    if _SURROGATE_LOW <= code <= _SURROGATE_HIGH:
        return f"\\x{code - 0xDC00:02x}"
    if ch.isprintable():
        return ch
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def escape(text: str) -> str:
    """Terminal-safe form: non-printable characters and backslashes escaped."""
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(_escape_char(ch) for ch in text)


def quote_arg(arg: str) -> str:
    """One argv element for a command line display: escaped, quoted if needed."""
    safe = escape(arg)
    if safe and not any(ch in safe for ch in " '\"$`|&;<>(){}*?[]#~"):
        return safe
    return "'" + safe.replace("'", "'\\''") + "'"


def json_text(text: str) -> tuple[str, str | None]:
    """A JSON-safe string and, when the text held undecodable bytes, their
    lossless base64 form (the raw bytes, as the process had them)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            raw = text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a lone surrogate that no bytes decode to
            raw = text.encode("utf-8", "surrogatepass")
        return raw.decode("utf-8", "replace"), base64.b64encode(raw).decode("ascii")
    return text, None

"""Escaping text from other processes for terminals and JSON."""

from __future__ import annotations

import base64

import pytest

from procevents.escape import escape, json_text, quote_arg


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\x1b", "\\x1b"),
        ("\x1b[2J", "\\x1b[2J"),
        ("a\nb", "a\\nb"),
        ("a\rb", "a\\rb"),
        ("a\tb", "a\\tb"),
        ("\x7f", "\\x7f"),
        ("\x00", "\\x00"),
        ("\x07", "\\x07"),
        ("\u0085", "\\x85"),
        ("\u009b", "\\x9b"),
        ("a\\b", "a\\\\b"),
        ("\\", "\\\\"),
    ],
)
def test_escape_controls(text: str, expected: str) -> None:
    assert escape(text) == expected


@pytest.mark.parametrize("ch", ["\u202e", "\u202d", "\u2066", "\u2067", "\u2068", "\u2069", "\u200f"])
def test_escape_bidi_controls(ch: str) -> None:
    out = escape(f"abc{ch}def")
    assert ch not in out
    assert out == f"abc\\u{ord(ch):04x}def"


@pytest.mark.parametrize("ch", ["\u2028", "\u2029"])
def test_escape_unicode_line_separators(ch: str) -> None:
    out = escape(ch)
    assert ch not in out
    assert out.startswith("\\")


@pytest.mark.parametrize("raw", [b"\xff", b"\x80", b"\xc3", b"\xfe\xfd", b"a\xe4b"])
def test_escape_surrogate_escaped_bytes(raw: bytes) -> None:
    text = raw.decode("utf-8", "surrogateescape")
    expected = "".join(chr(b) if b < 0x80 else f"\\x{b:02x}" for b in raw)
    assert escape(text) == expected


def test_escape_hostile_comm() -> None:
    text = b"\xff\x1b[2J".decode("utf-8", "surrogateescape")
    assert escape(text) == "\\xff\\x1b[2J"


@pytest.mark.parametrize("text", ["é", "中文", "naïve café", "plain", "", "a b", "emoji \U0001f600", "ß/Ω"])
def test_escape_printable_unchanged(text: str) -> None:
    assert escape(text) == text


def test_escape_is_unambiguous_for_backslash_x() -> None:
    # A literal backslash-x text must not look like an escaped byte.
    literal = "\\xff"
    byte = b"\xff".decode("utf-8", "surrogateescape")
    assert escape(literal) != escape(byte)


def test_escaped_output_has_no_controls() -> None:
    every = "".join(chr(c) for c in range(0x00, 0x200)) + "\u202e\u2028\u2029\ufeff"
    every += b"\x80\xff".decode("utf-8", "surrogateescape")
    out = escape(every)
    assert out.isprintable()
    assert "\n" not in out
    assert "\x1b" not in out


def test_escape_bytes_valid_utf8() -> None:
    assert escape("é\n".encode().decode("utf-8", "surrogateescape")) == "é\\n"


# --------------------------------------------------------------------------
# quote_arg


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("ls", "ls"),
        ("-la", "-la"),
        ("/usr/bin/python3", "/usr/bin/python3"),
        ("é", "é"),
        ("", "''"),
        ("a b", "'a b'"),
        ("$HOME", "'$HOME'"),
        ("*.py", "'*.py'"),
        ("it's", "'it'\\''s'"),
        ('say "hi"', "'say \"hi\"'"),
        ("a;b", "'a;b'"),
        ("a|b", "'a|b'"),
        ("#x", "'#x'"),
    ],
)
def test_quote_arg(arg: str, expected: str) -> None:
    assert quote_arg(arg) == expected


def test_quote_arg_escapes_controls() -> None:
    out = quote_arg("a\nb\x1b[2J")
    assert "\n" not in out
    assert "\x1b" not in out
    assert out == "'a\\nb\\x1b[2J'"  # "[" is a glob character: quoted


def test_quote_arg_escapes_controls_and_quotes() -> None:
    out = quote_arg("rm -rf\n/")
    assert out == "'rm -rf\\n/'"


def test_quote_arg_undecodable_bytes() -> None:
    arg = b"f\xffo".decode("utf-8", "surrogateescape")
    assert quote_arg(arg) == "f\\xffo"


# --------------------------------------------------------------------------
# json_text


@pytest.mark.parametrize("text", ["", "bash", "é中", "\x1b[2J", "a\nb", "\u202e"])
def test_json_text_valid(text: str) -> None:
    assert json_text(text) == (text, None)


@pytest.mark.parametrize(
    "raw", [b"\xff", b"\xff\x1b[2J", b"ok\x80ok", b"\xc3", b"\xe4\xb8", "é".encode() + b"\xfe"]
)
def test_json_text_undecodable(raw: bytes) -> None:
    text = raw.decode("utf-8", "surrogateescape")
    safe, b64 = json_text(text)
    assert b64 is not None
    assert base64.b64decode(b64) == raw
    assert safe == raw.decode("utf-8", "replace")
    assert "\ufffd" in safe
    safe.encode("utf-8")  # encodable: no surrogates left


def test_json_text_hostile_comm_exact() -> None:
    text = b"\xff\x1b[2J".decode("utf-8", "surrogateescape")
    assert json_text(text) == ("\ufffd\x1b[2J", base64.b64encode(b"\xff\x1b[2J").decode("ascii"))


def test_json_text_lone_surrogate() -> None:
    """A surrogate that no byte decodes to (not from os.fsdecode, but a str
    may hold one): its surrogatepass bytes, shown as replacement characters."""
    assert json_text("a\ud800b") == ("a\ufffd\ufffd\ufffdb", base64.b64encode(b"a\xed\xa0\x80b").decode("ascii"))
    assert escape("a\ud800") == "a\\ud800"


@pytest.mark.parametrize("arg", ["X", "XX", "aXXb", "x"])
def test_quote_arg_plain_letters_stay_bare(arg: str) -> None:
    assert quote_arg(arg) == arg


@pytest.mark.parametrize(
    ("ch", "expected"),
    [
        ("\x7f", "\\x7f"),  # DEL
        ("\x85", "\\x85"),  # NEL, a C1 control
        ("\xa0", "\\xa0"),  # no-break space: not printable
        ("\xad", "\\xad"),  # soft hyphen
        ("\u0378", "\\u0378"),  # unassigned
        ("\ufeff", "\\ufeff"),  # BOM
        ("\U000e0001", "\\U000e0001"),  # language tag
        ("\U0010ffff", "\\U0010ffff"),  # noncharacter, the last code point
        ("\udc7f", "\\udc7f"),  # a surrogate below the surrogateescape range
        ("\udc80", "\\x80"),  # the first surrogateescape byte
        ("\udcff", "\\xff"),  # the last
        ("\udd00", "\\udd00"),  # just above the range
    ],
)
def test_escape_each_width(ch: str, expected: str) -> None:
    assert escape(ch) == expected
    assert escape(f"a{ch}b") == f"a{expected}b"


def test_escape_bytes_exact() -> None:
    assert escape(b"caf\xc3\xa9\n\xff".decode("utf-8", "surrogateescape")) == "caf\u00e9\\n\\xff"

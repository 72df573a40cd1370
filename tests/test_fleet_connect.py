"""NATS connection settings (fleet/connect.py): a URL's user and password
never shown, a NATS error in one line named by its type, TLS only when asked for, and the
settings as the recorder hands them to its shipper (JSON on a pipe)."""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import pytest

from procevents.fleet.connect import NatsConfig, describe, redact, tls_context


def test_redact_drops_the_user_and_password_and_keeps_the_rest() -> None:
    assert redact("nats://alice:s3cret@nats.example:4222/x?y=1") == "nats://nats.example:4222/x?y=1"
    assert redact("nats://token@nats.example") == "nats://nats.example"
    assert redact("nats://127.0.0.1:4222") == "nats://127.0.0.1:4222"
    # a server list: each URL on its own, the spaces around the commas gone
    assert redact("nats://a:b@h1:1, tls://h2:2 ,nats://c:d@h3") == "nats://h1:1,tls://h2:2,nats://h3"


def test_the_shown_url_is_redacted() -> None:
    assert NatsConfig("nats://alice:s3cret@nats.example:4222").shown_url == "nats://nats.example:4222"


def test_settings_come_back_the_same_through_json() -> None:
    config = NatsConfig(
        "nats://alice:s3cret@h:1", creds="/etc/c.creds", ca="/etc/ca.pem", cert="/etc/c.pem", key="/etc/c.key",
        stream="S", prefix="pre", max_age=60.5, replicas=3,
    )
    assert NatsConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_an_error_is_one_line_named_by_its_type() -> None:
    assert describe(OSError("cannot reach h:1\nsecond line")) == "OSError: cannot reach h:1"
    assert describe(ValueError()) == "ValueError"
    assert describe(ValueError("ValueError")) == "ValueError"
    assert describe(TimeoutError()) == "TimeoutError: timed out"
    # nats-py's own TimeoutError is another class of that name
    nats_timeout = type("TimeoutError", (Exception,), {})
    assert describe(nats_timeout("nats: timeout")) == "TimeoutError: timed out"


def test_tls_only_when_asked_for(tmp_path: Path) -> None:
    assert tls_context(NatsConfig("nats://h:1")) is None
    context = tls_context(NatsConfig("tls://h:1"))
    assert isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_REQUIRED
    # a CA file asks for TLS even on a nats:// URL: a missing one is an error, not plain text
    with pytest.raises(OSError):
        tls_context(NatsConfig("nats://h:1", ca=str(tmp_path / "missing.pem")))


def test_no_password_in_an_error_wherever_the_url_is() -> None:
    said = describe(OSError("cannot reach nats://u:pw@h:1 and tls://tok@x:2/p"))
    assert said == "OSError: cannot reach nats://h:1 and tls://x:2/p"

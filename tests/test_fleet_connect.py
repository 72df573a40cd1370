"""NATS connection settings (fleet/connect.py): a URL's user and password
never shown, a NATS error in one line named by its type, TLS only when asked for, and the
settings as the recorder hands them to its shipper (JSON on a pipe); TLS
asked for is TLS or nothing, against real nats-servers (with a CA made by
openssl here) and a listener that keeps what a client sends."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import CLI
from helpers import NATS_SERVER, TIMEOUT, Cli, env, run_cli, wait_until

from procevents.fleet.connect import (
    NatsConfig,
    _is_tls,
    connect,
    describe,
    nkeys_missing,
    redact,
    tls_context,
    tls_required,
)


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


# -- TLS means TLS (issue 23 item 4): real servers, real sockets ----------------------------------

# nats-py upgrades to TLS only when the server's INFO asks for it, whatever
# the URL said: a server that did not ask got CONNECT, with the user and
# password, in clear.


class _Listener:
    """A TCP server on 127.0.0.1 that says what a NATS server without TLS
    says (INFO, asking for a password) and keeps every byte a client sends."""

    INFO = (
        b'INFO {"server_id":"FAKE","version":"2.9.10","go":"go1","host":"127.0.0.1","port":4222,'
        b'"headers":true,"auth_required":true,"max_payload":1048576,"proto":1}\r\n'
    )

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)  # accept() wakes to see close(): closing the socket alone does not wake it
        self.port = self.sock.getsockname()[1]
        self.received = bytearray()
        self.connections = 0
        self.lock = threading.Lock()
        self.closed = threading.Event()
        self.threads = [threading.Thread(target=self._serve)]
        self.threads[0].start()

    def _serve(self) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with self.lock:
                self.connections += 1
            one = threading.Thread(target=self._one, args=(conn,))
            self.threads.append(one)
            one.start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(0.1)
            try:
                conn.sendall(self.INFO)
                while not self.closed.is_set():
                    try:
                        chunk = conn.recv(65536)
                    except TimeoutError:
                        continue
                    if not chunk:
                        return
                    with self.lock:
                        self.received += chunk
            except OSError:
                pass

    def close(self) -> None:
        self.closed.set()
        for thread in self.threads:
            thread.join(TIMEOUT)
        self.sock.close()


def _connect(config: NatsConfig, first_wait: float = 5.0) -> str:
    """Connect, flush a PING, close: how it was connected, or the error in one line."""
    errors: list[str] = []

    async def body() -> str:
        try:
            nc = await connect(config, "procevents-test", on_error=errors.append, first_wait=first_wait)
        except Exception as exc:
            return describe(exc)
        try:
            await nc.flush(timeout=TIMEOUT)
            return "connected over TLS" if _is_tls(nc._transport) else "connected in clear"
        finally:
            await nc.close()

    return asyncio.run(body())


@pytest.mark.parametrize(
    "how", [{"url": "tls://alice:s3cret@127.0.0.1:{port}"}, {"url": "nats://alice:s3cret@127.0.0.1:{port}", "ca": "CA"}]
)
def test_a_server_without_tls_is_sent_no_credential(how: dict[str, str], tls_files: dict[str, Path]) -> None:
    listener = _Listener()
    try:
        config = NatsConfig(
            how["url"].format(port=listener.port), ca=str(tls_files["ca"]) if "ca" in how else None
        )
        said = _connect(config, first_wait=1.5)
    finally:
        listener.close()
    assert listener.connections >= 1
    # Not one byte of CONNECT, user or password on the wire ...
    sent = bytes(listener.received)
    assert b"CONNECT" not in sent and b"alice" not in sent and b"s3cret" not in sent, sent
    # ... and the caller told why, in one line.
    assert said.startswith(f"PlaintextServer: 127.0.0.1:{listener.port} does not do TLS"), said
    assert "refused before sending any credential" in said and "s3cret" not in said


def test_a_real_server_without_tls_is_refused(nats_plain: int) -> None:
    said = _connect(NatsConfig(f"tls://alice:s3cret@127.0.0.1:{nats_plain}"), first_wait=1.5)
    assert said.startswith(f"PlaintextServer: 127.0.0.1:{nats_plain} does not do TLS"), said
    # ... and nats:// to it, without a CA or certificate, is plain text as asked.
    config = NatsConfig(f"nats://alice:s3cret@127.0.0.1:{nats_plain}")
    assert not tls_required(config) and _connect(config) == "connected in clear"


def test_collect_says_why_it_does_not_connect(nats_plain: int, tmp_path: Path) -> None:
    result = run_cli(
        "collect", "--nats", f"tls://alice:s3cret@127.0.0.1:{nats_plain}", "--db", str(tmp_path / "c.db"), "-D", "3"
    )
    err = result.stderr.decode()
    assert result.returncode == 0, err
    assert f"cannot collect from tls://127.0.0.1:{nats_plain} (PlaintextServer: 127.0.0.1:{nats_plain} does not do " \
        "TLS" in err, err
    assert "collecting from" not in err and "s3cret" not in err


def test_a_tls_server_is_used_with_its_ca(tls_files: dict[str, Path], tmp_path: Path) -> None:
    port = _free_port()
    with _nats_server(port, tmp_path, "--tls", "--tlscert", str(tls_files["cert"]), "--tlskey", str(tls_files["key"])):
        for config in (
            NatsConfig(f"tls://alice:s3cret@127.0.0.1:{port}", ca=str(tls_files["ca"])),
            NatsConfig(f"nats://alice:s3cret@127.0.0.1:{port}", ca=str(tls_files["ca"])),
        ):
            assert _connect(config) == "connected over TLS", config.url
        # A server certificate from another CA is refused (never a fallback to plain text).
        said = _connect(NatsConfig(f"tls://alice:s3cret@127.0.0.1:{port}", ca=str(tls_files["other_ca"])), 1.5)
        assert "CERTIFICATE_VERIFY_FAILED" in said, said


def test_a_client_certificate_is_presented(tls_files: dict[str, Path], tmp_path: Path) -> None:
    port = _free_port()
    with _nats_server(
        port, tmp_path, "--tlsverify", "--tlscert", str(tls_files["cert"]), "--tlskey", str(tls_files["key"]),
        "--tlscacert", str(tls_files["ca"]),
    ):
        config = NatsConfig(
            f"tls://127.0.0.1:{port}", ca=str(tls_files["ca"]), cert=str(tls_files["client_cert"]),
            key=str(tls_files["client_key"]),
        )
        assert _connect(config) == "connected over TLS"
        # Without the client certificate, that server says no.
        assert not _connect(NatsConfig(f"tls://127.0.0.1:{port}", ca=str(tls_files["ca"])), 1.5).startswith("connected")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def _nats_server(port: int, tmp_path: Path, *args: str, auth: bool = True) -> Iterator[None]:
    """A nats-server with ``args`` on 127.0.0.1:``port`` (user alice,
    password s3cret, unless ``auth`` is False or a client certificate is
    asked for)."""
    if NATS_SERVER is None:
        pytest.skip("nats-server is not installed (scripts/test installs it)")
    user = ["--user", "alice", "--pass", "s3cret"] if auth and "--tlsverify" not in args else []
    proc = subprocess.Popen(
        [NATS_SERVER, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(tmp_path / f"js-{port}"), *user, *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        def ready() -> bool:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1.0) as conn:
                    return conn.recv(4).startswith(b"INFO")
            except OSError:
                return False

        wait_until(ready, "nats-server answering")
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(TIMEOUT)


@pytest.fixture
def nats_plain(tmp_path: Path) -> Iterator[int]:
    """A nats-server without TLS that wants user alice, password s3cret: its port."""
    port = _free_port()
    with _nats_server(port, tmp_path):
        yield port


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A test CA, a server certificate from it for 127.0.0.1, a client
    certificate from it, and another CA (made with openssl)."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl")
    d = tmp_path_factory.mktemp("tls")
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "other_ca"):
        _openssl("req", "-x509", *key, "-keyout", str(d / f"{ca}.key"), "-out", str(d / f"{ca}.pem"),
                 "-days", "2", "-subj", f"/CN=procevents test {ca}")
    for who, ext in (("server", "subjectAltName=IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth")):
        _openssl("req", *key, "-keyout", str(d / f"{who}.key"), "-out", str(d / f"{who}.csr"),
                 "-subj", f"/CN=procevents test {who}")
        (d / f"{who}.ext").write_text(ext + "\n")
        _openssl("x509", "-req", "-in", str(d / f"{who}.csr"), "-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"),
                 "-CAcreateserial", "-out", str(d / f"{who}.pem"), "-days", "2", "-extfile", str(d / f"{who}.ext"))
    return {
        "ca": d / "ca.pem", "other_ca": d / "other_ca.pem", "cert": d / "server.pem", "key": d / "server.key",
        "client_cert": d / "client.pem", "client_key": d / "client.key",
    }


# -- creds files need nkeys (issue 23 item 5) --------------------------------------------------------

# nats-py imports nkeys only when it connects with a creds file: without it
# the shipper and collector retried "No module named 'nkeys'" for ever.


def test_creds_without_nkeys_is_a_usage_error_at_start(tmp_path: Path, nats_creds: tuple[int, Path]) -> None:
    port, creds = nats_creds
    # A real import failure: an nkeys that does not import, first on the path.
    fake = tmp_path / "shadow"
    fake.mkdir()
    (fake / "nkeys.py").write_text("raise ImportError('No module named nacl (planted by the test)')\n")
    environ = env()
    environ["PYTHONPATH"] = os.pathsep.join((str(fake), environ["PYTHONPATH"]))
    result = subprocess.run(
        [*CLI, "collect", "--nats", f"nats://127.0.0.1:{port}", "--nats-creds", str(creds),
         "--db", str(tmp_path / "c.db"), "-D", "10"],
        capture_output=True, env=environ, timeout=TIMEOUT, stdin=subprocess.DEVNULL, check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        b"procevents: error: --nats-creds needs nkeys (No module named nacl (planted by the test)): "
        b"pip install 'procevents[fleet]'\n"
    ), result.stderr
    assert not (tmp_path / "c.db").exists()


def test_creds_work_with_what_the_extra_installs(tmp_path: Path, nats_creds: tuple[int, Path]) -> None:
    port, creds = nats_creds
    assert nkeys_missing() is None  # the test extra installs it, as the fleet extra does
    collect = Cli(["collect", "--nats", f"nats://127.0.0.1:{port}", "--nats-creds", str(creds),
                   "--db", str(tmp_path / "c.db")])
    try:
        collect.err.wait_for(lambda line: line.startswith(b"procevents: collecting from"))
        assert collect.stop() == 0, collect.err.text
    finally:
        collect.cleanup()
    assert f"collecting from nats://127.0.0.1:{port}, stream PROCEVENTS" in collect.err.text, collect.err.text
    # ... and that server lets no one in without them.
    # The server sends -ERR 'Authorization Violation' and closes; the client
    # may meet the close before it has read the error (seen under load).
    refused = _connect(NatsConfig(f"nats://127.0.0.1:{port}"), 1.5)
    assert "Authorization Violation" in refused or "Connection reset by peer" in refused, refused


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(issuer: Any, subject: Any, name: str, claims: dict[str, Any]) -> str:
    """A NATS JWT (what nsc writes): ``subject``'s claims signed by ``issuer``."""
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = _b64(json.dumps({
        "jti": _b64(os.urandom(16)), "iat": int(time.time()), "iss": issuer.public_key.decode(), "name": name,
        "sub": subject.public_key.decode(), "nats": {**claims, "version": 2},
    }).encode())
    return f"{header}.{body}.{_b64(issuer.sign(f'{header}.{body}'.encode()))}"


@pytest.fixture
def nats_creds(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A nats-server in operator mode (JWT auth, JetStream): its port and a
    user's creds file, made here with nkeys as nsc would."""
    import nkeys

    def key(prefix: int) -> Any:
        return nkeys.from_seed(nkeys.encode_seed(os.urandom(32), prefix))

    operator, account, system, user = (key(nkeys.PREFIX_BYTE_OPERATOR), key(nkeys.PREFIX_BYTE_ACCOUNT),
                                       key(nkeys.PREFIX_BYTE_ACCOUNT), key(nkeys.PREFIX_BYTE_USER))
    limits = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": True, "conn": -1,
              "leaf": -1}
    jetstream = {"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}
    accounts = {  # JetStream needs a system account
        account: _jwt(operator, account, "A", {"limits": {**limits, **jetstream}, "type": "account"}),
        system: _jwt(operator, system, "SYS", {"limits": limits, "type": "account"}),
    }
    port = _free_port()
    conf = tmp_path / "operator.conf"
    conf.write_text(
        f"operator: {_jwt(operator, operator, 'O', {'type': 'operator'})}\nresolver: MEMORY\n"
        f"system_account: {system.public_key.decode()}\n"
        f"resolver_preload: {{ {', '.join(f'{k.public_key.decode()}: {v}' for k, v in accounts.items())} }}\n"
    )
    creds = tmp_path / "user.creds"
    user_jwt = _jwt(account, user, "U", {"type": "user", "subs": -1, "data": -1, "payload": -1})
    creds.write_text(
        f"-----BEGIN NATS USER JWT-----\n{user_jwt}\n"
        "------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\n"
        f"{user.seed.decode()}\n------END USER NKEY SEED------\n"
    )
    creds.chmod(0o600)
    with _nats_server(port, tmp_path, "-c", str(conf), auth=False):
        yield port, creds

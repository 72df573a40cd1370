"""NATS connection settings shared by the shipper and the collector: the
URL, credentials and TLS files, the stream.  Stdlib only; nats-py is
imported by :func:`connect` when it runs."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit, urlunsplit

from . import DEFAULT_PREFIX, DEFAULT_STREAM, URL_ENV

if TYPE_CHECKING:  # only when connecting: `record --help` stays light
    import ssl

__all__ = ["DEFAULT_PREFIX", "DEFAULT_STREAM", "URL_ENV", "NatsConfig", "connect", "redact"]

#: How long the first connection to a server may take (seconds): a few
#: attempts (each up to 2 s) through every server of the URL.
FIRST_CONNECT_WAIT: Final = 5.0

#: JetStream's window for dropping a message id it has already stored (seconds).
DUPLICATE_WINDOW: Final = 120.0


class NatsMissing(Exception):
    """nats-py is not installed."""


class Unreachable(ConnectionError):
    """The first connection to the server failed; ``str()`` says why."""


class NoJetStream(Unreachable):
    """The server answers, but nothing on it answers JetStream's API."""


@dataclass(frozen=True)
class NatsConfig:
    url: str
    creds: str | None = None
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    stream: str = DEFAULT_STREAM
    prefix: str = DEFAULT_PREFIX
    #: Stream retention: messages older than this many seconds are deleted (None: kept).
    max_age: float | None = None
    replicas: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NatsConfig:
        return cls(**data)

    @property
    def shown_url(self) -> str:
        return redact(self.url)


def redact(url: str) -> str:
    """The URL without its user and password (for notices and logs)."""
    parts = []
    for one in url.split(","):
        split = urlsplit(one.strip())
        if split.username is not None or split.password is not None:
            host = split.hostname or ""
            if split.port is not None:
                host += f":{split.port}"
            one = urlunsplit((split.scheme, host, split.path, split.query, split.fragment))
        parts.append(one.strip())
    return ",".join(parts)


def nats_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("nats") is not None


def nkeys_missing() -> str | None:
    """Why a creds file cannot be used (nats-py signs with nkeys, which it
    imports only when connecting), or None.  An import, not a look-up: a
    module that is there but does not import (its own dependency, PyNaCl,
    missing) is as missing."""
    try:
        import nkeys  # noqa: F401
    except ImportError as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else "ImportError"
    return None


def tls_required(config: NatsConfig) -> bool:
    """Whether every connection must be TLS: a ``tls://`` URL anywhere in
    the list, ``--nats-ca`` or ``--nats-cert``."""
    schemes = {urlsplit(one.strip()).scheme for one in config.url.split(",")}
    return "tls" in schemes or bool(config.ca or config.cert)


def tls_context(config: NatsConfig) -> ssl.SSLContext | None:
    if not tls_required(config):
        return None
    import ssl

    context = ssl.create_default_context(cafile=config.ca)
    if config.cert:
        context.load_cert_chain(config.cert, config.key)
    return context


async def connect(
    config: NatsConfig, name: str, *, on_error: Callable[[str], None],
    on_disconnect: Callable[[], None] | None = None, on_reconnect: Callable[[], None] | None = None,
    first_wait: float = FIRST_CONNECT_WAIT, give_up: asyncio.Event | None = None,
) -> Any:
    """A connection that reconnects for ever once made; its errors go to
    ``on_error`` as one line each (never a traceback, never the password).
    The first connection is given ``first_wait`` seconds, or until
    ``give_up`` is set (the caller's own deadline came), then
    :class:`Unreachable` says why: nats-py would otherwise retry it for ever,
    and the caller could neither say so nor stop."""
    try:
        from nats.aio.client import Client
    except ImportError:
        raise NatsMissing("nats-py is not installed (pip install 'procevents[fleet]')") from None
    last_error: list[str] = []

    async def error_cb(exc: Exception) -> None:
        text = describe(exc)
        if nc.is_connected or nc.is_reconnecting:
            on_error(text)
        else:  # still trying the first time: the caller is told once, below
            last_error[:] = [text]

    async def disconnected_cb() -> None:
        if on_disconnect is not None:
            on_disconnect()

    async def reconnected_cb() -> None:
        if on_reconnect is not None:
            on_reconnect()

    options: dict[str, Any] = {
        "servers": [u.strip() for u in config.url.split(",")], "name": name, "allow_reconnect": True,
        "max_reconnect_attempts": -1, "reconnect_time_wait": 0.5, "connect_timeout": 2,
        "error_cb": error_cb, "disconnected_cb": disconnected_cb, "reconnected_cb": reconnected_cb,
        # Messages published while the server is away wait here, not in memory without bound.
        "pending_size": 32 * 1024 * 1024,
    }
    if config.creds:
        options["user_credentials"] = config.creds
    tls = tls_context(config)
    if tls is not None:
        options["tls"] = tls
    nc = Client() if tls is None else _tls_only_client()
    began = asyncio.get_running_loop().time()
    attempt = asyncio.ensure_future(nc.connect(**options))
    waits: set[asyncio.Future[Any]] = {attempt}
    if give_up is not None:
        waits.add(asyncio.ensure_future(give_up.wait()))
    try:
        await asyncio.wait(waits, timeout=first_wait, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        for waiting in waits:
            waiting.cancel()
        await _close_quietly(nc)
        raise
    for waiting in waits - {attempt}:
        waiting.cancel()
    if not attempt.done():
        attempt.cancel()
        await _close_quietly(nc)
        waited = asyncio.get_running_loop().time() - began
        raise Unreachable(last_error[0] if last_error else f"no answer within {waited:.1f} s")
    try:
        attempt.result()
    except BaseException:
        await _close_quietly(nc)
        raise
    return nc


def _tls_only_client() -> Any:
    """A nats-py client that sends no CONNECT (user, password, token, creds
    signature: every credential is in it) on a connection that is not TLS.

    nats-py itself upgrades to TLS only when the server's INFO says
    ``tls_required``, whatever the URL's scheme or the SSL context given:
    a server (or whoever answers in its place) that does not ask got the
    credentials in clear.  The check is on the socket itself, just before
    CONNECT is built, on the first connection and on every reconnection;
    were nats-py to stop calling ``_connect_command``, no CONNECT could be
    sent at all, and a nats-py without that method is refused here."""
    from nats.aio.client import Client
    from nats.errors import Error

    if not callable(getattr(Client, "_connect_command", None)):  # fail closed, never in clear
        raise NatsMissing("this nats-py cannot be held to TLS (it has no Client._connect_command)")

    class PlaintextServer(Error):  # an Error: nats-py goes on to the next server
        """The server did not do TLS; nothing was sent to it."""

    class TlsOnlyClient(Client):
        def _connect_command(self) -> bytes:
            if not _is_tls(self._transport):
                server = self._current_server
                where = f"{server.uri.hostname}:{server.uri.port}" if server is not None else "the server"
                raise PlaintextServer(
                    f"{where} does not do TLS (asked for by tls://, --nats-ca or --nats-cert): "
                    "refused before sending any credential"
                )
            command: bytes = super()._connect_command()
            return command

    return TlsOnlyClient()


def _is_tls(transport: Any) -> bool:
    """Whether nats-py's transport is a TLS connection (False when it cannot tell)."""
    writer = getattr(transport, "_io_writer", None)
    get_extra_info = getattr(writer, "get_extra_info", None)
    return get_extra_info is not None and get_extra_info("ssl_object") is not None


async def _close_quietly(nc: Any) -> None:
    try:
        await asyncio.wait_for(nc.close(), 2.0)
    except Exception:
        pass  # it never connected: nothing of ours is lost


def describe(exc: BaseException) -> str:
    """One line for a NATS error (without any URL's user or password)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, TimeoutError) or type(exc).__name__ == "TimeoutError":
        text = "timed out"
    if isinstance(exc, Unreachable):
        return _CREDENTIALS.sub(r"\1", text)
    name = type(exc).__name__
    return _CREDENTIALS.sub(r"\1", f"{name}: {text}" if text and text != name else name)


#: ``user:password@`` (or a token) after a URL's scheme, wherever it is in a text.
_CREDENTIALS: Final = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://)[^\s/@]*@")


async def ensure_stream(js: Any, config: NatsConfig) -> str:
    """Create the stream when it does not exist yet; returns what was done."""
    from nats.js.api import StorageType, StreamConfig
    from nats.js.errors import NotFoundError, ServiceUnavailableError

    try:
        await js.stream_info(config.stream)
        return f"stream {config.stream}"
    except NotFoundError:
        pass
    except ServiceUnavailableError as exc:
        # No responders at all (nats-py's 503 without a description), not a
        # JetStream that is there but busy: say what to do, not "description='None'".
        if getattr(exc, "description", None) is None:
            raise NoJetStream("the server has no JetStream: start nats-server with -js") from None
        raise
    await js.add_stream(
        StreamConfig(
            name=config.stream, subjects=[f"{config.prefix}.>"], storage=StorageType.FILE,
            max_age=config.max_age, num_replicas=config.replicas, duplicate_window=DUPLICATE_WINDOW,
        )
    )
    return f"stream {config.stream} (created)"

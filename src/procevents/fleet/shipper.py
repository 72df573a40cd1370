"""The shipper: a process of its own, started by ``record --nats``, that
publishes what the recorder has committed to a JetStream stream and moves
the outbox cursor once the stream has acknowledged it.

A process, not a thread: the recorder never waits for the network, nor
for the shipper's CPU (it would have to share the recorder's GIL).  The
recorder writes the settings as one JSON line on the shipper's stdin (a URL
with a password never appears in a command line), then a byte after each
commit (a wakeup), and closes it when it ends, even by kill -9: the shipper
then ships what is committed for at most its drain (DRAIN seconds, or
DURATION_DRAIN when the recording had a -D: that bounds the whole run) and
exits, a connection still being tried included.  SIGTERM does the same;
SIGINT is the recorder's to handle.  What is not
acknowledged stays in the outbox for the next run: nothing is lost, and the
message ids and the collector's checks make a second sending harmless.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any, Final

from .connect import NatsConfig

#: After the recorder ends, how long what it committed may still take to ship (seconds).
DRAIN: Final = 5.0
#: ... when it ended because its -D was over: -D bounds the whole run, so
#: ``record -D N --nats URL`` ends at most this long after N seconds of
#: recording, whatever the server does (what is not shipped waits in the
#: outbox for the next run).
DURATION_DRAIN: Final = 1.0
#: How long a published message may wait for its acknowledgement (seconds).
ACK_TIMEOUT: Final = 10.0
#: Message ids this process has sent remembered (a duplicate of one of them is its own).
SENT_IDS: Final = 10_000
#: ... and kept in the outbox for the next run (those of the last rounds).
SENT_KEPT: Final = 1000
#: How often an idle shipper looks at the database even without a wakeup.
IDLE_POLL: Final = 1.0
RETRY_MIN: Final = 0.25
RETRY_MAX: Final = 5.0


def _note(message: str) -> None:
    try:
        sys.stderr.write(f"procevents: nats: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


class ShipperProcess:
    """The recorder's side: start the shipper, wake it after commits, and
    let it finish at the end."""

    def __init__(self, db: str, config: NatsConfig, host: str, drain: float = DRAIN) -> None:
        self.drain = drain
        settings = {"db": os.path.abspath(db), "host": host, "nats": config.to_dict(), "drain": drain}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "procevents.fleet.shipper"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            close_fds=True, preexec_fn=_ignore_sigint,
        )
        assert self.proc.stdin is not None
        self._fd = self.proc.stdin.fileno()
        self.proc.stdin.write(json.dumps(settings).encode() + b"\n")
        self.proc.stdin.flush()
        os.set_blocking(self._fd, False)

    def poke(self) -> None:
        """Something was committed (a full pipe already says so)."""
        try:
            os.write(self._fd, b".")
        except (BlockingIOError, BrokenPipeError, OSError):
            pass

    def close(self, timeout: float | None = None) -> int | None:
        """Tell it the recording ended; wait for it to ship what it can
        (its drain, then up to 2 s to close its connection, and a little
        for its own end).  Idempotent."""
        if timeout is None:
            timeout = self.drain + 3.0
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                return self.proc.wait(2.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait()


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Shipper:
    """The shipping loop (asyncio, in the shipper process)."""

    def __init__(self, db: str, host: str, config: NatsConfig, drain: float = DRAIN) -> None:
        from .outbox import Outbox

        self.config = config
        self.drain = drain
        self.host = host
        self.outbox = Outbox(db, config.stream, config.prefix, host)
        self.closing = False
        self.deadline = float("inf")
        self.wake = asyncio.Event()
        #: Set when the drain is over: a connection still being tried gives up.
        self.give_up = asyncio.Event()
        self.shipped_events = 0
        self.shipped_procs = 0
        self.failing_since: float | None = None
        self.connected = False
        self._sessions_sent: list[bytes] = []
        #: Ids of messages this shipper (or the last one: Outbox.keep_sent)
        #: sent: stored (acknowledged), or perhaps (no acknowledgement in
        #: time).  Insertion-ordered, bounded.
        self._sent: dict[str, None] = dict.fromkeys(self.outbox.sent_ids())

    def stop(self) -> None:
        if not self.closing:
            self.closing = True
            self.deadline = time.monotonic() + self.drain
            asyncio.get_running_loop().call_later(self.drain, self.give_up.set)
        self.wake.set()

    def _on_stdin(self) -> None:
        try:
            data = os.read(0, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(0)
            self.stop()
        self.wake.set()

    async def _sleep(self, seconds: float) -> None:
        self.wake.clear()
        try:
            await asyncio.wait_for(self.wake.wait(), self._bounded(seconds))
        except TimeoutError:
            pass

    def _time_left(self) -> float:
        return self.deadline - time.monotonic()

    def _bounded(self, seconds: float) -> float:
        """``seconds``, or what is left of the drain if that is less."""
        return min(seconds, max(0.0, self._time_left())) if self.closing else seconds

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        os.set_blocking(0, False)
        loop.add_reader(0, self._on_stdin)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, self.stop)
        nc = await self._connect()
        if nc is None:
            self._summary()
            return 0
        try:
            await self._ship(nc)
        finally:
            self.connected = False  # closing it is no outage
            try:
                await asyncio.wait_for(nc.close(), 2.0)
            except Exception:
                pass
            self._summary()
            self._keep_sent()
            self.outbox.close()
        return 0

    async def _connect(self) -> Any:
        from .connect import FIRST_CONNECT_WAIT, connect, describe, ensure_stream

        retry = RETRY_MIN
        told = False
        while not (self.closing and self._time_left() <= 0):
            nc = None
            try:
                nc = await connect(
                    self.config, f"procevents-record {self.host}", on_error=self._error,
                    on_disconnect=self._disconnected, on_reconnect=self._reconnected,
                    # Ending: what is left of the drain, not a whole first
                    # wait; an attempt begun before the end gives up with it.
                    first_wait=self._bounded(FIRST_CONNECT_WAIT), give_up=self.give_up,
                )
                js = nc.jetstream(timeout=ACK_TIMEOUT)
                what = await ensure_stream(js, self.config)
            except Exception as exc:  # any failure to reach it: say so once, and try again
                if not told:
                    _note(f"cannot ship to {self.config.shown_url} ({describe(exc)}): events wait in the outbox")
                    told = True
                if nc is not None:
                    try:
                        await nc.close()
                    except Exception:
                        pass
                await self._sleep(retry)
                retry = min(RETRY_MAX, retry * 2)
                continue
            self.connected = True
            _note(f"shipping to {self.config.shown_url}, {what}, subjects {self.config.prefix}.{self._token()}.*")
            self._js = js
            return nc
        return None

    def _token(self) -> str:
        from .messages import subject_token

        return subject_token(self.host)

    def _error(self, text: str) -> None:
        if self.failing_since is None and self.connected:
            _note(f"{text}: events wait in the outbox")
            self.failing_since = time.monotonic()

    def _disconnected(self) -> None:
        if self.failing_since is None and self.connected:
            _note(f"disconnected from {self.config.shown_url}: events wait in the outbox")
            self.failing_since = time.monotonic()

    def _reconnected(self) -> None:
        self.wake.set()

    async def _ship(self, nc: Any) -> None:
        retry = RETRY_MIN
        while True:
            if self.closing and self._time_left() <= 0:
                return
            found = self.outbox.read()
            sessions = [m.payload for m in found.messages if m.kind == "sessions"]
            if not found.shipping and sessions == self._sessions_sent:
                if self.closing:
                    return
                await self._sleep(IDLE_POLL)
                continue
            if not nc.is_connected:
                await self._sleep(RETRY_MIN)
                continue
            acked, ok = await self._publish(found.messages)
            if acked.events or acked.procs or acked.sessions:
                before = self.outbox.cursor
                self.outbox.advance(acked)
                self.shipped_events += acked.events - before.events
                self.shipped_procs += sum(m.rows for m in found.messages if m.kind == "procs" and m.last <= acked.procs)
            if ok:
                self._sessions_sent = sessions
                retry = RETRY_MIN
                if self.failing_since is not None:
                    _note(f"shipping again after {time.monotonic() - self.failing_since:.1f} s")
                    self.failing_since = None
            else:
                await self._sleep(retry)
                retry = min(RETRY_MAX, retry * 2)

    async def _publish(self, messages: list[Any]) -> tuple[Any, bool]:
        """Publish in order; the cursor each kind may move to (the acknowledged
        prefix of its messages), and whether every message was acknowledged."""
        from .connect import describe
        from .outbox import Cursor

        js = self._js
        futures = []
        failure: str | None = None
        for message in messages:
            try:
                future = await js.publish_async(
                    message.subject, message.payload, wait_stall=ACK_TIMEOUT, headers={"Nats-Msg-Id": message.msg_id}
                )
            except Exception as exc:
                failure = describe(exc)
                break
            futures.append((message, future))
        if futures:
            await asyncio.wait([f for _, f in futures], timeout=max(0.1, self._bounded(ACK_TIMEOUT)))
        cursor = self.outbox.cursor
        acked = Cursor(cursor.events, cursor.procs, cursor.sessions)
        blocked: set[str] = set()
        for message, future in futures:
            good = future.done() and not future.cancelled() and future.exception() is None
            if good and getattr(future.result(), "duplicate", False) and not self._own(message):
                # The stream holds another message under this id: ours was
                # dropped.  The rows stay in the outbox (once the stream's
                # duplicate window has passed, the same id is stored again).
                good = False
                if failure is None:
                    failure = f"the stream already holds message {message.msg_id}, which this shipper did not send"
            elif good or not future.done():  # stored, or perhaps (its acknowledgement may have been lost)
                self._remember(message.msg_id)
            if not good:
                blocked.add(message.kind)
                if failure is None:
                    failure = "no acknowledgement in time" if not future.done() else describe(future.exception())
                future.cancel()
            elif message.kind not in blocked:
                setattr(acked, message.kind, message.last)
        ok = failure is None and len(futures) == len(messages)
        if not ok and self.failing_since is None:
            waiting = self.outbox.waiting() - (acked.events - cursor.events)
            _note(f"publishing to stream {self.config.stream} failed ({failure}): {waiting} events wait in the outbox")
            self.failing_since = time.monotonic()
        return acked, ok

    def _own(self, message: Any) -> bool:
        """Is a duplicate acknowledgement for ``message`` one of this shipper's own?"""
        # A session row is sent again with every round, and by the next run
        # (so that its end follows): a duplicate of it is that very state,
        # as its id is a MAC of the payload under the store's secret.
        return message.msg_id in self._sent or message.kind == "sessions"

    def _remember(self, msg_id: str) -> None:
        self._sent[msg_id] = None
        if len(self._sent) > SENT_IDS:
            del self._sent[next(iter(self._sent))]

    def _keep_sent(self) -> None:
        """The last ids sent, for the next run: a message whose
        acknowledgement did not come before the end is a duplicate when
        sent again, and its own (not a failure for the duplicate window)."""
        import sqlite3

        try:
            self.outbox.keep_sent(list(self._sent)[-SENT_KEPT:])
        except sqlite3.Error:
            pass  # the next run treats those duplicates as failures until the stream forgets them

    def _summary(self) -> None:
        try:
            waiting = self.outbox.waiting()
        except Exception:
            waiting = -1
        left = f", {waiting} not yet acknowledged (kept in the outbox)" if waiting else ""
        _note(
            f"{self.shipped_events} events and {self.shipped_procs} lifetime updates shipped to stream "
            f"{self.config.stream}{left}"
        )


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    line = sys.stdin.buffer.readline()
    try:
        settings = json.loads(line)
        config = NatsConfig.from_dict(settings["nats"])
        db, host = str(settings["db"]), str(settings["host"])
        drain = float(settings.get("drain", DRAIN))
    except (ValueError, KeyError, TypeError):
        _note("no settings on stdin (this process is started by procevents record --nats)")
        return 2
    from ..store.schema import StoreError

    try:
        shipper = Shipper(db, host, config, drain)
    except StoreError as exc:
        _note(f"error: {exc}")
        return 1

    async def body() -> int:
        shipper.wake = asyncio.Event()
        shipper.give_up = asyncio.Event()
        return await shipper.run()

    try:
        return asyncio.run(body())
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""asyncio: ``async for event in procevents.alisten(...)``.

The connector's non-blocking socket is watched by the running event loop
(``Connector.read_batch_async``); no thread.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType

from .connector import DEFAULT_RCVBUF, Connector
from .events import Event


class AsyncStream:
    """``async for event in alisten(...)``; also an async context manager.

    The subscription opens on first use and is closed (IGNORE sent) when the
    iteration ends, on ``aclose()``/``async with`` exit, or when the object
    is garbage collected after a ``break``.
    """

    def __init__(self, connector: Connector) -> None:
        self.connector = connector
        self._batch: list[Event] = []
        self._index = 0

    async def __aenter__(self) -> AsyncStream:
        if self.connector.closed and not self.connector.opened:
            self.connector.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self.connector.close()

    def __aiter__(self) -> AsyncStream:
        return self

    async def __anext__(self) -> Event:
        if not self.connector.opened:
            self.connector.open()
        elif self.connector.closed:
            raise StopAsyncIteration
        while self._index >= len(self._batch):
            try:
                self._batch = await self.connector.read_batch_async()
            except BaseException:
                self.connector.close()
                raise
            self._index = 0
        event = self._batch[self._index]
        self._index += 1
        return event


def alisten(
    events: Iterable[str] | str | None = None,
    *,
    rcvbuf: int = DEFAULT_RCVBUF,
    ack_timeout: float = 1.0,
    kernel_filter: bool = True,
) -> AsyncStream:
    """Asyncio flavour of :func:`listen`: ``async for event in alisten(...)``.

    The non-blocking socket is watched by the running event loop; no thread.
    """
    return AsyncStream(Connector(events, rcvbuf=rcvbuf, ack_timeout=ack_timeout, kernel_filter=kernel_filter))


__all__ = ["AsyncStream", "alisten"]

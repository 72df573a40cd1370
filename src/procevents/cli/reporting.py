"""``-S`` and ``--metrics`` for watch and record: the observers, the SIGUSR1
handler and the metrics server."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .options import RuntimeFailure
from .runner import stderr

if TYPE_CHECKING:
    from ..connector import Connector
    from ..enrich import Enricher
    from ..events import Event
    from ..metrics import MetricsObserver, MetricsServer
    from ..proctable import Proc
    from ..stats import CommandStats
    from ..store import StoreWriter


class Reporting:
    """Observers for ``-S`` and ``--metrics``, the SIGUSR1 handler, the server."""

    def __init__(
        self,
        *,
        stats: bool,
        metrics: tuple[str, int] | None,
        connector: Connector | None,
        table: Any = None,
        writer: StoreWriter | None = None,
        quiet: bool = False,
    ) -> None:
        from ..metrics import MetricsObserver
        from ..stats import CommandStats

        self.quiet = quiet
        self.address = metrics
        self.connector = connector
        self.table = table
        self.writer = writer
        self.stats: CommandStats | None = CommandStats() if stats else None
        self.metrics: MetricsObserver | None = MetricsObserver() if metrics is not None else None
        self.server: MetricsServer | None = None
        self.observers: list[Callable[[Event, Proc | None, Mapping[str, Any]], None]] = [
            observer for observer in (self.stats, self.metrics) if observer is not None
        ]
        self._previous_usr1: Any = None

    @classmethod
    def for_watch(cls, args: argparse.Namespace, connector: Connector, enricher: Enricher | None) -> Reporting:
        return cls(
            stats=args.stats, metrics=args.metrics, connector=connector,
            table=None if enricher is None else enricher.table, quiet=args.quiet,
        )

    def start(self) -> None:
        """Serve metrics and handle SIGUSR1; RuntimeFailure when the port cannot be had."""
        import signal

        if self.metrics is not None and self.address is not None:
            from ..metrics import MetricsError, serve

            try:
                self.server = serve(
                    self.address, self.metrics, connector=self.connector, table=self.table, writer=self.writer
                )
            except MetricsError as exc:
                raise RuntimeFailure(str(exc)) from None
            if not self.quiet:
                stderr(f"metrics at {self.server.url}")
        if self.stats is not None:
            self._previous_usr1 = signal.signal(signal.SIGUSR1, self._on_usr1)

    def _on_usr1(self, _signum: int, _frame: object) -> None:
        self.print_stats()

    def print_stats(self) -> None:
        if self.stats is not None:
            for line in self.stats.lines():
                stderr(line)

    def after(self) -> None:
        self.print_stats()

    def close(self) -> None:
        import signal

        if self._previous_usr1 is not None:
            signal.signal(signal.SIGUSR1, self._previous_usr1)
            self._previous_usr1 = None
        if self.server is not None:
            self.server.close()
            self.server = None


"""The live collection loop: closed 1m bars from the exchange's WebSocket, as whole minutes.

`LiveCollection.minutes()` yields `(minute_ms, bars)` once every symbol's bar of a minute
has closed (or the next minute has begun: `MinuteBatcher`), reconnecting with capped
exponential backoff whenever the stream drops (`TemporaryError`). Times are epoch
milliseconds (UTC, bar open time). The flow decides what to do with each minute.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from signalengine.core.errors import TemporaryError
from signalengine.core.retry import backoff_seconds
from signalengine.tasks import metrics
from signalengine.tasks.marketdata.batching import MinuteBars, MinuteBatcher, batch_minute
from signalengine.tasks.marketdata.exchange import ClosedBar, watch_closed_bars

RECONNECT_BASE_SECONDS = 0.5
RECONNECT_MAX_SECONDS = 30.0

# Runs one awaitable, or returns None without its result when the run is being stopped.
Race = Callable[[Awaitable[list[ClosedBar]]], Awaitable[list[ClosedBar] | None]]
Minute = tuple[int, MinuteBars]
_REMEMBERED_SOCKETS = 64  # WebSocket clients remembered to tell a new one from an old one

__all__ = ["RECONNECT_BASE_SECONDS", "RECONNECT_MAX_SECONDS", "LiveCollection", "Minute"]


class LiveCollection:
    """Closed bars of `symbols` from one exchange client, batched per minute."""

    def __init__(
        self,
        client: Any,
        symbols: list[str],
        *,
        exchange: str,
        logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
    ) -> None:
        self._client = client
        self._symbols = symbols
        self._exchange = exchange
        self._batcher = MinuteBatcher(symbols)
        self._log = logger or logging.getLogger(__name__)
        self._sockets: list[Any] = []  # strong refs, so ids are never reused while listed
        self.reconnects = 0

    def _count_reconnects(self) -> None:
        """Count every new WebSocket client ccxt opened after the first one.

        ccxt reconnects on its own when a socket drops between two watch calls, without
        raising to us; a new client object in `client.clients` is the only trace of it.
        """
        clients = getattr(self._client, "clients", None) or {}
        known = {id(c) for c in self._sockets}
        fresh = [c for c in list(clients.values()) if id(c) not in known]
        if not fresh:
            return
        if self._sockets:
            self.reconnects += len(fresh)
            metrics.COLLECTOR_RECONNECTS.labels(self._exchange).inc(len(fresh))
        self._sockets = (self._sockets + fresh)[-_REMEMBERED_SOCKETS:]

    async def minutes(self, race: Race | None = None) -> AsyncIterator[Minute]:
        """Complete minutes as they close; ends when `race` reports the run stopping."""
        attempt = 0
        while True:
            try:
                pending = watch_closed_bars(self._client, self._symbols)
                closed = await (race(pending) if race is not None else pending)
                self._count_reconnects()
                if closed is None:
                    return
                self._add(closed)
                attempt = 0
            except TemporaryError as error:
                self._count_reconnects()
                await self._reconnect_after(error, attempt)
                attempt += 1
                continue
            for minute in self._batcher.ready():
                yield minute

    def _add(self, closed: list[ClosedBar]) -> None:
        for bar in closed:
            metrics.COLLECTOR_MESSAGES.labels(self._exchange, bar.symbol).inc()
            self._batcher.add(bar.symbol, batch_minute(bar.raw, bar.event_ms), bar.raw)

    async def _reconnect_after(self, error: TemporaryError, attempt: int) -> None:
        metrics.COLLECTOR_ERRORS.labels(self._exchange, "stream").inc()
        delay = backoff_seconds(attempt, base=RECONNECT_BASE_SECONDS, cap=RECONNECT_MAX_SECONDS)
        self._log.warning("kline stream lost (%s); reconnecting in %.1f s", error, delay)
        await asyncio.sleep(delay)

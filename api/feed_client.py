"""One WebSocket client of the feed: its filters and its bounded outgoing queue."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from starlette.websockets import WebSocket

from signalengine.api.schemas import Signal
from signalengine.api.ws_schemas import SubscribeMessage

QueueItem = tuple[UUID | None, str, datetime | None]
"""(signal id or None, the message as JSON text, the signal's created_at or None)."""


@dataclass(frozen=True)
class Subscription:
    """A client's filters; None means everything."""

    symbols: frozenset[str] | None = None
    directions: frozenset[str] | None = None
    timeframes: frozenset[str] | None = None
    strategies: frozenset[str] | None = None
    exchanges: frozenset[str] | None = None

    @classmethod
    def from_message(cls, message: SubscribeMessage) -> Subscription:
        def _set(values: list[str] | None) -> frozenset[str] | None:
            return frozenset(values) if values else None

        return cls(
            symbols=_set(message.symbols),
            directions=_set(list(message.directions or [])),
            timeframes=_set(message.timeframes),
            strategies=_set(message.strategies),
            exchanges=_set(message.exchanges),
        )

    def matches(self, signal: Signal) -> bool:
        return (
            (self.symbols is None or signal.symbol in self.symbols)
            and (self.directions is None or signal.direction in self.directions)
            and (self.timeframes is None or signal.timeframe in self.timeframes)
            and (self.strategies is None or signal.strategy in self.strategies)
            and (self.exchanges is None or signal.exchange in self.exchanges)
        )


class FeedClient:
    """One WebSocket client: its filters and its bounded outgoing queue."""

    def __init__(self, websocket: WebSocket, *, queue_size: int) -> None:
        self.websocket = websocket
        self.queue: asyncio.Queue[QueueItem] = asyncio.Queue(maxsize=queue_size)
        self.subscription = Subscription()
        self.too_slow = asyncio.Event()
        self.replayed: set[UUID] = set()
        self.dropped = 0  # messages this client will never get (counted, not silent)
        self.first_dropped_at: datetime | None = None  # created_at of its first lost signal

    def offer(self, item: QueueItem) -> bool:
        """Queue a message; False (and flagged too slow) when the queue is full."""
        if self.too_slow.is_set():
            self._lose(item)
            return False
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.too_slow.set()
            self._lose(item)
            return False
        return True

    def _lose(self, item: QueueItem) -> None:
        self.dropped += 1
        created = item[2]
        if created is not None and (
            self.first_dropped_at is None or created < self.first_dropped_at
        ):
            self.first_dropped_at = created

    def drop_queued(self) -> int:
        """Empty the queue into the dropped count (the client is being closed); returns it."""
        while not self.queue.empty():
            self._lose(self.queue.get_nowait())
        return self.dropped

    def close_reason(self) -> str:
        """The 1013 reason: how much was lost and where to resume (<= 123 bytes)."""
        reason = f"too slow: {self.dropped} messages dropped"
        if self.first_dropped_at is not None:
            # `since` is exclusive, and one transaction's signals share a created_at
            moment = (self.first_dropped_at - timedelta(microseconds=1)).astimezone(UTC)
            since = moment.isoformat().replace("+00:00", "Z")  # URL-safe as it is
            reason += f"; resume with since={since}"
        return reason

"""One WebSocket client of the feed: its filters and its bounded outgoing queue."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from uuid import UUID

from starlette.websockets import WebSocket

from signalengine.api.schemas import Signal
from signalengine.api.ws_schemas import SubscribeMessage

QueueItem = tuple[UUID | None, str]
"""(signal id or None, the message as JSON text)."""


@dataclass(frozen=True)
class Subscription:
    """A client's filters; None means everything."""

    symbols: frozenset[str] | None = None
    directions: frozenset[str] | None = None
    timeframes: frozenset[str] | None = None

    @classmethod
    def from_message(cls, message: SubscribeMessage) -> Subscription:
        def _set(values: list[str] | None) -> frozenset[str] | None:
            return frozenset(values) if values else None

        return cls(
            symbols=_set(message.symbols),
            directions=_set(list(message.directions or [])),
            timeframes=_set(message.timeframes),
        )

    def matches(self, signal: Signal) -> bool:
        return (
            (self.symbols is None or signal.symbol in self.symbols)
            and (self.directions is None or signal.direction in self.directions)
            and (self.timeframes is None or signal.timeframe in self.timeframes)
        )


class FeedClient:
    """One WebSocket client: its filters and its bounded outgoing queue."""

    def __init__(self, websocket: WebSocket, *, queue_size: int) -> None:
        self.websocket = websocket
        self.queue: asyncio.Queue[QueueItem] = asyncio.Queue(maxsize=queue_size)
        self.subscription = Subscription()
        self.too_slow = asyncio.Event()
        self.replayed: set[UUID] = set()

    def offer(self, item: QueueItem) -> bool:
        """Queue a message; False (and flagged too slow) when the queue is full."""
        if self.too_slow.is_set():
            return False
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.too_slow.set()
            return False
        return True

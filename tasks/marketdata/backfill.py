"""History backfill over REST: page by page, resumable, idempotent, polite to the exchange.

Pages are 1000 1m bars (`fetch_ohlcv(..., limit=1000)`); each page is validated and
stored before the next is asked for, so an interrupted backfill resumes where the
database ends. HTTP 418/429 (ccxt `DDoSProtection`/`RateLimitExceeded`) and network
errors back off exponentially instead of failing the run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import ccxt

from signalengine.core.db import DbConn
from signalengine.core.errors import TemporaryExchangeError
from signalengine.core.retry import backoff_seconds
from signalengine.tasks.marketdata.batching import MINUTE_MS, frame_from_ohlcv
from signalengine.tasks.marketdata.ingest import store_frame
from signalengine.tasks.marketdata.klines import last_stored_ts

logger = logging.getLogger(__name__)
PAGE_BARS = 1000
MAX_PAGE_ATTEMPTS = 8
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 60.0

Acquire = Callable[[], Awaitable[None]]


@dataclass
class BackfillResult:
    """What one symbol's backfill did."""

    symbol: str
    start_ms: int
    end_ms: int
    pages: int = 0
    fetched: int = 0
    inserted: int = 0
    rejected: int = 0
    retries: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def resume_point(
    conn: DbConn,
    *,
    exchange: str,
    symbol: str,
    since_ms: int,
) -> int:
    """Where to start: after the newest stored bar when the store already reaches `since`."""
    last = last_stored_ts(conn, exchange=exchange, symbol=symbol)
    if last is None:
        return since_ms
    last_ms = int(last.value // 1_000_000)
    return max(since_ms, last_ms + MINUTE_MS)


async def _fetch_page(
    client: Any,
    symbol: str,
    since_ms: int,
    until_ms: int,
    result: BackfillResult,
    acquire: Acquire | None,
) -> list[list[Any]]:
    for attempt in range(MAX_PAGE_ATTEMPTS):
        if acquire is not None:
            await acquire()
        try:
            page: list[list[Any]] = await client.fetch_ohlcv(
                symbol, "1m", since=since_ms, limit=PAGE_BARS, params={"until": until_ms - 1}
            )
            return [row for row in page if since_ms <= row[0] < until_ms]
        except (ccxt.NetworkError, TemporaryExchangeError) as error:  # 418/429 included
            result.retries += 1
            delay = backoff_seconds(attempt, base=BACKOFF_BASE_SECONDS, cap=BACKOFF_MAX_SECONDS)
            logger.warning("%s: %s; backing off %.1f s", symbol, type(error).__name__, delay)
            await asyncio.sleep(delay)
    raise TemporaryExchangeError(f"{symbol}: gave up after {MAX_PAGE_ATTEMPTS} attempts")


async def backfill_symbol(
    client: Any,
    conn: DbConn,
    *,
    exchange: str,
    symbol: str,
    since_ms: int,
    until_ms: int,
    timeframes: list[str],
    acquire: Acquire | None = None,
    on_page: Callable[[BackfillResult], None] | None = None,
) -> BackfillResult:
    """Fetch and store [since_ms, until_ms) of one symbol, resuming from the database."""
    cursor = resume_point(conn, exchange=exchange, symbol=symbol, since_ms=since_ms)
    result = BackfillResult(symbol, cursor, until_ms)
    while cursor < until_ms:
        rows = await _fetch_page(client, symbol, cursor, until_ms, result, acquire)
        if not rows:
            break
        stored = store_frame(
            conn,
            frame_from_ohlcv(exchange, symbol, rows),
            exchange=exchange,
            known_symbols=[symbol],
            timeframes=timeframes,
            source="backfill",
        )
        result.pages += 1
        result.fetched += len(rows)
        result.inserted += stored.inserted
        result.rejected += stored.rejected
        cursor = int(rows[-1][0]) + MINUTE_MS
        if on_page is not None:
            on_page(result)
    return result

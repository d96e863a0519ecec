"""REST history into the database: page by page, resumable, idempotent, polite.

One path serves the `backfill` command, the stream's catch-up and its gap fills. Pages
are 1000 1m bars (`fetch_ohlcv(..., limit=1000)`); each page is validated and stored
before the next is asked for, so progress survives any failure and a rerun resumes
where the database ends. Every request goes through `exchange.RestPolicy`: a rate-limit
slot, then retries of HTTP 418/429 and network errors with capped exponential backoff
that honours `Retry-After`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from signalengine.core.db import DbConn
from signalengine.tasks import metrics
from signalengine.tasks.marketdata.batching import MINUTE_MS, frame_from_ohlcv, missing_range
from signalengine.tasks.marketdata.exchange import Acquire, RestPolicy, fetch_ohlcv_page
from signalengine.tasks.marketdata.ingest import Watermarks, store_frame
from signalengine.tasks.marketdata.klines import last_stored_ts

logger = logging.getLogger(__name__)
PAGE_BARS = 1000
MAX_PAGE_ATTEMPTS = 8
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 60.0

__all__ = ["BackfillResult", "backfill_symbol", "fill_gaps", "resume_point", "store_range"]


@dataclass
class BackfillResult:
    """What one symbol's backfill (or one gap fill) did."""

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


def _oldest_stored_ms(conn: DbConn, *, exchange: str, symbol: str) -> int:
    """Open time (epoch ms) of the oldest stored 1m bar; call only when one exists."""
    row: Any = conn.execute(
        "SELECT min(ts) AS ts FROM klines WHERE exchange = %s AND symbol = %s",
        (exchange, symbol),
    ).fetchone()
    value = row["ts"] if isinstance(row, dict) else row[0]  # dict or tuple rows
    return int(value.timestamp() * 1000)


def resume_point(
    conn: DbConn,
    *,
    exchange: str,
    symbol: str,
    since_ms: int,
) -> int:
    """Where to start: after the newest stored bar when the store already reaches `since`.

    A `since` before the oldest stored bar starts there: that range is missing (bars
    fetched again over the stored range come back as counted duplicates).
    """
    last = last_stored_ts(conn, exchange=exchange, symbol=symbol)
    if last is None or since_ms < _oldest_stored_ms(conn, exchange=exchange, symbol=symbol):
        return since_ms
    last_ms = int(last.value // 1_000_000)
    return max(since_ms, last_ms + MINUTE_MS)


def _policy(result: BackfillResult, acquire: Acquire | None) -> RestPolicy:
    def count(_: Exception) -> None:
        result.retries += 1

    return RestPolicy(
        acquire=acquire,
        max_attempts=MAX_PAGE_ATTEMPTS,
        base_seconds=BACKOFF_BASE_SECONDS,
        cap_seconds=BACKOFF_MAX_SECONDS,
        on_retry=count,
    )


async def store_range(
    client: Any,
    conn: DbConn,
    *,
    exchange: str,
    symbol: str,
    result: BackfillResult,
    timeframes: list[str],
    known_symbols: list[str],
    source: str,
    acquire: Acquire | None = None,
    marks: Watermarks | None = None,
    on_page: Callable[[BackfillResult], None] | None = None,
) -> BackfillResult:
    """Fetch and store [result.start_ms, result.end_ms) of one symbol, a page at a time.

    `result` is updated after every stored page, so a caller that catches a failure still
    knows what was stored; `marks` (the stream's watermarks) advance page by page too.
    """
    policy = _policy(result, acquire)
    cursor = result.start_ms
    while cursor < result.end_ms:
        rows = await fetch_ohlcv_page(client, symbol, cursor, result.end_ms, policy=policy)
        if not rows:
            break
        stored = store_frame(
            conn,
            frame_from_ohlcv(exchange, symbol, rows),
            exchange=exchange,
            known_symbols=known_symbols,
            timeframes=timeframes,
            source=source,
            marks=marks,
        )
        result.pages += 1
        result.fetched += len(rows)
        result.inserted += stored.inserted
        result.rejected += stored.rejected
        cursor = int(rows[-1][0]) + MINUTE_MS
        if on_page is not None:
            on_page(result)
    return result


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
    return await store_range(
        client,
        conn,
        exchange=exchange,
        symbol=symbol,
        result=BackfillResult(symbol, cursor, until_ms),
        timeframes=timeframes,
        known_symbols=[symbol],
        source="backfill",
        acquire=acquire,
        on_page=on_page,
    )


async def fill_gaps(
    conn: DbConn,
    client: Any,
    *,
    marks: Watermarks,
    upto_ms: int,
    default_start_ms: int,
    timeframes: list[str],
    acquire: Acquire | None = None,
    tally: list[BackfillResult] | None = None,
) -> int:
    """Fetch every missing minute before `upto_ms` (exclusive) over REST; returns bars stored.

    Each symbol starts after its watermark (at `default_start_ms` before its first bar).
    Every page's result is appended to `tally` as it is stored, so a caller that retries
    after an error can still report everything its attempts stored.
    """
    stored = 0
    symbols = list(marks.by_symbol)
    for symbol in symbols:
        last = marks.by_symbol.get(symbol)
        span = (default_start_ms, upto_ms) if last is None else missing_range(last, upto_ms)
        if span is None or span[1] <= span[0]:
            continue
        result = BackfillResult(symbol, span[0], span[1])
        if tally is not None:
            tally.append(result)
        await store_range(
            client,
            conn,
            exchange=marks.exchange,
            symbol=symbol,
            result=result,
            timeframes=timeframes,
            known_symbols=symbols,
            source="rest",
            acquire=acquire,
            marks=marks,
        )
        stored += result.inserted
        if last is not None:
            metrics.GAP_BACKFILLED.labels(marks.exchange).inc(result.inserted)
    return stored

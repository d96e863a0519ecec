"""Getting 1m bars into the database: REST catch-up and live micro-batches.

All bar times are epoch milliseconds (UTC, bar open time) on the way in and
`timestamptz` in the database. Every write goes through validation, so a malformed
kline lands in `klines_rejected` and the rest of its batch is still stored.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from signalengine.core.db import DbConn
from signalengine.tasks import metrics
from signalengine.tasks.marketdata.batching import (
    MINUTE_MS,
    frame_from_ohlcv,
    frame_from_raw_klines,
    missing_range,
)
from signalengine.tasks.marketdata.klines import StoreResult, last_stored_ts, store_klines
from signalengine.tasks.marketdata.validation import validate_klines

logger = logging.getLogger(__name__)


@dataclass
class Watermarks:
    """Open time (ms) of the newest stored 1m bar per symbol; None before the first."""

    exchange: str
    by_symbol: dict[str, int | None] = field(default_factory=dict)

    @classmethod
    def load(cls, conn: DbConn, *, exchange: str, symbols: list[str]) -> Watermarks:
        marks: dict[str, int | None] = {}
        for symbol in symbols:
            ts = last_stored_ts(conn, exchange=exchange, symbol=symbol)
            marks[symbol] = None if ts is None else int(ts.value // 1_000_000)
        return cls(exchange, marks)

    def advance(self, frame: pd.DataFrame) -> None:
        """Move marks forward to the newest stored bar of each symbol in `frame`."""
        if frame.empty:
            return
        newest = frame.groupby("symbol")["ts"].max()
        for symbol, ts in newest.items():
            ms = int(pd.Timestamp(ts).value // 1_000_000)
            current = self.by_symbol.get(str(symbol))
            if current is None or ms > current:
                self.by_symbol[str(symbol)] = ms

    def oldest(self) -> int | None:
        values = [v for v in self.by_symbol.values() if v is not None]
        return min(values) if values else None


def store_frame(
    conn: DbConn,
    frame: pd.DataFrame,
    *,
    exchange: str,
    known_symbols: list[str],
    timeframes: list[str],
    source: str,
    marks: Watermarks | None = None,
) -> StoreResult:
    """Validate and store; count what happened in the stream's metrics."""
    batch = validate_klines(frame, known_symbols=known_symbols)
    result = store_klines(conn, batch, timeframes=timeframes, source=source)
    metrics.KLINES_STORED.labels(exchange, source).inc(result.inserted)
    metrics.KLINES_REJECTED.labels(exchange, source).inc(result.rejected)
    if marks is not None:
        marks.advance(batch.valid)
    return result


async def fetch_range(client: Any, *, symbol: str, start_ms: int, end_ms: int) -> list[list[Any]]:
    """1m OHLCV rows with open time in [start_ms, end_ms) through ccxt pagination."""
    from signalengine.tasks.marketdata.exchange import fetch_ohlcv_range

    if end_ms <= start_ms:
        return []
    return await fetch_ohlcv_range(client, symbol, start_ms, end_ms)


async def fill_gaps(
    conn: DbConn,
    client: Any,
    *,
    marks: Watermarks,
    upto_ms: int,
    default_start_ms: int,
    timeframes: list[str],
) -> int:
    """Fetch every missing minute before `upto_ms` (exclusive) over REST; returns bars stored."""
    stored = 0
    symbols = list(marks.by_symbol)
    for symbol in symbols:
        last = marks.by_symbol.get(symbol)
        span = (default_start_ms, upto_ms) if last is None else missing_range(last, upto_ms)
        if span is None or span[1] <= span[0]:
            continue
        rows = await fetch_range(client, symbol=symbol, start_ms=span[0], end_ms=span[1])
        frame = frame_from_ohlcv(marks.exchange, symbol, rows)
        result = store_frame(
            conn,
            frame,
            exchange=marks.exchange,
            known_symbols=symbols,
            timeframes=timeframes,
            source="rest",
            marks=marks,
        )
        stored += result.inserted
        if last is not None:
            metrics.GAP_BACKFILLED.labels(marks.exchange).inc(result.inserted)
    return stored


def store_live_minute(
    conn: DbConn,
    bars: dict[str, dict[str, Any]],
    *,
    marks: Watermarks,
    timeframes: list[str],
) -> StoreResult:
    """Store one minute of closed bars received over the WebSocket."""
    frame = frame_from_raw_klines(marks.exchange, bars)
    return store_frame(
        conn,
        frame,
        exchange=marks.exchange,
        known_symbols=list(marks.by_symbol),
        timeframes=timeframes,
        source="ws",
        marks=marks,
    )


def primary_closes(after_ms: int, upto_ms: int, primary_minutes: int) -> list[int]:
    """Close times (ms) of primary bars closing in (after_ms, upto_ms]."""
    step = primary_minutes * MINUTE_MS
    first = (after_ms // step + 1) * step
    return list(range(first, upto_ms + 1, step))


async def exchange_time_ms(client: Any) -> int:
    """The exchange's clock (epoch ms); the simulator's runs at its own speed."""
    import ccxt

    from signalengine.tasks.marketdata.exchange import translate_error

    try:
        return int(await client.fetch_time())
    except ccxt.BaseError as error:
        raise translate_error(error) from error


def stored_span(
    conn: DbConn,
    *,
    exchange: str,
    symbols: list[str],
    start: str | None,
    end: str | None,
) -> tuple[int, int]:
    """First and last stored 1m open time (ms) of the symbols within [start, end)."""
    row = conn.execute(
        "SELECT min(ts) AS lo, max(ts) AS hi FROM klines WHERE exchange = %s"
        " AND symbol = ANY(%s) AND (%s::timestamptz IS NULL OR ts >= %s::timestamptz)"
        " AND (%s::timestamptz IS NULL OR ts < %s::timestamptz)",
        (exchange, symbols, start, start, end, end),
    ).fetchone()
    if row is None or row["lo"] is None:
        raise ValueError(f"no stored klines for {symbols} on {exchange} in [{start}, {end})")
    return (
        int(pd.Timestamp(row["lo"]).value // 1_000_000),
        int(pd.Timestamp(row["hi"]).value // 1_000_000),
    )

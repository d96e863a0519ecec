"""Getting 1m bars into the database: validated writes and live micro-batches.

REST pages (catch-up, gap fills, backfill) go through `backfill.store_range`.

All bar times are epoch milliseconds (UTC, bar open time) on the way in and
`timestamptz` in the database. Every write goes through validation, so a malformed
kline lands in `klines_rejected` and the rest of its batch is still stored.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from signalengine.core.db import DbConn
from signalengine.core.errors import ConfigurationError
from signalengine.tasks import metrics
from signalengine.tasks.engine.buckets import OHLCV_COLUMNS
from signalengine.tasks.marketdata.batching import (
    MINUTE_MS,
    MinuteBars,
    frame_from_raw_klines,
)
from signalengine.tasks.marketdata.klines import StoreResult, last_stored_ts, store_klines
from signalengine.tasks.marketdata.validation import validate_klines

logger = logging.getLogger(__name__)


@dataclass
class Watermarks:
    """Open time (ms) of the newest stored 1m bar per symbol; None before the first."""

    exchange: str
    by_symbol: dict[str, int | None] = field(default_factory=dict)
    # every validated frame stored since the last `take_stored` (WebSocket minutes and
    # REST gap fills alike), kept only while `journal` is on: the stream's in-memory
    # windows advance from exactly what was written
    journal: bool = False
    _stored: list[pd.DataFrame] = field(default_factory=list, repr=False)

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
        if self.journal:
            self._stored.append(frame)
        # newest open time (ms) per symbol in numpy (a groupby costs more than a minute's
        # bars); in symbol order, NaN skipped, as groupby gives them
        codes, symbols = pd.factorize(frame["symbol"], sort=True)
        ms = pd.DatetimeIndex(frame["ts"]).as_unit("ns").asi8 // 1_000_000
        newest = np.full(len(symbols), np.iinfo(np.int64).min)
        np.maximum.at(newest, codes[codes >= 0], ms[codes >= 0])
        for symbol, last in zip(np.asarray(symbols, dtype=object), newest.tolist(), strict=True):
            current = self.by_symbol.get(str(symbol))
            if current is None or last > current:
                self.by_symbol[str(symbol)] = last

    def take_stored(self) -> pd.DataFrame:
        """The frames stored since the last call, as one (empty when none); clears them."""
        frames, self._stored = self._stored, []
        if not frames:
            return pd.DataFrame(columns=["symbol", "ts", *OHLCV_COLUMNS])
        return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)

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


def store_live_minute(
    conn: DbConn,
    bars: MinuteBars,
    *,
    marks: Watermarks,
    timeframes: list[str],
) -> StoreResult:
    """Store one minute of closed bars received over the WebSocket (every payload)."""
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


def stored_window(
    conn: DbConn,
    *,
    exchange: str,
    symbols: Sequence[str],
    start: str | None,
    end: str | None,
    default_days: float,
) -> tuple[pd.Timestamp, pd.Timestamp]:
    """[start, end) of a job over stored bars: the given ISO times, else ending at the close
    of the newest stored 1m bar (the same in every process) and `default_days` long, from
    the first stored bar if that is later. ConfigurationError (one line) when bad or empty."""
    try:
        stop = pd.Timestamp(end, tz="UTC") if end else None
        begin = pd.Timestamp(start, tz="UTC") if start else None
    except ValueError as e:
        raise ConfigurationError(f"bad --start/--end: {e}") from e
    try:
        first_ms, last_ms = stored_span(
            conn,
            exchange=exchange,
            symbols=list(symbols),
            start=None if begin is None else begin.isoformat(),
            end=None if stop is None else stop.isoformat(),
        )
    except ValueError:
        raise ConfigurationError(
            f"no stored 1m bars of {', '.join(symbols)} on {exchange} in the window:"
            " backfill or import first"
        ) from None
    first, last = (pd.Timestamp(ms, unit="ms", tz="UTC") for ms in (first_ms, last_ms))
    stop = last + pd.Timedelta(minutes=1) if stop is None else stop
    begin = max(stop - pd.Timedelta(days=default_days), first) if begin is None else begin
    if begin >= stop:
        raise ConfigurationError(
            f"--start {begin.isoformat()} must be before --end {stop.isoformat()}"
        )
    return begin, stop

"""Live collection logic: closed 1m bars grouped into one micro-batch per minute.

Times are epoch milliseconds (UTC) as the exchange sends them; a bar is identified by
its open time `t`. Prefect-free, so it is tested directly and the flow stays thin.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

MINUTE_MS = 60_000
# One minute's closed-kline payloads per symbol, in arrival order (usually one each).
MinuteBars = dict[str, list[dict[str, Any]]]
# How long (real seconds) a minute waits for its slowest symbol before it is flushed;
# a symbol that misses it is filled over REST by the gap check.
FLUSH_AFTER_SECONDS = 3.0


@dataclass
class MinuteBatcher:
    """Collects closed bars until every symbol has reported a minute (or it times out)."""

    symbols: list[str]
    flush_after: float = FLUSH_AFTER_SECONDS
    _pending: dict[int, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    _first_seen: dict[int, float] = field(default_factory=dict)
    _flushed_upto: int = -1

    def add(self, symbol: str, minute_ms: int, raw: dict[str, Any]) -> None:
        """Queue one closed bar (raw exchange fields kept for validation).

        Every distinct payload of a minute is kept, not just the last one: a malformed
        kline followed by the genuine one must both reach validation, so the malformed
        one is recorded in `klines_rejected`. Exact repeats (duplicates) are kept once.
        """
        payloads = self._pending.setdefault(minute_ms, {}).setdefault(symbol, [])
        if raw not in payloads:
            payloads.append(raw)
        # a late (out-of-order) bar of a minute already flushed gets a batch of its own
        late = minute_ms <= self._flushed_upto
        self._first_seen.setdefault(minute_ms, 0.0 if late else time.monotonic())

    def depth(self) -> int:
        return sum(len(p) for bars in self._pending.values() for p in bars.values())

    def ready(self, now: float | None = None) -> list[tuple[int, MinuteBars]]:
        """Minutes to process now, oldest first.

        A minute is ready when all symbols reported it, when a later minute has been
        reported by every symbol that reported it, or after `flush_after` seconds.
        """
        now = time.monotonic() if now is None else now
        newest = max(self._pending, default=None)
        out = []
        for minute in sorted(self._pending):
            bars = self._pending[minute]
            complete = set(bars) >= set(self.symbols)
            overtaken = newest is not None and minute < newest
            stale = now - self._first_seen[minute] >= self.flush_after
            if complete or overtaken or stale:
                out.append((minute, self._pending.pop(minute)))
                self._first_seen.pop(minute, None)
                self._flushed_upto = max(self._flushed_upto, minute)
            else:
                break
        return out


def frame_from_ohlcv(exchange: str, symbol: str, rows: Iterable[list[Any]]) -> pd.DataFrame:
    """ccxt OHLCV rows `[ms, open, high, low, close, volume]` in the storage layout."""
    frame = pd.DataFrame(list(rows), columns=["ts", "open", "high", "low", "close", "volume"])
    frame.insert(0, "symbol", symbol)
    frame.insert(0, "exchange", exchange)
    return frame


def raw_kline_row(exchange: str, symbol: str, raw: dict[str, Any]) -> dict[str, Any]:
    """A Binance kline payload (`k`: t, o, h, l, c, v as sent, unvalidated) as a kline row."""
    return {
        "exchange": exchange,
        "symbol": symbol,
        "ts": raw.get("t"),
        "open": raw.get("o"),
        "high": raw.get("h"),
        "low": raw.get("l"),
        "close": raw.get("c"),
        "volume": raw.get("v"),
    }


def frame_from_raw_klines(exchange: str, bars: MinuteBars) -> pd.DataFrame:
    """Binance kline payloads (`k` objects: t, o, h, l, c, v as sent), all of every symbol."""
    rows = [raw_kline_row(exchange, symbol, raw) for symbol, raws in bars.items() for raw in raws]
    return pd.DataFrame(
        rows, columns=["exchange", "symbol", "ts", "open", "high", "low", "close", "volume"]
    )


def missing_range(last_stored_ms: int | None, incoming_ms: int) -> tuple[int, int] | None:
    """The [start, end) open-time range absent between the watermark and an incoming bar."""
    if last_stored_ms is None:
        return None
    start = last_stored_ms + MINUTE_MS
    return (start, incoming_ms) if incoming_ms > start else None


def shard_symbols(symbols: list[str], shard: str | None) -> list[str]:
    """This shard's symbols for `shard = "i/n"`, by a hash stable across processes."""
    if not shard:
        return symbols
    try:
        index_text, count_text = shard.split("/")
        index, count = int(index_text), int(count_text)
    except ValueError as error:
        raise ValueError(f"shard must look like i/n, got {shard!r}") from error
    if not 0 <= index < count:
        raise ValueError(f"shard index must be in [0, {count}), got {index}")
    import zlib

    return [s for s in symbols if zlib.crc32(s.encode()) % count == index]


def batch_minute(raw: dict[str, Any], event_ms: int | None) -> int:
    """The minute (ms) a closed kline is batched under, even when its `t` is malformed."""
    try:
        return int(raw["t"]) // MINUTE_MS * MINUTE_MS
    except (KeyError, TypeError, ValueError):
        reference = event_ms if event_ms is not None else int(time.time() * 1000)
        return (reference // MINUTE_MS - 1) * MINUTE_MS

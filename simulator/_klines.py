"""Binance-shaped klines from the synthetic market: REST rows, WS events, partial bars.

A kline record (`KLINE_DTYPE`) is a market bar plus the fields Binance adds: close time,
quote volume, trade count, taker-buy volumes and first/last trade ids. The extras are
derived from the bar, so they are as deterministic as the bar itself. Times are epoch
milliseconds, UTC.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from signalengine.simulator.market import (
    BAR_DTYPE,
    EPOCH_MS,
    MINUTE_MS,
    market_bars,
    reduce_buckets,
    symbol_profile,
)

# Intervals served; all divide a day, so buckets align to the Unix epoch like Binance's.
INTERVAL_MINUTES: dict[str, int] = {
    "1m": 1,
    "3m": 3,
    "5m": 5,
    "15m": 15,
    "30m": 30,
    "1h": 60,
    "2h": 120,
    "4h": 240,
    "6h": 360,
    "8h": 480,
    "12h": 720,
    "1d": 1440,
}
PARTIAL_STEPS = 4  # a 1m bar is seen at 1/4, 2/4, 3/4 of its minute before it closes
KLINE_DTYPE = np.dtype(
    [
        ("ts", "i8"),
        ("open", "f8"),
        ("high", "f8"),
        ("low", "f8"),
        ("close", "f8"),
        ("volume", "f8"),
        ("close_ts", "i8"),
        ("quote_volume", "f8"),
        ("trades", "i8"),
        ("taker_base", "f8"),
        ("taker_quote", "f8"),
        ("first_trade", "i8"),
        ("last_trade", "i8"),
    ]
)
Klines = npt.NDArray[np.void]
_F64 = npt.NDArray[np.float64]
_TRADE_ID_STRIDE = 100_000  # trade ids of minute m are m * stride + 0 .. n - 1
_QUOTE_DECIMALS = 6


def _round(values: _F64, decimals: int) -> _F64:
    scale = 10.0**decimals
    return np.rint(values * scale) / scale


def _with_extras(bars: npt.NDArray[np.void], symbol: str) -> Klines:
    """1m bars plus Binance's extra fields."""
    profile = symbol_profile(symbol)
    out = np.empty(len(bars), dtype=KLINE_DTYPE)
    for name in ("ts", "open", "high", "low", "close", "volume"):
        out[name] = bars[name]
    o, h, lo, c, v = (bars[n] for n in ("open", "high", "low", "close", "volume"))
    typical = (o + h + lo + c) / 4.0
    span = np.where(h > lo, h - lo, 1.0)
    taker_share = np.clip(0.5 + 0.35 * (c - o) / span, 0.05, 0.95)
    trades = np.clip(v / profile.base_volume * 600.0, 1, _TRADE_ID_STRIDE - 1).astype(np.int64)
    out["close_ts"] = bars["ts"] + MINUTE_MS - 1
    out["quote_volume"] = _round(v * typical, _QUOTE_DECIMALS)
    out["trades"] = trades
    out["taker_base"] = _round(v * taker_share, profile.volume_decimals)
    out["taker_quote"] = _round(out["taker_base"] * typical, _QUOTE_DECIMALS)
    out["first_trade"] = (bars["ts"] - EPOCH_MS) // MINUTE_MS * _TRADE_ID_STRIDE
    out["last_trade"] = out["first_trade"] + trades - 1
    return out


def _aggregate(klines: Klines, minutes: int, symbol: str) -> Klines:
    """Contiguous 1m klines (a whole number of buckets, aligned) into `minutes` klines."""
    if minutes == 1:
        return klines
    count = len(klines) // minutes
    ohlcv = np.empty(count * minutes, dtype=BAR_DTYPE)
    for name in BAR_DTYPE.names or ():
        ohlcv[name] = klines[name][: count * minutes]
    bars = reduce_buckets(ohlcv, minutes, symbol=symbol)
    chunk = klines[: count * minutes].reshape(count, minutes)
    decimals = symbol_profile(symbol).volume_decimals
    out = np.empty(count, dtype=KLINE_DTYPE)
    for name in ("ts", "open", "high", "low", "close", "volume"):
        out[name] = bars[name]
    out["close_ts"] = chunk["close_ts"][:, -1]
    out["quote_volume"] = _round(chunk["quote_volume"].sum(axis=1), _QUOTE_DECIMALS)
    out["trades"] = chunk["trades"].sum(axis=1)
    out["taker_base"] = _round(chunk["taker_base"].sum(axis=1), decimals)
    out["taker_quote"] = _round(chunk["taker_quote"].sum(axis=1), _QUOTE_DECIMALS)
    out["first_trade"] = chunk["first_trade"][:, 0]
    out["last_trade"] = chunk["last_trade"][:, -1]
    return out


def interval_klines(
    symbol: str, interval: str, first_open: int, last_open: int, *, seed: int
) -> Klines:
    """Klines of `interval` whose open time is in [first_open, last_open], both aligned."""
    width = INTERVAL_MINUTES[interval] * MINUTE_MS
    if last_open < first_open:
        return np.empty(0, dtype=KLINE_DTYPE)
    bars = market_bars(symbol, first_open, last_open + width, seed=seed)
    return _aggregate(_with_extras(bars, symbol), INTERVAL_MINUTES[interval], symbol)


def _partial_minute(kline: Klines, step: int, symbol: str) -> Klines:
    """A 1m kline as seen `step` quarters into its minute; quarter 4 is the final bar."""
    profile = symbol_profile(symbol)
    rec = kline.copy()
    o, h, lo, c = (float(kline[n][0]) for n in ("open", "high", "low", "close"))
    minute = int((kline["ts"][0] - EPOCH_MS) // MINUTE_MS)
    closes = []
    for k in range(1, step + 1):
        # a deterministic wiggle around the straight line from open to the final close
        wiggle = ((minute * 2_654_435_761 + k * 40_503) % 1000) / 1000.0 - 0.5
        guess = o + (c - o) * k / PARTIAL_STEPS + (h - lo) * 0.6 * wiggle
        closes.append(min(max(round(guess, profile.price_decimals), lo), h))
    share = step / PARTIAL_STEPS
    rec["close"] = closes[-1]
    rec["high"] = max(o, *closes)
    rec["low"] = min(o, *closes)
    for name, decimals in (
        ("volume", profile.volume_decimals),
        ("quote_volume", _QUOTE_DECIMALS),
        ("taker_base", profile.volume_decimals),
        ("taker_quote", _QUOTE_DECIMALS),
    ):
        rec[name] = _round(kline[name] * share, decimals)
    trades = max(1, int(kline["trades"][0]) * step // PARTIAL_STEPS)
    rec["trades"] = trades
    rec["last_trade"] = rec["first_trade"] + trades - 1
    return rec


def partial_kline(
    symbol: str, interval: str, open_ms: int, at_ms: int, *, seed: int
) -> Klines | None:
    """The still-open kline opened at `open_ms` as seen at sim time `at_ms`, or None.

    Whole minutes before `at_ms` count with their final values; the minute in progress
    counts with its value at the last quarter-minute reached.
    """
    minute_start = at_ms - (at_ms - EPOCH_MS) % MINUTE_MS
    step = (at_ms - minute_start) * PARTIAL_STEPS // MINUTE_MS
    last = minute_start if step > 0 else minute_start - MINUTE_MS
    if last < open_ms:
        return None
    minutes = _with_extras(market_bars(symbol, open_ms, last + MINUTE_MS, seed=seed), symbol)
    if step > 0:
        minutes[-1:] = _partial_minute(minutes[-1:], int(step), symbol)
    rec = _aggregate(minutes, len(minutes), symbol)
    rec["close_ts"] = open_ms + INTERVAL_MINUTES[interval] * MINUTE_MS - 1
    return rec


def klines_window(
    now_ms: int, width: int, *, start: int | None, end: int | None, limit: int
) -> tuple[int, int]:
    """First and last open time to serve (Binance's rules, which Bybit's match): closed
    bars only, from `start` on when given, else the newest `limit` up to `end`."""
    last_closed = (now_ms + 1 - width) // width * width  # newest t with t + width - 1 <= now
    hi = last_closed if end is None else min(end // width * width, last_closed)
    if start is not None:
        lo = max(-(-start // width) * width, EPOCH_MS)
        return lo, min(hi, lo + (limit - 1) * width)
    return max(hi - (limit - 1) * width, EPOCH_MS), hi


def _num(value: float) -> str:
    return f"{value:.8f}"


def rest_row(rec: np.void) -> list[Any]:
    """One kline as Binance's REST array of 12 fields (prices and volumes as strings)."""
    return [
        int(rec["ts"]),
        _num(rec["open"]),
        _num(rec["high"]),
        _num(rec["low"]),
        _num(rec["close"]),
        _num(rec["volume"]),
        int(rec["close_ts"]),
        _num(rec["quote_volume"]),
        int(rec["trades"]),
        _num(rec["taker_base"]),
        _num(rec["taker_quote"]),
        "0",
    ]


def ws_event(
    market_id: str, interval: str, rec: np.void, *, closed: bool, event_ms: int
) -> dict[str, Any]:
    """One kline as Binance's WebSocket `kline` event."""
    return {
        "e": "kline",
        "E": event_ms,
        "s": market_id,
        "k": {
            "t": int(rec["ts"]),
            "T": int(rec["close_ts"]),
            "s": market_id,
            "i": interval,
            "f": int(rec["first_trade"]),
            "L": int(rec["last_trade"]),
            "o": _num(rec["open"]),
            "c": _num(rec["close"]),
            "h": _num(rec["high"]),
            "l": _num(rec["low"]),
            "v": _num(rec["volume"]),
            "n": int(rec["trades"]),
            "x": closed,
            "q": _num(rec["quote_volume"]),
            "V": _num(rec["taker_base"]),
            "Q": _num(rec["taker_quote"]),
            "B": "0",
        },
    }

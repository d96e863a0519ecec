"""A seeded, deterministic synthetic market: the ground truth the simulator serves.

The 1m bar of a given (seed, symbol, minute) is always the same, whatever was asked for
before. Each UTC day is generated on its own, as a bridge between two *daily anchor*
prices that come from a slow mean-reverting walk, so any day can be built without
building the days before it, and the last close of a day is the first open of the next.
Within a day:

- trend regimes: the day is cut into segments of a few hours, each with its own drift;
- volatility clustering: log-volatility is noise smoothed by an exponential kernel that
  reaches back into the previous day, so volatility carries across midnight;
- jumps: rare large moves that also kick volatility up;
- volume: grows with volatility and with the size of the bar's move, bursts on jumps,
  and follows a daily seasonality.

Prices are rounded to the symbol's tick and volumes to its lot step, so a value printed
with 8 decimals (as Binance does) parses back to the very same float.

Bars are numpy structured arrays of `BAR_DTYPE`: `ts` is the bar open time in epoch
milliseconds (UTC), then `open, high, low, close, volume` (volume in the base asset).
"""

from __future__ import annotations

import hashlib
import math
import threading
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt
import pandas as pd

EPOCH_MS = 1_577_836_800_000  # 2020-01-01T00:00:00Z: the first bar of every symbol
MINUTE_MS = 60_000
DAY_MINUTES = 1440
DAY_MS = DAY_MINUTES * MINUTE_MS
DEFAULT_SEED = 42

BAR_DTYPE = np.dtype(
    [
        ("ts", "i8"),
        ("open", "f8"),
        ("high", "f8"),
        ("low", "f8"),
        ("close", "f8"),
        ("volume", "f8"),
    ]
)
Bars = npt.NDArray[np.void]
_F64 = npt.NDArray[np.float64]

_VOL_TAU_MIN = 90.0  # memory of the volatility process, minutes
_VOL_KERNEL = np.exp(-np.arange(int(6 * _VOL_TAU_MIN)) / _VOL_TAU_MIN)
_VOL_KERNEL_NORM = float(np.sqrt(np.sum(_VOL_KERNEL**2)))
_LOG_VOL_SD = 0.35  # stationary sd of log-volatility
_JUMP_PROB = 1.0 / 900.0  # per minute
_JUMP_VOL_KICK = 3.0  # added to the volatility noise on a jump (in noise sd units)
_ANCHOR_BLOCK = 1024  # days of anchor innovations drawn per generator
_ANCHOR_TAU_DAYS = 500.0  # mean reversion of the daily anchor walk
_STREAM_ANCHOR, _STREAM_DAY, _STREAM_VOL, _STREAM_JUMP = 0, 1, 2, 3


@dataclass(frozen=True)
class SymbolProfile:
    """How a symbol trades: price level, 1m volatility, volume level, tick and lot."""

    base_price: float
    minute_vol: float  # sd of 1m log returns at normal volatility
    base_volume: float  # typical 1m volume, base asset
    price_decimals: int
    volume_decimals: int

    @property
    def tick_size(self) -> float:
        return 10.0**-self.price_decimals

    @property
    def step_size(self) -> float:
        return 10.0**-self.volume_decimals


_KNOWN_PROFILES: dict[str, SymbolProfile] = {
    "BTC/USDT": SymbolProfile(60_000.0, 0.0007, 18.0, 2, 5),
    "ETH/USDT": SymbolProfile(3_000.0, 0.0009, 300.0, 2, 4),
    "SOL/USDT": SymbolProfile(150.0, 0.0012, 4_000.0, 2, 3),
    "BNB/USDT": SymbolProfile(600.0, 0.0008, 600.0, 2, 3),
}


def _hash_unit(*parts: str) -> float:
    """A stable number in [0, 1) from text (Python's hash() is salted per process)."""
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


@lru_cache(maxsize=1024)
def _stable_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


@lru_cache(maxsize=1024)
def symbol_profile(symbol: str) -> SymbolProfile:
    """The profile of a unified symbol (`BTC/USDT`); unknown symbols get one from a hash."""
    known = _KNOWN_PROFILES.get(symbol)
    if known is not None:
        return known
    price = 10.0 ** (-1.0 + 4.0 * _hash_unit(symbol, "price"))  # 0.1 .. 1000
    vol = 0.0008 + 0.0006 * _hash_unit(symbol, "vol")
    quote_per_minute = 2e5 * 10.0 ** (1.5 * _hash_unit(symbol, "volume"))
    price_decimals = min(8, max(2, math.ceil(5.0 - math.log10(price))))
    volume_decimals = min(8, max(0, math.ceil(math.log10(price))))
    return SymbolProfile(price, vol, quote_per_minute / price, price_decimals, volume_decimals)


def _round_to(values: _F64, decimals: int) -> _F64:
    # rint(x * 10^d) is an exact integer and the division is correctly rounded, so the
    # result is the float nearest to the decimal: it survives a print/parse round trip.
    scale = 10.0**decimals
    return np.rint(values * scale) / scale


def _rng(seed: int, symbol: str, stream: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed & 0xFFFFFFFF, _stable_int(symbol), stream, index])


class _Anchors:
    """Daily anchor log-prices of one (seed, symbol), extended on demand, day 0 first."""

    def __init__(self, seed: int, symbol: str) -> None:
        self._seed = seed
        self._symbol = symbol
        self._lock = threading.Lock()
        self._values: list[float] = []

    def upto(self, day: int) -> list[float]:
        with self._lock:
            while len(self._values) <= day:
                self._extend()
            return self._values

    def _extend(self) -> None:
        profile = symbol_profile(self._symbol)
        block = len(self._values) // _ANCHOR_BLOCK
        shocks = _rng(self._seed, self._symbol, _STREAM_ANCHOR, block).standard_normal(
            _ANCHOR_BLOCK
        )
        daily_sd = profile.minute_vol * math.sqrt(DAY_MINUTES)
        phi = 1.0 - 1.0 / _ANCHOR_TAU_DAYS
        mean = math.log(profile.base_price)
        if not self._values:
            stationary_sd = daily_sd / math.sqrt(1.0 - phi * phi)
            start = mean + 0.3 * stationary_sd * float(shocks[0])
            self._values.append(start)
            shocks = shocks[1:]
        level = self._values[-1]
        for shock in shocks.tolist():
            level = mean + phi * (level - mean) + daily_sd * shock
            self._values.append(level)


_ANCHORS: dict[tuple[int, str], _Anchors] = {}
_ANCHORS_LOCK = threading.Lock()


def _anchor_pair(seed: int, symbol: str, day: int) -> tuple[float, float]:
    with _ANCHORS_LOCK:
        anchors = _ANCHORS.setdefault((seed, symbol), _Anchors(seed, symbol))
    values = anchors.upto(day + 1)
    return values[day], values[day + 1]


def _day_noise(seed: int, symbol: str, day: int) -> tuple[_F64, npt.NDArray[np.bool_]]:
    """Volatility noise (with jump kicks) and jump flags of one day, 1440 each."""
    jumps = _rng(seed, symbol, _STREAM_JUMP, day).random(DAY_MINUTES) < _JUMP_PROB
    noise = _rng(seed, symbol, _STREAM_VOL, day).standard_normal(DAY_MINUTES)
    return noise + _JUMP_VOL_KICK * jumps, jumps


def _regime_drift(rng: np.random.Generator, minute_vol: float) -> _F64:
    """Per-minute drift: the day cut into segments of a few hours, one drift each."""
    cuts: list[int] = [0]
    while cuts[-1] < DAY_MINUTES:
        cuts.append(cuts[-1] + int(rng.integers(90, 360)))
    drift = np.empty(DAY_MINUTES)
    for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
        trending = rng.random() < 0.65
        drift[lo:hi] = rng.normal(0.0, 0.12) * minute_vol if trending else 0.0
    return drift


def _volume_season(minutes: npt.NDArray[np.int64]) -> _F64:
    """Busier in the European and US sessions, quieter in the late US night (UTC)."""
    hours = minutes / 60.0
    return 1.0 + 0.35 * np.sin(2.0 * np.pi * (hours - 9.0) / 24.0)


@lru_cache(maxsize=512)  # about 35 MB at most
def _day_bars(seed: int, symbol: str, day: int) -> Bars:
    profile = symbol_profile(symbol)
    anchor_open, anchor_close = _anchor_pair(seed, symbol, day)
    rng = _rng(seed, symbol, _STREAM_DAY, day)

    noise_today, jumps = _day_noise(seed, symbol, day)
    noise_before = (
        _day_noise(seed, symbol, day - 1)[0] if day > 0 else rng.standard_normal(DAY_MINUTES)
    )
    history = np.concatenate([noise_before[DAY_MINUTES - len(_VOL_KERNEL) + 1 :], noise_today])
    smoothed = np.convolve(history, _VOL_KERNEL, mode="valid")  # one value per minute of today
    log_vol = smoothed / _VOL_KERNEL_NORM * _LOG_VOL_SD
    sigma = profile.minute_vol * np.exp(log_vol - 0.5 * _LOG_VOL_SD**2)

    shocks = rng.standard_normal(DAY_MINUTES)
    jump_sizes = rng.normal(0.0, 6.0, DAY_MINUTES) * jumps
    returns = _regime_drift(rng, profile.minute_vol) + sigma * (shocks + jump_sizes)
    path = np.cumsum(returns)
    # Bridge: bend the path linearly so the day ends exactly on the next anchor.
    ramp = np.arange(1, DAY_MINUTES + 1) / DAY_MINUTES
    log_close = anchor_open + path - ramp * (path[-1] - (anchor_close - anchor_open))

    close = np.exp(log_close)
    close[-1] = math.exp(anchor_close)  # the very value the next day opens with
    close = np.maximum(_round_to(close, profile.price_decimals), profile.tick_size)
    open_ = np.empty(DAY_MINUTES)
    open_[0] = max(round(math.exp(anchor_open), profile.price_decimals), profile.tick_size)
    open_[1:] = close[:-1]

    body_hi, body_lo = np.maximum(open_, close), np.minimum(open_, close)
    wick_up = np.abs(rng.standard_normal(DAY_MINUTES)) * 0.6 * sigma
    wick_down = np.abs(rng.standard_normal(DAY_MINUTES)) * 0.6 * sigma
    high = np.maximum(_round_to(body_hi * np.exp(wick_up), profile.price_decimals), body_hi)
    low = np.minimum(_round_to(body_lo * np.exp(-wick_down), profile.price_decimals), body_lo)
    low = np.maximum(low, profile.tick_size)

    minutes = np.arange(DAY_MINUTES, dtype=np.int64)
    move = np.abs(returns) / profile.minute_vol
    volume = (
        profile.base_volume
        * _volume_season(minutes)
        * (sigma / profile.minute_vol)
        * (1.0 + 0.25 * np.minimum(move, 12.0) ** 2)
        * np.exp(rng.normal(0.0, 0.3, DAY_MINUTES))
        * np.where(jumps, rng.uniform(4.0, 10.0, DAY_MINUTES), 1.0)
        / 2.0
    )
    volume = np.maximum(_round_to(volume, profile.volume_decimals), profile.step_size)

    bars = np.empty(DAY_MINUTES, dtype=BAR_DTYPE)
    bars["ts"] = EPOCH_MS + day * DAY_MS + minutes * MINUTE_MS
    bars["open"], bars["high"], bars["low"] = open_, high, low
    bars["close"], bars["volume"] = close, volume
    bars.flags.writeable = False  # cached: shared by every caller
    return bars


def market_bars(symbol: str, start_ms: int, end_ms: int, *, seed: int = DEFAULT_SEED) -> Bars:
    """Closed-or-not 1m bars of `symbol` whose open time is in [start_ms, end_ms).

    Times are epoch milliseconds, UTC; bars exist from `EPOCH_MS` on, one per minute.
    Returns a new structured array of `BAR_DTYPE`, oldest first.
    """
    first = max(start_ms, EPOCH_MS)
    first = first + (-(first - EPOCH_MS)) % MINUTE_MS  # round up to a minute boundary
    if end_ms <= first:
        return np.empty(0, dtype=BAR_DTYPE)
    first_day = (first - EPOCH_MS) // DAY_MS
    last_day = (end_ms - 1 - EPOCH_MS) // DAY_MS
    days = [_day_bars(seed, symbol, day) for day in range(first_day, last_day + 1)]
    bars = np.concatenate(days) if len(days) > 1 else days[0]
    lo = int(np.searchsorted(bars["ts"], first, side="left"))
    hi = int(np.searchsorted(bars["ts"], end_ms, side="left"))
    return bars[lo:hi].copy()


def aggregate_bars(bars: Bars, minutes: int, *, symbol: str) -> Bars:
    """Roll contiguous 1m bars up into `minutes`-long bars aligned to the epoch (UTC).

    Only complete buckets are kept. open = first open, close = last close, high = max,
    low = min, volume = sum rounded to the symbol's lot step.
    """
    if len(bars) == 0:
        return bars.copy()
    width = minutes * MINUTE_MS
    ts = bars["ts"]
    skip = int(np.searchsorted(ts, ts[0] + (-(ts[0] - EPOCH_MS)) % width))
    count = (len(bars) - skip) // minutes
    return reduce_buckets(bars[skip : skip + count * minutes], minutes, symbol=symbol)


def reduce_buckets(bars: Bars, minutes: int, *, symbol: str) -> Bars:
    """Contiguous 1m bars, a whole number of `minutes` buckets from the first, rolled up."""
    count = len(bars) // minutes
    chunk = np.ascontiguousarray(bars[: count * minutes], dtype=BAR_DTYPE).reshape(count, minutes)
    out = np.empty(count, dtype=BAR_DTYPE)
    out["ts"] = chunk["ts"][:, 0]
    out["open"] = chunk["open"][:, 0]
    out["high"] = chunk["high"].max(axis=1)
    out["low"] = chunk["low"].min(axis=1)
    out["close"] = chunk["close"][:, -1]
    volume = np.ascontiguousarray(chunk["volume"]).sum(axis=1)
    out["volume"] = _round_to(volume, symbol_profile(symbol).volume_decimals)
    return out


def bars_to_frame(bars: Bars) -> pd.DataFrame:
    """Structured bars as a DataFrame indexed by UTC open time (`ts`), OHLCV columns."""
    index = pd.DatetimeIndex(pd.to_datetime(bars["ts"], unit="ms", utc=True), name="ts")
    return pd.DataFrame(
        {name: bars[name] for name in ("open", "high", "low", "close", "volume")}, index=index
    )

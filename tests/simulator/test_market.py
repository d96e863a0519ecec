"""The synthetic market: deterministic, consistent, fast, and lively enough to trade on."""

from __future__ import annotations

import numpy as np
import pytest

from signalengine import simulator
from signalengine.simulator import market
from signalengine.simulator.market import (
    BAR_DTYPE,
    DAY_MS,
    EPOCH_MS,
    MINUTE_MS,
    aggregate_bars,
    bars_to_frame,
    market_bars,
    symbol_profile,
)

SEED = 1234
DAY = 24 * 60
START = EPOCH_MS + 1500 * DAY_MS  # somewhere in 2024


def _forget_everything() -> None:
    market._day_bars.cache_clear()
    market._ANCHORS.clear()


def test_exported_members() -> None:
    for name in simulator.__all__:
        assert hasattr(simulator, name), name
    assert sorted(simulator.__all__) == sorted(set(simulator.__all__))


def test_same_bars_whatever_the_request_order() -> None:
    whole = market_bars("BTC/USDT", START, START + 3 * DAY_MS, seed=SEED)
    _forget_everything()
    # later days first, in pieces that cut across day boundaries
    pieces = [
        market_bars("BTC/USDT", START + lo * MINUTE_MS, START + hi * MINUTE_MS, seed=SEED)
        for lo, hi in [(2500, 3 * DAY), (1000, 2500), (0, 1000)]
    ]
    assert np.array_equal(np.concatenate(pieces[::-1]), whole)
    _forget_everything()
    single = market_bars("BTC/USDT", START + 2000 * MINUTE_MS, START + 2001 * MINUTE_MS, seed=SEED)
    assert np.array_equal(single, whole[2000:2001])


def test_seed_and_symbol_change_the_market() -> None:
    a = market_bars("ETH/USDT", START, START + DAY_MS, seed=SEED)
    b = market_bars("ETH/USDT", START, START + DAY_MS, seed=SEED + 1)
    c = market_bars("SOL/USDT", START, START + DAY_MS, seed=SEED)
    assert not np.array_equal(a["close"], b["close"])
    assert not np.allclose(a["close"] / a["close"][0], c["close"] / c["close"][0])


@pytest.mark.parametrize("symbol", ["BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT", "PEPE/USDT"])
def test_bars_are_consistent(symbol: str) -> None:
    bars = market_bars(symbol, START - 2 * DAY_MS, START + 5 * DAY_MS, seed=SEED)
    assert bars.dtype == BAR_DTYPE
    assert len(bars) == 7 * DAY
    assert np.all(np.diff(bars["ts"]) == MINUTE_MS)
    assert np.all(bars["ts"] % MINUTE_MS == 0)
    body_hi = np.maximum(bars["open"], bars["close"])
    body_lo = np.minimum(bars["open"], bars["close"])
    assert np.all(bars["high"] >= body_hi)
    assert np.all(bars["low"] <= body_lo)
    assert np.all(bars["low"] > 0)
    assert np.all(bars["volume"] > 0)
    assert np.array_equal(bars["open"][1:], bars["close"][:-1])  # also across midnights
    # values print with 8 decimals (as Binance does) and parse back identically
    for field in ("open", "high", "low", "close", "volume"):
        texts = [f"{v:.8f}" for v in bars[field][:2000]]
        assert np.array_equal(np.array([float(t) for t in texts]), bars[field][:2000])


def test_bars_start_at_the_epoch_and_respect_bounds() -> None:
    assert len(market_bars("BTC/USDT", 0, EPOCH_MS, seed=SEED)) == 0
    first = market_bars("BTC/USDT", 0, EPOCH_MS + 3 * MINUTE_MS, seed=SEED)
    assert first["ts"].tolist() == [EPOCH_MS + i * MINUTE_MS for i in range(3)]
    # [start, end): start rounds up to the next minute, end is exclusive
    bars = market_bars("BTC/USDT", START + 1, START + 3 * MINUTE_MS, seed=SEED)
    assert bars["ts"].tolist() == [START + MINUTE_MS, START + 2 * MINUTE_MS]


def test_price_levels_are_realistic() -> None:
    expected = {"BTC/USDT": 60_000, "ETH/USDT": 3_000, "SOL/USDT": 150, "BNB/USDT": 600}
    for symbol, level in expected.items():
        closes = market_bars(symbol, START, START + 30 * DAY_MS, seed=SEED)["close"]
        assert level / 4 < np.median(closes) < level * 4, symbol
    extra = symbol_profile("FOO/USDT")
    assert extra == symbol_profile("FOO/USDT")
    assert 0.1 <= extra.base_price <= 1000


def test_market_has_clustered_volatility_and_volume_bursts() -> None:
    bars = market_bars("BTC/USDT", START, START + 60 * DAY_MS, seed=SEED)
    ret = np.diff(np.log(bars["close"]))
    size = np.abs(ret)
    # volatility clustering: big moves follow big moves an hour apart
    assert np.corrcoef(size[:-60], size[60:])[0, 1] > 0.03
    # volume bursts come with big moves
    assert np.corrcoef(size, bars["volume"][1:])[0, 1] > 0.2
    # trend regimes: 3-hour returns are more dispersed than a driftless walk would give
    three_hours = np.diff(np.log(bars["close"][::180]))
    assert three_hours.std() > 1.05 * ret.std() * np.sqrt(180)


def test_a_year_is_whole_and_made_day_by_day() -> None:
    """A year in one call: every minute once, and each day the bars that day alone gives
    (days are generated independently, so any window of the market reads the same bars)."""
    start = EPOCH_MS + 200 * DAY_MS
    bars = market_bars("ETH/USDT", start, start + 365 * DAY_MS, seed=SEED + 99)
    assert len(bars) == 365 * DAY
    assert bars["ts"][0] == start and np.all(np.diff(bars["ts"]) == MINUTE_MS)
    day = start + 123 * DAY_MS
    alone = market_bars("ETH/USDT", day, day + DAY_MS, seed=SEED + 99)
    assert np.array_equal(bars[123 * DAY : 124 * DAY], alone)


def test_aggregate_bars() -> None:
    bars = market_bars("SOL/USDT", START + 3 * MINUTE_MS, START + 63 * MINUTE_MS, seed=SEED)
    five = aggregate_bars(bars, 5, symbol="SOL/USDT")
    # the first two minutes are not a whole aligned bucket; neither are the last three
    assert five["ts"][0] == START + 5 * MINUTE_MS
    assert len(five) == 11
    chunk = bars[2:7]
    assert five["open"][0] == chunk["open"][0]
    assert five["close"][0] == chunk["close"][-1]
    assert five["high"][0] == chunk["high"].max()
    assert five["low"][0] == chunk["low"].min()
    assert five["volume"][0] == pytest.approx(chunk["volume"].sum())


def test_bars_to_frame() -> None:
    bars = market_bars("BTC/USDT", START, START + 10 * MINUTE_MS, seed=SEED)
    frame = bars_to_frame(bars)
    assert list(frame.columns) == ["open", "high", "low", "close", "volume"]
    assert str(frame.index.tz) == "UTC"
    assert frame.index[0].value // 1_000_000 == START

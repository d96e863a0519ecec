"""Storage: COPY path, duplicates, conflicts, rejects and timeframe tables equal pandas."""

from __future__ import annotations

import pandas as pd
import psycopg
import pytest

from signalengine.tasks.marketdata.klines import load_bars, store_klines
from signalengine.tasks.marketdata.validation import validate_klines
from tests.utils.klines import random_klines

TIMEFRAMES = ["1m", "5m", "15m", "1h"]


def _pandas_resample(frame: pd.DataFrame, rule: str) -> pd.DataFrame:
    bars = frame.set_index("ts")
    out = bars.resample(rule, label="left", closed="left").agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}
    )
    out["bars"] = bars["open"].resample(rule, label="left", closed="left").count()
    return out[out["bars"] > 0].astype("float64")


def _store(db: psycopg.Connection, frame: pd.DataFrame) -> dict[str, int]:  # type: ignore[type-arg]
    return store_klines(db, validate_klines(frame), timeframes=TIMEFRAMES).as_dict()


@pytest.mark.parametrize("rule,timeframe", [("5min", "5m"), ("15min", "15m"), ("1h", "1h")])
def test_timeframes_equal_pandas_resample_with_gaps(db, rule: str, timeframe: str) -> None:
    frame = random_klines(minutes=3 * 1440, gap_fraction=0.05, seed=3)
    # written in uneven, out-of-order chunks, like a live stream with a backfill
    chunks = [frame.iloc[2000:3100], frame.iloc[:2000], frame.iloc[3100:]]
    for chunk in chunks:
        _store(db, chunk)
    stored = load_bars(db, exchange="binance", symbols=["BTC/USDT"], timeframe=timeframe)
    got = stored["BTC/USDT"]
    want = _pandas_resample(frame, rule)
    assert list(got.index) == list(want.index)
    pd.testing.assert_frame_equal(
        got[["open", "high", "low", "close", "bars"]],
        want[["open", "high", "low", "close", "bars"]],
        check_exact=True,
        check_freq=False,
    )
    pd.testing.assert_series_equal(got["volume"], want["volume"], rtol=1e-9, check_freq=False)


def test_duplicates_conflicts_and_rejects_lose_nothing_else(db) -> None:
    frame = random_klines(minutes=30)
    assert _store(db, frame) == {"rows_read": 30, "inserted": 30, "duplicates": 0, "rejected": 0}
    again = frame.iloc[:5].copy()
    changed = frame.iloc[5:7].copy()
    changed["close"] = changed["close"] * 1.01
    changed["high"] = changed[["high", "close"]].max(axis=1)
    bad = frame.iloc[7:8].copy()
    bad["high"] = bad["low"] - 1
    fresh = random_klines(minutes=40).iloc[30:]
    summary = _store(db, pd.concat([again, changed, bad, fresh], ignore_index=True))
    assert summary == {"rows_read": 18, "inserted": 10, "duplicates": 5, "rejected": 3}
    reasons = [
        r["reason"] for r in db.execute("SELECT reason FROM klines_rejected ORDER BY id").fetchall()
    ]
    assert reasons == [
        "high below max(open, close)",
        "differs from the stored bar",
        "differs from the stored bar",
    ]
    kept = db.execute("SELECT close FROM klines WHERE ts = %s", (frame["ts"].iloc[5],)).fetchone()
    assert kept["close"] == frame["close"].iloc[5]
    assert db.execute("SELECT count(*) AS n FROM klines").fetchone()["n"] == 40


def test_validation_reasons() -> None:
    frame = random_klines(minutes=6)
    frame = frame.astype({"open": object})
    frame.loc[0, "open"] = "nan"
    frame.loc[1, "volume"] = -1.0
    frame.loc[2, "ts"] = frame.loc[2, "ts"] + pd.Timedelta(seconds=7)
    frame.loc[3, "symbol"] = "NOPE/USDT"
    frame.loc[4, "low"] = frame.loc[4, "high"] + 1
    result = validate_klines(frame, known_symbols={"BTC/USDT"})
    assert [r["reason"] for r in result.rejected] == [
        "open is not a finite number",
        "negative volume",
        "timestamp is not aligned to a minute",
        "unknown symbol",
        "low above min(open, close)",
    ]
    assert len(result.valid) == 1


def test_closed_by_excludes_open_bucket(db) -> None:
    frame = random_klines(minutes=12)
    _store(db, frame)
    t = frame["ts"].iloc[0] + pd.Timedelta(minutes=10)
    bars = load_bars(db, exchange="binance", symbols=["BTC/USDT"], timeframe="5m", closed_by=t)
    assert len(bars["BTC/USDT"]) == 2

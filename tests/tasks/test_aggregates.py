"""Every timeframe relation equals pandas resampling, on plain PostgreSQL and TimescaleDB.

Bucket = [ts, ts + timeframe), open = first open, close = last close, high = max,
low = min, volume = sum, bars = number of 1m bars; the last (still open) bucket included.
On TimescaleDB the head of the data is materialized (refreshed after each write, a
backfill included) and the tail, written inside a caller's transaction (so not refreshed
after it), is served from `klines` through the exact views until a later refresh.
"""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import psycopg
import pytest

from signalengine.core.timescale import backend
from signalengine.core.vocabulary import TIMEFRAME_MINUTES
from signalengine.tasks.marketdata.klines import load_bars, store_klines
from signalengine.tasks.marketdata.timeframes import ensure_timeframe_tables
from signalengine.tasks.marketdata.validation import validate_klines
from tests.utils.klines import random_klines

TIMEFRAMES = ["1m", "5m", "15m", "1h"]
EXTRA = ["4h", "1d"]
Conn = psycopg.Connection[dict]  # type: ignore[type-arg]


def _pandas(frame: pd.DataFrame, timeframe: str) -> pd.DataFrame:
    bars = frame.set_index("ts")
    rule = f"{TIMEFRAME_MINUTES[timeframe]}min"
    out = bars.resample(rule, label="left", closed="left").agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}
    )
    out["bars"] = bars["open"].resample(rule, label="left", closed="left").count()
    return out[out["bars"] > 0].astype("float64")


def _assert_relations_match(
    conn: Conn,
    frame: pd.DataFrame,
    timeframes: list[str],
    *,
    exchange: str = "binance",
    symbol: str = "BTC/USDT",
) -> None:
    for tf in timeframes:
        got = load_bars(conn, exchange=exchange, symbols=[symbol], timeframe=tf)[symbol]
        want = _pandas(frame, tf)
        assert list(got.index) == list(want.index), tf
        exact = ["open", "high", "low", "close", "bars"]
        pd.testing.assert_frame_equal(
            got[exact], want[exact], check_exact=True, check_freq=False, obj=tf
        )
        pd.testing.assert_series_equal(
            got["volume"], want["volume"], rtol=1e-9, check_freq=False, obj=tf
        )


def _store(conn: Conn, frame: pd.DataFrame, timeframes: list[str]) -> dict[str, int]:
    return store_klines(conn, validate_klines(frame), timeframes=timeframes).as_dict()


def _materialized_rows(conn: Conn, timeframe: str) -> int:
    row = conn.execute(
        "SELECT format('%%I.%%I', materialization_hypertable_schema,"
        " materialization_hypertable_name) AS name"
        " FROM timescaledb_information.continuous_aggregates WHERE view_name = %s",
        (f"klines_{timeframe}_cagg",),
    ).fetchone()
    assert row is not None
    return int(conn.execute(f"SELECT count(*) AS n FROM {row['name']}").fetchone()["n"])


def test_every_timeframe_equals_pandas_including_the_open_bucket(kline_db: Conn) -> None:
    # three days but the last 22 minutes: the last 5m, 15m and 1h buckets are still open
    frame = random_klines(minutes=3 * 1440 - 22, gap_fraction=0.05, seed=3)
    # uneven, out-of-order chunks, like a live stream after a backfill; the tail starts
    # on an hour, past every bucket the earlier writes had refreshed
    tail = int((frame["ts"] >= frame["ts"].iloc[3100].ceil("1h")).to_numpy().argmax())
    _store(kline_db, frame.iloc[2000:tail], TIMEFRAMES)
    _store(kline_db, frame.iloc[:2000], TIMEFRAMES)  # lands in refreshed buckets: refreshes again
    with kline_db.transaction():  # no refresh can run in here: the tail stays real-time
        _store(kline_db, frame.iloc[tail:], TIMEFRAMES)
    end = frame["ts"].iloc[-1] + pd.Timedelta(minutes=1)
    assert all(end != end.floor(f"{TIMEFRAME_MINUTES[tf]}min") for tf in TIMEFRAMES[1:])
    _assert_relations_match(kline_db, frame, TIMEFRAMES)
    if backend(kline_db).timescale:
        for tf in TIMEFRAMES[1:]:
            materialized = _materialized_rows(kline_db, tf)
            assert 0 < materialized < len(_pandas(frame, tf)), tf


def test_overlapping_writes_merge_into_exact_buckets(kline_db: Conn) -> None:
    frame = random_klines(minutes=1440, gap_fraction=0.05, seed=5)
    holes = frame.iloc[::7]
    _store(kline_db, frame.drop(holes.index), TIMEFRAMES)
    summary = _store(kline_db, frame, TIMEFRAMES)  # fills the holes, the rest are duplicates
    assert summary == {
        "rows_read": len(frame),
        "inserted": len(holes),
        "duplicates": len(frame) - len(holes),
        "rejected": 0,
    }
    _assert_relations_match(kline_db, frame, TIMEFRAMES)


def test_one_write_of_many_symbols_keeps_them_apart(kline_db: Conn) -> None:
    pairs = [("binance", "BTC/USDT"), ("binance", "ETH/USDT"), ("okx", "BTC/USDT")]
    frames = [
        random_klines(exchange=ex, symbol=sym, minutes=700 + 97 * i, gap_fraction=0.05, seed=i)
        for i, (ex, sym) in enumerate(pairs)
    ]
    mixed = pd.concat(frames).sample(frac=1.0, random_state=1)  # interleaved, unordered
    assert _store(kline_db, mixed, TIMEFRAMES)["inserted"] == len(mixed)
    for (ex, sym), frame in zip(pairs, frames, strict=True):
        _assert_relations_match(kline_db, frame, TIMEFRAMES, exchange=ex, symbol=sym)


@pytest.fixture
def extra_db(kline_db: Conn) -> Iterator[Conn]:
    """kline_db with 4h and 1d relations too (plain tables dropped again after)."""
    ensure_timeframe_tables(kline_db, [*TIMEFRAMES, *EXTRA])
    yield kline_db
    if not backend(kline_db).timescale:
        kline_db.execute("DROP TABLE IF EXISTS klines_4h, klines_1d")


def test_extra_timeframes_get_their_own_relation(extra_db: Conn) -> None:
    frame = random_klines(minutes=3 * 1440, gap_fraction=0.05, seed=9)
    _store(extra_db, frame.iloc[1500:], [*TIMEFRAMES, *EXTRA])
    _store(extra_db, frame.iloc[:1500], [*TIMEFRAMES, *EXTRA])
    _assert_relations_match(extra_db, frame, EXTRA)

"""Timeframe buckets the way pandas computes them, and exact comparisons against them."""

from __future__ import annotations

from typing import Any

import pandas as pd
import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

from signalengine.core.vocabulary import TIMEFRAME_MINUTES

OHLCV = ["open", "high", "low", "close", "volume"]


def pandas_buckets(frame: pd.DataFrame, timeframe: str) -> pd.DataFrame:
    """Buckets [ts, ts + timeframe) of 1m rows (`ts` UTC open time, OHLCV): first open,
    max high, min low, last close, summed volume, `bars`; only buckets holding a bar."""
    bars = frame.set_index("ts").sort_index()
    rule = f"{TIMEFRAME_MINUTES[timeframe]}min"
    out = bars.resample(rule, label="left", closed="left").agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}
    )
    out["bars"] = bars["open"].resample(rule, label="left", closed="left").count()
    return out[out["bars"] > 0].astype("float64")


def assert_buckets_equal(got: pd.DataFrame, want: pd.DataFrame, label: str) -> None:
    """Same buckets; OHLC and bars exact, volume to 1e-9 relative."""
    assert list(got.index) == list(want.index), label
    exact = ["open", "high", "low", "close", "bars"]
    pd.testing.assert_frame_equal(
        got[exact].astype("float64"),
        want[exact],
        check_exact=True,
        check_freq=False,
        check_names=False,
        obj=label,
    )
    pd.testing.assert_series_equal(
        got["volume"].astype("float64"),
        want["volume"],
        rtol=1e-9,
        check_freq=False,
        check_names=False,
        obj=label,
    )


def stored_1m(conn: psycopg.Connection[Any], *, exchange: str, symbol: str) -> pd.DataFrame:
    """The stored 1m bars of one symbol: columns ts (UTC), OHLCV, oldest first."""
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(
            "SELECT ts, open, high, low, close, volume FROM klines"
            " WHERE exchange = %s AND symbol = %s ORDER BY ts",
            (exchange, symbol),
        ).fetchall()
    frame = pd.DataFrame(rows, columns=["ts", *OHLCV])
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame


def relation_bars(
    conn: psycopg.Connection[Any], relation: str, *, exchange: str, symbol: str
) -> pd.DataFrame:
    """Every row of one symbol in a timeframe relation (a view, a table or an aggregate)."""
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(
            sql.SQL(
                "SELECT ts, open, high, low, close, volume, bars FROM {}"
                " WHERE exchange = %s AND symbol = %s ORDER BY ts"
            ).format(sql.Identifier(relation)),
            (exchange, symbol),
        ).fetchall()
    frame = pd.DataFrame(rows, columns=["ts", *OHLCV, "bars"])
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame.set_index("ts").astype("float64")

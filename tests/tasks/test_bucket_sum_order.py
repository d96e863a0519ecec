"""The plain-PostgreSQL upkeep adds a bucket's volume exactly as numpy's reduceat does.

`refresh_buckets` (SQL) and the engine's bucketing (`aggregate_buckets`: np.add.reduceat)
must agree bit for bit, or a live signal read from `klines_<tf>` differs in the last
bits of volume_z and score from `signalengine backtest`, which buckets 1m in numpy.
Volumes span 1e-3 .. 1e9 (every addition rounds), and minutes go missing, so buckets
hold every row count from 1 to the most they can.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pytest

from signalengine.core.bucket_sql import reduceat_sum_sql
from signalengine.core.vocabulary import TIMEFRAME_MINUTES, source_timeframe
from signalengine.tasks.engine.buckets import MINUTE_NS, aggregate_buckets
from signalengine.tasks.marketdata.timeframes import ensure_timeframe_tables, refresh_buckets

START = pd.Timestamp("2025-01-01", tz="UTC")


def _adversarial(size: int, rng: np.random.Generator) -> np.ndarray:
    return np.exp(rng.uniform(np.log(1e-3), np.log(1e9), size))


def test_the_sql_sum_is_reduceats_for_every_row_count_up_to_129(db: Any) -> None:
    rng = np.random.default_rng(12)
    counts = np.repeat(np.arange(1, 130), 12)  # 12 segments of each length
    values = _adversarial(int(counts.sum()), rng)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    want = np.add.reduceat(values, starts)
    segments = [values[s : s + c].tolist() for s, c in zip(starts, counts, strict=True)]
    expression = reduceat_sum_sql("v[{}]", "n", 129)
    rows = db.execute(
        f"SELECT {expression} AS total FROM ("
        " SELECT o, v, array_length(v, 1) AS n FROM ("
        "  SELECT o, (SELECT array_agg(x ORDER BY i) FROM jsonb_array_elements_text(j)"
        "   WITH ORDINALITY e(x, i))::float8[] AS v"
        "  FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY s(j, o) OFFSET 0) a) b ORDER BY o",
        (psycopg.types.json.Jsonb(segments),),
    ).fetchall()
    got = np.array([r["total"] for r in rows])
    # the plain running sum PostgreSQL's sum() does would not pass this
    assert not np.array_equal([sum(s) for s in segments], want)
    assert got.tobytes() == want.tobytes()


@pytest.mark.parametrize(
    "timeframes", [["1m", "5m", "15m", "1h"], ["1m", "5m", "1h"], ["1m", "2h"]]
)
def test_refreshed_buckets_equal_numpys_bit_for_bit(db: Any, timeframes: list[str]) -> None:
    # 5 rows per 5m bucket, 3 per 15m, 4 per 1h; 12 per 1h from 5m; 120 per 2h from 1m
    rng = np.random.default_rng(len(timeframes))
    minutes = 2 * 1440
    ts = START + pd.to_timedelta(np.arange(minutes), unit="min")
    keep = rng.random(minutes) >= rng.choice([0.0, 0.3, 0.9], minutes // 120).repeat(120)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.001, minutes)))[keep]
    frame = pd.DataFrame(
        {
            "ts": ts[keep],
            "open": close,
            "high": close,
            "low": close,
            "close": close,
            "volume": _adversarial(int(keep.sum()), rng),
        }
    )
    ensure_timeframe_tables(db, timeframes)
    with db.cursor().copy(
        "COPY klines (exchange, symbol, ts, open, high, low, close, volume) FROM STDIN"
    ) as copy:
        for row in frame.itertuples(index=False):
            copy.write_row(("binance", "X/USDT", row.ts, *row[1:]))
    db.execute(
        "CREATE TEMP TABLE touched (exchange text, symbol text, lo timestamptz, hi timestamptz)"
    )
    db.execute(
        "INSERT INTO touched VALUES ('binance', 'X/USDT', %s, %s)",
        (frame["ts"].iloc[0], frame["ts"].iloc[-1]),
    )
    refresh_buckets(db, timeframes, touched="touched")
    db.execute("DROP TABLE touched")

    higher = sorted(set(timeframes) - {"1m"}, key=TIMEFRAME_MINUTES.__getitem__)
    levels = {
        "1m": {
            "ts": pd.DatetimeIndex(frame["ts"]).as_unit("ns").asi8,
            **{c: frame[c].to_numpy() for c in ("open", "high", "low", "close", "volume")},
        }
    }
    for tf in higher:
        level = aggregate_buckets(
            levels[source_timeframe(tf, higher)], TIMEFRAME_MINUTES[tf] * MINUTE_NS
        )
        levels[tf] = level
        stored = db.execute(
            f"SELECT ts, volume, bars FROM klines_{tf} ORDER BY ts"  # noqa: S608
        ).fetchall()
        assert [pd.Timestamp(r["ts"]).value for r in stored] == level["ts"].tolist(), tf
        assert [r["bars"] for r in stored] == level["bars"].tolist(), tf
        volume = np.array([r["volume"] for r in stored])
        assert volume.tobytes() == level["volume"].tobytes(), tf
    db.execute("DROP TABLE IF EXISTS klines_2h")  # not a migrated relation


def test_timescale_pending_buckets_add_in_numpys_order(timescale_db: Any) -> None:
    # a bucket overlapping a pending range is computed by the exact view from klines
    # (5, 15, 60 rows from 1m): it equals numpy's bucketing of the same 1m bars
    rng = np.random.default_rng(7)
    minutes = 6 * 60
    keep = rng.random(minutes) >= 0.2
    ts = (START + pd.to_timedelta(np.arange(minutes), unit="min"))[keep]
    volume = _adversarial(int(keep.sum()), rng)
    timescale_db.execute(  # no COPY on PGlite; floats travel exactly in binary
        "INSERT INTO klines (exchange, symbol, ts, open, high, low, close, volume)"
        " SELECT 'binance', 'X/USDT', t, 1, 1, 1, 1, v FROM unnest(%b, %b) u(t, v)",
        (list(ts), volume.tolist()),
    )
    timescale_db.execute(
        "INSERT INTO klines_pending (exchange, symbol, lo, hi)"
        " VALUES ('binance', 'X/USDT', %s, %s)",
        (ts[0], ts[-1] + pd.Timedelta(minutes=1)),
    )
    base = {"ts": ts.as_unit("ns").asi8, "volume": volume}
    base |= {c: np.ones(len(ts)) for c in ("open", "high", "low", "close")}
    for tf in ("5m", "15m", "1h"):
        want = aggregate_buckets(base, TIMEFRAME_MINUTES[tf] * MINUTE_NS)
        got = timescale_db.execute(
            f"SELECT ts, volume FROM klines_{tf} ORDER BY ts"  # noqa: S608
        ).fetchall()
        assert [pd.Timestamp(r["ts"]).value for r in got] == want["ts"].tolist(), tf
        assert np.array([r["volume"] for r in got]).tobytes() == want["volume"].tobytes(), tf

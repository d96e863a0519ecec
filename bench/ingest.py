"""Ingest benchmark: the project's kline write path against raw COPY; prints one JSON object.

Project path: `tasks.marketdata.validation.validate_klines` +
`tasks.marketdata.klines.store_klines` (timeframes
1m/5m/15m/1h), one call per symbol, into a fresh migrated database. Ceiling: binary COPY
of the same rows into an unindexed table with the same columns, in the same run (best of
two). Goal: project rows/s >= 0.5 x ceiling rows/s. Read: one year of `klines_1h` for one
symbol through `tasks.marketdata.klines.load_bars` (the year is stored first, not timed).
Data generation is not timed. The benchmark creates its database and drops it after.

With `--timescale-url` (a server preloading TimescaleDB) the same figures are measured
there too, under `"timescaledb"`: the write path is then COPY into the hypertable, the
`klines_pending` mark and, after each commit, the refresh of every continuous aggregate
over the written range (`refresh_share` = the part of the store time spent refreshing);
the read goes through the exact `klines_1h` view. Every bar here is history, so every
write refreshes: the most a write can cost there (live bars are never refreshed).

Run from the repository root: `.venv/bin/python bench/ingest.py [--symbols 10]
[--minutes 100000] [--url postgresql://postgres@127.0.0.1:5432/postgres]
[--timescale-url postgresql://postgres@127.0.0.1:5433/postgres]`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import signalengine.tasks.marketdata.klines as klines_module  # noqa: E402
from signalengine.core.migrate import upgrade  # noqa: E402
from signalengine.core.timescale import backend  # noqa: E402
from signalengine.tasks.marketdata.klines import (  # noqa: E402
    PRICE_COLUMNS,
    binary_copy_payload,
    load_bars,
    store_klines,
)
from signalengine.tasks.marketdata.validation import KLINE_COLUMNS, validate_klines  # noqa: E402
from tests.utils.bars import make_bars_1m  # noqa: E402

TIMEFRAMES = ["1m", "5m", "15m", "1h"]

GOAL_RATIO = 0.5
EXCHANGE = "bench"
YEAR_MINUTES = 365 * 1440


def _frame(symbol: str, minutes: int, seed: int) -> pd.DataFrame:
    bars = make_bars_1m(minutes=minutes, seed=seed, start="2023-01-01")
    frame = bars[["open", "high", "low", "close", "volume"]].reset_index()
    frame.insert(0, "symbol", symbol)
    frame.insert(0, "exchange", EXCHANGE)
    return frame[KLINE_COLUMNS]


@contextmanager
def _database(server: str) -> Iterator[str]:
    name = f"signalengine_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield psycopg.conninfo.make_conninfo(server, dbname=name)
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _ceiling(url: str, frames: list[pd.DataFrame]) -> float:
    """Seconds for one binary COPY of every row into an unindexed table (payload included)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS copy_ceiling")
        conn.execute("CREATE TABLE copy_ceiling (LIKE klines)")  # no constraints, no index
        conn.execute("CHECKPOINT")
        started = time.perf_counter()
        with conn.transaction(), conn.cursor() as cur:
            for frame in frames:
                with cur.copy(
                    f"COPY copy_ceiling ({', '.join(KLINE_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
                ) as copy:
                    copy.write(binary_copy_payload(frame, floats=PRICE_COLUMNS))
        seconds = time.perf_counter() - started
        conn.execute("DROP TABLE copy_ceiling")
    return seconds


@contextmanager
def _timed_refreshes() -> Iterator[list[float]]:
    """Seconds spent in each post-commit refresh (`refresh_pending`) of `store_klines`."""
    spent: list[float] = []
    original = klines_module.refresh_pending

    def timed(conn: Any, ids: list[int]) -> bool:
        began = time.perf_counter()
        try:
            return original(conn, ids)
        finally:
            if ids:
                spent.append(time.perf_counter() - began)

    klines_module.refresh_pending = timed
    try:
        yield spent
    finally:
        klines_module.refresh_pending = original


def _project(url: str, frames: list[pd.DataFrame]) -> tuple[float, int, float]:
    """Seconds to validate and store every frame (one call per symbol); rows inserted;
    seconds of it spent refreshing aggregates (TimescaleDB only)."""
    inserted = 0
    with psycopg.connect(url) as conn, _timed_refreshes() as refreshes:
        conn.execute("CHECKPOINT")
        conn.commit()
        started = time.perf_counter()
        for frame in frames:
            result = store_klines(
                conn, validate_klines(frame), timeframes=TIMEFRAMES, source="bench"
            )
            inserted += result.inserted
        seconds = time.perf_counter() - started
    return seconds, inserted, sum(refreshes)


def _read_year(url: str, repeats: int) -> dict[str, Any]:
    frame = _frame("YEAR/USDT", YEAR_MINUTES, seed=999)
    start, end = frame["ts"].iloc[0], frame["ts"].iloc[0] + pd.Timedelta(days=365)
    timings = []
    with psycopg.connect(url) as conn:
        store_klines(conn, validate_klines(frame), timeframes=TIMEFRAMES, source="bench")
        for _ in range(repeats):
            began = time.perf_counter()
            bars = load_bars(
                conn, exchange=EXCHANGE, symbols=["YEAR/USDT"], timeframe="1h", start=start, end=end
            )["YEAR/USDT"]
            timings.append(time.perf_counter() - began)
            conn.rollback()
    return {
        "rows": len(bars),
        "first_seconds": round(timings[0], 4),
        "median_seconds": round(statistics.median(timings), 4),
    }


def _measure(server: str, frames: list[pd.DataFrame], *, read_repeats: int) -> dict[str, Any]:
    """The figures of one server: write path against the COPY ceiling, then the year read."""
    rows = sum(len(f) for f in frames)
    with _database(server) as url:
        upgrade(url)
        with psycopg.connect(url) as conn:
            timescale = backend(conn).timescale
        ceiling = min(_ceiling(url, frames) for _ in range(2))
        project, inserted, refreshing = _project(url, frames)
        read = _read_year(url, read_repeats)
    if inserted != rows:
        raise SystemExit(f"stored {inserted} of {rows} rows")
    ratio = ceiling / project
    figures: dict[str, Any] = {
        "backend": "timescaledb" if timescale else "postgresql",
        "project_seconds": round(project, 3),
        "project_rows_per_second": round(rows / project),
        "copy_ceiling_seconds": round(ceiling, 3),
        "copy_ceiling_rows_per_second": round(rows / ceiling),
        "ratio": round(ratio, 3),
        "goal_ratio": GOAL_RATIO,
        "meets_goal": ratio >= GOAL_RATIO,
        "read_1h_one_year": read,
    }
    if timescale:
        figures["refresh_seconds"] = round(refreshing, 3)
        figures["refresh_share"] = round(refreshing / project, 3)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--symbols", type=int, default=10)
    parser.add_argument("--minutes", type=int, default=100_000)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--timescale-url", default=None, help="a server preloading TimescaleDB")
    parser.add_argument("--read-repeats", type=int, default=5)
    args = parser.parse_args()

    frames = [_frame(f"SYM{i}/USDT", args.minutes, seed=100 + i) for i in range(args.symbols)]
    report: dict[str, Any] = {
        "rows": sum(len(f) for f in frames),
        "symbols": args.symbols,
        "timeframes": TIMEFRAMES,
        **_measure(args.url, frames, read_repeats=args.read_repeats),
    }
    if args.timescale_url:
        report["timescaledb"] = _measure(args.timescale_url, frames, read_repeats=args.read_repeats)
        if report["timescaledb"]["backend"] != "timescaledb":
            raise SystemExit(f"{args.timescale_url} does not run TimescaleDB")
    print(json.dumps(report))


if __name__ == "__main__":
    main()

"""In-process cost of one primary close: `LiveEngine.process_closes` at N symbols x 4
timeframes, before (each close reads its windows from the database, the replay path) and
after (the stream's in-memory `LiveWindows`), with the statements each close sends.

Synthetic seeded random-walk bars (1000+ per symbol and timeframe, written straight into
`klines` and `klines_<tf>` under a scratch exchange name, removed afterwards) are not
timed, nor is the windows' seed. Both paths must write the same signals. Prints one JSON
object; `bench/live.py` imports `process_closes_figure`.

Run from the repository root:
`.venv/bin/python bench/live_inprocess.py [--symbols 500] [--closes 12] [--db-url URL]`
(without --db-url: a scratch database on the local server, migrated, then dropped).
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from psycopg.rows import dict_row

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from signalengine.core.config import Settings  # noqa: E402
from signalengine.core.vocabulary import LIVE_RUN, TIMEFRAME_MINUTES  # noqa: E402
from signalengine.tasks.engine.records import CooldownState  # noqa: E402
from signalengine.tasks.runs.live import LiveEngine  # noqa: E402

GOAL_MS_PER_CLOSE = 50.0
NOW = pd.Timestamp("2026-01-05 12:00", tz="UTC")
MS = 1_000_000
_LOCAL = "postgresql://postgres@127.0.0.1:5432/postgres"


class _CountingCursor(psycopg.Cursor[Any]):
    """A real cursor that records every statement it sends (queries and COPYs)."""

    sent: list[str] = []

    def execute(self, query: Any, params: Any = None, **kw: Any) -> Any:
        text = query if isinstance(query, str) else query.as_string(self)
        _CountingCursor.sent.append(str(text))
        return super().execute(query, params, **kw)

    def copy(self, statement: Any, params: Any = None, **kw: Any) -> Any:
        text = statement if isinstance(statement, str) else statement.as_string(self)
        _CountingCursor.sent.append(str(text))
        return super().copy(statement, params, **kw)


def _walks(rng: np.random.Generator, rows: int, bars: int) -> dict[str, np.ndarray]:
    """OHLCV random walks, one row per symbol (positive prices, high >= open/close >= low)."""
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.004, (rows, bars)), axis=1))
    open_ = np.concatenate([close[:, :1], close[:, :-1]], axis=1)
    spread = np.abs(rng.normal(0, 0.002, (rows, bars)))
    high = np.maximum(open_, close) * (1 + spread)
    low = np.minimum(open_, close) * (1 - spread)
    volume = rng.lognormal(3, 0.5, (rows, bars))
    return {"open": open_, "high": high, "low": low, "close": close, "volume": volume}


def _store(conn: psycopg.Connection[Any], exchange: str, symbols: list[str], bars: int) -> int:
    """`bars` closed bars per symbol and timeframe ending at NOW, by COPY; rows written."""
    rng = np.random.default_rng(20260105)
    written = 0
    for tf, minutes in (("1m", 1), ("5m", 5), ("15m", 15), ("1h", 60)):
        walk = _walks(rng, len(symbols), bars)
        width = pd.Timedelta(minutes=minutes)
        opens = pd.date_range(end=NOW - width, periods=bars, freq=width, tz="UTC")
        stamps = [t.isoformat() for t in opens]
        table, extra = ("klines", "") if tf == "1m" else (f"klines_{tf}", f"\t{minutes}")
        columns = "exchange, symbol, ts, open, high, low, close, volume" + (
            ", bars" if extra else ""
        )
        out = io.StringIO()
        for i, symbol in enumerate(symbols):
            columns_i = [walk[c][i].tolist() for c in ("open", "high", "low", "close", "volume")]
            for stamp, o, h, lo, c, v in zip(stamps, *columns_i, strict=True):
                out.write(
                    f"{exchange}\t{symbol}\t{stamp}\t{o!r}\t{h!r}\t{lo!r}\t{c!r}\t{v!r}{extra}\n"
                )
        with conn.cursor().copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            copy.write(out.getvalue())
        written += len(symbols) * bars
    return written


def _signals(conn: psycopg.Connection[Any], exchange: str) -> list[tuple[Any, ...]]:
    return [
        tuple(r.values())
        for r in conn.execute(
            "SELECT symbol, ts, direction, entry_price, take_profit, stop_loss, score"
            " FROM signals WHERE exchange = %s ORDER BY symbol, ts, direction",
            (exchange,),
        ).fetchall()
    ]


def _run(
    conn: psycopg.Connection[Any], engine: LiveEngine, closes: list[int]
) -> tuple[list[float], list[float], list[int]]:
    """Wall ms, this process's CPU ms and statements per close, one `process_closes` call
    per close (CPU time: what the close costs here, apart from waits on the database
    server and for a core on a shared machine)."""
    timings, cpu, statements = [], [], []
    for close in closes:
        _CountingCursor.sent.clear()
        started, cpu_started = time.perf_counter(), time.process_time()
        engine.process_closes(conn, [close])
        timings.append((time.perf_counter() - started) * 1e3)
        cpu.append((time.process_time() - cpu_started) * 1e3)
        statements.append(len(_CountingCursor.sent))
    return timings, cpu, statements


def _kline_reads() -> int:
    return sum("klines" in q for q in _CountingCursor.sent)


def process_closes_figure(
    symbols: int, db_url: str, *, closes: int = 12, db_closes: int = 1
) -> dict[str, Any]:
    """ms per primary close, database path (`db_closes` closes) vs in-memory windows
    (`closes` closes), at `symbols` symbols x 1m/5m/15m/1h, on the migrated `db_url`."""
    exchange = f"inproc-{uuid.uuid4().hex[:8]}"
    names = [f"B{i:04d}/USDT" for i in range(symbols)]
    settings = Settings(symbols=names, exchange=exchange)
    step = TIMEFRAME_MINUTES[settings.primary_timeframe] * 60_000
    now_ms = int(NOW.value // MS)
    due = [now_ms - (closes - 1 - k) * step for k in range(closes)]
    window = settings.live_window_bars
    with psycopg.connect(
        db_url, autocommit=True, row_factory=dict_row, cursor_factory=_CountingCursor
    ) as conn:
        try:
            started = time.perf_counter()
            rows = _store(conn, exchange, names, window + closes + 3)
            store_s = time.perf_counter() - started

            def engine() -> LiveEngine:
                live = LiveEngine.start(
                    conn, settings=settings, symbols=names, run_id=LIVE_RUN, shard=None
                )
                live.watermark_ms, live.cooldown = due[0] - step, CooldownState({})
                return live

            # before: the database path (what every close cost before the windows)
            before = engine()
            db_ms, db_cpu, db_sent = _run(conn, before, due[:db_closes])
            db_reads = _kline_reads()
            db_signals = _signals(conn, exchange)
            conn.execute("DELETE FROM signals WHERE exchange = %s", (exchange,))
            # after: the stream's in-memory windows
            after = engine()
            started = time.perf_counter()
            after.hold_windows(conn, now_ms=now_ms)
            seed_s = time.perf_counter() - started
            mem_ms, mem_cpu, mem_sent = _run(conn, after, due)
            mem_reads = _kline_reads()
            mem_signals = _signals(conn, exchange)
            # the closes both paths evaluated: their signals (ts = bar open < its close)
            last = pd.Timestamp(due[max(db_closes, 1) - 1] * MS, tz="UTC")
            same = [s for s in mem_signals if s[1] < last] == db_signals if db_closes else None
        finally:
            for table in ("klines", "klines_5m", "klines_15m", "klines_1h", "signals"):
                conn.execute(f"DELETE FROM {table} WHERE exchange = %s", (exchange,))
            conn.execute("DELETE FROM stream_watermarks WHERE name LIKE %s", (f"%:{exchange}:%",))
    return {
        "symbols": symbols,
        "timeframes": list(settings.timeframes),
        "window_bars": window,
        "goal_ms_per_close": GOAL_MS_PER_CLOSE,
        "before_db_ms_per_close": round(statistics.median(db_ms), 1) if db_ms else None,
        "before_db_cpu_ms_per_close": round(statistics.median(db_cpu), 1) if db_cpu else None,
        "before_statements_per_close": statistics.median(db_sent) if db_sent else None,
        "before_kline_reads_last_close": db_reads,
        "after_windows_ms_per_close": round(statistics.median(mem_ms), 1),
        "after_windows_ms_max": round(max(mem_ms), 1),
        "after_windows_cpu_ms_per_close": round(statistics.median(mem_cpu), 1),
        "after_statements_per_close": statistics.median(mem_sent),
        "after_kline_reads_last_close": mem_reads,
        "closes_timed": {"before": len(db_ms), "after": len(mem_ms)},
        "signals_after": len(mem_signals),
        "same_signals": same,
        "windows_seed_seconds": round(seed_s, 2),
        "untimed_store_seconds": round(store_s, 1),
        "rows_stored": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--closes", type=int, default=12)
    parser.add_argument("--db-closes", type=int, default=1)
    parser.add_argument("--db-url", default=None, help="a migrated database (default: scratch)")
    args = parser.parse_args()
    if args.db_url:
        figure = process_closes_figure(
            args.symbols, args.db_url, closes=args.closes, db_closes=args.db_closes
        )
    else:
        from signalengine.core.migrate import upgrade

        name = f"bench_inproc_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(_LOCAL, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        url = psycopg.conninfo.make_conninfo(_LOCAL, dbname=name)
        try:
            upgrade(url)
            figure = process_closes_figure(
                args.symbols, url, closes=args.closes, db_closes=args.db_closes
            )
        finally:
            with psycopg.connect(_LOCAL, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(json.dumps(figure))


if __name__ == "__main__":
    main()

"""In-memory live windows: the same closed bars the database path reads, no window query
on a primary close, and a late bar or a gap fill reseeds what it touched."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pytest
from psycopg.rows import dict_row

from signalengine.core.config import Settings
from signalengine.core.timescale import backend
from signalengine.tasks.engine.buckets import OHLCV_COLUMNS
from signalengine.tasks.marketdata.klines import load_bars, store_klines
from signalengine.tasks.marketdata.validation import validate_klines
from signalengine.tasks.runs.live import LiveEngine
from signalengine.tasks.runs.windows import LiveWindows
from tests.utils.market import market_frame

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
TIMEFRAMES = ["1m", "5m", "15m", "1h"]
START = pd.Timestamp("2025-03-01", tz="UTC")
MS = 1_000_000
WINDOW = 300  # short windows: the 1m and 5m ones fill and wrap within the test


def _store(conn: Any, frame: pd.DataFrame) -> None:
    store_klines(conn, validate_klines(frame), timeframes=TIMEFRAMES)


def _ms(ts: pd.Timestamp) -> int:
    return int(ts.value // MS)


def _assert_same_as_database(conn: Any, windows: LiveWindows, at_ms: int) -> None:
    """Every symbol and timeframe: the held selection equals load_bars' closed window.

    Bit for bit, but for one thing: the windows bucket volume as the backtest does
    (`aggregate_buckets`, numpy reduceat's order), which plain PostgreSQL's upkeep follows
    and a TimescaleDB continuous aggregate's `sum` does not; there it may differ in the
    last bits.
    """
    timescale = backend(conn).timescale
    at = pd.Timestamp(at_ms * MS, tz="UTC")
    held = windows.series(at_ms)
    for tf in TIMEFRAMES:
        width = pd.Timedelta(tf.replace("m", "min"))
        frames = load_bars(
            conn,
            exchange="binance",
            symbols=SYMBOLS,
            timeframe=tf,
            start=at - width * (WINDOW + 1),
            closed_by=at,
        )
        for symbol in SYMBOLS:
            want = frames[symbol].iloc[-WINDOW:]
            got = held[symbol][tf]
            assert got.ts.tolist() == want.index.as_unit("ns").asi8.tolist(), (symbol, tf)
            for c in OHLCV_COLUMNS:  # bit for bit
                if timescale and c == "volume" and tf != "1m":
                    np.testing.assert_allclose(got.cols[c], want[c].to_numpy(), rtol=1e-14)
                    continue
                assert np.array_equal(got.cols[c], want[c].to_numpy()), (symbol, tf, c)


def _minute_frame(frames: dict[str, pd.DataFrame], minute: pd.Timestamp) -> pd.DataFrame:
    return pd.concat([f[f["ts"] == minute] for f in frames.values()], ignore_index=True)


def test_windows_follow_the_database_through_late_bars_and_gaps(kline_db) -> None:  # type: ignore[no-untyped-def]
    conn = kline_db
    history = {s: market_frame(s, "2025-03-01", 1.5) for s in SYMBOLS}
    seeded_to = START + pd.Timedelta(hours=30)
    for frame in history.values():
        _store(conn, frame[frame["ts"] < seeded_to])
    windows = LiveWindows(
        exchange="binance", symbols=SYMBOLS, timeframes=tuple(TIMEFRAMES), window=WINDOW
    )
    windows.seed(conn, at_ms=_ms(seeded_to))
    _assert_same_as_database(conn, windows, _ms(seeded_to))

    late: pd.DataFrame | None = None
    newest = {s: _ms(seeded_to) - 60_000 for s in SYMBOLS}  # the stream's watermarks
    minute = seeded_to
    for step in range(150):
        batch = _minute_frame(history, minute)
        if step == 40:  # ETH's bar goes missing over the WebSocket ...
            late = batch[batch["symbol"] == "ETH/USDT"]
            batch = batch[batch["symbol"] != "ETH/USDT"]
        if step == 43 and late is not None:  # ... and arrives three minutes late
            batch = pd.concat([batch, late], ignore_index=True)
        if step in range(90, 96):  # SOL is silent for six minutes ...
            batch = batch[batch["symbol"] != "SOL/USDT"]
        if step == 96:  # ... and a REST gap fill stores them before this minute
            gap = history["SOL/USDT"]
            gap = gap[(gap["ts"] >= minute - pd.Timedelta(minutes=6)) & (gap["ts"] < minute)]
            _store(conn, gap)
            newest["SOL/USDT"] = _ms(gap["ts"].max())
        _store(conn, batch)
        for symbol, ts in batch.groupby("symbol")["ts"].max().items():
            newest[str(symbol)] = max(newest[str(symbol)], _ms(ts))
        windows.take_1m(batch)
        upto = minute + pd.Timedelta(minutes=1)
        windows.advance(conn, upto_ms=_ms(upto), newest_ms=dict(newest))
        if step % 7 == 0 or step in (41, 43, 44, 95, 96, 97):
            _assert_same_as_database(conn, windows, _ms(upto))
        minute = upto
    # the late ETH bar and the gap filled behind SOL's back each reseeded their symbol
    assert windows.reseeded >= 2
    assert not windows.dirty


class _CountingCursor(psycopg.Cursor[Any]):
    """A real cursor that records every statement it sends (queries and COPYs)."""

    sent: list[str] = []

    def execute(self, query: Any, params: Any = None, **kw: Any) -> Any:
        _CountingCursor.sent.append(str(query if isinstance(query, str) else query.as_string(self)))
        return super().execute(query, params, **kw)

    def copy(self, statement: Any, params: Any = None, **kw: Any) -> Any:
        text = statement if isinstance(statement, str) else statement.as_string(self)
        _CountingCursor.sent.append(str(text))
        return super().copy(statement, params, **kw)


def test_a_primary_close_reads_no_window_from_the_database(db, database_url) -> None:  # type: ignore[no-untyped-def]
    symbols = [f"S{i:03d}/USDT" for i in range(20)]
    for symbol in symbols:
        frame = market_frame(symbol, "2025-03-01", 2, seed=7)
        frame["symbol"] = symbol
        _store(db, frame)
    now = START + pd.Timedelta(days=2)
    settings = Settings(symbols=symbols, signal_score_threshold=0.3, mtf_min_aligned=1)
    with psycopg.connect(
        database_url, autocommit=True, row_factory=dict_row, cursor_factory=_CountingCursor
    ) as conn:
        engine = LiveEngine.start(conn, settings=settings, symbols=symbols, run_id="q", shard=None)
        step = 5 * 60_000
        engine.watermark_ms = _ms(now) - 12 * step
        engine.hold_windows(conn, now_ms=_ms(now))
        _CountingCursor.sent.clear()
        closes = [engine.watermark_ms + k * step for k in range(1, 13)]
        written = engine.process_closes(conn, closes)
        sent = list(_CountingCursor.sent)
    reads = [q for q in sent if "klines" in q]
    assert reads == []  # no window (nor any bar) read on the hot path
    # what it did send: per close the signals insert and the watermark (no controls: not live)
    assert sum("stream_watermarks" in q for q in sent) == len(closes)
    assert (
        written
        == db.execute("SELECT count(*) AS n FROM signals WHERE run_id = 'q'").fetchone()["n"]
    )
    # the same closes evaluated by the database path give the same signals
    db.execute("DELETE FROM signals WHERE run_id = 'q'")
    engine.windows = None
    engine.watermark_ms = closes[0] - step
    from signalengine.tasks.engine.records import CooldownState

    engine.cooldown = CooldownState({})
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        assert engine.process_closes(conn, closes) == written


@pytest.mark.parametrize("count", [0, 1])
def test_a_symbol_without_bars_has_empty_windows(db, count: int) -> None:  # type: ignore[no-untyped-def]
    if count:
        _store(db, market_frame("BTC/USDT", "2025-03-01", 0.2))
    windows = LiveWindows(
        exchange="binance", symbols=["BTC/USDT", "NEW/USDT"], timeframes=("1m", "5m"), window=50
    )
    at = _ms(START + pd.Timedelta(hours=4))
    windows.seed(db, at_ms=at)
    series = windows.series(at)
    assert series["NEW/USDT"]["5m"].ts.size == 0
    assert series["BTC/USDT"]["1m"].ts.size == (50 if count else 0)
    with pytest.raises(ValueError, match="hold bars up to"):
        windows.series(at + 60_000)


def test_closed_buckets_are_made_in_memory_without_a_query(db, database_url) -> None:  # type: ignore[no-untyped-def]
    """Advancing through 5m, 15m and 1h closes sends no statement (nothing is dirty), and
    the buckets equal the backtest's own bucketing of the same stored 1m bars."""
    from signalengine.tasks.engine.config import EngineConfig
    from signalengine.tasks.runs.backtest import _higher_timeframes

    history = {s: market_frame(s, "2025-03-01", 1.2) for s in SYMBOLS}
    seeded_to = START + pd.Timedelta(hours=20, minutes=7)  # mid-bucket of every timeframe
    for frame in history.values():
        _store(db, frame)
    with psycopg.connect(
        database_url, autocommit=True, row_factory=dict_row, cursor_factory=_CountingCursor
    ) as conn:
        windows = LiveWindows(
            exchange="binance",
            symbols=SYMBOLS,
            timeframes=tuple(TIMEFRAMES),
            window=WINDOW,
            primary="5m",
        )
        windows.seed(conn, at_ms=_ms(seeded_to))
        _CountingCursor.sent.clear()
        minute = seeded_to
        for _ in range(130):  # two 1h closes, eight 15m, 26 5m
            windows.take_1m(_minute_frame(history, minute))
            minute += pd.Timedelta(minutes=1)
            windows.advance(conn, upto_ms=_ms(minute))
        assert _CountingCursor.sent == []
    config = EngineConfig(timeframes=tuple(TIMEFRAMES), primary_timeframe="5m")
    held = windows.series(_ms(minute))
    for symbol, frame in history.items():
        bars_1m = frame.set_index("ts")[list(OHLCV_COLUMNS)]
        want = _higher_timeframes(bars_1m[bars_1m.index < minute], config)
        for tf in ("5m", "15m", "1h"):
            got = held[symbol][tf]
            # the buckets closed after the seed were made in memory
            made = want[tf][want[tf].index >= seeded_to - pd.Timedelta(tf.replace("m", "min"))]
            made = made[made.index + pd.Timedelta(tf.replace("m", "min")) <= minute]
            tail = got.ts[-len(made) :]
            assert len(made) >= 2 and tail.tolist() == made.index.as_unit("ns").asi8.tolist()
            for c in OHLCV_COLUMNS:
                assert np.array_equal(got.cols[c][-len(made) :], made[c].to_numpy()), (tf, c)

"""Live == backtest at 200 symbols through a late bar, a gap fill and a corrected bar.

The stream's evaluation side is driven minute by minute as the stream drives it: each
minute's bars are stored through `store_frame` (the WebSocket's and the REST fills'
path, journaled by the watermarks), and `LiveEngine.on_minute` advances the in-memory
windows by exactly what was stored and evaluates the 5m closes due. At the end
`signalengine backtest`'s path (`run_backtest` over the stored 1m klines as
`load_history_columns` reads them: higher timeframes bucketed in numpy) runs; the live
signals, read from the relations klines_<tf> the writer keeps in SQL, equal its signals
bit for bit (the SQL adds volume in numpy's order: tests/tasks/test_bucket_sum_order.py),
and so do those of the backtest driver over every stored relation the stream reads.
The reseeds are exactly the symbols whose windows could not take a bar, no primary
close reads a bar from the database, and a stream restarted after a crash (closes
stored but never evaluated) rebuilds its windows and cooldowns from the database and
goes on with the same signals.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from psycopg.rows import dict_row

from signalengine.core.config import Settings
from signalengine.tasks.engine.pipeline import evaluate_symbol_history
from signalengine.tasks.engine.records import SIGNAL_COLUMNS, CooldownState
from signalengine.tasks.marketdata.ingest import Watermarks, store_frame
from signalengine.tasks.marketdata.klines import load_bars
from signalengine.tasks.runs.backtest import run_backtest
from signalengine.tasks.runs.history import load_history_columns
from signalengine.tasks.runs.live import LiveEngine
from tests.tasks.test_live_windows import _CountingCursor
from tests.utils.market import market_frame

SYMBOLS = [f"P{i:03d}/USDT" for i in range(200)]
TIMEFRAMES = ["1m", "5m", "15m", "1h"]
START = pd.Timestamp("2025-04-01", tz="UTC")
T0 = START + pd.Timedelta(hours=4)  # history stored before the live run (a catch-up)
LIVE_MINUTES = 50  # 10 primary closes x 200 symbols
MINUTE = pd.Timedelta(minutes=1)
MS = 1_000_000
SETTINGS = Settings(
    symbols=SYMBOLS,
    timeframes=TIMEFRAMES,
    primary_timeframe="5m",
    signal_score_threshold=0.3,
    mtf_min_aligned=1,
    cooldown_bars=3,
)
# what happens mid-run (minute offsets from T0; 5m closes at multiples of 5)
REST_FILLED = ("P005/USDT", 12)  # WebSocket bar missing, the minute's REST fill has it ...
LATE_DUPLICATE = 14  # ... and the WebSocket bar arrives two minutes late (a duplicate)
LATE = ("P010/USDT", 21)  # neither source has the bar; it is stored two minutes late
LATE_STORED = 23
GAP = (SYMBOLS[20:30], range(31, 34))  # ten symbols silent three minutes ...
GAP_FILLED = 34  # ... filled over REST before the next minute's bars
CORRECTED = ("P030/USDT", 39)  # a different value for a stored bar: rejected
CORRECTED_SENT = 40
CRASHED = range(42, 47)  # stored, never evaluated: the close at 45 is left behind ...
RESTARTED = 47  # ... until a restarted stream evaluates it from freshly seeded windows


def _ms(ts: pd.Timestamp) -> int:
    return int(ts.value // MS)


def _store(conn: Any, frame: pd.DataFrame, marks: Watermarks, source: str) -> None:
    if not frame.empty:
        store_frame(
            conn,
            frame,
            exchange="binance",
            known_symbols=SYMBOLS,
            timeframes=TIMEFRAMES,
            source=source,
            marks=marks,
        )


def _backtest(conn: Any, engine: LiveEngine, as_of: pd.Timestamp) -> pd.DataFrame:
    """The backtest driver (`evaluate_symbol_history`) over every stored relation the
    stream reads (klines and klines_<tf>), bars closed by `as_of`."""
    stored = {
        tf: load_bars(
            conn, exchange="binance", symbols=SYMBOLS, timeframe=tf, start=START, closed_by=as_of
        )
        for tf in TIMEFRAMES
    }
    return pd.concat(
        [
            evaluate_symbol_history(
                {tf: stored[tf][s] for tf in TIMEFRAMES},
                symbol=s,
                exchange="binance",
                run_id="parity",
                config=engine.config,
                as_of=as_of,
            )
            for s in SYMBOLS
        ],
        ignore_index=True,
    )


def _real_backtest(conn: Any, engine: LiveEngine, end: pd.Timestamp) -> pd.DataFrame:
    """`signalengine backtest`'s path: the stored 1m bars in [START, end), as the backtest
    flow reads them, through `run_backtest` (higher timeframes bucketed in numpy)."""
    bars = load_history_columns(conn, exchange="binance", symbols=SYMBOLS, start=START, end=end)
    signals, _, _ = run_backtest(bars, config=engine.config, run_id="parity", exchange="binance")
    return signals


def _bar(frames: dict[str, pd.DataFrame], symbol: str, offset: int) -> pd.DataFrame:
    frame = frames[symbol]
    return frame[frame["ts"] == T0 + offset * MINUTE]


def _arrivals(
    offset: int,
    batch: pd.DataFrame,
    frames: dict[str, pd.DataFrame],
    held_back: list[pd.DataFrame],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(WebSocket bars, REST-filled bars) stored for the minute at `offset`."""
    ws, rest = batch, batch.iloc[0:0]
    if offset == REST_FILLED[1]:
        ws, rest = batch[batch["symbol"] != REST_FILLED[0]], _bar(frames, *REST_FILLED)
    if offset == LATE_DUPLICATE:
        ws = pd.concat([ws, _bar(frames, *REST_FILLED)], ignore_index=True)
    if offset == LATE[1]:
        ws = batch[batch["symbol"] != LATE[0]]
    if offset == LATE_STORED:
        ws = pd.concat([_bar(frames, *LATE), ws], ignore_index=True)
    if offset in GAP[1]:
        held_back.append(batch[batch["symbol"].isin(GAP[0])])
        ws = batch[~batch["symbol"].isin(GAP[0])]
    if offset == GAP_FILLED:
        rest = pd.concat(held_back, ignore_index=True)
    if offset == CORRECTED_SENT:
        wrong = _bar(frames, *CORRECTED).assign(close=lambda f: f["close"] * 1.01)
        wrong = wrong.assign(high=lambda f: f[["high", "close"]].max(axis=1))
        ws = pd.concat([ws, wrong], ignore_index=True)
    return ws, rest


def test_live_equals_backtest_at_200_symbols_through_late_bars_and_a_gap(db, database_url) -> None:  # type: ignore[no-untyped-def]
    days = (T0 - START + LIVE_MINUTES * MINUTE) / pd.Timedelta(days=1)
    frames = {s: market_frame(s, str(START.date()), days) for s in SYMBOLS}
    every = pd.concat(frames.values(), ignore_index=True)
    by_minute = dict(tuple(every.groupby("ts")))
    sent: list[str] = _CountingCursor.sent
    with psycopg.connect(
        database_url, autocommit=True, row_factory=dict_row, cursor_factory=_CountingCursor
    ) as conn:
        marks = Watermarks.load(conn, exchange="binance", symbols=SYMBOLS)
        _store(conn, every[every["ts"] < T0], marks, "rest")  # the catch-up
        engine = LiveEngine.start(
            conn, settings=SETTINGS, symbols=SYMBOLS, run_id="parity", shard=None
        )
        engine.ensure_watermark(conn, _ms(T0))
        # the cooldown the backtest carries into T0 (a restarted stream reads it back from
        # its stored signals; no lookahead, so the stored prefix gives the same signals)
        engine.cooldown = CooldownState.from_signals(_real_backtest(conn, engine, T0))
        windows = engine.hold_windows(conn, now_ms=_ms(T0))
        marks.journal = True

        hot_reads: list[str] = []

        def count_hot_reads(live: LiveEngine) -> None:
            process = live.process_closes

            def counted(conn: Any, closes: list[int], **options: Any) -> int:
                start = len(sent)
                written = process(conn, closes, **options)
                hot_reads.extend(q for q in sent[start:] if "klines" in q)
                return written

            live.process_closes = counted  # type: ignore[method-assign]

        count_hot_reads(engine)
        first_windows = windows
        held_back: list[pd.DataFrame] = []
        closes_evaluated = 0
        for offset in range(LIVE_MINUTES):
            if offset == RESTARTED:  # a new process: everything rebuilt from the database
                marks = Watermarks.load(conn, exchange="binance", symbols=SYMBOLS)
                engine = LiveEngine.start(
                    conn, settings=SETTINGS, symbols=SYMBOLS, run_id="parity", shard=None
                )
                windows = engine.hold_windows(conn, now_ms=_ms(T0 + offset * MINUTE))
                marks.journal = True
                count_hot_reads(engine)
            ws, rest = _arrivals(offset, by_minute[T0 + offset * MINUTE], frames, held_back)
            if offset == GAP_FILLED:  # the stream fills gaps before storing the minute
                _store(conn, rest, marks, "rest")
                _store(conn, ws, marks, "ws")
            else:
                _store(conn, ws, marks, "ws")
                _store(conn, rest, marks, "rest")  # the minute's own REST fill comes after
            upto = _ms(T0 + (offset + 1) * MINUTE)
            if offset in CRASHED:  # stored, but the process dies before evaluating it
                continue
            before_mark = engine.watermark_ms
            engine.on_minute(
                conn, upto_ms=upto, stored=marks.take_stored(), newest_ms=dict(marks.by_symbol)
            )
            closes_evaluated += (engine.watermark_ms - before_mark) // (5 * 60_000)
        live = conn.execute(
            f"SELECT {', '.join(SIGNAL_COLUMNS)} FROM signals WHERE run_id = 'parity'"
        ).fetchall()
        end = T0 + LIVE_MINUTES * MINUTE
        backtest = _real_backtest(conn, engine, end)  # over the final stored 1m klines
        relations = _backtest(conn, engine, end)  # over every stored relation
    assert closes_evaluated == LIVE_MINUTES // 5
    assert hot_reads == []  # no primary close read a bar (windows nor any other)
    # reseeded: the late bar's symbol twice (a later bar before it, then the bar itself),
    # the gap's ten symbols once; the REST-filled bar, the duplicate and the corrected
    # bar were placed (or kept) without a reseed
    assert first_windows.reseeded == 2 + len(GAP[0])
    assert not first_windows.dirty and windows.reseeded == 0
    due = backtest[(backtest["ts"] >= T0) & (backtest["ts"] + pd.Timedelta(minutes=5) <= end)]
    key = ["symbol", "ts"]
    theirs = due[list(SIGNAL_COLUMNS)].sort_values(key, kind="stable").to_dict("records")
    stored_due = relations[
        (relations["ts"] >= T0) & (relations["ts"] + pd.Timedelta(minutes=5) <= end)
    ]
    from_relations = stored_due[list(SIGNAL_COLUMNS)].sort_values(key, kind="stable")
    ours = (
        pd.DataFrame(live, columns=list(SIGNAL_COLUMNS))
        .sort_values(key, kind="stable")
        .to_dict("records")
    )
    assert len(ours) >= 10, "too few signals for the comparison to prove anything"
    assert {s["symbol"] for s in ours} & {LATE[0], *GAP[0]}, "no signal of a reseeded symbol"
    assert _comparable(ours) == _comparable(theirs)
    assert _comparable(from_relations.to_dict("records")) == _comparable(theirs)


KEY = (
    "id",
    "symbol",
    "timeframe",
    "direction",
    "ts",
    "entry_price",
    "take_profit",
    "stop_loss",
    "expires_at",
    "score",
    "mtf_aligned",
    "mtf_score",
    "features",
)


def _exact(value: Any) -> Any:
    """A float as itself (NaN as a marker, so equal NaNs compare equal), dicts through."""
    if isinstance(value, dict):
        return {k: _exact(v) for k, v in value.items()}
    if isinstance(value, float | np.floating):
        return "nan" if np.isnan(value) else float(value)
    return value


def _comparable(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The signal columns that matter, database rows and backtest frame rows alike
    (ids as text, times as UTC Timestamps, JSON as Python objects); floats stay exact."""
    out = []
    for r in records:
        row: dict[str, Any] = {}
        for k in KEY:
            v = r[k]
            if k == "id":
                v = str(v)
            elif k in ("ts", "expires_at"):
                v = pd.Timestamp(v).tz_convert("UTC")
            elif k == "features" and isinstance(v, str):
                v = json.loads(v)
            elif k == "mtf_aligned":
                v = bool(v)
            row[k] = _exact(v)
        out.append(row)
    return out

"""Historical backtest / replay: 1m candles per symbol -> signals, outcomes and a summary.

Pure (no database, no Prefect): the caller loads the 1m bars and stores the results. Per
symbol the higher timeframes are resampled from the 1m bars (tasks.engine.buckets), signals come
from `tasks.engine.pipeline.evaluate_symbol_history` (the same code the live stream runs) and are
settled over the same 1m bars (tasks.outcomes.settlement) as of the close of the last 1m bar.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from signalengine.core.vocabulary import engine_bucket_order
from signalengine.tasks.engine.buckets import (
    OHLCV_COLUMNS,
    aggregate_buckets,
    index_ns,
    resample_bars,
    timeframe_ns,
)
from signalengine.tasks.engine.config import EngineConfig
from signalengine.tasks.engine.pipeline import evaluate_symbol_history
from signalengine.tasks.engine.records import SIGNAL_COLUMNS, SignalFilter
from signalengine.tasks.engine.strategy import Strategy
from signalengine.tasks.outcomes.settlement import (
    OUTCOMES,
    PERFORMANCE_COLUMNS,
    performance_frame,
    settle_frame,
)
from signalengine.tasks.outcomes.stats import trade_statistics

__all__ = ["run_backtest", "summarize_performance"]


def run_backtest(
    bars_1m_by_symbol: Mapping[str, pd.DataFrame],
    *,
    config: EngineConfig,
    run_id: str,
    exchange: str,
    signal_filter: SignalFilter | None = None,
    model_version: str | None = None,
    on_symbol: Callable[[str, int], None] | None = None,
    strategies: Sequence[Strategy] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Backtest every symbol; returns (signals, performance, summary).

    `bars_1m_by_symbol`: symbol -> 1m frame indexed by UTC bar open time with float
    `open, high, low, close, volume`. `signals` has the `signals` table columns
    (status = outcome once settled, else 'open'); `performance` has the
    `signal_performance` columns for the settled ones; `summary` is JSON-safe (see
    `summarize_performance`) plus `bars_processed` (1m bars read) and `seconds`.
    `strategies` run together over each symbol's bars and features (default: the
    built-in one); every signal names its strategy.
    """
    started = time.perf_counter()
    cfg = config
    signal_frames: list[tuple[str, pd.DataFrame]] = []
    perf_frames: list[tuple[str, pd.DataFrame]] = []
    bars_processed = 0
    for symbol, bars_1m in bars_1m_by_symbol.items():
        bars_processed += len(bars_1m)
        if on_symbol is not None:  # progress reporting: symbol and its 1m bar count
            on_symbol(symbol, len(bars_1m))
        if bars_1m.empty:
            continue
        bars_by_tf = _higher_timeframes(bars_1m, cfg)
        bars_by_tf["1m"] = bars_1m
        signals = evaluate_symbol_history(
            bars_by_tf,
            symbol=symbol,
            exchange=exchange,
            run_id=run_id,
            config=cfg,
            signal_filter=signal_filter,
            model_version=model_version,
            strategies=strategies,
        )
        if signals.empty:
            continue
        settled = settle_frame(signals, bars_1m, fee_bps=cfg.fee_bps, slippage_bps=cfg.slippage_bps)
        # status = outcome once settled; code 0 (not settleable yet) is OUTCOMES[0], "open"
        status = np.asarray(OUTCOMES, dtype=object)[settled.outcome]
        signals["status"] = pd.Series(status, index=signals.index, dtype=object)
        signal_frames.append((symbol, signals))
        perf_frames.append((symbol, performance_frame(signals, settled)))
    signals_all = _concat(signal_frames, SIGNAL_COLUMNS, "emitted_at")
    perf_all = _concat(perf_frames, PERFORMANCE_COLUMNS, "exit_time")
    summary = summarize_performance(perf_all, signals=len(signals_all))
    summary["symbols"] = len(bars_1m_by_symbol)
    summary["bars_processed"] = bars_processed
    summary["seconds"] = round(time.perf_counter() - started, 6)
    return signals_all, perf_all, summary


def _higher_timeframes(bars_1m: pd.DataFrame, cfg: EngineConfig) -> dict[str, pd.DataFrame]:
    """Every configured timeframe above 1m, bucketed from the 1m bars.

    The primary timeframe is bucketed from the 1m bars themselves. The others only cast
    MTF votes, which read open times and closes: those are exact whichever level they
    are built from, so each is bucketed from the largest smaller timeframe dividing it
    (1h from 15m: 4 rows per bucket instead of 60), as the database's relations are.
    """
    out: dict[str, pd.DataFrame] = {}
    ts = index_ns(bars_1m)
    if ts.size == 0 or (ts.size > 1 and not bool(np.all(np.diff(ts) > 0))):
        # empty, or out of order: resample_bars returns the empty frames / raises
        return {tf: resample_bars(bars_1m, tf) for tf in cfg.timeframes if tf != "1m"}
    base: dict[str, NDArray[np.generic]] = {"ts": ts}
    base |= {c: np.asarray(bars_1m[c], dtype=np.float64) for c in OHLCV_COLUMNS}
    levels: dict[str, dict[str, NDArray[np.generic]]] = {"1m": base}
    # the live windows bucket in the same order (tasks.runs.windows)
    for tf, source in engine_bucket_order(cfg.timeframes, cfg.primary_timeframe):
        level = aggregate_buckets(levels[source], timeframe_ns(tf))
        levels[tf] = level
        index = pd.DatetimeIndex(np.asarray(level["ts"]).view("datetime64[ns]"), name="ts")
        columns = {c: level[c] for c in (*OHLCV_COLUMNS, "bars")}
        # the arrays are the frame's own (copy=False): nothing else holds them
        out[tf] = pd.DataFrame(columns, index=index.tz_localize("UTC"), copy=False)
    return out


def _concat(
    frames: list[tuple[str, pd.DataFrame]], columns: tuple[str, ...], order: str
) -> pd.DataFrame:
    """(symbol, frame of that symbol's rows) pairs as one frame, stably sorted by the time
    column `order`, then symbol: `sort_values([order, "symbol"], kind="stable")`'s rows,
    ordered by numpy on int64 times and symbol ranks instead of by strings."""
    if not frames:
        return pd.DataFrame(columns=list(columns))
    out = pd.concat([frame for _, frame in frames], ignore_index=True)
    rank = {symbol: i for i, symbol in enumerate(sorted({symbol for symbol, _ in frames}))}
    symbols = np.repeat([rank[s] for s, _ in frames], [len(f) for _, f in frames])
    times = pd.DatetimeIndex(out[order]).as_unit("ns").asi8
    rows = np.lexsort((symbols, times))
    if bool(np.all(rows == np.arange(rows.size))):
        return out  # already in order (one symbol's signals): no copy
    return out.take(rows).reset_index(drop=True)


def summarize_performance(performance: pd.DataFrame, *, signals: int) -> dict[str, Any]:
    """Trade statistics of settled signals (JSON-safe; None where undefined).

    The figures are `tasks.outcomes.stats.trade_statistics` (the one definition the
    rollups and the API use too).
    """
    figures = trade_statistics(performance)
    return {
        "signals": int(signals),
        "settled": figures["count"],
        "tp_hit": figures["wins"],
        "sl_hit": figures["losses"],
        "expired": figures["expired"],
        "win_rate": figures["win_rate"],
        "avg_return_pct": figures["avg_return_pct"],
        "sharpe": figures["sharpe"],
        "max_drawdown_pct": figures["max_drawdown_pct"],
    }

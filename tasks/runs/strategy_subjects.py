"""A `Strategy` as `strategy check` sees it (`CheckSubject`): the engine's own two drivers run
with that one strategy, and the per-bar columns that name what moved."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from signalengine.core.vocabulary import FloatArray
from signalengine.tasks.engine.buckets import ClosedSeries, index_ns, timeframe_ns
from signalengine.tasks.engine.features import feature_arrays
from signalengine.tasks.engine.pipeline import evaluate_latest_series, evaluate_symbol_history
from signalengine.tasks.engine.records import CooldownState, Signal
from signalengine.tasks.engine.strategy import Strategy
from signalengine.tasks.runs.strategy_base import CHECK_RUN, CheckSubject

__all__ = ["strategy_features", "strategy_subject"]


def _frame(series: ClosedSeries) -> dict[str, FloatArray]:
    """OHLCV and the standard features of one timeframe's selected bars."""
    c = series.cols
    return {**c, **feature_arrays(c["high"], c["low"], c["close"], c["volume"])}


def strategy_features(strategy: Strategy, bars_by_tf: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Per primary bar closed by the last 1m bar's close: the standard features, the
    strategy's own entry columns, and `vote_<tf>`, each timeframe's vote at that close
    (its last bar closed by then, as the engine reads it). Index: UTC open time."""
    one = bars_by_tf["1m"]
    as_of = int(index_ns(one)[-1]) + timeframe_ns("1m") if len(one) else None
    primary = strategy.primary_timeframe
    series = {
        tf: ClosedSeries(bars_by_tf[tf], tf, as_of_ns=as_of, window=None)
        for tf in dict.fromkeys((primary, *strategy.timeframes))
    }
    p = series[primary]
    base = _frame(p)
    frame = {**base, **strategy.entry(base).features}
    at_ns = p.ts + timeframe_ns(primary)
    columns = {k: v for k, v in frame.items() if k not in p.cols}
    for tf in strategy.timeframes:
        if tf == primary:
            columns[f"vote_{tf}"] = strategy.vote(frame).astype(np.float64)
            continue
        s = series[tf]
        last = np.searchsorted(s.ts, at_ns - timeframe_ns(tf), side="right") - 1
        picked = {k: v[np.maximum(last, 0)] for k, v in _frame(s).items()}
        votes = np.where(last >= 0, strategy.vote(picked), 0) if s.ts.size else 0 * last
        columns[f"vote_{tf}"] = np.asarray(votes, dtype=np.float64)
    index = pd.DatetimeIndex(pd.to_datetime(p.ts, unit="ns", utc=True), name="ts")
    return pd.DataFrame(columns, index=index)


def strategy_subject(strategy: Strategy, *, exchange: str) -> CheckSubject:
    """`strategy` through tasks.engine.pipeline: `evaluate_symbol_history` (backtest) and
    `evaluate_latest_series` (live) with `strategies=[strategy]`."""
    config = strategy.config

    def history(bars_by_tf: Mapping[str, pd.DataFrame], *, symbol: str) -> pd.DataFrame:
        return evaluate_symbol_history(
            bars_by_tf,
            symbol=symbol,
            exchange=exchange,
            run_id=CHECK_RUN,
            config=config,
            strategies=[strategy],
        )

    def latest(
        series_by_symbol: Mapping[str, Mapping[str, ClosedSeries]],
        *,
        at: pd.Timestamp,
        state: CooldownState,
    ) -> list[Signal]:
        return evaluate_latest_series(
            series_by_symbol,
            at=at,
            state=state,
            exchange=exchange,
            config=config,
            run_id=CHECK_RUN,
            strategies=[strategy],
        )

    def features(bars_by_tf: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
        return strategy_features(strategy, bars_by_tf)

    return CheckSubject(
        name=strategy.name,
        version=strategy.version,
        # every timeframe the engine builds is handed to the strategy's drivers
        timeframes=config.timeframes,
        primary_timeframe=strategy.primary_timeframe,
        lookback_bars=strategy.lookback_bars,
        cooldown_bars=strategy.cooldown_bars,
        live_window_bars=config.live_window_bars,
        history=history,
        latest=latest,
        features=features,
    )

"""Training rows of the AI filter: every candidate it would see, with a triple-barrier label.

A candidate is a primary bar the engine turns into a signal before the AI filter (score
threshold, ATR > 0 and, when configured, MTF alignment). The engine applies its cooldown
*after* the filter, so the filter scores candidates that the cooldown later drops; the
dataset is therefore built with `cooldown_bars = 0` and no filter, which yields exactly the
rows the filter is given.

Each row holds the model inputs (`MODEL_COLUMNS`: FEATURE_COLUMNS at emission time,
`direction` +1 long / -1 short, `score`, `mtf_score`, all float64; for another strategy
`model_columns(strategy)`: its `filter_columns` in place of FEATURE_COLUMNS) and, for splitting and
evaluation, `symbol`, `ts` (trigger bar open time), `emitted_at`, `expires_at` (UTC),
`outcome`, `return_pct` (percent, after fees) and `label`: 1 when the take profit is hit
before the stop loss by `expires_at` (settled by tasks.outcomes.settlement on the 1m bars, DESIGN
§4), else 0. Candidates that cannot be settled yet (window not closed) are left out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import psycopg

from signalengine.tasks.engine.buckets import MINUTE_NS, OHLCV_COLUMNS
from signalengine.tasks.engine.config import EngineConfig
from signalengine.tasks.engine.features import FEATURE_COLUMNS
from signalengine.tasks.engine.pipeline import evaluate_symbol_history
from signalengine.tasks.engine.strategy import Strategy
from signalengine.tasks.marketdata.klines import last_stored_ts, load_bars
from signalengine.tasks.outcomes.settlement import settle_signals

_CANDIDATE_COLUMNS: tuple[str, ...] = ("direction", "score", "mtf_score")
MODEL_COLUMNS: tuple[str, ...] = (*FEATURE_COLUMNS, *_CANDIDATE_COLUMNS)  # the default's
META_COLUMNS: tuple[str, ...] = (
    "symbol",
    "ts",
    "emitted_at",
    "expires_at",
    "outcome",
    "return_pct",
)
LABEL_COLUMN = "label"
DATASET_COLUMNS: tuple[str, ...] = (*META_COLUMNS, *MODEL_COLUMNS, LABEL_COLUMN)
_RUN_ID = "training"

__all__ = [
    "DATASET_COLUMNS",
    "LABEL_COLUMN",
    "META_COLUMNS",
    "MODEL_COLUMNS",
    "build_dataset",
    "candidate_config",
    "dataset_columns",
    "label_candidates",
    "load_training_bars",
    "model_columns",
    "model_inputs",
]


def model_columns(strategy: Strategy | None = None) -> tuple[str, ...]:
    """The filter's inputs for a strategy: its filter_columns, direction, score, mtf_score
    (MODEL_COLUMNS for the built-in one)."""
    if strategy is None:
        return MODEL_COLUMNS
    return (*strategy.filter_columns, *_CANDIDATE_COLUMNS)


def dataset_columns(strategy: Strategy | None = None) -> tuple[str, ...]:
    """DATASET_COLUMNS with a strategy's model columns."""
    return (*META_COLUMNS, *model_columns(strategy), LABEL_COLUMN)


def candidate_config(config: EngineConfig) -> EngineConfig:
    """The engine config that emits every pre-filter candidate (no cooldown)."""
    return dataclasses.replace(config, cooldown_bars=0)


def model_inputs(
    signals: pd.DataFrame, *, features: tuple[str, ...] = FEATURE_COLUMNS
) -> pd.DataFrame:
    """MODEL_COLUMNS (float64, NaN where a feature is undefined) of `signals` table rows;
    `features`: the strategy's filter_columns."""
    features_frame = pd.DataFrame.from_records(
        list(signals["features"]), columns=list(features), index=signals.index
    )
    out = features_frame.astype("float64")
    out["direction"] = np.where(signals["direction"].to_numpy() == "long", 1.0, -1.0)
    out["score"] = signals["score"].to_numpy(dtype=np.float64)
    out["mtf_score"] = signals["mtf_score"].to_numpy(dtype=np.float64)
    return out


def label_candidates(
    signals: pd.DataFrame,
    bars_1m: pd.DataFrame,
    *,
    config: EngineConfig,
    as_of: pd.Timestamp | None = None,
    strategy: Strategy | None = None,
) -> pd.DataFrame:
    """DATASET_COLUMNS rows of one symbol's candidates that can be settled by `as_of`.

    `signals`: `signals` table rows (engine output); `bars_1m`: that symbol's 1m bars
    indexed by UTC open time. `as_of` defaults to the close of the last 1m bar.
    `strategy` (default: the built-in one) decides the feature columns.
    """
    cfg = config
    columns = dataset_columns(strategy)
    if signals.empty:
        return pd.DataFrame(columns=list(columns))
    perf = settle_signals(
        signals, bars_1m, fee_bps=cfg.fee_bps, slippage_bps=cfg.slippage_bps, as_of=as_of
    )
    settled = perf.set_index("signal_id")
    keep = signals["id"].isin(settled.index)
    rows = signals.loc[keep]
    ids = rows["id"].to_numpy()
    out = rows[["symbol", "ts", "emitted_at", "expires_at"]].reset_index(drop=True)
    out["outcome"] = settled.loc[ids, "outcome"].to_numpy()
    out["return_pct"] = settled.loc[ids, "return_pct"].to_numpy(dtype=np.float64)
    features = FEATURE_COLUMNS if strategy is None else strategy.filter_columns
    inputs = model_inputs(rows, features=features).reset_index(drop=True)
    out = pd.concat([out, inputs], axis=1)
    out[LABEL_COLUMN] = (out["outcome"] == "tp_hit").astype(np.int64)
    return out[list(columns)]


def build_dataset(
    bars_1m_by_symbol: Mapping[str, pd.DataFrame],
    *,
    config: EngineConfig,
    exchange: str,
    strategy: Strategy | None = None,
) -> pd.DataFrame:
    """Labelled candidates of every symbol, ordered by emitted_at then symbol.

    `bars_1m_by_symbol`: symbol -> 1m frame indexed by UTC open time with float OHLCV.
    Higher timeframes are resampled from the 1m bars, as in the backtest. `strategy`
    (default: the built-in one) emits the candidates; each strategy trains its own filter.
    """
    cfg = candidate_config(config)
    chosen = None if strategy is None else [strategy.with_config(cfg)]
    parts: list[pd.DataFrame] = []
    for symbol, bars_1m in bars_1m_by_symbol.items():
        if bars_1m.empty:
            continue
        signals = evaluate_symbol_history(
            {"1m": bars_1m},
            symbol=symbol,
            exchange=exchange,
            run_id=_RUN_ID,
            config=cfg,
            strategies=chosen,
        )
        labelled = label_candidates(signals, bars_1m, config=cfg, strategy=strategy)
        if not labelled.empty:
            parts.append(labelled)
    if not parts:
        return pd.DataFrame(columns=list(dataset_columns(strategy)))
    data = pd.concat(parts, ignore_index=True)
    for col in ("ts", "emitted_at", "expires_at"):
        data[col] = pd.to_datetime(data[col], utc=True).dt.as_unit("ns")
    return data.sort_values(["emitted_at", "symbol"], kind="stable").reset_index(drop=True)


def load_training_bars(
    conn: psycopg.Connection[Any],
    *,
    exchange: str,
    symbols: list[str],
    lookback_days: float,
    end: pd.Timestamp | None = None,
) -> dict[str, pd.DataFrame]:
    """Stored 1m bars per symbol with open time in [end - lookback_days, end).

    `end` defaults to the close of the newest stored 1m bar of any of the symbols (so a
    replayed or simulated history trains as well as a live one). Symbols with no bars get
    an empty frame.
    """
    if end is None:
        newest = [last_stored_ts(conn, exchange=exchange, symbol=s) for s in symbols]
        known = [pd.Timestamp(t) for t in newest if t is not None]
        if not known:
            return {s: pd.DataFrame(columns=list(OHLCV_COLUMNS)) for s in symbols}
        end = max(known) + pd.Timedelta(MINUTE_NS, unit="ns")
    start = end - pd.Timedelta(days=lookback_days)
    frames = load_bars(
        conn, exchange=exchange, symbols=symbols, timeframe="1m", start=start, end=end
    )
    return {s: f.drop(columns="bars", errors="ignore") for s, f in frames.items()}

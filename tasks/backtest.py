"""Historical backtest / replay: 1m candles per symbol -> signals, outcomes and a summary.

Pure (no database, no Prefect): the caller loads the 1m bars and stores the results. Per
symbol the higher timeframes are resampled from the 1m bars (tasks.resample), signals come
from `tasks.engine.evaluate_symbol_history` (the same code the live stream runs) and are
settled over the same 1m bars (tasks.settlement) as of the close of the last 1m bar.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from core.config import Settings
from tasks.engine import evaluate_symbol_history
from tasks.engine_types import SIGNAL_COLUMNS, EngineConfig, SignalFilter, engine_config
from tasks.resample import resample_bars
from tasks.settlement import PERFORMANCE_COLUMNS, settle_signals

__all__ = ["run_backtest", "summarize_performance"]


def run_backtest(
    bars_1m_by_symbol: Mapping[str, pd.DataFrame],
    *,
    config: EngineConfig | Settings,
    run_id: str,
    exchange: str,
    signal_filter: SignalFilter | None = None,
    model_version: str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Backtest every symbol; returns (signals, performance, summary).

    `bars_1m_by_symbol`: symbol -> 1m frame indexed by UTC bar open time with float
    `open, high, low, close, volume`. `signals` has the `signals` table columns
    (status = outcome once settled, else 'open'); `performance` has the
    `signal_performance` columns for the settled ones; `summary` is JSON-safe (see
    `summarize_performance`) plus `bars_processed` (1m bars read) and `seconds`.
    """
    started = time.perf_counter()
    cfg = engine_config(config)
    signal_frames: list[pd.DataFrame] = []
    perf_frames: list[pd.DataFrame] = []
    bars_processed = 0
    for symbol, bars_1m in bars_1m_by_symbol.items():
        bars_processed += len(bars_1m)
        if bars_1m.empty:
            continue
        bars_by_tf = {tf: resample_bars(bars_1m, tf) for tf in cfg.timeframes if tf != "1m"}
        bars_by_tf["1m"] = bars_1m
        signals = evaluate_symbol_history(
            bars_by_tf,
            symbol=symbol,
            exchange=exchange,
            run_id=run_id,
            config=cfg,
            signal_filter=signal_filter,
            model_version=model_version,
        )
        if signals.empty:
            continue
        perf = settle_signals(signals, bars_1m, fee_bps=cfg.fee_bps, slippage_bps=cfg.slippage_bps)
        outcome = pd.Series(perf["outcome"].to_numpy(), index=perf["signal_id"].to_numpy())
        signals["status"] = signals["id"].map(outcome).fillna("open").astype(object)
        signal_frames.append(signals)
        perf_frames.append(perf)
    signals_all = _concat(signal_frames, SIGNAL_COLUMNS, "emitted_at")
    perf_all = _concat(perf_frames, PERFORMANCE_COLUMNS, "exit_time")
    summary = summarize_performance(perf_all, signals=len(signals_all))
    summary["symbols"] = len(bars_1m_by_symbol)
    summary["bars_processed"] = bars_processed
    summary["seconds"] = round(time.perf_counter() - started, 6)
    return signals_all, perf_all, summary


def _concat(frames: list[pd.DataFrame], columns: tuple[str, ...], order: str) -> pd.DataFrame:
    if not frames:
        return pd.DataFrame(columns=list(columns))
    out = pd.concat(frames, ignore_index=True)
    return out.sort_values([order, "symbol"], kind="stable").reset_index(drop=True)


def _opt(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def summarize_performance(performance: pd.DataFrame, *, signals: int) -> dict[str, Any]:
    """Trade statistics of settled signals (JSON-safe; None where undefined).

    win_rate = share of trades with return_pct > 0; sharpe = mean / sample std of the
    per-trade return_pct (not annualized); max_drawdown_pct = largest peak-to-trough fall
    of the equity compounded trade by trade in exit_time order, starting from 1.
    """
    returns = performance["return_pct"].to_numpy(dtype=np.float64)
    outcomes = performance["outcome"].value_counts().to_dict() if len(performance) else {}
    summary: dict[str, Any] = {
        "signals": int(signals),
        "settled": int(returns.size),
        "tp_hit": int(outcomes.get("tp_hit", 0)),
        "sl_hit": int(outcomes.get("sl_hit", 0)),
        "expired": int(outcomes.get("expired", 0)),
        "win_rate": None,
        "avg_return_pct": None,
        "sharpe": None,
        "max_drawdown_pct": None,
    }
    if returns.size == 0:
        return summary
    summary["win_rate"] = float(np.mean(returns > 0))
    summary["avg_return_pct"] = float(returns.mean())
    std = returns.std(ddof=1) if returns.size > 1 else np.nan
    summary["sharpe"] = _opt(returns.mean() / std) if std > 0 else None
    ordered = performance.sort_values("exit_time", kind="stable")["return_pct"].to_numpy()
    equity = np.cumprod(1.0 + ordered / 100.0)
    peak = np.maximum.accumulate(np.r_[1.0, equity])[1:]
    summary["max_drawdown_pct"] = float(np.max(1.0 - equity / peak) * 100.0)
    return summary

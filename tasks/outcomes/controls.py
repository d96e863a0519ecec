"""Adaptive control from the rollups: switch poor symbols off, tune score thresholds.

Controls are per strategy and symbol: each strategy's rollups decide its own controls, and
one strategy switched off on a symbol leaves the others live there. A strategy x symbol
whose live win rate over `adaptive_window_days` is under `adaptive_disable_win_rate` on at
least `adaptive_min_signals` settled signals is disabled: its signals go to the `shadow`
run instead of `live` (still settled, still rolled up). It is re-enabled when the shadow
signals win at least `adaptive_enable_win_rate` on the same minimum count. Each symbol's
score threshold moves one `adaptive_threshold_step` per rollup toward
`adaptive_target_win_rate` (up when losing, down when winning), within
[adaptive_threshold_min, adaptive_threshold_max].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import pandas as pd

from signalengine.core.config import Settings
from signalengine.core.db import DbConn
from signalengine.core.vocabulary import DEFAULT_STRATEGY, LIVE_RUN, SHADOW_RUN


@dataclass(frozen=True)
class SymbolControl:
    """What the engine must do for one symbol."""

    enabled: bool = True
    reason: str | None = None
    score_threshold: float | None = None


def _of_strategy(rollups: pd.DataFrame, strategy: str) -> pd.DataFrame:
    """One strategy's rollup rows (rows without a strategy column are the default's)."""
    if "strategy" not in rollups.columns:
        return rollups if strategy == DEFAULT_STRATEGY else rollups.iloc[0:0]
    return rollups[rollups["strategy"] == strategy]


def rollup_strategies(rollups: pd.DataFrame) -> list[str]:
    """The strategies that have rollup rows, sorted."""
    if "strategy" not in rollups.columns:
        return [DEFAULT_STRATEGY] if len(rollups) else []
    return sorted({str(s) for s in rollups["strategy"]})


def _window_figures(rollups: pd.DataFrame, run_id: str, window_days: int) -> pd.DataFrame:
    part = rollups[
        (rollups["run_id"] == run_id)
        & (rollups["window_days"] == window_days)
        & (rollups["timeframe"] == "*")
        & (rollups["direction"] == "*")
        & (rollups["symbol"] != "*")
    ]
    return part.set_index("symbol")[["count", "win_rate"]]


def _symbol_row(figures: pd.DataFrame, symbol: str) -> pd.Series[Any] | None:
    """A symbol's row of `_window_figures`, None when absent.

    The index holds each symbol once, so `.loc` gives a Series (the stubs also allow a
    DataFrame).
    """
    return cast("pd.Series[Any]", figures.loc[symbol]) if symbol in figures.index else None


def decide_controls(
    rollups: pd.DataFrame,
    current: dict[str, SymbolControl],
    *,
    settings: Settings,
    strategy: str = DEFAULT_STRATEGY,
) -> dict[str, SymbolControl]:
    """New controls of one strategy for every symbol seen in its rollups or its current
    controls."""
    window = settings.adaptive_window_days
    rollups = _of_strategy(rollups, strategy)
    live = _window_figures(rollups, LIVE_RUN, window)
    shadow = _window_figures(rollups, SHADOW_RUN, window)
    decided: dict[str, SymbolControl] = {}
    for symbol in sorted(set(live.index) | set(shadow.index) | set(current)):
        before = current.get(symbol, SymbolControl())
        enabled, reason = before.enabled, before.reason
        figures = _symbol_row(live, symbol)
        if (
            enabled
            and figures is not None
            and figures["count"] >= settings.adaptive_min_signals
            and figures["win_rate"] < settings.adaptive_disable_win_rate
        ):
            enabled = False
            reason = (
                f"win rate {figures['win_rate']:.1%} over {int(figures['count'])} signals"
                f" in {window} days is under {settings.adaptive_disable_win_rate:.0%}"
            )
        elif not enabled and symbol in shadow.index:
            trial = shadow.loc[symbol]
            if (
                trial["count"] >= settings.adaptive_min_signals
                and trial["win_rate"] >= settings.adaptive_enable_win_rate
            ):
                enabled, reason = True, None
        threshold = before.score_threshold
        observed = figures if enabled else _symbol_row(shadow, symbol)
        if observed is not None and observed["count"] >= settings.adaptive_min_signals:
            base = settings.signal_score_threshold if threshold is None else threshold
            step = settings.adaptive_threshold_step
            moved = (
                base + step
                if observed["win_rate"] < settings.adaptive_target_win_rate
                else base - step
            )
            threshold = round(
                min(settings.adaptive_threshold_max, max(settings.adaptive_threshold_min, moved)), 6
            )
        decided[symbol] = SymbolControl(enabled, reason, threshold)
    return decided


def load_controls(
    conn: DbConn, *, exchange: str, strategy: str = DEFAULT_STRATEGY
) -> dict[str, SymbolControl]:
    """The stored controls of one strategy on an exchange's symbols."""
    return load_all_controls(conn, exchange=exchange).get(strategy, {})


def load_all_controls(conn: DbConn, *, exchange: str) -> dict[str, dict[str, SymbolControl]]:
    """Every strategy's stored controls on an exchange: strategy -> symbol -> control."""
    rows = conn.execute(
        "SELECT strategy, symbol, enabled, reason, score_threshold FROM symbol_controls"
        " WHERE exchange = %s",
        (exchange,),
    ).fetchall()
    out: dict[str, dict[str, SymbolControl]] = {}
    for r in rows:
        control = SymbolControl(r["enabled"], r["reason"], r["score_threshold"])
        out.setdefault(r["strategy"], {})[r["symbol"]] = control
    return out


def save_controls(
    conn: DbConn,
    controls: dict[str, SymbolControl],
    *,
    exchange: str,
    strategy: str = DEFAULT_STRATEGY,
) -> None:
    """Upsert one strategy's controls (updated_at moves only when something changed)."""
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO symbol_controls"
            " (exchange, strategy, symbol, enabled, reason, score_threshold)"
            " VALUES (%s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (exchange, strategy, symbol) DO UPDATE SET"
            " enabled = EXCLUDED.enabled, reason = EXCLUDED.reason,"
            " score_threshold = EXCLUDED.score_threshold, updated_at = now()"
            " WHERE (symbol_controls.enabled, symbol_controls.reason,"
            "        symbol_controls.score_threshold)"
            " IS DISTINCT FROM (EXCLUDED.enabled, EXCLUDED.reason, EXCLUDED.score_threshold)",
            [
                (exchange, strategy, s, c.enabled, c.reason, c.score_threshold)
                for s, c in controls.items()
            ],
        )


def live_win_rate_decayed(
    rollups: pd.DataFrame, *, settings: Settings, strategy: str = DEFAULT_STRATEGY
) -> bool:
    """True when a strategy's overall live win rate over the trigger window fell under its
    floor."""
    rollups = _of_strategy(rollups, strategy)
    part = rollups[
        (rollups["run_id"] == LIVE_RUN)
        & (rollups["window_days"] == settings.retrain_trigger_window_days)
        & (rollups["symbol"] == "*")
        & (rollups["timeframe"] == "*")
        & (rollups["direction"] == "*")
    ]
    if part.empty:
        return False
    row = part.iloc[0]
    return bool(
        row["count"] >= settings.adaptive_min_signals
        and row["win_rate"] < settings.retrain_trigger_win_rate
    )


def decayed_strategies(rollups: pd.DataFrame, *, settings: Settings) -> list[str]:
    """The strategies whose live win rate decayed (each retrains its own filter)."""
    return [
        name
        for name in rollup_strategies(rollups)
        if live_win_rate_decayed(rollups, settings=settings, strategy=name)
    ]

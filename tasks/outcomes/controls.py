"""Adaptive control from the rollups: switch poor symbols off, tune score thresholds.

A symbol whose live win rate over `adaptive_window_days` is under
`adaptive_disable_win_rate` on at least `adaptive_min_signals` settled signals is
disabled: its signals go to the `shadow` run instead of `live` (still settled, still
rolled up). It is re-enabled when the shadow signals win at least
`adaptive_enable_win_rate` on the same minimum count. Each symbol's score threshold moves
one `adaptive_threshold_step` per rollup toward `adaptive_target_win_rate` (up when
losing, down when winning), within [adaptive_threshold_min, adaptive_threshold_max].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import pandas as pd

from signalengine.core.config import Settings
from signalengine.core.db import DbConn
from signalengine.core.vocabulary import LIVE_RUN, SHADOW_RUN


@dataclass(frozen=True)
class SymbolControl:
    """What the engine must do for one symbol."""

    enabled: bool = True
    reason: str | None = None
    score_threshold: float | None = None


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
) -> dict[str, SymbolControl]:
    """New controls for every symbol seen in the rollups or the current controls."""
    window = settings.adaptive_window_days
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


def load_controls(conn: DbConn, *, exchange: str) -> dict[str, SymbolControl]:
    """The stored controls of an exchange's symbols."""
    rows = conn.execute(
        "SELECT symbol, enabled, reason, score_threshold FROM symbol_controls WHERE exchange = %s",
        (exchange,),
    ).fetchall()
    return {
        r["symbol"]: SymbolControl(r["enabled"], r["reason"], r["score_threshold"]) for r in rows
    }


def save_controls(
    conn: DbConn,
    controls: dict[str, SymbolControl],
    *,
    exchange: str,
) -> None:
    """Upsert controls (updated_at moves only when something changed)."""
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO symbol_controls (exchange, symbol, enabled, reason, score_threshold)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (exchange, symbol) DO UPDATE SET"
            " enabled = EXCLUDED.enabled, reason = EXCLUDED.reason,"
            " score_threshold = EXCLUDED.score_threshold, updated_at = now()"
            " WHERE (symbol_controls.enabled, symbol_controls.reason,"
            "        symbol_controls.score_threshold)"
            " IS DISTINCT FROM (EXCLUDED.enabled, EXCLUDED.reason, EXCLUDED.score_threshold)",
            [(exchange, s, c.enabled, c.reason, c.score_threshold) for s, c in controls.items()],
        )


def live_win_rate_decayed(rollups: pd.DataFrame, *, settings: Settings) -> bool:
    """True when the overall live win rate over the trigger window fell under its floor."""
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

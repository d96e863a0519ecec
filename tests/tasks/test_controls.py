"""Adaptive control: disable losers, keep them in shadow, re-enable, steer thresholds."""

from __future__ import annotations

import pandas as pd

from signalengine.core.config import Settings
from signalengine.tasks.outcomes.controls import (
    SymbolControl,
    decide_controls,
    live_win_rate_decayed,
    load_controls,
    save_controls,
)
from signalengine.tasks.runs.live import LiveEngine

SETTINGS = Settings(
    adaptive_min_signals=30,
    adaptive_disable_win_rate=0.3,
    adaptive_enable_win_rate=0.3,
    adaptive_target_win_rate=0.45,
    adaptive_threshold_step=0.05,
    adaptive_threshold_min=0.3,
    adaptive_threshold_max=0.6,
    signal_score_threshold=0.5,
)


def _rollup(run_id: str, symbol: str, count: int, win_rate: float, window: int = 30) -> dict:  # type: ignore[type-arg]
    return {
        "run_id": run_id,
        "symbol": symbol,
        "timeframe": "*",
        "direction": "*",
        "window_days": window,
        "count": count,
        "win_rate": win_rate,
    }


def test_disable_with_reason_then_reenable_from_shadow() -> None:
    rollups = pd.DataFrame(
        [
            _rollup("live", "BAD/USDT", 40, 0.2),
            _rollup("live", "FEW/USDT", 10, 0.0),
            _rollup("live", "OK/USDT", 40, 0.5),
        ]
    )
    controls = decide_controls(rollups, {}, settings=SETTINGS)
    assert not controls["BAD/USDT"].enabled
    assert "20.0% over 40 signals" in (controls["BAD/USDT"].reason or "")
    assert controls["FEW/USDT"].enabled  # too few signals to judge
    assert controls["OK/USDT"].enabled
    # shadow results still poor: stays off; then they recover: back on
    still = decide_controls(
        pd.DataFrame([_rollup("shadow", "BAD/USDT", 35, 0.25)]), controls, settings=SETTINGS
    )
    assert not still["BAD/USDT"].enabled
    back = decide_controls(
        pd.DataFrame([_rollup("shadow", "BAD/USDT", 35, 0.4)]), still, settings=SETTINGS
    )
    assert back["BAD/USDT"].enabled and back["BAD/USDT"].reason is None


def test_threshold_moves_toward_target_within_bounds() -> None:
    losing = pd.DataFrame([_rollup("live", "X/USDT", 50, 0.35)])
    winning = pd.DataFrame([_rollup("live", "X/USDT", 50, 0.60)])
    controls: dict[str, SymbolControl] = {}
    thresholds = []
    for _ in range(4):
        controls = decide_controls(losing, controls, settings=SETTINGS)
        thresholds.append(controls["X/USDT"].score_threshold)
    assert thresholds == [0.55, 0.6, 0.6, 0.6]  # up one step at a time, capped
    controls = decide_controls(winning, controls, settings=SETTINGS)
    assert controls["X/USDT"].score_threshold == 0.55


def test_retrain_trigger() -> None:
    decayed = pd.DataFrame([_rollup("live", "*", 60, 0.2, window=7)])
    healthy = pd.DataFrame([_rollup("live", "*", 60, 0.5, window=7)])
    assert live_win_rate_decayed(decayed, settings=SETTINGS)
    assert not live_win_rate_decayed(healthy, settings=SETTINGS)


def test_engine_honours_stored_controls(db) -> None:
    save_controls(
        db,
        {"BAD/USDT": SymbolControl(False, "poor", 0.7), "OK/USDT": SymbolControl(True, None, 0.35)},
        exchange="binance",
    )
    stored = load_controls(db, exchange="binance")
    assert stored["BAD/USDT"] == SymbolControl(False, "poor", 0.7)
    engine = LiveEngine.start(
        db, settings=SETTINGS, symbols=["BAD/USDT", "OK/USDT"], run_id="live", shard=None
    )
    config, run_id = engine._controlled(stored["BAD/USDT"])
    assert run_id == "shadow" and config.signal_score_threshold == 0.7
    config, run_id = engine._controlled(stored["OK/USDT"])
    assert run_id == "live" and config.signal_score_threshold == 0.35

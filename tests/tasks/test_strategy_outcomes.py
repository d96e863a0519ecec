"""Outcomes per strategy: settlement carries the strategy, rollups and adaptive controls
keep two strategies apart (real PostgreSQL)."""

from __future__ import annotations

import uuid

import numpy as np
import pandas as pd
from psycopg.types.json import Jsonb

from signalengine.core.config import Settings
from signalengine.tasks.marketdata.klines import store_klines
from signalengine.tasks.marketdata.validation import validate_klines
from signalengine.tasks.outcomes.controls import (
    SymbolControl,
    decayed_strategies,
    decide_controls,
    load_all_controls,
    load_controls,
    save_controls,
)
from signalengine.tasks.outcomes.rollups import compute_rollups, overall_figures, refresh_rollups
from signalengine.tasks.outcomes.settle import settle_open
from signalengine.tasks.outcomes.signals import insert_signals, load_cooldown_state
from tests.utils.klines import random_klines

T0 = pd.Timestamp("2025-01-01", tz="UTC")
SETTINGS = Settings(
    adaptive_min_signals=10,
    adaptive_disable_win_rate=0.3,
    adaptive_window_days=30,
    retrain_trigger_window_days=7,
    retrain_trigger_win_rate=0.4,
)


def _record(strategy: str, *, entry: float, ts: pd.Timestamp, direction: str = "long") -> dict:  # type: ignore[type-arg]
    return {
        "id": str(uuid.uuid4()),
        "run_id": "live",
        "exchange": "binance",
        "symbol": "BTC/USDT",
        "timeframe": "5m",
        "direction": direction,
        "ts": ts,
        "emitted_at": ts + pd.Timedelta(minutes=5),
        "entry_price": entry,
        "take_profit": entry * 1.5,
        "stop_loss": entry * 0.5,
        "expires_at": ts + pd.Timedelta(minutes=35),
        "score": 0.7,
        "events": [],
        "mtf_aligned": True,
        "mtf_score": 1.0,
        "mtf_details": {},
        "ai_probability": None,
        "model_version": None,
        "features": {},
        "status": "open",
        "strategy": strategy,
        "strategy_version": f"{strategy}-v1",
    }


def test_settlement_carries_each_signals_strategy(db) -> None:  # type: ignore[no-untyped-def]
    frame = random_klines(minutes=120, seed=11)
    store_klines(db, validate_klines(frame), timeframes=["1m", "5m"])
    entry = float(frame["close"].iloc[4])
    # the same bar and direction from two strategies: both stored, each settled as its own
    a = _record("default", entry=entry, ts=T0)
    b = _record("donchian", entry=entry, ts=T0)
    legacy = _record("default", entry=entry, ts=T0, direction="short")
    assert insert_signals(db, pd.DataFrame([a, b])) == 2
    again = pd.DataFrame([a | {"id": str(uuid.uuid4())}])
    assert insert_signals(db, again) == 0  # the same key: idempotent
    # a caller from before strategies: no strategy columns at all
    assert (
        insert_signals(db, pd.DataFrame([legacy]).drop(columns=["strategy", "strategy_version"]))
        == 1
    )
    rows = settle_open(db, fee_bps=0, slippage_bps=0)
    assert dict(zip(rows["signal_id"].astype(str), rows["strategy"], strict=True)) == {
        a["id"]: "default",
        b["id"]: "donchian",
        legacy["id"]: "default",
    }
    stored = db.execute(
        "SELECT p.strategy AS p, s.strategy AS s, s.strategy_version AS v"
        " FROM signal_performance p JOIN signals s ON s.id = p.signal_id ORDER BY s.strategy, v"
    ).fetchall()
    assert [(r["p"], r["s"], r["v"]) for r in stored] == [
        ("default", "default", "default-v1"),
        ("default", "default", None),
        ("donchian", "donchian", "donchian-v1"),
    ]
    # each strategy has its own cooldown
    own = load_cooldown_state(db, run_id="live", symbols=["BTC/USDT"], strategy="donchian")
    assert set(next(iter(own.last_emitted.values()))) == {1}  # donchian: only its long


def _performance(
    strategy: str, wins: int, losses: int, *, symbol: str = "BTC/USDT"
) -> pd.DataFrame:
    n = wins + losses
    outcome = ["tp_hit"] * wins + ["sl_hit"] * losses
    return pd.DataFrame(
        {
            "signal_id": [str(uuid.uuid4()) for _ in range(n)],
            "run_id": "live",
            "strategy": strategy,
            "symbol": symbol,
            "timeframe": "5m",
            "direction": "long",
            "outcome": outcome,
            "return_pct": [2.0 if o == "tp_hit" else -1.0 for o in outcome],
            "duration_sec": 600.0,
            "exit_time": [T0 + pd.Timedelta(hours=i) for i in range(n)],
        }
    )


def test_rollups_per_strategy_never_pooled() -> None:
    perf = pd.concat([_performance("default", 3, 17), _performance("donchian", 15, 5)])
    rollups = compute_rollups(perf, now=T0 + pd.Timedelta(days=2))
    total = rollups[(rollups["symbol"] == "*") & (rollups["timeframe"] == "*")]
    total = total[(total["direction"] == "*") & (total["window_days"] == 0)]
    assert dict(zip(total["strategy"], total["win_rate"], strict=True)) == {
        "default": 0.15,
        "donchian": 0.75,
    }
    assert set(rollups["strategy"]) == {"default", "donchian"}  # no '*' strategy
    figures = {f["strategy"]: f["count"] for f in overall_figures(rollups)}
    assert figures == {"default": 20, "donchian": 20}
    # the losing strategy alone decayed: only its filter retrains
    assert decayed_strategies(rollups, settings=SETTINGS) == ["default"]


def test_controls_disable_one_strategy_on_a_symbol_not_the_other(db) -> None:  # type: ignore[no-untyped-def]
    perf = pd.concat([_performance("default", 2, 18), _performance("donchian", 14, 6)])
    rollups = compute_rollups(perf, now=T0 + pd.Timedelta(days=2))
    for strategy in ("default", "donchian"):
        decided = decide_controls(rollups, {}, settings=SETTINGS, strategy=strategy)
        save_controls(db, decided, exchange="binance", strategy=strategy)
    assert not load_controls(db, exchange="binance")["BTC/USDT"].enabled
    assert load_controls(db, exchange="binance", strategy="donchian")["BTC/USDT"].enabled
    every = load_all_controls(db, exchange="binance")
    assert set(every) == {"default", "donchian"}
    assert "10.0%" in (every["default"]["BTC/USDT"].reason or "")
    # saving one strategy's controls leaves the other's row alone
    save_controls(db, {"BTC/USDT": SymbolControl(True, None, 0.4)}, exchange="binance")
    assert load_controls(db, exchange="binance", strategy="donchian")["BTC/USDT"].enabled
    assert load_controls(db, exchange="binance")["BTC/USDT"] == SymbolControl(True, None, 0.4)


def test_refresh_rollups_reads_the_strategy_column(db) -> None:  # type: ignore[no-untyped-def]
    for strategy, wins in (("default", 1), ("donchian", 3)):
        for rec in _performance(strategy, wins, 4 - wins).to_dict("records"):
            db.execute(
                "INSERT INTO signals (id, exchange, symbol, timeframe, direction, ts, emitted_at,"
                " entry_price, take_profit, stop_loss, expires_at, score, events, strategy)"
                " VALUES (%s, 'binance', %s, '5m', 'long', %s, %s, 1, 2, 0.5, %s, 0.5, %s, %s)",
                (rec["signal_id"], rec["symbol"], rec["exit_time"], rec["exit_time"])
                + (rec["exit_time"], Jsonb([]), strategy),
            )
            db.execute(
                "INSERT INTO signal_performance (signal_id, run_id, exchange, symbol, direction,"
                " timeframe, entry_price, exit_price, entry_time, exit_time, outcome, return_pct,"
                " duration_sec, score, strategy) VALUES (%s, 'live', 'binance', %s, 'long', '5m',"
                " 1, 1, %s, %s, %s, %s, 600, 0.5, %s)",
                (rec["signal_id"], rec["symbol"], rec["exit_time"], rec["exit_time"])
                + (rec["outcome"], rec["return_pct"], strategy),
            )
    refresh_rollups(db, now=T0 + pd.Timedelta(days=1))
    rows = db.execute(
        "SELECT strategy, win_rate FROM performance_rollups WHERE symbol = '*'"
        " AND timeframe = '*' AND direction = '*' AND window_days = 0 ORDER BY strategy"
    ).fetchall()
    assert [(r["strategy"], r["win_rate"]) for r in rows] == [("default", 0.25), ("donchian", 0.75)]
    assert np.isclose(rows[1]["win_rate"], 0.75)

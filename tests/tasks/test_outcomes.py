"""Settling stored signals and the rollup figures, checked against independent sums."""

from __future__ import annotations

import uuid

import numpy as np
import pandas as pd
from psycopg.types.json import Jsonb

from signalengine.tasks.marketdata.klines import store_klines
from signalengine.tasks.marketdata.validation import validate_klines
from signalengine.tasks.outcomes.rollups import compute_rollups, refresh_rollups
from signalengine.tasks.outcomes.settle import settle_open
from signalengine.tasks.outcomes.stats import max_drawdown_pct
from tests.utils.klines import random_klines

T0 = pd.Timestamp("2025-01-01", tz="UTC")


def _signal(
    db,
    *,
    direction: str,
    ts: pd.Timestamp,
    entry: float,
    tp: float,
    sl: float,
    expiry_min: int = 30,
) -> str:
    sid = str(uuid.uuid4())
    db.execute(
        "INSERT INTO signals (id, run_id, exchange, symbol, timeframe, direction, ts, emitted_at,"
        " entry_price, take_profit, stop_loss, expires_at, score, events, features)"
        " VALUES (%s, 'live', 'binance', 'BTC/USDT', '5m',"
        " %s, %s, %s, %s, %s, %s, %s, 0.7, %s, %s)",
        (
            sid,
            direction,
            ts,
            ts + pd.Timedelta(minutes=5),
            entry,
            tp,
            sl,
            ts + pd.Timedelta(minutes=5 + expiry_min),
            Jsonb([]),
            Jsonb({}),
        ),
    )
    return sid


def test_settle_claims_each_open_signal_once(db) -> None:
    frame = random_klines(minutes=240, seed=5)
    store_klines(db, validate_klines(frame), timeframes=["1m", "5m"])
    closes = frame.set_index("ts")["close"]
    entry = float(closes[T0 + pd.Timedelta(minutes=4)])
    ids = [
        _signal(db, direction="long", ts=T0, entry=entry, tp=entry * 1.5, sl=entry * 0.5),
        _signal(db, direction="short", ts=T0, entry=entry, tp=entry * 0.999, sl=entry * 1.001),
        # expires after the last stored bar: stays open
        _signal(
            db,
            direction="long",
            ts=T0 + pd.Timedelta(minutes=230),
            entry=entry,
            tp=entry * 2,
            sl=entry * 0.1,
        ),
    ]
    rows = settle_open(db, fee_bps=10, slippage_bps=0)
    assert set(rows["signal_id"].astype(str)) == set(ids[:2])
    expired = rows[rows["signal_id"].astype(str) == ids[0]].iloc[0]
    assert expired["outcome"] == "expired"
    last_bar = T0 + pd.Timedelta(minutes=34)  # last 1m bar closing by expires_at (T0+35m)
    assert expired["exit_price"] == closes[last_bar]
    assert np.isclose(expired["return_pct"], (closes[last_bar] / entry - 1) * 100 - 0.1)
    statuses = {
        r["id"]: r["status"]
        for r in db.execute("SELECT id::text AS id, status FROM signals").fetchall()
    }
    assert statuses[ids[2]] == "open" and statuses[ids[0]] == "expired"
    assert statuses[ids[1]] in {"tp_hit", "sl_hit"}
    assert settle_open(db, fee_bps=10, slippage_bps=0).empty  # nothing twice
    count = db.execute("SELECT count(*) AS n FROM signal_performance").fetchone()["n"]
    assert count == 2


def _performance(n: int, seed: int = 2) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    outcome = rng.choice(["tp_hit", "sl_hit", "expired"], n, p=[0.4, 0.4, 0.2])
    ret = np.where(
        outcome == "tp_hit",
        rng.uniform(0.5, 2, n),
        np.where(outcome == "sl_hit", -rng.uniform(0.3, 1, n), rng.normal(0, 0.3, n)),
    )
    return pd.DataFrame(
        {
            "run_id": "live",
            "symbol": rng.choice(["BTC/USDT", "ETH/USDT"], n),
            "timeframe": "5m",
            "direction": rng.choice(["long", "short"], n),
            "outcome": outcome,
            "return_pct": ret,
            "duration_sec": rng.uniform(60, 3600, n),
            "exit_time": T0 + pd.to_timedelta(rng.uniform(0, 40 * 86400, n), unit="s"),
        }
    )


def test_rollups_match_an_independent_computation() -> None:
    perf = _performance(500)
    now = T0 + pd.Timedelta(days=40)
    rollups = compute_rollups(perf, now=now).set_index(
        ["symbol", "timeframe", "direction", "window_days"]
    )
    week = perf[
        (perf["exit_time"] > now - pd.Timedelta(days=7))
        & (perf["symbol"] == "ETH/USDT")
        & (perf["direction"] == "short")
    ].sort_values("exit_time")
    row = rollups.loc[("ETH/USDT", "5m", "short", 7)]
    r = week["return_pct"].to_numpy()
    assert row["count"] == len(week)
    assert np.isclose(row["win_rate"], (week["outcome"] == "tp_hit").mean())
    assert np.isclose(row["sharpe"], r.mean() / r.std(ddof=1))
    assert np.isclose(row["median_return_pct"], np.median(r))
    assert np.isclose(row["profit_factor"], r[r > 0].sum() / -r[r < 0].sum())
    equity = pd.Series(np.cumprod(1 + r / 100))
    assert np.isclose(
        row["max_drawdown_pct"], ((equity.cummax() - equity) / equity.cummax()).max() * 100
    )
    total = rollups.loc[("*", "*", "*", 0)]
    assert total["count"] == 500 and np.isclose(total["total_return_pct"], perf["return_pct"].sum())


def test_max_drawdown_simple() -> None:
    assert max_drawdown_pct(np.array([10.0, -50.0, 20.0])) == 50.0
    assert max_drawdown_pct(np.array([])) == 0.0


def test_refresh_rollups_writes_table(db) -> None:
    perf = _performance(50)
    rows = refresh_rollups_from(db, perf)
    stored = db.execute("SELECT count(*) AS n FROM performance_rollups").fetchone()["n"]
    assert stored == rows > 0


def refresh_rollups_from(db, perf: pd.DataFrame) -> int:
    for rec in perf.to_dict("records"):
        sid = str(uuid.uuid4())
        db.execute(
            "INSERT INTO signals (id, exchange, symbol, timeframe, direction, ts, emitted_at,"
            " entry_price, take_profit, stop_loss, expires_at, score)"
            " VALUES (%s, 'binance', %s, '5m', %s, %s, %s, 1, 2, 0.5, %s, 0.5)",
            (
                sid,
                rec["symbol"],
                rec["direction"],
                rec["exit_time"],
                rec["exit_time"],
                rec["exit_time"],
            ),
        )
        db.execute(
            "INSERT INTO signal_performance VALUES (%s, 'live', 'binance', %s, %s, '5m', 1, 1,"
            " %s, %s, %s, %s, %s, 0.5)",
            (
                sid,
                rec["symbol"],
                rec["direction"],
                rec["exit_time"],
                rec["exit_time"],
                rec["outcome"],
                rec["return_pct"],
                rec["duration_sec"],
            ),
        )
    return len(refresh_rollups(db, now=T0 + pd.Timedelta(days=40)))


def test_overall_figures_are_each_runs_all_time_totals() -> None:
    from signalengine.tasks.outcomes.rollups import overall_figures

    perf = pd.concat([_performance(40), _performance(10, seed=3).assign(run_id="shadow")])
    figures = overall_figures(compute_rollups(perf, now=T0 + pd.Timedelta(days=40)))
    assert {f["run_id"]: f["count"] for f in figures} == {"live": 40, "shadow": 10}
    live = next(f for f in figures if f["run_id"] == "live")
    assert np.isclose(
        live["win_rate"], (perf[perf["run_id"] == "live"]["outcome"] == "tp_hit").mean()
    )

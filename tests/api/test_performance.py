"""/performance/* against an independent pandas computation over signal_performance."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import pandas as pd
import psycopg
import pytest

from tests.utils.signals import create_random_performance, create_random_signal

Conn = psycopg.Connection[Any]


def _settle_many(db: Conn, n: int, *, seed: int, **signal_overrides: Any) -> None:
    rng = random.Random(seed)
    start = datetime.now(UTC) - timedelta(days=6)
    for i in range(n):
        signal = create_random_signal(
            db,
            ts=start + timedelta(minutes=37 * i),
            symbol=rng.choice(["BTC/USDT", "ETH/USDT", "SOL/USDT"]),
            direction=rng.choice(["long", "short"]),
            timeframe=rng.choice(["5m", "15m"]),
            **signal_overrides,
        )
        outcome = rng.choice(["tp_hit", "sl_hit", "expired"])
        create_random_performance(
            db,
            signal,
            outcome=outcome,
            return_pct=rng.uniform(0.5, 3) if outcome == "tp_hit" else rng.uniform(-2, 0.4),
            duration_sec=float(rng.randrange(60, 40_000)),
        )


def _expected(frame: pd.DataFrame) -> dict[str, Any]:
    """The statistics, computed independently with pandas."""
    frame = frame.sort_values(["exit_time", "signal_id"])
    r = frame["return_pct"]
    equity = (1 + r / 100).cumprod()
    peak = equity.cummax().clip(lower=1.0)
    losses = -r[r < 0].sum()
    return {
        "count": len(frame),
        "wins": int((frame["outcome"] == "tp_hit").sum()),
        "losses": int((frame["outcome"] == "sl_hit").sum()),
        "expired": int((frame["outcome"] == "expired").sum()),
        "win_rate": float((frame["outcome"] == "tp_hit").mean()),
        "avg_return_pct": r.mean(),
        "median_return_pct": r.median(),
        "total_return_pct": r.sum(),
        "compounded_return_pct": (equity.iloc[-1] - 1) * 100,
        "profit_factor": r[r > 0].sum() / losses,
        "sharpe": r.mean() / r.std(ddof=1),
        "max_drawdown_pct": float(((1 - equity / peak) * 100).max()),
        "avg_duration_sec": frame["duration_sec"].mean(),
    }


def _rows(db: Conn) -> pd.DataFrame:
    rows = db.execute("SELECT * FROM signal_performance").fetchall()
    frame = pd.DataFrame(rows)
    frame["signal_id"] = frame["signal_id"].astype(str)
    return frame


def _assert_matches(body: dict[str, Any], expected: dict[str, Any]) -> None:
    for key, value in expected.items():
        assert body[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"symbol": "ethusdt"},
        {"direction": "short", "timeframe": "15m"},
        {"symbol": "BTC-USDT", "direction": "long", "lookback_days": 5},
    ],
)
def test_stats_equal_pandas(client: httpx.Client, db: Conn, params: dict[str, Any]) -> None:
    _settle_many(db, 120, seed=11)
    create_random_performance(db, create_random_signal(db, run_id="bt-9"), return_pct=50.0)
    body = client.get("/performance/stats", params=params).json()
    frame = _rows(db)
    frame = frame[frame["run_id"] == "live"]
    if "symbol" in params:
        frame = frame[
            frame["symbol"] == {"ethusdt": "ETH/USDT", "BTC-USDT": "BTC/USDT"}[params["symbol"]]
        ]
    for column in ("direction", "timeframe"):
        if column in params:
            frame = frame[frame[column] == params[column]]
    if "lookback_days" in params:
        assert body["since"] is not None
        frame = frame[frame["exit_time"] >= pd.Timestamp(body["since"])]
        assert 0 < len(frame) < 120
    _assert_matches(body, _expected(frame))


def test_stats_of_nothing_are_zero_and_null(client: httpx.Client, db: Conn) -> None:
    body = client.get("/performance/stats", params={"symbol": "XRPUSDT"}).json()
    assert body["count"] == 0 and body["wins"] == 0
    assert body["win_rate"] is None and body["sharpe"] is None
    assert body["max_drawdown_pct"] is None and body["profit_factor"] is None


def test_cached_stats_follow_new_rows(client: httpx.Client, db: Conn) -> None:
    _settle_many(db, 10, seed=2)
    first = client.get("/performance/stats").json()
    assert client.get("/performance/stats").json() == first
    signal = create_random_signal(db)
    create_random_performance(db, signal, outcome="tp_hit", return_pct=2.0)
    second = client.get("/performance/stats").json()
    assert second["count"] == first["count"] + 1
    assert second["wins"] == first["wins"] + 1


def test_by_symbol_and_equity_curve(client: httpx.Client, db: Conn) -> None:
    _settle_many(db, 60, seed=4)
    frame = _rows(db).sort_values(["exit_time", "signal_id"])
    by_symbol = {row["symbol"]: row for row in client.get("/performance/by-symbol").json()}
    for symbol, group in frame.groupby("symbol"):
        assert by_symbol[symbol]["count"] == len(group)
        assert by_symbol[symbol]["win_rate"] == pytest.approx((group["outcome"] == "tp_hit").mean())
        assert by_symbol[symbol]["avg_return_pct"] == pytest.approx(group["return_pct"].mean())
    curve = client.get("/performance/equity", params={"points": 1000}).json()
    equity = (1 + frame["return_pct"] / 100).cumprod().to_numpy()
    assert curve["count"] == len(frame)
    np.testing.assert_allclose([p["equity"] for p in curve["points"]], equity, rtol=1e-9)
    thin = client.get("/performance/equity", params={"points": 10}).json()["points"]
    assert 10 <= len(thin) <= 11
    assert thin[-1]["equity"] == pytest.approx(equity[-1])


def test_feature_importance_of_the_newest_version(client: httpx.Client, db: Conn) -> None:
    rows = [
        ("lightgbm", "1", "rsi_14", 0.7, "2025-01-01"),
        ("lightgbm", "1", "macd", 0.3, "2025-01-01"),
        ("lightgbm", "2", "rsi_14", 0.4, "2025-02-01"),
        ("lightgbm", "2", "macd", 0.6, "2025-02-01"),
        ("logreg", "7", "volume_z", 1.0, "2025-01-15"),
    ]
    with db.cursor() as cur:
        cur.executemany(
            "INSERT INTO feature_importance"
            " (model_type, model_version, feature_name, importance, timestamp)"
            " VALUES (%s, %s, %s, %s, %s)",
            rows,
        )
    body = client.get("/performance/feature-importance", params={"model_type": "lightgbm"}).json()
    assert [(r["model_version"], r["feature_name"], r["importance"]) for r in body] == [
        ("2", "macd", 0.6),
        ("2", "rsi_14", 0.4),
    ]
    every = client.get("/performance/feature-importance").json()
    assert {(r["model_type"], r["model_version"]) for r in every} == {
        ("lightgbm", "2"),
        ("logreg", "7"),
    }


@pytest.mark.parametrize(
    "params",
    [{}, {"symbol": "SOLUSDT", "direction": "short"}, {"symbol": "XRPUSDT"}],
)
def test_stats_equal_the_one_definition(
    client: httpx.Client, db: Conn, params: dict[str, Any]
) -> None:
    """The API's SQL and `tasks.outcomes.stats.trade_statistics` agree on every figure,
    including ties in exit time and a short that lost more than 100 %."""
    from signalengine.tasks.outcomes.stats import trade_statistics

    _settle_many(db, 80, seed=23)
    tied = create_random_signal(db, symbol="SOL/USDT", direction="short")
    create_random_performance(db, tied, outcome="sl_hit", return_pct=-130.0)
    body = client.get("/performance/stats", params=params).json()
    frame = _rows(db)
    frame = frame[frame["run_id"] == "live"]
    if "symbol" in params:
        frame = frame[frame["symbol"] == params["symbol"].replace("USDT", "/USDT")]
    if "direction" in params:
        frame = frame[frame["direction"] == params["direction"]]
    expected = trade_statistics(frame)
    for key, value in expected.items():
        if value is None:
            assert body[key] is None, key
        else:
            assert body[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key

"""Two strategies at once in a replay and in a backtest equal each of them run alone.

One replay (the slow driver) with both; backtests with both and with each alone. Replay
and backtest already agree for the default (tests/flows/test_backtest.py), so replay(both)
== backtest(each alone) shows both claims without three replays.
"""

from __future__ import annotations

import json

import pytest

from tests.utils.market import store_market

SYMBOLS = ["BTC/USDT"]  # one symbol, one day: the replay is the slow part
KEY = "strategy, strategy_version, symbol, direction, ts, entry_price, take_profit, stop_loss"
DEFAULT = {"name": "default"}
FAST = {
    "name": "fast",
    "use": "default",
    "params": {
        "signal_score_threshold": 0.2,
        "exit": "percent",
        "events": ["ema_cross", "rsi_reversal", "bb_breakout"],
    },
}


@pytest.fixture
def market(db, monkeypatch):  # type: ignore[no-untyped-def]
    store_market(db, SYMBOLS, "2025-03-01", 1)
    monkeypatch.setenv("SIGNALENGINE_SIGNAL_SCORE_THRESHOLD", "0.35")
    monkeypatch.setenv("SIGNALENGINE_MTF_MIN_ALIGNED", "1")
    return db


def _keys(db, run_id: str) -> dict[str, set[tuple]]:  # type: ignore[no-untyped-def,type-arg]
    rows = db.execute(f"SELECT {KEY} FROM signals WHERE run_id = %s", (run_id,)).fetchall()
    out: dict[str, set[tuple]] = {}  # type: ignore[type-arg]
    for r in rows:
        out.setdefault(r["strategy"], set()).add(tuple(r.values()))
    return out


async def test_two_strategies_at_once_equal_each_alone(
    market, prefect_harness, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    from signalengine.flows.backtest import backtest
    from signalengine.flows.stream import stream

    window = {"start": "2025-03-01", "end": "2025-03-02"}
    monkeypatch.setenv("SIGNALENGINE_STRATEGIES", json.dumps([DEFAULT, FAST]))
    await stream(symbols=SYMBOLS, source="replay", run_id="rp-both", **window)
    runs = {"bt-both": [DEFAULT, FAST], "bt-d": [DEFAULT], "bt-f": [FAST]}
    for run_id, specs in runs.items():
        monkeypatch.setenv("SIGNALENGINE_STRATEGIES", json.dumps(specs))
        backtest(symbols=SYMBOLS, run_id=run_id, **window)

    both = _keys(market, "rp-both")
    alone_d, alone_f = _keys(market, "bt-d"), _keys(market, "bt-f")
    assert set(both) == {"default", "fast"}
    assert len(both["default"]) >= 3 and len(both["fast"]) >= 3
    assert both["default"] == alone_d["default"] and set(alone_d) == {"default"}
    assert both["fast"] == alone_f["fast"] and set(alone_f) == {"fast"}
    assert _keys(market, "bt-both") == both
    ids = market.execute(
        "SELECT count(*) AS n, count(DISTINCT id) AS ids FROM signals WHERE run_id = 'rp-both'"
    ).fetchone()
    assert ids["n"] == ids["ids"]
    # each strategy's outcomes are settled under its name
    settled = market.execute(
        "SELECT DISTINCT strategy FROM signal_performance WHERE run_id = 'bt-both'"
    ).fetchall()
    assert {r["strategy"] for r in settled} == {"default", "fast"}

"""The live driver with two strategies: per-strategy controls, cooldowns rebuilt per strategy."""

from __future__ import annotations

import json

import pandas as pd

from signalengine.core.config import Settings
from signalengine.tasks.outcomes.controls import SymbolControl, save_controls
from signalengine.tasks.runs.live import LiveEngine
from tests.utils.market import store_market

SYMBOLS = ["AAA/USDT", "BBB/USDT"]
STRATEGIES = json.dumps(
    [
        {"name": "default"},
        {"name": "fast", "use": "default", "params": {"signal_score_threshold": 0.2}},
    ]
)


def test_live_controls_and_cooldowns_are_per_strategy(db) -> None:  # type: ignore[no-untyped-def]
    store_market(db, SYMBOLS, "2025-03-01", 1)
    # the default strategy is switched off on AAA only: its AAA signals go to shadow
    save_controls(db, {"AAA/USDT": SymbolControl(False, "poor", None)}, exchange="binance")
    settings = Settings(
        symbols=SYMBOLS, strategies=STRATEGIES, signal_score_threshold=0.3, mtf_min_aligned=1
    )
    engine = LiveEngine.start(db, settings=settings, symbols=SYMBOLS, run_id="live", shard=None)
    assert [s.name for s in engine.strategies] == ["default", "fast"]
    step = 5 * 60_000
    end_ms = int(pd.Timestamp("2025-03-02", tz="UTC").value // 1_000_000)
    closes = list(range(end_ms - 144 * step, end_ms + 1, step))
    engine.watermark_ms = closes[0] - step
    written = engine.process_closes(db, closes)
    rows = db.execute(
        "SELECT run_id, strategy, symbol, count(*) AS n FROM signals"
        " GROUP BY run_id, strategy, symbol ORDER BY 1, 2, 3"
    ).fetchall()
    found = {(r["run_id"], r["strategy"], r["symbol"]): r["n"] for r in rows}
    assert sum(found.values()) == written
    assert found.get(("shadow", "default", "AAA/USDT"), 0) > 0
    assert ("live", "default", "AAA/USDT") not in found
    assert found.get(("live", "fast", "AAA/USDT"), 0) > 0  # the other strategy stays live
    assert found.get(("live", "default", "BBB/USDT"), 0) > 0
    assert not any(run == "shadow" and strategy == "fast" for run, strategy, _ in found)

    # a restart rebuilds each strategy's cooldown from its own stored signals
    again = LiveEngine.start(db, settings=settings, symbols=SYMBOLS, run_id="live", shard=None)
    newest = db.execute(
        "SELECT strategy, symbol, timeframe, direction, max(ts) AS ts FROM signals"
        " WHERE run_id = 'live' GROUP BY 1, 2, 3, 4"
    ).fetchall()
    for r in newest:
        side = 1 if r["direction"] == "long" else -1
        key = (r["strategy"], r["symbol"], r["timeframe"])
        assert again.cooldown.last_emitted[key][side] == pd.Timestamp(r["ts"]).value
    assert {k[0] for k in again.cooldown.last_emitted} == {"default", "fast"}

"""Chunked, Dask (LocalCluster, 2 workers) and one-pass backtests agree exactly."""

from __future__ import annotations

import pandas as pd
import pytest

from signalengine.core.config import get_settings
from signalengine.tasks.engine.config import EngineConfig
from signalengine.tasks.runs.backtest import run_backtest
from signalengine.tasks.runs.history import load_history
from tests.utils.market import store_market

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
START, END = "2025-03-01", "2025-03-05"
SUMMARY_KEYS = (
    "signals",
    "settled",
    "tp_hit",
    "sl_hit",
    "expired",
    "win_rate",
    "avg_return_pct",
    "sharpe",
    "max_drawdown_pct",
    "symbols",
    "bars_processed",
)


@pytest.fixture
def history(db, monkeypatch):  # type: ignore[no-untyped-def]
    store_market(db, SYMBOLS, START, 4)
    monkeypatch.setenv("SIGNALENGINE_SIGNAL_SCORE_THRESHOLD", "0.35")
    monkeypatch.setenv("SIGNALENGINE_MTF_MIN_ALIGNED", "1")
    return db


def _stored(db, run_id: str) -> tuple[pd.DataFrame, pd.DataFrame]:  # type: ignore[no-untyped-def]
    signals = pd.DataFrame(
        db.execute("SELECT * FROM signals WHERE run_id = %s ORDER BY id", (run_id,)).fetchall()
    ).drop(columns="created_at")  # when the row was written, not what the run computed
    perf = pd.DataFrame(
        db.execute(
            "SELECT * FROM signal_performance WHERE run_id = %s ORDER BY signal_id", (run_id,)
        ).fetchall()
    )
    return signals, perf


def test_chunked_dask_and_one_pass_runs_are_identical(history, prefect_harness) -> None:
    from signalengine.flows.backtest import run_backtest_flow

    params = {"symbols": SYMBOLS, "start": START, "end": END, "run_id": "same"}
    one_chunk = run_backtest_flow(chunk_size=len(SYMBOLS), **params)
    one = _stored(history, "same")
    chunked = run_backtest_flow(chunk_size=1, **params)
    by_chunk = _stored(history, "same")
    dask = run_backtest_flow(workers=2, chunk_size=1, **params)
    on_dask = _stored(history, "same")

    assert one_chunk["chunks"] == 1 and chunked["chunks"] == dask["chunks"] == 3
    assert one_chunk["signals"] >= 10 and one_chunk["settled"] > 0
    for key in SUMMARY_KEYS:
        assert one_chunk[key] == chunked[key] == dask[key], key
    for a, b in ((one, by_chunk), (one, on_dask)):
        pd.testing.assert_frame_equal(a[0], b[0], check_exact=True)
        pd.testing.assert_frame_equal(a[1], b[1], check_exact=True)

    # and the in-memory one-pass driver over the same bars gives the same signals and figures
    with_bars = load_history(
        history,
        exchange="binance",
        symbols=SYMBOLS,
        start=pd.Timestamp(START, tz="UTC"),
        end=pd.Timestamp(END, tz="UTC"),
    )
    signals, perf, summary = run_backtest(
        with_bars,
        config=EngineConfig.from_settings(get_settings()),
        run_id="same",
        exchange="binance",
    )
    assert sorted(signals["id"]) == list(one[0]["id"].astype(str))
    from signalengine.flows.backtest import MAX_PRICE_CHARTS
    from signalengine.tasks.runs.report import MAX_PRICE_CHARTS as REPORT_CHARTS

    assert MAX_PRICE_CHARTS == REPORT_CHARTS
    for key in SUMMARY_KEYS:
        assert summary[key] == one_chunk[key], key
    # what the COPY writer stored is what the engine computed, value for value
    stored = one[0].set_index(one[0]["id"].astype(str)).loc[signals["id"]]
    for col in ("entry_price", "take_profit", "stop_loss", "score", "mtf_score", "status"):
        assert list(stored[col]) == list(signals[col]), col
    for col in ("events", "mtf_details", "features", "mtf_aligned", "direction", "timeframe"):
        assert list(stored[col]) == list(signals[col]), col
    for col in ("ts", "emitted_at", "expires_at"):
        assert list(pd.to_datetime(stored[col], utc=True)) == list(signals[col]), col
    assert stored["ai_probability"].isna().all() and stored["model_version"].isna().all()
    kept = one[1].set_index(one[1]["signal_id"].astype(str)).loc[perf["signal_id"]]
    for col in ("entry_price", "exit_price", "return_pct", "duration_sec", "score", "outcome"):
        assert list(kept[col]) == list(perf[col]), col
    assert list(pd.to_datetime(kept["exit_time"], utc=True)) == list(perf["exit_time"])

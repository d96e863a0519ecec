"""Backtest and replay drive the same engine: same klines, same signals; report written."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.utils.market import store_market

SYMBOLS = ["BTC/USDT", "ETH/USDT"]
KEY = "symbol, timeframe, direction, ts, entry_price, take_profit, stop_loss"


@pytest.fixture
def history(db, monkeypatch):  # type: ignore[no-untyped-def]
    store_market(db, SYMBOLS, "2025-02-01", 4)
    # looser thresholds: more signals make the comparison stronger
    monkeypatch.setenv("SIGNALENGINE_SIGNAL_SCORE_THRESHOLD", "0.35")
    monkeypatch.setenv("SIGNALENGINE_MTF_MIN_ALIGNED", "1")
    return db


def _keys(db, run_id: str) -> set[tuple]:  # type: ignore[no-untyped-def,type-arg]
    rows = db.execute(f"SELECT {KEY} FROM signals WHERE run_id = %s", (run_id,)).fetchall()
    return {tuple(r.values()) for r in rows}


async def test_replay_and_backtest_emit_identical_signals(
    history, prefect_harness, tmp_path: Path
) -> None:
    from signalengine.flows.backtest import backtest
    from signalengine.flows.stream import stream

    summary = backtest(
        symbols=SYMBOLS,
        start="2025-02-01",
        end="2025-02-05",
        run_id="bt",
        out=str(tmp_path / "report"),
    )
    replay = await stream(
        symbols=SYMBOLS, source="replay", run_id="rp", start="2025-02-01", end="2025-02-05"
    )
    backtested, replayed = _keys(history, "bt"), _keys(history, "rp")
    assert len(backtested) >= 10
    assert replayed == backtested
    assert replay["signals"] == summary["signals"] == len(backtested)
    for key in (
        "signals",
        "win_rate",
        "avg_return_pct",
        "sharpe",
        "max_drawdown_pct",
        "bars_processed",
        "seconds",
    ):
        assert key in summary
    assert summary["bars_processed"] == 2 * 4 * 1440
    settled = history.execute(
        "SELECT count(*) AS n FROM signal_performance WHERE run_id = 'bt'"
    ).fetchone()["n"]
    assert settled == summary["settled"] > 0
    report = (tmp_path / "report" / "report.html").read_text()
    assert "equity.png" in report and "price_BTC-USDT.png" in report
    assert (tmp_path / "report" / "equity.png").stat().st_size > 5_000


async def test_backtest_rejects_an_empty_period(history, prefect_harness) -> None:
    from signalengine.flows.backtest import backtest

    with pytest.raises(ValueError, match="before"):
        backtest(symbols=SYMBOLS, start="2025-02-05", end="2025-02-01")

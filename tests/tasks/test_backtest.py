"""The backtest driver: signals + settled outcomes + summary, pure and fast."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from signalengine.tasks.engine.pipeline import SIGNAL_COLUMNS, EngineConfig
from signalengine.tasks.outcomes.settlement import PERFORMANCE_COLUMNS, settle_signal
from signalengine.tasks.runs.backtest import run_backtest, summarize_performance
from tests.utils.bars import make_bars_1m
from tests.utils.real_data import real_files

CFG = EngineConfig()


@pytest.fixture(scope="module")
def result() -> tuple[pd.DataFrame, pd.DataFrame, dict[str, object], dict[str, pd.DataFrame]]:
    data = {"BTC/USDT": make_bars_1m(days=4, seed=1), "ETH/USDT": make_bars_1m(days=4, seed=2)}
    signals, perf, summary = run_backtest(data, config=CFG, run_id="bt1", exchange="sim")
    return signals, perf, summary, data


def test_frames_follow_the_contract(result: tuple) -> None:  # type: ignore[type-arg]
    signals, perf, summary, data = result
    assert list(signals.columns) == list(SIGNAL_COLUMNS)
    assert list(perf.columns) == list(PERFORMANCE_COLUMNS)
    assert set(signals["symbol"]) == set(data)
    assert len(signals) >= 8  # a few per symbol and day
    assert set(perf["signal_id"]) <= set(signals["id"])
    by_id = signals.set_index("id")
    assert (by_id.loc[perf["signal_id"], "status"].to_numpy() == perf["outcome"].to_numpy()).all()
    assert set(signals["status"]) <= {"open", "tp_hit", "sl_hit", "expired"}
    assert (perf["run_id"] == "bt1").all() and (perf["exchange"] == "sim").all()
    assert summary["signals"] == len(signals)
    assert summary["bars_processed"] == sum(len(b) for b in data.values())
    assert summary["seconds"] > 0


def test_outcomes_match_the_reference_walk(result: tuple) -> None:  # type: ignore[type-arg]
    signals, perf, _, data = result
    perf = perf.set_index("signal_id")
    for sig in signals.to_dict("records"):
        ref = settle_signal(sig, data[sig["symbol"]], fee_bps=CFG.fee_bps)
        if ref is None:
            assert sig["status"] == "open"
            continue
        row = perf.loc[sig["id"]]
        assert (row.outcome, row.exit_price, row.exit_time) == (
            ref.outcome,
            ref.exit_price,
            ref.exit_time,
        )


def test_summary_statistics(result: tuple) -> None:  # type: ignore[type-arg]
    _, perf, summary, _ = result
    r = perf.sort_values("exit_time", kind="stable")["return_pct"].to_numpy()
    assert summary["settled"] == len(r)
    outcomes = perf.sort_values("exit_time", kind="stable")["outcome"].to_numpy()
    assert summary["win_rate"] == pytest.approx(np.mean(outcomes == "tp_hit"))
    assert summary["avg_return_pct"] == pytest.approx(r.mean())
    assert summary["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1))
    equity = np.cumprod(1 + r / 100)
    peak = np.maximum.accumulate(np.r_[1.0, equity])[1:]
    assert summary["max_drawdown_pct"] == pytest.approx(np.max(1 - equity / peak) * 100)
    assert summary["tp_hit"] + summary["sl_hit"] + summary["expired"] == len(r)


def test_hand_computed_drawdown() -> None:
    perf = pd.DataFrame(
        {
            "return_pct": [10.0, -50.0, 20.0],
            "outcome": ["tp_hit", "sl_hit", "tp_hit"],
            "exit_time": pd.to_datetime([3, 1, 2], unit="h", utc=True),
            "duration_sec": [60.0, 120.0, 180.0],
        }
    )
    s = summarize_performance(perf, signals=3)
    # In exit order: -50%, +20%, +10% -> equity 0.5, 0.6, 0.66; worst fall 50% from 1.0.
    assert s["max_drawdown_pct"] == pytest.approx(50.0)
    assert s["win_rate"] == pytest.approx(2 / 3)


def test_empty_input() -> None:
    empty = make_bars_1m(minutes=10).iloc[:0]
    signals, perf, summary = run_backtest({"X": empty}, config=CFG, run_id="e", exchange="sim")
    assert signals.empty and perf.empty
    assert summary["signals"] == 0 and summary["win_rate"] is None


def test_a_few_signals_per_day_on_real_candles() -> None:
    files = real_files("ft_bittrex_*_1m_2018-01.parquet")[:4]
    data = {f.name: pd.read_parquet(f).set_index("ts") for f in files}
    signals, perf, summary = run_backtest(data, config=CFG, run_id="real", exchange="bittrex")
    days = sum(len(b) for b in data.values()) / 1440
    assert 1.0 <= len(signals) / days <= 15.0
    assert summary["settled"] > 0.9 * len(signals)

"""The backtest's shortcuts change no result: bucket levels and column-wise records."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from signalengine.tasks.engine.buckets import resample_bars
from signalengine.tasks.engine.config import EngineConfig
from signalengine.tasks.engine.pipeline import evaluate_symbol_history, signal_id
from signalengine.tasks.engine.records import FEATURE_COLUMNS
from signalengine.tasks.runs import backtest as driver
from tests.utils.bars import make_bars_1m

LOOSE = dataclasses.replace(EngineConfig(), signal_score_threshold=0.3, mtf_min_aligned=1)


def _direct(bars_1m: pd.DataFrame, cfg: EngineConfig) -> dict[str, pd.DataFrame]:
    return {tf: resample_bars(bars_1m, tf) for tf in cfg.timeframes if tf != "1m"}


@pytest.mark.parametrize(
    "cfg",
    [EngineConfig(), LOOSE, dataclasses.replace(LOOSE, primary_timeframe="15m")],
    ids=["default", "loose", "primary-15m"],
)
def test_levelled_buckets_give_the_direct_resample_results(cfg, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    data = {f"S{i}/USDT": make_bars_1m(days=20, seed=30 + i) for i in range(2)}
    levelled = driver.run_backtest(data, config=cfg, run_id="r", exchange="e")
    monkeypatch.setattr(driver, "_higher_timeframes", _direct)
    direct = driver.run_backtest(data, config=cfg, run_id="r", exchange="e")
    assert len(levelled[0]) > 0
    pd.testing.assert_frame_equal(levelled[0], direct[0], check_exact=True)
    pd.testing.assert_frame_equal(levelled[1], direct[1], check_exact=True)
    figures = [{k: v for k, v in s.items() if k != "seconds"} for s in (levelled[2], direct[2])]
    assert figures[0] == figures[1]


def test_columnwise_records_keep_ids_and_json_values() -> None:
    bars = make_bars_1m(days=10, seed=5)
    signals = evaluate_symbol_history(
        {"1m": bars}, symbol="X/USDT", exchange="e", run_id="r", config=LOOSE
    )
    assert len(signals) > 10
    for sig in signals.to_dict("records"):
        assert sig["id"] == signal_id(
            run_id="r",
            exchange="e",
            symbol="X/USDT",
            timeframe=sig["timeframe"],
            direction=sig["direction"],
            ts=sig["ts"],
        )
        assert list(sig["features"]) == list(FEATURE_COLUMNS)
        assert all(v is None or type(v) is float for v in sig["features"].values())
        assert all(type(e["strength"]) is float for e in sig["events"])
        assert list(sig["mtf_details"]) == list(LOOSE.timeframes)
        assert set(sig["mtf_details"].values()) <= {"long", "short", "neutral"}
    assert (
        signals["take_profit"].gt(signals["entry_price"]).eq(signals["direction"] == "long").all()
    )


def test_batched_signal_ids_are_the_uuid5_of_each_key() -> None:
    import uuid

    from signalengine.tasks.engine import records

    keys = [f"r|e|S{i}/USDT|5m|long|2024-01-01T00:{i % 60:02d}:00+00:00" for i in range(300)]
    keys += ["", "ünïcødé|€", "x" * 500]
    expected = [str(uuid.uuid5(records._ID_NAMESPACE, key)) for key in keys]
    assert records._signal_ids(keys) == expected
    assert records._signal_ids([]) == []

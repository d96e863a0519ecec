"""The engine: live == backtest (parity), no look-ahead, and the signal record contract."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from signalengine.core.config import Settings
from signalengine.tasks.engine.buckets import resample_bars
from signalengine.tasks.engine.features import FEATURE_COLUMNS
from signalengine.tasks.engine.pipeline import (
    SIGNAL_COLUMNS,
    CooldownState,
    EngineConfig,
    evaluate_latest,
    evaluate_latest_batch,
    evaluate_symbol_history,
    signal_id,
)
from tests.utils.bars import make_bars_1m

CFG = EngineConfig()


def _by_tf(bars_1m: pd.DataFrame, cfg: EngineConfig = CFG) -> dict[str, pd.DataFrame]:
    return {tf: bars_1m if tf == "1m" else resample_bars(bars_1m, tf) for tf in cfg.timeframes}


def _history(bars_1m: pd.DataFrame, cfg: EngineConfig = CFG, **kw: Any) -> pd.DataFrame:
    return evaluate_symbol_history(
        _by_tf(bars_1m, cfg), symbol="BTC/USDT", exchange="sim", run_id="r1", config=cfg, **kw
    )


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    # 6 days: the 1m and 5m windows of the live driver are truncated, 15m and 1h are not.
    return make_bars_1m(days=6, seed=3)


@pytest.fixture(scope="module")
def history(bars: pd.DataFrame) -> pd.DataFrame:
    return _history(bars)


LOOSE = EngineConfig(signal_score_threshold=0.0, mtf_alignment_required=False, cooldown_bars=1)


@pytest.mark.parametrize(("days", "cfg"), [(6, CFG), (4, LOOSE)], ids=["default", "loose"])
def test_parity_live_stepping_equals_backtest(days: int, cfg: EngineConfig) -> None:
    """evaluate_latest at every primary close == evaluate_symbol_history, bit for bit.

    More than live_window_bars 1m and 5m bars, so the live windows are truncated there.
    """
    bars = make_bars_1m(days=days, seed=3)
    by_tf = _by_tf(bars, cfg)
    history = _history(bars, cfg)
    state = CooldownState()
    live = []
    for ts in by_tf["5m"].index:
        live += evaluate_latest(
            by_tf,
            at=ts + pd.Timedelta("5min"),
            state=state,
            symbol="BTC/USDT",
            exchange="sim",
            config=cfg,
            run_id="r1",
        )
    assert len(history) >= 10
    key = ["symbol", "timeframe", "direction", "ts", "entry_price", "take_profit", "stop_loss"]
    live_frame = pd.DataFrame([s.as_record() for s in live], columns=list(SIGNAL_COLUMNS))
    assert sorted(map(tuple, live_frame[key].to_numpy().tolist())) == sorted(
        map(tuple, history[key].to_numpy().tolist())
    )
    # Not just the key: every column, bit for bit.
    for ours, theirs in zip(live_frame.to_dict("records"), history.to_dict("records"), strict=True):
        assert ours == theirs


def test_parity_batch_stepping_equals_backtest_per_symbol() -> None:
    """evaluate_latest_batch over several symbols at every close == each symbol's history.

    One symbol lists a day later (short windows at first: the unstacked path), one has
    gaps, and the cooldown state is shared by the batch as the live stream shares it.
    """
    bars = {
        "AAA/USDT": make_bars_1m(days=2, seed=31),
        "BBB/USDT": make_bars_1m(days=1, seed=32, start="2024-01-02"),
        "CCC/USDT": make_bars_1m(days=2, seed=33, gap_fraction=0.05),
    }
    by_symbol = {s: _by_tf(b, LOOSE) for s, b in bars.items()}
    history = pd.concat(
        [
            evaluate_symbol_history(tfs, symbol=s, exchange="sim", run_id="r1", config=LOOSE)
            for s, tfs in by_symbol.items()
        ],
        ignore_index=True,
    )
    state = CooldownState()
    live = []
    for ts in by_symbol["AAA/USDT"]["5m"].index:
        live += evaluate_latest_batch(
            by_symbol,
            at=ts + pd.Timedelta("5min"),
            state=state,
            exchange="sim",
            config=LOOSE,
            run_id="r1",
        )
    assert len(history) >= 100 and set(history["symbol"]) == set(bars)
    live_frame = pd.DataFrame([s.as_record() for s in live], columns=list(SIGNAL_COLUMNS))
    order = ["symbol", "ts"]
    ours = live_frame.sort_values(order, kind="stable").to_dict("records")
    theirs = history.sort_values(order, kind="stable").to_dict("records")
    assert ours == theirs


def test_batch_equals_evaluate_latest_per_symbol() -> None:
    bars = {f"S{i}/USDT": make_bars_1m(days=4, seed=40 + i) for i in range(8)}
    by_symbol = {s: _by_tf(b, LOOSE) for s, b in bars.items()}
    by_symbol["S1/USDT"] = {tf: f.iloc[:-40] for tf, f in by_symbol["S1/USDT"].items()}  # stale
    kwargs: dict[str, Any] = {"exchange": "sim", "config": LOOSE, "run_id": "r1"}
    batch_state, single_state = CooldownState(), CooldownState()
    batch, one_by_one = [], []
    for ts in by_symbol["S0/USDT"]["5m"].index[-24:]:
        at = ts + pd.Timedelta("5min")
        batch += evaluate_latest_batch(by_symbol, at=at, state=batch_state, **kwargs)
        for symbol, tfs in by_symbol.items():
            one_by_one += evaluate_latest(tfs, at=at, state=single_state, symbol=symbol, **kwargs)
    assert batch == one_by_one and len(batch) >= 10
    assert batch_state == single_state
    assert "S1/USDT" not in {s.symbol for s in batch}
    assert evaluate_latest_batch({}, at=at, state=CooldownState(), **kwargs) == []


def test_history_ignores_a_trailing_unclosed_bucket() -> None:
    bars = make_bars_1m(days=2, seed=5)
    full = _history(bars, LOOSE)
    for ts in full["ts"].iloc[100::150]:
        cut = bars[bars.index < ts + pd.Timedelta("2min")]  # that bucket has 2 of 5 bars
        last_close = cut.index[-1] + pd.Timedelta("1min")
        partial = _history(cut, LOOSE)
        assert partial["emitted_at"].max() <= last_close
        expected = full[full["emitted_at"] <= last_close].to_dict("records")
        assert partial.to_dict("records") == expected


@pytest.mark.parametrize("primary", ["1m", "5m", "15m"])
def test_no_lookahead_on_any_timeframe(primary: str) -> None:
    """Perturb every 1m bar that closes after T, rebuild all timeframes from them: no signal
    emitted at or before T may change (features, events, MTF votes of all timeframes)."""
    # Loose settings so that signals fire on most bars, right up to each cut.
    cfg = EngineConfig(
        primary_timeframe=primary,
        signal_score_threshold=0.0,
        mtf_alignment_required=False,
        cooldown_bars=1,
    )
    base_bars = make_bars_1m(days=4, seed=8)
    base = _history(base_bars, cfg)
    rng = np.random.default_rng(4)
    start = base_bars.index[0] + pd.Timedelta("1D")
    cuts = [start + pd.Timedelta(minutes=int(m)) for m in rng.integers(0, 2 * 1440, 8)]
    cuts.append(start + pd.Timedelta("6h"))  # on a bucket boundary of every timeframe
    for cut in cuts:
        after = base_bars.index >= cut  # 1m bars opening at/after T close after T
        shocked = base_bars.copy()
        factor = np.exp(np.cumsum(rng.normal(0, 0.01, after.sum())))
        for col in ("open", "high", "low", "close"):
            shocked.loc[after, col] *= factor
        shocked.loc[after, "volume"] *= rng.uniform(0.1, 10.0, after.sum())
        changed = _history(shocked, cfg)
        early_base = base[base["emitted_at"] <= cut].to_dict("records")
        early_changed = changed[changed["emitted_at"] <= cut].to_dict("records")
        assert len(early_base) > 0
        assert early_base == early_changed, cut
        # The perturbation has teeth: later signals do change.
        later = ["ts", "direction", "entry_price"]
        assert not base[base["emitted_at"] > cut][later].equals(
            changed[changed["emitted_at"] > cut][later]
        )


def test_signal_record_contract(bars: pd.DataFrame, history: pd.DataFrame) -> None:
    assert list(history.columns) == list(SIGNAL_COLUMNS)
    five = pd.Timedelta("5min")
    closes = resample_bars(bars, "5m")["close"]
    for sig in history.to_dict("records"):
        side = 1 if sig["direction"] == "long" else -1
        atr = sig["features"]["atr_14"]
        assert sig["emitted_at"] == sig["ts"] + five
        assert sig["expires_at"] == sig["emitted_at"] + CFG.expiry_bars * five
        assert sig["entry_price"] == closes.loc[sig["ts"]]
        assert sig["take_profit"] == pytest.approx(sig["entry_price"] + side * 2.0 * atr)
        assert sig["stop_loss"] == pytest.approx(sig["entry_price"] - side * 1.0 * atr)
        assert CFG.signal_score_threshold <= sig["score"] <= 1.0
        assert sig["mtf_aligned"] is True
        agree = sum(v == sig["direction"] for v in sig["mtf_details"].values())
        assert agree >= CFG.mtf_min_aligned
        assert sig["mtf_score"] == agree / len(CFG.timeframes)
        assert list(sig["mtf_details"]) == ["1m", "5m", "15m", "1h"]
        assert set(sig["features"]) == set(FEATURE_COLUMNS)
        assert all(isinstance(e["strength"], float) for e in sig["events"])
        assert any(e["direction"] == sig["direction"] for e in sig["events"])
        assert sig["ai_probability"] is None and sig["model_version"] is None
        assert sig["status"] == "open" and sig["run_id"] == "r1"
        assert sig["id"] == signal_id(
            run_id="r1",
            exchange="sim",
            symbol="BTC/USDT",
            timeframe="5m",
            direction=sig["direction"],
            ts=sig["ts"],
        )
    assert history["id"].is_unique
    assert history["ts"].is_monotonic_increasing


def test_cooldown_spacing(history: pd.DataFrame) -> None:
    for _, group in history.groupby("direction"):
        gaps = group["ts"].diff().dropna()
        assert (gaps > CFG.cooldown_bars * pd.Timedelta("5min")).all()


def test_replays_are_idempotent(bars: pd.DataFrame, history: pd.DataFrame) -> None:
    again = _history(bars)
    assert again["id"].tolist() == history["id"].tolist()
    other_run = evaluate_symbol_history(
        _by_tf(bars), symbol="BTC/USDT", exchange="sim", run_id="r2", config=CFG
    )
    assert set(other_run["id"]).isdisjoint(history["id"])


def test_without_mtf_requirement_more_candidates_pass(
    bars: pd.DataFrame, history: pd.DataFrame
) -> None:
    loose = _history(bars, EngineConfig(mtf_alignment_required=False))
    assert len(loose) > len(history)
    assert (~loose["mtf_aligned"]).any()


def test_ai_filter_hook(bars: pd.DataFrame, history: pd.DataFrame) -> None:
    seen: list[pd.DataFrame] = []

    def accept_all(frame: pd.DataFrame) -> np.ndarray:
        seen.append(frame)
        return np.ones(len(frame))

    kept = _history(bars, signal_filter=accept_all, model_version="m1")
    assert list(seen[0].columns) == [*FEATURE_COLUMNS, "direction", "score", "mtf_score"]
    assert kept["id"].tolist() == history["id"].tolist()
    assert (kept["ai_probability"] == 1.0).all() and (kept["model_version"] == "m1").all()
    rejected = _history(bars, signal_filter=lambda f: np.zeros(len(f)), model_version="m1")
    assert rejected.empty


def test_latest_only_on_primary_closes_and_ignores_open_buckets(bars: pd.DataFrame) -> None:
    by_tf = _by_tf(bars)
    history = _history(bars)
    target = history.iloc[len(history) // 2]
    at = target["emitted_at"]
    kwargs: dict[str, Any] = {
        "symbol": "BTC/USDT",
        "exchange": "sim",
        "config": CFG,
        "run_id": "r1",
    }
    # Primed state as the stream would have it (cooldown from earlier signals).
    state = CooldownState.from_signals(history[history["emitted_at"] < at])
    got = evaluate_latest(by_tf, at=at, state=state, **kwargs)
    assert [s.id for s in got] == [target["id"]]
    # `by_tf` also holds bars after `at` (and the 1h bucket still filling at `at`): ignored,
    # as the parity test shows; cutting them off changes nothing.
    cut = {tf: f[f.index < at] for tf, f in by_tf.items()}
    again = evaluate_latest(cut, at=at, state=CooldownState(), **kwargs)
    assert [s.id for s in again] == [target["id"]]
    off_close = at + pd.Timedelta("1min")
    assert evaluate_latest(by_tf, at=off_close, state=CooldownState(), **kwargs) == []
    stale = {tf: f[f.index < at - pd.Timedelta("1h")] for tf, f in by_tf.items()}
    assert evaluate_latest(stale, at=at, state=CooldownState(), **kwargs) == []


def test_settings_are_accepted(bars: pd.DataFrame, history: pd.DataFrame) -> None:
    settings = Settings()
    assert EngineConfig.from_settings(settings).live_window_bars >= 1000
    from_settings = evaluate_symbol_history(
        {"1m": bars},
        symbol="BTC/USDT",
        exchange="sim",
        run_id="r1",
        config=EngineConfig.from_settings(settings),
    )
    assert from_settings["id"].tolist() == history["id"].tolist()


def test_engine_config_fields_are_settings_fields() -> None:
    """EngineConfig is built from Settings by field name: every field must exist there."""
    import dataclasses

    settings = Settings(cooldown_bars=7, expiry_bars=5, primary_timeframe="15m")
    config = EngineConfig.from_settings(settings)
    for field in dataclasses.fields(EngineConfig):
        assert field.name in Settings.model_fields, field.name
    assert (config.cooldown_bars, config.expiry_bars) == (7, 5)
    assert config.primary_timeframe == "15m" and "15m" in config.timeframes

"""Strategies: loading, the default through the interface, several at once over shared features."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydantic import Field

from signalengine.core.errors import ConfigurationError
from signalengine.tasks.engine import pipeline, shared
from signalengine.tasks.engine.buckets import resample_bars
from signalengine.tasks.engine.config import EngineConfig
from signalengine.tasks.engine.loader import load_strategies, parse_specs
from signalengine.tasks.engine.pipeline import evaluate_latest_batch, evaluate_symbol_history
from signalengine.tasks.engine.records import CooldownState, signal_id
from signalengine.tasks.engine.strategies import DefaultStrategy
from signalengine.tasks.engine.strategy import (
    Entry,
    Strategy,
    StrategyParams,
    percent_exits,
    rolling_extreme,
)
from signalengine.tasks.runs.backtest import run_backtest
from tests.utils.bars import make_bars_1m

CFG = EngineConfig(signal_score_threshold=0.35, mtf_min_aligned=1)
TWO = (
    '[{"name": "default"}, {"name": "fast", "use": "default",'
    ' "params": {"signal_score_threshold": 0.2, "exit": "percent", "tp_pct": 1.5,'
    ' "cooldown_bars": 6, "events": ["ema_cross", "rsi_reversal", "bb_breakout"]}}]'
)


class BreakoutParams(StrategyParams):
    period: int = Field(default=20, ge=2)
    stop_pct: float = Field(default=1.0, gt=0)


class Breakout(Strategy):
    """A channel breakout of its own: its own column, no MTF requirement, percent exits."""

    Params = BreakoutParams
    params: BreakoutParams

    @property
    def entry_lookback_bars(self) -> int:
        return self.params.period

    @property
    def mtf_alignment_required(self) -> bool:
        return False

    def entry(self, frame: Any) -> Entry:
        close = np.asarray(frame["close"], dtype=np.float64)
        high = rolling_extreme(frame["high"], self.params.period, np.fmax, shift=1)
        low = rolling_extreme(frame["low"], self.params.period, np.fmin, shift=1)
        direction = (close > high).astype(np.int8) - (close < low).astype(np.int8)
        return Entry(direction, np.abs(direction).astype(np.float64))

    def exits(self, entry_price: Any, side: Any, frame: Any) -> tuple[Any, Any]:
        return percent_exits(entry_price, side, 2 * self.params.stop_pct, self.params.stop_pct)


def _by_tf(bars_1m: pd.DataFrame) -> dict[str, pd.DataFrame]:
    return {tf: bars_1m if tf == "1m" else resample_bars(bars_1m, tf) for tf in CFG.timeframes}


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return make_bars_1m(days=3, seed=11)


def _strategies() -> list[Strategy]:
    loaded = load_strategies(TWO, CFG)
    return [*loaded, Breakout({"period": 12}, name="breakout", config=CFG)]


def _history(bars: pd.DataFrame, strategies: list[Strategy] | None) -> pd.DataFrame:
    return evaluate_symbol_history(
        _by_tf(bars), symbol="BTC/USDT", exchange="sim", run_id="r", config=CFG,
        strategies=strategies,
    )  # fmt: skip


def test_loader_names_import_paths_and_entry_points(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    assert [s.name for s in load_strategies(None, CFG)] == ["default"]
    assert [s.name for s in load_strategies("", CFG)] == ["default"]
    package = tmp_path / "mystrats"
    package.mkdir()
    (package / "__init__.py").write_text(
        textwrap.dedent(
            """
            from signalengine.tasks.engine.strategies.default import DefaultStrategy

            class Tuned(DefaultStrategy):
                pass
            """
        )
    )
    dist = tmp_path / "mystrats-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mystrats\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[signalengine.strategies]\ntuned = mystrats:Tuned\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    specs = (
        '[{"name": "a", "use": "mystrats:Tuned"}, {"name": "tuned",'
        ' "params": {"weights": {"ema_cross": 2.0}}}]'
    )
    loaded = load_strategies(specs, CFG)
    assert [(type(s).__name__, s.name) for s in loaded] == [("Tuned", "a"), ("Tuned", "tuned")]
    assert loaded[1].params.weights == {"ema_cross": 2.0}  # type: ignore[attr-defined]
    toml = tmp_path / "strategies.toml"
    toml.write_text(
        '[[strategies]]\nname = "fast"\nuse = "default"\nparams = {cooldown_bars = 9}\n'
    )
    (fast,) = load_strategies(str(toml), CFG)
    assert fast.cooldown_bars == 9 and fast.score_threshold == CFG.signal_score_threshold
    sys.modules.pop("mystrats", None)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ('[{"name": "nope"}]', "unknown strategy 'nope'"),
        ('[{"name": "f", "use": "default", "params": {"bogus": 1}}]', "bogus: Extra inputs"),
        ('[{"name": "f", "use": "default", "params": {"events": ["x"]}}]', "unknown events"),
        ('[{"name": "f", "use": "default", "params": {"exit": "moon"}}]', "exit: Input should"),
        ('[{"name": "f", "use": "no_such_module:X"}]', "cannot import strategy module"),
        ('[{"name": "f", "use": "signalengine.tasks.engine.config:EngineConfig"}]', "not a Strat"),
        ('[{"name": "d"}, {"name": "d", "use": "default"}]', "unique"),
        ('[{"name": "Bad Name"}]', "name: String should match"),
        ("[oops", "not valid JSON"),
        ("/no/such/file.toml", "neither a JSON list nor an existing file"),
    ],
)
def test_loader_errors_are_one_line(raw: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as caught:
        load_strategies(raw, CFG)
    assert "\n" not in str(caught.value)


def test_default_params_follow_the_engine_config_and_version_its_code_and_params() -> None:
    default = DefaultStrategy(name="default", config=CFG)
    assert default.score_threshold == 0.35 and default.mtf_min_aligned == 1
    assert default.version == DefaultStrategy(name="other", config=CFG).version
    assert default.version != DefaultStrategy(name="default", config=EngineConfig()).version
    tuned = DefaultStrategy({"signal_score_threshold": 0.2}, name="default", config=CFG)
    assert tuned.score_threshold == 0.2 and tuned.version != default.version
    controlled = default.controlled(0.9)
    assert controlled.score_threshold == 0.9 and controlled.version == default.version
    assert [s.name for s in parse_specs(None)] == ["default"]


def test_default_strategy_through_the_interface_is_the_engine(bars: pd.DataFrame) -> None:
    alone = _history(bars, None)
    explicit = _history(bars, load_strategies(None, CFG))
    assert len(alone) >= 5
    pd.testing.assert_frame_equal(alone, explicit)
    assert set(alone["strategy"]) == {"default"}
    assert set(alone["strategy_version"]) == {load_strategies(None, CFG)[0].version}
    first = alone.iloc[0]
    assert first["id"] == signal_id(
        run_id="r", exchange="sim", symbol="BTC/USDT", timeframe="5m",
        direction=first["direction"], ts=first["ts"],
    )  # fmt: skip


def test_several_strategies_at_once_equal_each_alone(bars: pd.DataFrame) -> None:
    strategies = _strategies()
    together = _history(bars, strategies)
    assert list(together["ts"]) == sorted(together["ts"])
    for strategy in strategies:
        alone = _history(bars, [strategy])
        assert len(alone) >= 3, strategy.name
        mine = together[together["strategy"] == strategy.name].reset_index(drop=True)
        pd.testing.assert_frame_equal(mine, alone)
        assert set(alone["strategy_version"]) == {strategy.version}
    assert together["id"].is_unique
    # The same bar and side under two strategies: distinct, deterministic ids.
    fast = together[together["strategy"] == "fast"].iloc[0]
    assert fast["id"] == signal_id(
        run_id="r", exchange="sim", symbol="BTC/USDT", timeframe="5m",
        direction=fast["direction"], ts=fast["ts"], strategy="fast",
    )  # fmt: skip
    assert fast["take_profit"] == pytest.approx(fast["entry_price"] * (1 + 1.5 / 100 * (
        1 if fast["direction"] == "long" else -1
    )))  # fmt: skip
    breakout = together[together["strategy"] == "breakout"]
    assert all(e == [] for e in breakout["events"])
    assert set(breakout["mtf_aligned"]) <= {True, False}


class _Counter:
    """Wraps a real feature function and records what it was called on."""

    def __init__(self, name: str, function: Any, seen: list[tuple[str, int]]) -> None:
        self.name, self.function, self.seen = name, function, seen

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # feature_tails gets every symbol's columns in one list, the others one series
        self.seen.append((self.name, id(args[0] if self.name == "feature_tails" else args[-1])))
        return self.function(*args, **kwargs)


_FEATURE_FUNCTIONS = [
    (pipeline, "feature_arrays"),
    (pipeline, "feature_tails"),
    (shared, "feature_arrays"),
    (shared, "vote_feature_arrays"),
]


def _feature_calls(monkeypatch: pytest.MonkeyPatch, run: Any) -> list[tuple[str, int]]:
    """(function, id of the series it read) of every feature computation `run()` makes."""
    seen: list[tuple[str, int]] = []
    with monkeypatch.context() as patch:
        for module, name in _FEATURE_FUNCTIONS:
            patch.setattr(module, name, _Counter(name, getattr(module, name), seen))
        run()
    return seen


def test_features_are_computed_once_whatever_the_number_of_strategies(
    bars: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = {"BTC/USDT": bars, "ETH/USDT": make_bars_1m(days=3, seed=12)}
    strategies = _strategies()

    def backtest(chosen: list[Strategy]) -> Any:
        return lambda: run_backtest(data, config=CFG, run_id="b", exchange="sim", strategies=chosen)

    one = len(_feature_calls(monkeypatch, backtest(strategies[:1])))
    three = _feature_calls(monkeypatch, backtest(strategies))
    # per symbol: the primary pass and each other timeframe's vote features, once
    assert one == len(three) == len(data) * len(CFG.timeframes)
    assert len(set(three)) == len(three)

    # Live: per close, the stacked tails once, and the vote features of a symbol's other
    # timeframes once if any strategy fires there, never once per strategy.
    def live(at: pd.Timestamp, chosen: list[Strategy]) -> Any:
        by_symbol = {s: _by_tf(b[b.index < at]) for s, b in data.items()}
        return lambda: evaluate_latest_batch(
            by_symbol, at=at, state=CooldownState(), exchange="sim", config=CFG,
            strategies=chosen,
        )  # fmt: skip

    fired = 0
    for at in pd.date_range(end=bars.index[-1].floor("5min"), periods=24, freq="5min"):
        calls = _feature_calls(monkeypatch, live(at, strategies))
        assert len(set(calls)) == len(calls)
        assert [name for name, _ in calls].count("feature_tails") == 1
        alone = [len(_feature_calls(monkeypatch, live(at, [s]))) for s in strategies]
        assert max(alone) <= len(calls) <= 1 + len(data) * (len(CFG.timeframes) - 1)
        fired += len(calls) > 1
    assert fired  # some closes fired: the vote features were shared


def test_live_stepping_with_several_strategies_equals_their_backtest(bars: pd.DataFrame) -> None:
    """Each strategy keeps its own cooldown: stepping all of them equals each one's history."""
    strategies = _strategies()
    history = _history(bars, strategies)
    by_tf = _by_tf(bars)
    closes = pd.date_range(bars.index[0] + pd.Timedelta(hours=48), bars.index[-1], freq="5min")
    state = CooldownState.from_signals(history[history["emitted_at"] < closes[0]])
    stepped = []
    for at in closes:
        stepped.extend(
            evaluate_latest_batch(
                {"BTC/USDT": by_tf},
                at=at,
                state=state,
                exchange="sim",
                config=CFG,
                run_id="r",
                strategies=strategies,
            )  # fmt: skip
        )
    later = history[history["emitted_at"] >= closes[0]]
    got = {(s.strategy, s.id, s.take_profit, s.stop_loss, s.strategy_version) for s in stepped}
    want = set(
        later[["strategy", "id", "take_profit", "stop_loss", "strategy_version"]].itertuples(
            index=False, name=None
        )
    )
    assert len(want) >= 5
    assert {s for s, *_ in want} == {"default", "fast", "breakout"}
    assert got == want


def test_config_only_tuning_of_the_default(bars: pd.DataFrame) -> None:
    """Which events run, their weights and the exit rule change what it emits, as declared."""
    only_cross = DefaultStrategy(
        {"events": ["ema_cross"], "weights": {"ema_cross": 2.5}, "exit": "risk_reward",
         "risk_reward": 3.0, "sl_atr_multiple": 1.5, "expiry_bars": 4},
        name="cross", config=CFG,
    )  # fmt: skip
    found = _history(bars, [only_cross])
    assert len(found) >= 3
    assert all([e["type"] for e in events] == ["ema_cross"] for events in found["events"])
    # one event at weight 2.5: the score is its strength (0.5 .. 1)
    strengths = [events[0]["strength"] for events in found["events"]]
    np.testing.assert_allclose(found["score"], strengths)
    risk = (found["entry_price"] - found["stop_loss"]).abs()
    reward = (found["take_profit"] - found["entry_price"]).abs()
    np.testing.assert_allclose(reward, 3.0 * risk)
    np.testing.assert_allclose(risk, 1.5 * found["features"].map(lambda f: f["atr_14"]))
    lifetime = found["expires_at"] - found["emitted_at"]
    assert set(lifetime) == {pd.Timedelta(minutes=5 * 4)}

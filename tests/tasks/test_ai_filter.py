"""ChampionFilter against a real MLflow (SQLite) store: hot reload when `champion` moves."""

from __future__ import annotations

import numpy as np
import pandas as pd

from signalengine.simulator.market import DAY_MS, EPOCH_MS, bars_to_frame, market_bars
from signalengine.tasks import metrics
from signalengine.tasks.engine.config import EngineConfig
from signalengine.tasks.engine.features import FEATURE_COLUMNS
from signalengine.tasks.engine.pipeline import evaluate_symbol_history
from signalengine.tasks.learning.ai_filter import ChampionFilter
from signalengine.tasks.learning.importance import extract_importance
from signalengine.tasks.learning.labels import MODEL_COLUMNS
from signalengine.tasks.learning.registry import (
    CHAMPION_ALIAS,
    MODEL_NAME,
    champion_version,
    mlflow_client,
    publish_model,
    should_promote,
)
from signalengine.tasks.learning.training import TrainingConfig, TrainingResult, train_filter
from tests.utils.net import free_port


def _by_direction(side: float, n: int = 400, seed: int = 5) -> pd.DataFrame:
    """Candidates that win (mostly) when their direction is `side`."""
    rng = np.random.default_rng(seed)
    data = pd.DataFrame(rng.normal(size=(n, len(MODEL_COLUMNS))), columns=list(MODEL_COLUMNS))
    data["direction"] = rng.choice([-1.0, 1.0], n)
    win = (data["direction"] == side) ^ (rng.random(n) < 0.1)
    data["label"] = win.astype(int)
    data["return_pct"] = np.where(win, 1.0, -0.5)
    emitted = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(np.arange(n) * 15, "min")
    data["emitted_at"] = emitted
    data["expires_at"] = emitted + pd.Timedelta("1h")
    return data


def _train(side: float) -> TrainingResult:
    return train_filter(_by_direction(side), config=TrainingConfig(num_boost_round=20))


def _publish(result: TrainingResult, uri: str, tmp_path) -> bool:
    published = publish_model(
        result,
        extract_importance(result.booster),
        uri=uri,
        location=(tmp_path / "artifacts").as_uri(),
    )
    return published.promoted


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _candidates(n: int = 40) -> pd.DataFrame:
    """The frame the engine hands to a SignalFilter (direction as int8, like the engine)."""
    rng = np.random.default_rng(9)
    frame = pd.DataFrame(rng.normal(size=(n, len(FEATURE_COLUMNS))), columns=list(FEATURE_COLUMNS))
    frame["direction"] = np.where(np.arange(n) % 2 == 0, 1, -1).astype(np.int8)
    frame["score"], frame["mtf_score"] = 0.7, 0.75
    return frame


def _reloads() -> float:
    return metrics.REGISTRY.get_sample_value("ai_model_reloads_total") or 0.0


def _decisions(decision: str) -> float:
    value = metrics.REGISTRY.get_sample_value("ai_inference_total", {"decision": decision})
    return value or 0.0


def test_no_store_or_no_champion_means_no_filter(tmp_path) -> None:
    path = tmp_path / "mlflow.db"
    missing = ChampionFilter(uri=f"sqlite:///{path}", min_probability=0.5)
    assert missing.current() == (None, None)
    assert not path.exists()  # looking for a champion does not create a store
    mlflow_client(f"sqlite:///{path}").search_experiments()  # an empty store
    assert ChampionFilter(uri=f"sqlite:///{path}", min_probability=0.5).current() == (None, None)
    down = ChampionFilter(uri=f"http://127.0.0.1:{free_port()}", min_probability=0.5)
    assert down.current() == (None, None)  # unreachable server: logged, engine unfiltered


def test_should_promote() -> None:
    assert should_promote(0.6, None, min_gain=0.0)
    assert should_promote(0.6, 0.55, min_gain=0.0)
    assert not should_promote(0.6, 0.6, min_gain=0.0)  # a tie keeps the champion
    assert not should_promote(0.6, 0.58, min_gain=0.05)
    assert not should_promote(float("nan"), None, min_gain=0.0)
    assert should_promote(0.6, float("nan"), min_gain=0.0)


def test_champion_filter_reloads_a_moved_alias_without_restart(tmp_path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert _publish(_train(+1.0), uri, tmp_path)  # first model: champion
    clock = _Clock()
    champion = ChampionFilter(uri=uri, min_probability=0.5, reload_seconds=5.0, clock=clock)
    reloads, passed = _reloads(), _decisions("pass")
    signal_filter, version = champion.current()
    assert version == "1" and signal_filter is not None
    assert _reloads() == reloads + 1
    frame = _candidates()
    long_rows = frame["direction"].to_numpy() > 0
    assert ((signal_filter(frame) >= 0.5) == long_rows).all()
    assert _decisions("pass") == passed + long_rows.sum()

    # A retrain that wins on its own holdout moves the alias (the old champion scores ~0 there)
    assert _publish(_train(-1.0), uri, tmp_path)
    assert champion_version(mlflow_client(uri)) == "2"
    clock.now = 4.9
    assert champion.current()[1] == "1"  # not re-checked before the reload interval
    clock.now = 5.0
    signal_filter, version = champion.current()
    assert version == "2" and signal_filter is not None
    assert _reloads() == reloads + 2
    assert ((signal_filter(frame) >= 0.5) == ~long_rows).all()
    clock.now = 10.0
    champion.current()
    assert _reloads() == reloads + 2  # alias unchanged: no reload

    # Through the engine: the filter changes which candidates become signals
    start = EPOCH_MS + 3 * DAY_MS
    bars = {"1m": bars_to_frame(market_bars("BTC/USDT", start, start + 6 * DAY_MS))}
    cfg = EngineConfig()

    def run(filter_=None, version_=None) -> pd.DataFrame:
        return evaluate_symbol_history(
            bars,
            symbol="BTC/USDT",
            exchange="binance",
            run_id="t",
            config=cfg,
            signal_filter=filter_,
            model_version=version_,
        )

    plain = run()
    assert {"long", "short"} <= set(plain["direction"])
    shorts = run(signal_filter, version)
    assert set(shorts["direction"]) == {"short"} and (shorts["model_version"] == "2").all()
    assert (shorts["ai_probability"] >= 0.5).all()


def test_champion_filter_drops_a_removed_champion(tmp_path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _publish(_train(+1.0), uri, tmp_path)
    champion = ChampionFilter(uri=uri, min_probability=0.5, reload_seconds=0.0)
    assert champion.current()[1] == "1"
    mlflow_client(uri).delete_registered_model_alias(MODEL_NAME, CHAMPION_ALIAS)
    assert champion.current() == (None, None)

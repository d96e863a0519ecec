"""A champion must earn its place: the promotion gate against the unfiltered engine.

Real LightGBM fits, a real MLflow (SQLite) store and the real engine; the data are
candidates built like `tasks.learning.labels.build_dataset` rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from signalengine.simulator.market import DAY_MS, EPOCH_MS, bars_to_frame, market_bars
from signalengine.tasks.engine.config import EngineConfig
from signalengine.tasks.engine.features import FEATURE_COLUMNS
from signalengine.tasks.engine.pipeline import evaluate_symbol_history
from signalengine.tasks.learning.ai_filter import ChampionFilter
from signalengine.tasks.learning.importance import extract_importance
from signalengine.tasks.learning.labels import MODEL_COLUMNS
from signalengine.tasks.learning.promotion import (
    PromotionPolicy,
    auc_lower_bound,
    delong_auc,
    rejection_reasons,
)
from signalengine.tasks.learning.registry import (
    CHAMPION_ALIAS,
    MODEL_NAME,
    PublishResult,
    champion_version,
    mlflow_client,
    publish_model,
)
from signalengine.tasks.learning.training import (
    TrainingConfig,
    TrainingResult,
    roc_auc,
    train_filter,
)

CONFIG = TrainingConfig(num_boost_round=30)


def _candidates(n: int, seed: int, *, planted: bool) -> pd.DataFrame:
    """Candidates every 15 min; with `planted`, the label is mostly `rsi_14 > 50`,
    otherwise it is drawn independently of every feature (p = 0.4)."""
    rng = np.random.default_rng(seed)
    data = pd.DataFrame(rng.normal(size=(n, len(MODEL_COLUMNS))), columns=list(MODEL_COLUMNS))
    data["rsi_14"] = rng.uniform(0, 100, n)
    data["direction"] = rng.choice([-1.0, 1.0], n)
    if planted:
        win = (data["rsi_14"] > 50) ^ (rng.random(n) < 0.15)
    else:
        win = pd.Series(rng.random(n) < 0.4)
    data["label"] = win.astype(int)
    data["return_pct"] = np.where(win, 1.0, -0.6)
    emitted = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(np.arange(n) * 15, "min")
    data["emitted_at"] = emitted
    data["expires_at"] = emitted + pd.Timedelta("1h")
    return data


def _publish(result: TrainingResult, uri: str, tmp_path) -> PublishResult:
    return publish_model(
        result,
        extract_importance(result.booster),
        uri=uri,
        location=(tmp_path / "artifacts").as_uri(),
        policy=PromotionPolicy(),
    )


def test_delong_error_agrees_with_a_bootstrap() -> None:
    rng = np.random.default_rng(11)
    label = rng.random(300) < 0.4
    score = rng.normal(size=300) + 0.6 * label
    auc, se = delong_auc(label, score)
    assert auc == pytest.approx(roc_auc(label, score))
    boot = []
    for _ in range(2000):
        i = rng.integers(0, 300, 300)
        boot.append(roc_auc(label[i], score[i]))
    assert se == pytest.approx(float(np.std(boot)), rel=0.15)
    assert auc_lower_bound(label, score, confidence=0.95) == pytest.approx(auc - 1.6449 * se, 1e-3)
    # perfect separation: no uncertainty left; one class: undefined
    assert delong_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])) == (1.0, 0.0)
    assert np.isnan(delong_auc(np.array([1, 1]), np.array([0.1, 0.2]))[0])


def test_every_failed_condition_is_named() -> None:
    metrics = {
        "auc": 0.5,
        "filtered_win_rate": float("nan"),
        "base_win_rate": 0.31,
        "filtered_avg_return_pct": float("nan"),
        "base_avg_return_pct": -0.1,
        "pass_rate": 0.0,
    }
    # the demo's first model: 42 rows, one leaf scoring 0.3095 for everything
    label = np.array([1] * 3 + [0] * 6)
    reasons = rejection_reasons(
        metrics, label=label, prob=np.full(9, 0.3095), policy=PromotionPolicy()
    )
    assert reasons == [
        "9 holdout candidates < 30",
        "3 holdout take-profits < 10",
        "holdout AUC 0.5000 not above chance: its 95% lower bound is 0.5000 <= 0.5",
        "filtered win rate undefined / avg return undefined % do not beat the unfiltered"
        " 0.3100 / -0.1000 %",
        "pass rate 0.0000 outside [0.05, 0.95]",
    ]


def test_labels_independent_of_features_are_not_promoted_and_the_engine_stays_unfiltered(
    tmp_path,
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = train_filter(_candidates(800, 1, planted=False), config=CONFIG)
    published = _publish(result, uri, tmp_path)
    assert published.promoted is False and published.version == "1"
    assert "not above chance" in (published.rejection_reason or "")

    client = mlflow_client(uri)
    run = client.get_run(published.run_id)
    assert run.data.tags["decision"] == "rejected"
    assert run.data.tags["rejection_reason"] == published.rejection_reason
    assert champion_version(client) is None

    # the live filter finds no champion, so the engine emits exactly the unfiltered signals
    signal_filter, version = ChampionFilter(uri=uri, min_probability=0.5).current()
    assert (signal_filter, version) == (None, None)
    start = EPOCH_MS + 3 * DAY_MS
    bars = {"1m": bars_to_frame(market_bars("BTC/USDT", start, start + 4 * DAY_MS))}

    def run_engine(filter_=None, version_=None) -> pd.DataFrame:
        return evaluate_symbol_history(
            bars,
            symbol="BTC/USDT",
            exchange="binance",
            run_id="t",
            config=EngineConfig(),
            signal_filter=filter_,
            model_version=version_,
        )

    plain = run_engine()
    live = run_engine(signal_filter, version)
    assert len(plain) > 0 and len(live) == len(plain)
    assert live["ai_probability"].isna().all() and live["model_version"].isna().all()


def test_a_planted_signal_is_promoted_and_a_worse_model_never_replaces_it(tmp_path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    data = _candidates(800, 2, planted=True)
    result = train_filter(data, config=CONFIG)
    m = result.metrics
    assert m["filtered_win_rate"] > m["base_win_rate"]
    assert m["filtered_avg_return_pct"] > m["base_avg_return_pct"]
    published = _publish(result, uri, tmp_path)
    assert published.promoted is True and published.reasons == ()
    client = mlflow_client(uri)
    assert client.get_run(published.run_id).data.tags["decision"] == "promoted"
    assert str(client.get_model_version_by_alias(MODEL_NAME, CHAMPION_ALIAS).version) == "1"
    signal_filter, version = ChampionFilter(uri=uri, min_probability=0.5).current()
    assert version == "1" and signal_filter is not None

    # a constant model on the same window fails the baseline; the champion is re-scored
    # on the new holdout (the same rows: the same AUC) and stays
    stump = train_filter(data, config=CONFIG, params={"min_data_in_leaf": 10**9})
    second = _publish(stump, uri, tmp_path)
    assert second.promoted is False and second.previous_champion == "1"
    assert second.champion_auc == pytest.approx(m["auc"])
    assert extract_importance(stump.booster) == {}  # no split: no importance
    assert champion_version(client) == "1"


def test_a_champion_rejecting_every_candidate_reports_rejecting_all(tmp_path, db) -> None:
    """A champion trained on a planted signal, then fed only candidates it rejects."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert _publish(
        train_filter(_candidates(800, 2, planted=True), config=CONFIG), uri, tmp_path
    ).promoted
    champion = ChampionFilter(uri=uri, min_probability=0.5, window=10)
    signal_filter, version = champion.current()
    assert signal_filter is not None
    frame = pd.DataFrame(0.0, index=range(4), columns=list(FEATURE_COLUMNS))
    frame["direction"], frame["score"], frame["mtf_score"] = np.int8(1), 0.7, 0.75
    frame["rsi_14"] = 10.0  # the planted rule says: loses
    assert (signal_filter(frame) < 0.5).all()
    assert champion.health().rejecting_all is False  # 4 of a window of 10: too few yet
    signal_filter(frame)
    signal_filter(frame)
    health = champion.report(db, name="test:binance:all")
    assert health.rejecting_all and (health.scored, health.passed) == (10, 0)
    row = db.execute("SELECT * FROM ai_filter_health WHERE name = 'test:binance:all'").fetchone()
    assert row["rejecting_all"] is True and row["model_version"] == version
    from signalengine.tasks import metrics

    assert metrics.REGISTRY.get_sample_value("ai_filter_rejecting_all") == 1.0
    frame["rsi_14"] = 90.0  # one passing candidate clears the state
    signal_filter(frame.head(1))
    assert champion.report(db, name="test:binance:all").rejecting_all is False
    assert metrics.REGISTRY.get_sample_value("ai_filter_rejecting_all") == 0.0
    db.execute("DELETE FROM ai_filter_health")

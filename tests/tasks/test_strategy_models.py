"""One MLflow model and one champion per strategy, and the default's migration from the
legacy `signalengine-filter` (real LightGBM fits, a real MLflow SQLite store)."""

from __future__ import annotations

from signalengine.tasks.learning.ai_filter import ChampionFilter
from signalengine.tasks.learning.importance import extract_importance
from signalengine.tasks.learning.promotion import PromotionPolicy
from signalengine.tasks.learning.registry import (
    CHAMPION_ALIAS,
    LEGACY_MODEL_NAME,
    champion_of,
    mlflow_client,
    model_name,
    model_type,
    publish_model,
    quiet_mlflow,
)
from signalengine.tasks.learning.training import TrainingConfig, TrainingResult, train_filter
from tests.tasks.test_promotion import _candidates

CONFIG = TrainingConfig(num_boost_round=30)


def _publish(result: TrainingResult, uri: str, tmp_path, strategy: str) -> str:  # type: ignore[no-untyped-def]
    published = publish_model(
        result,
        extract_importance(result.booster),
        uri=uri,
        location=(tmp_path / "artifacts").as_uri(),
        policy=PromotionPolicy(),
        strategy=strategy,
    )
    assert published.promoted, published.reasons
    return published.version


def _legacy_champion(result: TrainingResult, uri: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A store from before strategies: the default's filter as `signalengine-filter`."""
    with quiet_mlflow():
        import mlflow
        import mlflow.lightgbm

        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        experiment = mlflow.create_experiment("old", artifact_location=(tmp_path / "old").as_uri())
        with mlflow.start_run(experiment_id=experiment):
            mlflow.lightgbm.log_model(
                result.booster, name="model", registered_model_name=LEGACY_MODEL_NAME
            )
    mlflow_client(uri).set_registered_model_alias(LEGACY_MODEL_NAME, CHAMPION_ALIAS, "1")


def test_names_and_model_types() -> None:
    assert model_name("default") == "signalengine-filter-default"
    assert model_name("donchian") == "signalengine-filter-donchian"
    assert (model_type("default"), model_type("donchian")) == ("lightgbm", "lightgbm-donchian")


def test_each_strategy_has_its_champion_and_the_legacy_one_serves_default_until_replaced(
    tmp_path,
) -> None:  # type: ignore[no-untyped-def]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    planted = train_filter(_candidates(800, 3, planted=True), config=CONFIG)
    _legacy_champion(planted, uri, tmp_path)
    client = mlflow_client(uri)
    # migration: the legacy champion serves the default strategy, no other strategy
    assert champion_of(client, "default") == (LEGACY_MODEL_NAME, "1")
    assert champion_of(client, "donchian") is None
    default = ChampionFilter(uri=uri, min_probability=0.5)
    donchian = ChampionFilter(uri=uri, min_probability=0.5, strategy="donchian")
    assert default.current()[1] == "1" and default.model_name == LEGACY_MODEL_NAME
    assert donchian.current() == (None, None)

    # a donchian model: its own registered model and champion; default's is untouched
    other = train_filter(_candidates(800, 4, planted=True), config=CONFIG)
    assert _publish(other, uri, tmp_path, "donchian") == "1"
    assert champion_of(client, "donchian") == ("signalengine-filter-donchian", "1")
    assert champion_of(client, "default") == (LEGACY_MODEL_NAME, "1")
    donchian.refresh()
    assert donchian.model_version == "1"

    # a new default model must beat the legacy champion on its holdout; a much better one
    # does, becomes signalengine-filter-default's champion, and the live filter moves to it
    better = train_filter(_candidates(1600, 5, planted=True), config=CONFIG)
    published = publish_model(
        better,
        extract_importance(better.booster),
        uri=uri,
        location=(tmp_path / "artifacts").as_uri(),
        policy=PromotionPolicy(),
        min_auc_gain=-1.0,  # any valid model beats the legacy one: the path is what is tested
    )
    assert published.previous_champion == f"{LEGACY_MODEL_NAME}/1"
    assert published.champion_auc is not None  # the legacy champion was re-scored
    assert published.promoted and published.version == "1"
    assert champion_of(client, "default") == ("signalengine-filter-default", "1")
    default.refresh()
    assert default.model_version == "1"
    assert default.model_name == "signalengine-filter-default"
    tags = client.get_model_version("signalengine-filter-default", "1").tags
    assert tags["strategy"] == "default" and tags["decision"] == "promoted"


def test_live_engine_scores_each_strategy_with_its_own_filter() -> None:
    """`filters` routes each strategy's candidates to its own champion (or none)."""
    import numpy as np
    import pandas as pd

    from signalengine.tasks.engine.pipeline import evaluate_latest_batch
    from signalengine.tasks.engine.records import CooldownState
    from tests.tasks.test_strategies import CFG, _by_tf, _strategies
    from tests.utils.bars import make_bars_1m

    def constant(value: float):  # type: ignore[no-untyped-def]
        return lambda frame: np.full(len(frame), value)

    bars = make_bars_1m(days=3, seed=11)
    by_tf = _by_tf(bars)
    closes = pd.date_range(bars.index[0] + pd.Timedelta(hours=48), bars.index[-1], freq="5min")
    runs: dict[str, list] = {"plain": [], "filtered": []}  # type: ignore[type-arg]
    for key, filters in (
        ("plain", None),
        ("filtered", {"breakout": (constant(0.0), "9"), "fast": (constant(1.0), "7")}),
    ):
        state = CooldownState()
        for at in closes:
            runs[key].extend(
                evaluate_latest_batch(
                    {"BTC/USDT": by_tf},
                    at=at,
                    state=state,
                    exchange="sim",
                    config=CFG,
                    strategies=_strategies(),
                    filters=filters,
                )
            )
    plain = {s.strategy for s in runs["plain"]}
    assert plain == {"default", "fast", "breakout"}
    got = runs["filtered"]
    assert "breakout" not in {s.strategy for s in got}  # its filter rejected everything
    fast = [s for s in got if s.strategy == "fast"]
    assert fast and {(s.model_version, s.ai_probability) for s in fast} == {("7", 1.0)}
    default = [s for s in got if s.strategy == "default"]  # no filter of its own: unfiltered
    assert [s.id for s in default] == [s.id for s in runs["plain"] if s.strategy == "default"]
    assert {s.model_version for s in default} == {None}

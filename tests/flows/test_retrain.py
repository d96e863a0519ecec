"""The retrain flow on simulator klines stored in PostgreSQL, logging to a real MLflow store."""

from __future__ import annotations

import pandas as pd
import pytest

from signalengine.simulator.market import DAY_MS, EPOCH_MS, market_bars
from signalengine.tasks.marketdata.klines import store_klines
from signalengine.tasks.marketdata.validation import validate_klines

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
DAYS = 20
TIMEFRAMES = ["1m", "5m", "15m", "1h"]


def _store_simulator_days(db) -> None:
    start = EPOCH_MS + 5 * DAY_MS
    for symbol in SYMBOLS:
        bars = market_bars(symbol, start, start + DAYS * DAY_MS)
        frame = pd.DataFrame(
            {
                "exchange": "binance",
                "symbol": symbol,
                "ts": pd.to_datetime(bars["ts"], unit="ms", utc=True),
                **{c: bars[c] for c in ("open", "high", "low", "close", "volume")},
            }
        )
        store_klines(db, validate_klines(frame), timeframes=TIMEFRAMES)


@pytest.fixture
def mlflow_state(tmp_path, monkeypatch) -> str:
    """An empty state_dir: the flow must create its own SQLite MLflow store there."""
    monkeypatch.setenv("SIGNALENGINE_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("SIGNALENGINE_MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("SIGNALENGINE_RETRAIN_NUM_BOOST_ROUND", "20")
    monkeypatch.setenv("SIGNALENGINE_EXCHANGE", "binance")
    return f"sqlite:///{(tmp_path / 'mlflow' / 'mlflow.db').resolve()}"


def test_retrain_registers_promotes_and_keeps_a_better_champion(
    db, prefect_harness, mlflow_state: str
) -> None:
    from signalengine.flows.retrain import retrain
    from signalengine.tasks.learning.registry import (
        CHAMPION_ALIAS,
        EXPERIMENT_NAME,
        MODEL_NAME,
        mlflow_client,
        quiet_mlflow,
    )

    _store_simulator_days(db)
    first = retrain(lookback_days=DAYS, symbols=SYMBOLS)
    assert first["version"] == "1" and first["promoted"] is True
    assert first["previous_champion"] is None
    m = first["metrics"]
    assert m["holdout_rows"] >= 20 and m["train_rows"] > 3 * m["holdout_rows"]
    # precondition of the second half: the first model beats chance on its holdout
    assert m["auc"] > 0.5

    client = mlflow_client(mlflow_state)
    run = client.get_run(first["run_id"])
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == EXPERIMENT_NAME
    assert experiment.artifact_location.startswith(
        (pd.io.common.Path(mlflow_state.removeprefix("sqlite:///")).parent / "artifacts").as_uri()
    )
    assert run.data.params["symbols"] == ",".join(SYMBOLS)
    assert run.data.params["num_boost_round"] == "20"
    assert run.data.metrics["auc"] == pytest.approx(m["auc"])
    assert {"log_loss", "base_win_rate", "pass_rate"} <= set(run.data.metrics)
    assert run.data.tags["promoted"] == "true"
    files = {f.path for f in client.list_artifacts(first["run_id"], "importance")}
    assert files == {f"importance/feature_importance.{x}" for x in ("csv", "json", "png")}
    with quiet_mlflow():
        import mlflow.lightgbm
        from mlflow.models import get_model_info

        mlflow.set_tracking_uri(mlflow_state)
        uri = f"models:/{MODEL_NAME}@{CHAMPION_ALIAS}"
        info = get_model_info(uri)
        assert info.signature is not None and info.saved_input_example_info is not None
        assert "lightgbm" in info.flavors
        booster = mlflow.lightgbm.load_model(uri)
    assert booster.num_trees() == 20

    rows = db.execute(
        "SELECT model_version, feature_name, importance FROM feature_importance"
        " WHERE model_type = 'lightgbm'"
    ).fetchall()
    assert {r["model_version"] for r in rows} == {"1"}
    assert sum(r["importance"] for r in rows) == pytest.approx(1.0)

    # A deliberately worse model (no split allowed: constant score, AUC 0.5) on the same
    # window is registered, but `champion` stays on version 1.
    second = retrain(lookback_days=DAYS, symbols=SYMBOLS, params={"min_data_in_leaf": 10**9})
    assert second["version"] == "2" and second["promoted"] is False
    assert second["metrics"]["auc"] == 0.5
    assert second["previous_champion"] == "1"
    # the champion was re-scored on the new holdout (the same window: the same AUC)
    assert second["champion_auc"] == pytest.approx(m["auc"])
    assert str(client.get_model_version_by_alias(MODEL_NAME, CHAMPION_ALIAS).version) == "1"
    assert client.get_run(second["run_id"]).data.tags["promoted"] == "false"
    total = db.execute(
        "SELECT sum(importance) AS s FROM feature_importance WHERE model_version = '2'"
    ).fetchone()["s"]
    assert total == pytest.approx(1.0)


def test_retrain_without_klines_is_skipped(db, prefect_harness, mlflow_state: str) -> None:
    from signalengine.flows.retrain import retrain

    summary = retrain(lookback_days=5, symbols=["BTCUSDT"])
    assert summary["version"] is None and summary["promoted"] is False
    assert "skipped" in summary

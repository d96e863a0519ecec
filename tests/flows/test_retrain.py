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


def _store_simulator_days(db, symbols: list[str] = SYMBOLS, days: int = DAYS) -> None:
    start = EPOCH_MS + 5 * DAY_MS
    for symbol in symbols:
        bars = market_bars(symbol, start, start + days * DAY_MS)
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


def test_retrain_on_signal_free_klines_logs_a_rejected_model_and_keeps_the_engine_unfiltered(
    db, prefect_harness, mlflow_state: str
) -> None:
    """The simulator's market is a random walk: its candidates carry no learnable signal.

    Before issue 15 the first such model became champion and silenced the engine; now it
    is registered and visible in MLflow as rejected, with the reason, and no alias moves.
    (Promotion on a planted signal is tested in tests/tasks/test_promotion.py.)
    """
    from signalengine.flows.retrain import retrain
    from signalengine.tasks.learning.ai_filter import ChampionFilter
    from signalengine.tasks.learning.registry import (
        EXPERIMENT_NAME,
        MODEL_NAME,
        champion_version,
        mlflow_client,
        quiet_mlflow,
    )

    db.execute("DELETE FROM model_decisions")
    _store_simulator_days(db)
    first = retrain(lookback_days=DAYS, symbols=SYMBOLS)
    assert first["version"] == "1" and first["promoted"] is False
    assert first["decision"] == "rejected"
    assert "not above chance" in first["rejection_reason"]
    m = first["metrics"]
    assert m["holdout_rows"] >= 20 and m["train_rows"] > 3 * m["holdout_rows"]

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
    assert run.data.tags["promoted"] == "false"
    assert run.data.tags["decision"] == "rejected"
    assert run.data.tags["rejection_reason"] == first["rejection_reason"]
    version = client.get_model_version(MODEL_NAME, "1")
    assert version.tags["decision"] == "rejected"
    files = {f.path for f in client.list_artifacts(first["run_id"], "importance")}
    assert files == {f"importance/feature_importance.{x}" for x in ("csv", "json", "png")}
    with quiet_mlflow():
        from mlflow.models import get_model_info

        info = get_model_info(f"models:/{MODEL_NAME}/1")
        assert info.signature is not None and info.saved_input_example_info is not None
        assert "lightgbm" in info.flavors
    # nothing earned the alias: the live filter finds no champion, the engine is unfiltered
    assert champion_version(client) is None
    assert ChampionFilter(uri=mlflow_state, min_probability=0.5).current() == (None, None)
    decision = db.execute("SELECT * FROM model_decisions WHERE model_version = '1'").fetchone()
    assert decision["promoted"] is False and decision["reason"] == first["rejection_reason"]

    # A model without any split (constant score) has no importance: none is stored or
    # shown as equal shares, and its JSON artifact is empty.
    second = retrain(lookback_days=DAYS, symbols=SYMBOLS, params={"min_data_in_leaf": 10**9})
    assert second["version"] == "2" and second["promoted"] is False
    assert second["metrics"]["auc"] == 0.5
    assert (
        db.execute(
            "SELECT count(*) AS n FROM feature_importance WHERE model_version = '2'"
        ).fetchone()["n"]
        == 0
    )
    assert (
        db.execute(
            "SELECT has_importance FROM model_decisions WHERE model_version = '2'"
        ).fetchone()["has_importance"]
        is False
    )
    with quiet_mlflow():
        import mlflow.artifacts

        text = mlflow.artifacts.load_text(
            f"runs:/{second['run_id']}/importance/feature_importance.json"
        )
    assert text.strip() == "{}"
    db.execute("DELETE FROM model_decisions")


def test_retrain_without_klines_is_skipped(db, prefect_harness, mlflow_state: str) -> None:
    from signalengine.flows.retrain import retrain

    summary = retrain(lookback_days=5, symbols=["BTCUSDT"])
    assert summary["version"] is None and summary["promoted"] is False
    assert "skipped" in summary


def test_retrain_registers_one_model_per_strategy(
    db, prefect_harness, mlflow_state: str, monkeypatch
) -> None:
    """Two configured strategies: two registered models, each on its own candidates, each
    decision under its own model_type; an unknown name in `strategies=` is refused."""
    from signalengine.flows.retrain import retrain
    from signalengine.tasks.learning.registry import mlflow_client

    spec = (
        '[{"name": "default"},'
        ' {"name": "donchian", "use": "examples.strategies.donchian:Donchian"}]'
    )
    monkeypatch.setenv("SIGNALENGINE_STRATEGIES", spec)
    from signalengine.core.errors import ConfigurationError

    db.execute("DELETE FROM model_decisions")
    symbols, days = SYMBOLS[:2], 10  # small: enough candidates for both to train
    _store_simulator_days(db, symbols, days)
    with pytest.raises(ConfigurationError, match="not configured"):
        retrain(lookback_days=days, symbols=symbols, strategies=["nope"])
    summary = retrain(lookback_days=days, symbols=symbols)
    both = summary["by_strategy"]
    assert set(both) == {"default", "donchian"} and summary["strategy"] == "default"
    assert both["default"]["version"] == both["donchian"]["version"] == "1"
    client = mlflow_client(mlflow_state)
    names = {m.name for m in client.search_registered_models()}
    assert names == {"signalengine-filter-default", "signalengine-filter-donchian"}
    runs = {r: client.get_run(both[r]["run_id"]) for r in both}
    assert {r: run.data.tags["strategy"] for r, run in runs.items()} == {
        "default": "default",
        "donchian": "donchian",
    }
    # each filter learnt from its own strategy's candidates
    assert runs["default"].data.params["candidates"] != runs["donchian"].data.params["candidates"]
    decisions = db.execute(
        "SELECT model_type, model_version FROM model_decisions ORDER BY model_type"
    ).fetchall()
    assert [(d["model_type"], d["model_version"]) for d in decisions] == [
        ("lightgbm", "1"),
        ("lightgbm-donchian", "1"),
    ]
    db.execute("DELETE FROM model_decisions")

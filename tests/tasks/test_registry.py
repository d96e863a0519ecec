"""Where MLflow artifacts go: under the state dir unless a tracking server owns them."""

from __future__ import annotations

from pathlib import Path

import pytest

from signalengine.core.config import Settings
from signalengine.tasks.learning.registry import (
    EXPERIMENT_NAME,
    _ensure_experiment,
    artifact_location,
    mlflow_client,
)


@pytest.mark.parametrize("scheme", ["sqlite", "default"])
def test_artifacts_land_under_the_state_dir_not_the_working_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scheme: str
) -> None:
    state, elsewhere, cwd = tmp_path / "state", tmp_path / "elsewhere", tmp_path / "cwd"
    for folder in (state, elsewhere, cwd):
        folder.mkdir()
    monkeypatch.chdir(cwd)
    uri = f"sqlite:///{elsewhere / 'mlflow.db'}" if scheme == "sqlite" else None
    settings = Settings(state_dir=state, mlflow_tracking_uri=uri)
    location = artifact_location(settings)
    assert location == (state / "mlflow" / "artifacts").resolve().as_uri()
    store = uri or f"sqlite:///{state / 'mlflow' / 'mlflow.db'}"
    (state / "mlflow").mkdir(exist_ok=True)
    client = mlflow_client(store)
    experiment = client.get_experiment(_ensure_experiment(client, location))
    assert experiment.name == EXPERIMENT_NAME
    assert experiment.artifact_location == location
    assert not (cwd / "mlruns").exists()


def test_a_tracking_server_decides_its_own_artifact_store(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, mlflow_tracking_uri="http://127.0.0.1:5000")
    assert artifact_location(settings) is None

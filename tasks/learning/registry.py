"""The AI filter in MLflow: runs of experiment `signalengine`, one registered model per
strategy, `signalengine-filter-<strategy>` (the built-in one: `signalengine-filter-default`),
each with its own `champion` alias.

Migration: before strategies the built-in engine's filter was registered as
`signalengine-filter`. Until `signalengine-filter-default` has a champion, that legacy
champion still serves the default strategy (`champion_of`) and is the one a new default
model must beat; once a new default model is promoted the legacy model is no longer read.

Every retrain logs one run per strategy (params, holdout metrics, the LightGBM booster in MLflow's
lightgbm flavour with signature and input example, feature importance as CSV, JSON and a
PNG chart) and registers a new model version. The alias `champion` moves to it only
when it has earned its place against the unfiltered engine (`tasks.learning.promotion`:
enough holdout evidence, AUC above chance by a DeLong bound, a better filtered win rate
or return, a sane pass rate) *and* its holdout AUC beats the current champion's AUC on
the same holdout by more than `min_auc_gain` (the champion is re-scored, not compared on
its own old holdout). Otherwise the run is tagged `decision=rejected` with its
`rejection_reason`, and the engine keeps running unfiltered or on the old champion.

Store: `settings.mlflow_tracking_uri`, else a SQLite store at
`state_dir/mlflow/mlflow.db` with artifacts in `state_dir/mlflow/artifacts` (the layout the
supervisor's MLflow server uses; MLflow 3 needs a database for its model registry).
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import lightgbm as lgb
import numpy as np
import pandas as pd

from signalengine.core.config import Settings
from signalengine.core.errors import TemporaryError
from signalengine.core.vocabulary import DEFAULT_STRATEGY
from signalengine.tasks.learning.importance import importance_frame, plot_importance
from signalengine.tasks.learning.labels import LABEL_COLUMN
from signalengine.tasks.learning.promotion import PromotionPolicy, rejection_reasons
from signalengine.tasks.learning.training import TrainingResult, predict_proba, roc_auc

logger = logging.getLogger(__name__)

EXPERIMENT_NAME = "signalengine"
LEGACY_MODEL_NAME = "signalengine-filter"  # the default's filter before strategies
CHAMPION_ALIAS = "champion"
MODEL_TYPE = "lightgbm"  # feature_importance / model_decisions key of the default's filter
HEALTH_TIMEOUT_SECONDS = 2.0
# Warnings about MLflow itself, not our use of it (raised when mlflow.pyfunc is imported).
_MLFLOW_NOISE: tuple[tuple[type[Warning], str], ...] = (
    (UserWarning, r".*Any type hint is inferred as AnyType"),
)


def model_name(strategy: str = DEFAULT_STRATEGY) -> str:
    """The registered model of a strategy's filter: `signalengine-filter-<strategy>`."""
    return f"{LEGACY_MODEL_NAME}-{strategy}"


def model_type(strategy: str = DEFAULT_STRATEGY) -> str:
    """The strategy's `model_type` in feature_importance and model_decisions (versions are
    numbered per registered model, so each strategy needs its own key): `lightgbm` for the
    default (as before strategies), `lightgbm-<strategy>` for the others."""
    return MODEL_TYPE if strategy == DEFAULT_STRATEGY else f"{MODEL_TYPE}-{strategy}"


MODEL_NAME = model_name(DEFAULT_STRATEGY)

__all__ = [
    "CHAMPION_ALIAS",
    "EXPERIMENT_NAME",
    "LEGACY_MODEL_NAME",
    "MODEL_NAME",
    "MODEL_TYPE",
    "PublishResult",
    "artifact_location",
    "champion_of",
    "champion_version",
    "load_booster",
    "mlflow_client",
    "model_name",
    "model_type",
    "publish_model",
    "quiet_mlflow",
    "should_promote",
    "store_available",
    "tracking_uri",
]


def tracking_uri(settings: Settings) -> str:
    """The configured tracking URI, else the SQLite store under state_dir/mlflow."""
    if settings.mlflow_tracking_uri:
        return settings.mlflow_tracking_uri
    return f"sqlite:///{(settings.state_dir / 'mlflow' / 'mlflow.db').resolve()}"


def artifact_location(settings: Settings) -> str | None:
    """Artifact root for a new experiment: state_dir/mlflow/artifacts, unless a server decides.

    With an http(s) tracking URI the server's artifact store is used (None). Any other
    store (the default SQLite one, an explicit `sqlite:`/`file:`/database URI) would
    otherwise put artifacts in `./mlruns` of whatever directory the command runs in.
    """
    uri = settings.mlflow_tracking_uri
    if uri and uri.startswith(("http://", "https://")):
        return None
    return (settings.state_dir / "mlflow" / "artifacts").resolve().as_uri()


def store_available(uri: str) -> bool:
    """Whether the store exists: a SQLite file is present, a server answers /health.

    A missing SQLite file is never created here (looking for a champion must not create a
    store). Raises TemporaryError when an HTTP server does not answer.
    """
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).is_file()
    if uri.startswith(("http://", "https://")):
        try:
            httpx.get(
                f"{uri.rstrip('/')}/health", timeout=HEALTH_TIMEOUT_SECONDS
            ).raise_for_status()
        except httpx.HTTPError as e:
            raise TemporaryError(f"MLflow server {uri} unavailable: {e}") from e
    return True


@contextmanager
def quiet_mlflow() -> Iterator[None]:
    """Silence MLflow's own import-time and deprecation chatter (see _MLFLOW_NOISE)."""
    with warnings.catch_warnings():
        for category, message in _MLFLOW_NOISE:
            warnings.filterwarnings("ignore", message=message, category=category)
        yield


def mlflow_client(uri: str) -> Any:
    """An MlflowClient on `uri` for tracking and registry."""
    with quiet_mlflow():
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=uri, registry_uri=uri)


def champion_version(client: Any, *, name: str = MODEL_NAME) -> str | None:
    """The version the champion alias points at, None when there is no such alias/model."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, CHAMPION_ALIAS).version)
    except MlflowException as e:
        if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def champion_of(client: Any, strategy: str = DEFAULT_STRATEGY) -> tuple[str, str] | None:
    """(registered model, version) of a strategy's champion, None without one; for the
    default strategy the legacy `signalengine-filter` champion until its own exists."""
    name = model_name(strategy)
    version = champion_version(client, name=name)
    if version is not None:
        return name, version
    if strategy == DEFAULT_STRATEGY:
        legacy = champion_version(client, name=LEGACY_MODEL_NAME)
        if legacy is not None:
            return LEGACY_MODEL_NAME, legacy
    return None


def load_booster(client: Any, version: str, *, uri: str, name: str = MODEL_NAME) -> lgb.Booster:
    """The LightGBM booster of one registered version (downloaded to a temporary folder)."""
    with quiet_mlflow():
        import mlflow.artifacts
        import mlflow.lightgbm

        source = client.get_model_version_download_uri(name, version)
        with tempfile.TemporaryDirectory(prefix="signalengine-model-") as tmp:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=source, dst_path=tmp, tracking_uri=uri
            )
            booster: lgb.Booster = mlflow.lightgbm.load_model(local)
    return booster


def should_promote(new_auc: float, champion_auc: float | None, *, min_gain: float) -> bool:
    """Promote when there is no champion, or the new AUC beats it by more than min_gain.

    An undefined new AUC never promotes; a champion that could not be scored (NaN) is
    replaced, so an incompatible champion cannot block promotions forever.
    """
    if math.isnan(new_auc):
        return False
    if champion_auc is None or math.isnan(champion_auc):
        return True
    return new_auc > champion_auc + min_gain


@dataclass(frozen=True)
class PublishResult:
    """What one publish did: the run, the new version, and whether it became champion."""

    run_id: str
    version: str
    promoted: bool
    previous_champion: str | None
    champion_auc: float | None  # the previous champion's AUC on the new holdout
    reasons: tuple[str, ...] = ()  # why it was not promoted (empty when promoted)

    @property
    def rejection_reason(self) -> str | None:
        """The reasons joined into one line, None when promoted."""
        return "; ".join(self.reasons) if self.reasons else None

    def summary(self, metrics: Mapping[str, float]) -> dict[str, Any]:
        """JSON-safe summary (NaN as None) of this publish and the holdout `metrics`."""
        return {
            "run_id": self.run_id,
            "version": self.version,
            "metrics": {k: _json_float(v) for k, v in metrics.items()},
            "promoted": self.promoted,
            "decision": "promoted" if self.promoted else "rejected",
            "rejection_reason": self.rejection_reason,
            "previous_champion": self.previous_champion,
            "champion_auc": _json_float(self.champion_auc),
        }


def _json_float(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _ensure_experiment(client: Any, location: str | None) -> str:
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(EXPERIMENT_NAME)
    if found is not None:
        return str(found.experiment_id)
    try:
        return str(client.create_experiment(EXPERIMENT_NAME, artifact_location=location))
    except MlflowException:  # created concurrently by another retrain
        found = client.get_experiment_by_name(EXPERIMENT_NAME)
        if found is None:
            raise
        return str(found.experiment_id)


def _score_champion(
    client: Any, version: str, holdout: pd.DataFrame, *, uri: str, name: str
) -> float:
    """The champion's AUC on the new holdout; NaN when it cannot score these rows."""
    try:
        booster = load_booster(client, version, uri=uri, name=name)
        prob = predict_proba(booster, holdout)
    except Exception:  # an unreadable or incompatible champion must not stop the retrain
        logger.exception("could not score champion version %s on the new holdout", version)
        return float("nan")
    return roc_auc(holdout[LABEL_COLUMN].to_numpy(), prob)


def _log_importance(importance: dict[str, float], folder: Path) -> None:
    import mlflow

    importance_frame(importance).to_csv(folder / "feature_importance.csv", index=False)
    # {} is "no importance" (a model without a split), never equal shares
    (folder / "feature_importance.json").write_text(json.dumps(importance, indent=2))
    plot_importance(importance, folder / "feature_importance.png", title="AI filter: gain share")
    mlflow.log_artifacts(str(folder), artifact_path="importance")


def _log_model(result: TrainingResult, *, name: str) -> Any:
    import mlflow.lightgbm
    from mlflow.models import infer_signature

    inputs = result.holdout[list(result.booster.feature_name())].astype("float64")
    example = inputs.dropna().head(5)
    if example.empty:
        example = inputs.head(5).fillna(0.0)
    signature = infer_signature(example, predict_proba(result.booster, example))
    return mlflow.lightgbm.log_model(
        result.booster,
        name="model",
        signature=signature,
        input_example=example,
        registered_model_name=name,
        # Pinned explicitly: inferring requirements imports the model in a subprocess.
        pip_requirements=[
            f"lightgbm=={lgb.__version__}",
            f"numpy=={np.__version__}",
            f"pandas=={pd.__version__}",
        ],
    )


def _finite(metrics: Mapping[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if math.isfinite(v)}


def _decide(
    result: TrainingResult,
    champ_auc: float | None,
    *,
    previous: str | None,
    policy: PromotionPolicy,
    min_auc_gain: float,
) -> list[str]:
    """Reasons against promotion: the baseline gate first, then the champion comparison."""
    label = result.holdout[LABEL_COLUMN].to_numpy()
    prob = predict_proba(result.booster, result.holdout)
    reasons = rejection_reasons(result.metrics, label=label, prob=prob, policy=policy)
    if not reasons and not should_promote(result.metrics["auc"], champ_auc, min_gain=min_auc_gain):
        reasons.append(
            f"holdout AUC {result.metrics['auc']:.4f} does not beat champion v{previous}'s"
            f" {champ_auc:.4f} on the same holdout by more than {min_auc_gain:g}"
        )
    return reasons


def _champion_label(champion: tuple[str, str] | None, name: str) -> str | None:
    """The previous champion as reported: its version, `<model>/<version>` when it is
    another registered model's (the legacy one)."""
    if champion is None:
        return None
    return champion[1] if champion[0] == name else f"{champion[0]}/{champion[1]}"


def publish_model(
    result: TrainingResult,
    importance: dict[str, float],
    *,
    uri: str,
    location: str | None,
    min_auc_gain: float = 0.0,
    policy: PromotionPolicy | None = None,
    params: Mapping[str, Any] | None = None,
    run_name: str | None = None,
    strategy: str = DEFAULT_STRATEGY,
) -> PublishResult:
    """Log the run, register a version of `strategy`'s model, and move its `champion` to it
    if it earned it (see module).

    `params` are extra run parameters (e.g. symbols, lookback); booster parameters and the
    split are always logged. Undefined (NaN) metrics are left out of the run. `policy`
    defaults to `PromotionPolicy()`.
    """
    name = model_name(strategy)
    with quiet_mlflow():
        import mlflow

        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        client = mlflow_client(uri)
        experiment_id = _ensure_experiment(client, location)
        champion = champion_of(client, strategy)
        previous = _champion_label(champion, name)
        champ_auc = (
            None
            if champion is None
            else _score_champion(client, champion[1], result.holdout, uri=uri, name=champion[0])
        )
        reasons = _decide(
            result,
            champ_auc,
            previous=previous,
            policy=policy or PromotionPolicy(),
            min_auc_gain=min_auc_gain,
        )
        promoted = not reasons
        decision = {
            "promoted": str(promoted).lower(),
            "decision": "promoted" if promoted else "rejected",
            "rejection_reason": "; ".join(reasons),
            "importance": "gain" if importance else "none",
        }
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
            mlflow.log_params(
                {
                    **result.params,
                    "num_boost_round": result.num_boost_round,
                    "holdout_start": result.split.holdout_start.isoformat(),
                    "strategy": strategy,
                    **(params or {}),
                }
            )
            metrics = dict(result.metrics)
            if champ_auc is not None:
                metrics["champion_auc"] = champ_auc
            mlflow.log_metrics(_finite(metrics))
            mlflow.set_tags({**decision, "previous_champion": previous or "", "strategy": strategy})
            with tempfile.TemporaryDirectory(prefix="signalengine-importance-") as tmp:
                _log_importance(importance, Path(tmp))
            info = _log_model(result, name=name)
        version = str(info.registered_model_version)
        client.set_model_version_tag(name, version, "holdout_auc", result.metrics["auc"])
        for key in ("promoted", "decision", "rejection_reason"):
            client.set_model_version_tag(name, version, key, decision[key])
        client.set_model_version_tag(name, version, "strategy", strategy)
        if promoted:
            client.set_registered_model_alias(name, CHAMPION_ALIAS, version)
    logger.info(
        "model %s v%s: auc %.4f vs champion %s (%s): %s",
        name,
        version,
        result.metrics["auc"],
        previous,
        champ_auc,
        "promoted" if promoted else f"rejected ({'; '.join(reasons)})",
    )
    return PublishResult(
        run_id=str(run.info.run_id),
        version=version,
        promoted=promoted,
        previous_champion=previous,
        champion_auc=champ_auc,
        reasons=tuple(reasons),
    )

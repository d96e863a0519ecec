"""MLflow record of `signalengine optimize`: a parent run per invocation, a child per trial.

Experiment `signalengine-optimize` on the store retrain uses (tasks.learning.registry:
`tracking_uri`, `artifact_location` under the state dir). The parent run holds the
strategy, space, folds and data window as params and, at the end, the study's best
score and parameters (`best_*`) plus the best-params file as an artifact. Each trial
this invocation runs is a child run (tag `mlflow.parentRunId`): the trial's params and
number, per-fold out-of-sample metrics, its state and, when pruned, why. Several
invocations on one study each have their own parent listing the trials they ran.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from signalengine.core.config import Settings
from signalengine.tasks.learning.optimize import SCORE_NAME, TrialScore
from signalengine.tasks.learning.registry import (
    artifact_location,
    mlflow_client,
    quiet_mlflow,
    tracking_uri,
)

EXPERIMENT = "signalengine-optimize"
PARENT_TAG = "mlflow.parentRunId"
# MLflow caps a param value at 6000 characters.
_MAX_PARAM = 6000

__all__ = ["EXPERIMENT", "OptimizeTracking"]


def _ms() -> int:
    return int(time.time() * 1000)


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text[:_MAX_PARAM]


class OptimizeTracking:
    """The parent run of one optimize invocation and its children (MlflowClient calls only:
    safe next to other runs of the same process, no fluent active-run state)."""

    def __init__(self, settings: Settings, *, study: str, params: Mapping[str, Any]) -> None:
        with quiet_mlflow():
            from mlflow.entities import Param

            self.uri = tracking_uri(settings)
            self.client = mlflow_client(self.uri)
            self.experiment_id = self._experiment(artifact_location(settings))
            run = self.client.create_run(
                self.experiment_id, run_name=f"optimize {study}", tags={"study": study}
            )
            self.run_id: str = run.info.run_id
            self.client.log_batch(
                self.run_id, params=[Param(k, _param_value(v)) for k, v in params.items()]
            )
        self.children: list[str] = []

    def _experiment(self, location: str | None) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(EXPERIMENT)
        if found is not None:
            return str(found.experiment_id)
        try:
            return str(self.client.create_experiment(EXPERIMENT, artifact_location=location))
        except MlflowException:  # created meanwhile by another optimize process
            found = self.client.get_experiment_by_name(EXPERIMENT)
            if found is None:
                raise
            return str(found.experiment_id)

    def trial(
        self,
        number: int,
        params: Mapping[str, Any],
        result: TrialScore | None,
        *,
        state: str,
        error: str | None = None,
    ) -> str:
        """Log one finished trial as a child run; returns its run id."""
        from mlflow.entities import Metric, Param, RunTag

        tags = {PARENT_TAG: self.run_id, "trial_number": str(number), "state": state}
        if result is not None and result.pruned:
            tags["pruned_reason"] = result.pruned
        if error:
            tags["error"] = error[:_MAX_PARAM]
        with quiet_mlflow():
            run = self.client.create_run(self.experiment_id, run_name=f"trial {number}", tags=tags)
            run_id: str = run.info.run_id
            now = _ms()
            metrics = result.metrics() if result is not None else {}
            self.client.log_batch(
                run_id,
                metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
                params=[
                    Param("trial_number", str(number)),
                    *(Param(k, _param_value(v)) for k, v in params.items()),
                ],
                tags=[RunTag("mlflow.runName", f"trial {number}")],
            )
            status = "FAILED" if state == "FAIL" else "FINISHED"
            self.client.set_terminated(run_id, status=status)
        self.children.append(run_id)
        return run_id

    def finish(
        self,
        *,
        best_number: int | None,
        best_score: float | None,
        best_params: Mapping[str, Any] | None,
        out: Path | None,
        summary: Mapping[str, Any],
    ) -> None:
        """The study's best on the parent (params `best_*`, metric), its file, then end it."""
        from mlflow.entities import Metric, Param

        params = [Param("trials_run_here", str(len(self.children)))]
        metrics = []
        if best_number is not None and best_params is not None:
            params.append(Param("best_trial", str(best_number)))
            params += [Param(f"best_{k}", _param_value(v)) for k, v in best_params.items()]
        if best_score is not None:
            metrics.append(Metric(f"best_{SCORE_NAME}", best_score, _ms(), 0))
        with quiet_mlflow():
            self.client.log_batch(self.run_id, metrics=metrics, params=params)
            self.client.log_dict(self.run_id, dict(summary), "summary.json")
            if out is not None and out.is_file():
                self.client.log_artifact(self.run_id, str(out))
            self.client.set_terminated(self.run_id, status="FINISHED")

    def fail(self) -> None:
        """End the parent as failed (the flow raised)."""
        with quiet_mlflow():
            self.client.set_terminated(self.run_id, status="FAILED")

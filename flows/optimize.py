"""Optimize: an Optuna search over a strategy's params, one Prefect task run per trial.

The flow claims trials from the PostgreSQL-backed study (tasks.learning.optimize_study),
submits each to the flow's task runner (here one at a time, or on Dask workers with
`workers` / SIGNALENGINE_DASK_ADDRESS, as many in flight as workers), tells the study the
walk-forward score (tasks.learning.optimize) and logs a child MLflow run per trial
(tasks.learning.optimize_tracking). Every worker process reads the folds' bars from the
database once (columnar path) and reuses them for all its trials. Several optimize
processes on one study share the budget: `trials` is the study's total.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import optuna
import pandas as pd
import psycopg
from optuna.trial import Trial, TrialState
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture, as_completed
from prefect.runtime import flow_run
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from signalengine.core.config import Settings, get_settings
from signalengine.core.db import connect, database_url
from signalengine.core.progress import progress_bar
from signalengine.flows.chunk_runner import dask_runner, uses_dask
from signalengine.tasks.engine.config import EngineConfig
from signalengine.tasks.learning.optimize import (
    SCORE_NAME,
    FoldBars,
    OptimizeJob,
    TrialScore,
    build_strategy,
    fold_bars,
    parse_space,
    resolve_target,
    score_strategy,
    spec_document,
)
from signalengine.tasks.learning.optimize_study import (
    ERROR_ATTR,
    Heartbeats,
    budget_trials,
    claim_trial,
    distributions,
    open_study,
    quiet_optuna,
    request_digest,
    study_lock,
)
from signalengine.tasks.learning.optimize_tracking import OptimizeTracking
from signalengine.tasks.marketdata.ingest import stored_window
from signalengine.tasks.runs.history import load_history_columns

__all__ = ["build_job", "evaluate_trial", "job_bars", "optimize", "run_optimize_flow"]

# Per process (this one, or each Dask worker): the folds' bars of the last job seen.
_BARS: dict[str, FoldBars] = {}
_SETUP_LOCK = "signalengine-optimize-setup"
DEFAULT_DAYS = 30


def build_job(
    name: str,
    params: Sequence[str],
    *,
    settings: Settings,
    symbols: Sequence[str] | None = None,
    start: str | None = None,
    end: str | None = None,
    exchange: str | None = None,
    folds: int = 3,
    min_trades: int = 5,
) -> OptimizeJob:
    """Validate the request (strategy, space, window, folds): ConfigurationError if bad."""
    target = resolve_target(name, settings.strategies)
    space = tuple(parse_space(params, target.cls.Params))
    venue = exchange or settings.exchange
    chosen = tuple(symbols or settings.symbols)
    begin, stop = _window(venue, chosen, start, end, settings)
    job = OptimizeJob(
        target=target,
        space=space,
        config=EngineConfig.from_settings(settings),
        exchange=venue,
        symbols=chosen,
        start=begin,
        end=stop,
        folds=folds,
        min_trades=min_trades,
    )
    job.windows  # noqa: B018  (refuses a window too short for the folds, now)
    build_strategy(target, job.fixed, job.config)  # the fixed params must go together
    return job


def _window(
    exchange: str,
    symbols: Sequence[str],
    start: str | None,
    end: str | None,
    settings: Settings,
) -> tuple[pd.Timestamp, pd.Timestamp]:
    """[start, end): as given, else ending at the close of the newest stored 1m bar (the
    same in every process, hence the same default study) and DEFAULT_DAYS long."""
    with connect(database_url(settings)) as conn:
        return stored_window(
            conn,
            exchange=exchange,
            symbols=symbols,
            start=start,
            end=end,
            default_days=DEFAULT_DAYS,
        )


def job_bars(job: OptimizeJob) -> FoldBars:
    """The job's fold bars, read from the database once per process."""
    key = request_digest(job.request())
    if key not in _BARS:
        windows = job.windows
        with connect() as conn:
            bars = load_history_columns(
                conn,
                exchange=job.exchange,
                symbols=list(job.symbols),
                start=windows[0].warmup_start,
                end=job.end,
            )
        _BARS.clear()
        _BARS[key] = fold_bars(bars, windows, job.config)
    return _BARS[key]


# No retries: a trial is deterministic, a failure would fail again.
@task(cache_policy=NO_CACHE, task_run_name="trial {number}")
def evaluate_trial(number: int, params: dict[str, Any], job: OptimizeJob) -> TrialScore:
    """Walk-forward out-of-sample score of one trial's params (runs where the runner puts it)."""
    strategy = build_strategy(job.target, params, job.config)
    return score_strategy(strategy, job_bars(job), exchange=job.exchange, min_trades=job.min_trades)


def _tell(study: optuna.Study, trial: Trial, result: TrialScore) -> str:
    """Fold Sharpes as intermediate values, then the score (or PRUNED); the state told."""
    for fold in result.folds:
        if fold.sharpe is not None:
            trial.report(fold.sharpe, step=fold.index)
    trial.set_user_attr("folds", result.as_dict()["folds"])
    if result.score is None:
        trial.set_user_attr("pruned_reason", result.pruned)
        with quiet_optuna():
            study.tell(trial, state=TrialState.PRUNED)
        return "PRUNED"
    with quiet_optuna():
        study.tell(trial, result.score)
    return "COMPLETE"


def _record(
    study: optuna.Study,
    trial: Trial,
    params: dict[str, Any],
    future: PrefectFuture[TrialScore],
    tracking: OptimizeTracking,
) -> str:
    """Tell the study how the trial went and log its child run; returns its state."""
    try:
        result = future.result()
    except Exception as error:  # the strategy raised: a failed trial, the search goes on
        trial.set_user_attr(ERROR_ATTR, str(error)[:500])
        with quiet_optuna():
            study.tell(trial, state=TrialState.FAIL)
        tracking.trial(trial.number, params, None, state="FAIL", error=str(error))
        return "FAIL"
    try:
        state = _tell(study, trial, result)
    except optuna.exceptions.UpdateFinishedTrialError:
        # failed as stale by another process (no heartbeat for GRACE_SECONDS): replaced
        return "STALE"
    tracking.trial(trial.number, params, result, state=state)
    return state


def _run_trials(
    conn: psycopg.Connection[Any],
    study: optuna.Study,
    job: OptimizeJob,
    *,
    budget: int,
    parallel: int,
    tracking: OptimizeTracking,
) -> dict[str, int]:
    """Keep `parallel` trials in flight until the study's budget is claimed; count states."""
    space = distributions(job.space)
    counts = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0, "STALE": 0}
    in_flight: dict[Any, tuple[PrefectFuture[TrialScore], Trial, dict[str, Any]]] = {}
    claiming = True
    with progress_bar() as bar, Heartbeats(study) as beats:
        job_bar = bar.add_task("optimize trials", total=budget)
        while True:
            while claiming and len(in_flight) < parallel:
                trial = claim_trial(conn, study, budget=budget, space=space)
                if trial is None:
                    claiming = False
                    break
                beats.add(trial)
                params = job.trial_params(trial.params)
                future = evaluate_trial.submit(number=trial.number, params=params, job=job)
                in_flight[future.task_run_id] = (future, trial, params)
            if not in_flight:
                return counts
            done = next(iter(as_completed([f for f, _, _ in in_flight.values()])))
            future, trial, params = in_flight.pop(done.task_run_id)
            counts[_record(study, trial, params, future, tracking)] += 1
            beats.remove(trial)
            bar.update(job_bar, advance=1, description=f"trial {trial.number}")


def _study_name(job: OptimizeJob, study: str | None) -> str:
    """`--study`, else the strategy's name and a hash of the request."""
    return study or f"{job.target.name}-{request_digest(job.request())}"


def _best(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not complete:
        return None
    return max(complete, key=lambda t: (cast(float, t.value), -t.number))


def _write_spec(path: Path, document: dict[str, Any]) -> None:
    """Write atomically: another process on the same study may write the same file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


# (Prefect types its runners by future class; the thread runner's does not widen for mypy)
_ONE_AT_A_TIME = cast("TaskRunner[PrefectFuture[Any]]", ThreadPoolTaskRunner(max_workers=1))


@flow(name="optimize", task_runner=_ONE_AT_A_TIME, validate_parameters=False)
def optimize(
    job: OptimizeJob,
    trials: int = 20,
    study: str | None = None,
    out: str | None = None,
    parallel: int = 1,
    parallel_on_dask: bool = False,
) -> dict[str, Any]:
    """Run trials of `job` until its study holds `trials`; write the best params file."""
    settings = get_settings()
    logger = get_run_logger()
    started = time.perf_counter()
    request = job.request()
    name = _study_name(job, study)
    url = database_url(settings)
    with psycopg.connect(url, autocommit=True) as conn:
        opened = open_study(conn, url, name, request)
        with study_lock(conn, _SETUP_LOCK):  # a fresh MLflow store is created once
            tracking = OptimizeTracking(
                settings,
                study=name,
                params={
                    "strategy": job.target.name,
                    "use": job.target.use,
                    "space": request["space"],
                    "folds": job.folds,
                    "min_trades": job.min_trades,
                    "symbols": request["symbols"],
                    "window": f"{job.start} .. {job.end}",
                    "exchange": job.exchange,
                    "score": SCORE_NAME,
                    "trials": trials,
                    "study": name,
                },
            )
        try:
            counts = _run_trials(
                conn, opened, job, budget=trials, parallel=parallel, tracking=tracking
            )
        except BaseException:
            tracking.fail()
            raise
    every = budget_trials(opened.get_trials(deepcopy=False))
    best = _best(opened)
    path = Path(out) if out else settings.state_dir / "optimize" / f"{name}.json"
    written = None
    if best is not None:
        _write_spec(path, spec_document(job.target, job.trial_params(best.params)))
        written = str(path)
    summary: dict[str, Any] = {
        "study": name,
        "strategy": job.target.name,
        "score": SCORE_NAME,
        "trials_here": sum(counts.values()),
        "complete_here": counts["COMPLETE"],
        "pruned_here": counts["PRUNED"],
        "failed_here": counts["FAIL"],
        "study_trials": len(every),
        "study_complete": sum(t.state == TrialState.COMPLETE for t in every),
        "best_trial": best.number if best else None,
        "best_score": best.value if best else None,
        "best_params": job.trial_params(best.params) if best else None,
        "out": written,
        "folds": [w.as_dict() for w in job.windows],
        "flow_run_id": str(flow_run.id) if flow_run.id else None,
        "dask": parallel_on_dask,
        "mlflow_run_id": tracking.run_id,
        "mlflow_children": len(tracking.children),
        "seconds": round(time.perf_counter() - started, 3),
    }
    tracking.finish(
        best_number=summary["best_trial"],
        best_score=summary["best_score"],
        best_params=summary["best_params"],
        out=Path(written) if written else None,
        summary=summary,
    )
    logger.info(
        "optimize %s: %d trials here, best #%s score %s",
        name,
        summary["trials_here"],
        summary["best_trial"],
        summary["best_score"],
    )
    return summary


def run_optimize_flow(*, workers: int | None = None, **params: Any) -> dict[str, Any]:
    """Run the optimize flow here, or with trials on Dask (`workers` > 0 or a scheduler)."""
    settings = get_settings()
    job: OptimizeJob = params["job"]
    url = database_url(settings)
    with psycopg.connect(url, autocommit=True) as conn:  # a refused study: before the flow
        open_study(conn, url, _study_name(job, params.get("study")), job.request())
    if uses_dask(settings, workers):
        runner = dask_runner(settings, workers)
        parallel = workers or settings.dask_workers or os.cpu_count() or 1
        # DaskTaskRunner is a TaskRunner of PrefectDaskFuture, which mypy cannot widen
        dask_flow = optimize.with_options(task_runner=runner)  # type: ignore[arg-type]
        summary: dict[str, Any] = dask_flow(parallel=parallel, parallel_on_dask=True, **params)
        return summary
    result: dict[str, Any] = optimize(**params)
    return result

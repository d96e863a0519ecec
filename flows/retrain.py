"""Retrain the AI filter on stored klines, log it to MLflow and promote it if it earned it."""

from __future__ import annotations

from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from signalengine.core.config import Settings, get_settings
from signalengine.core.db import connect
from signalengine.core.symbols import normalize_symbol
from signalengine.flows.chunk_runner import dask_runner, uses_dask
from signalengine.tasks.engine.config import EngineConfig
from signalengine.tasks.learning.chunked import label_chunk, merge_datasets, training_window
from signalengine.tasks.learning.decisions import store_decision
from signalengine.tasks.learning.importance import extract_importance, store_importance
from signalengine.tasks.learning.promotion import PromotionPolicy
from signalengine.tasks.learning.registry import (
    MODEL_TYPE,
    PublishResult,
    artifact_location,
    publish_model,
    tracking_uri,
)
from signalengine.tasks.learning.training import (
    InsufficientDataError,
    TrainingConfig,
    TrainingResult,
    train_filter,
)
from signalengine.tasks.runs.chunks import chunk_symbols


@task(cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[2, 5, 15])
def find_window(
    exchange: str, symbols: list[str], lookback_days: float
) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    """The last `lookback_days` ending at the newest stored 1m bar (None: no bars)."""
    with connect() as conn:
        return training_window(
            conn, exchange=exchange, symbols=symbols, lookback_days=lookback_days
        )


@task(cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[2, 5, 15])
def label_chunk_task(
    index: int,
    symbols: list[str],
    exchange: str,
    window: tuple[pd.Timestamp, pd.Timestamp],
    config: EngineConfig,
) -> pd.DataFrame:
    """Every pre-filter engine candidate of a chunk, with its triple-barrier label."""
    with connect() as conn:
        return label_chunk(conn, symbols=symbols, exchange=exchange, window=window, config=config)


def label_history(
    symbols: list[str],
    lookback_days: float,
    settings: Settings,
    *,
    distributed: bool = False,
) -> pd.DataFrame:
    """Label the universe chunk by chunk (on the flow's task runner when `distributed`)."""
    window = find_window(settings.exchange, symbols, lookback_days)
    if window is None:
        return merge_datasets([])
    chunks = chunk_symbols(symbols, settings.backtest_chunk_symbols)
    args: dict[str, Any] = {
        "exchange": settings.exchange,
        "window": window,
        "config": EngineConfig.from_settings(settings),
    }
    if distributed:
        futures = [label_chunk_task.submit(i, c, **args) for i, c in enumerate(chunks)]
        return merge_datasets([f.result() for f in futures])
    return merge_datasets([label_chunk_task(i, c, **args) for i, c in enumerate(chunks)])


@task(cache_policy=NO_CACHE)
def fit(
    dataset: pd.DataFrame, settings: Settings, params: dict[str, Any] | None
) -> TrainingResult | str:
    """Purged time split, LightGBM fit and holdout metrics; why not, if data is too thin."""
    try:
        return train_filter(dataset, config=TrainingConfig.from_settings(settings), params=params)
    except InsufficientDataError as error:  # expected on a fresh install: not a task failure
        return str(error)


@task(cache_policy=NO_CACHE)
def rank_features(result: TrainingResult) -> dict[str, float]:
    """Gain importance of the fitted booster, summing to 1 ({}: no importance)."""
    return extract_importance(result.booster)


# No retries: a retry after the version was registered would register a second one.
@task(cache_policy=NO_CACHE)
def publish(
    result: TrainingResult,
    importance: dict[str, float],
    settings: Settings,
    run_params: dict[str, Any],
) -> PublishResult:
    """Log the run and register the model; move `champion` if it beats no filter and the
    current champion."""
    return publish_model(
        result,
        importance,
        uri=tracking_uri(settings),
        location=artifact_location(settings),
        min_auc_gain=settings.ai_promotion_min_auc_gain,
        policy=PromotionPolicy.from_settings(settings),
        params=run_params,
        run_name="retrain",
    )


@task(cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[2, 5, 15])
def save_importance(importance: dict[str, float], published: PublishResult) -> int:
    """Write the version's importances to `feature_importance` and its decision."""
    with connect() as conn:
        store_decision(
            conn,
            model_type=MODEL_TYPE,
            model_version=published.version,
            run_id=published.run_id,
            promoted=published.promoted,
            reason=published.rejection_reason,
            has_importance=bool(importance),
        )
        return store_importance(
            conn, importance, model_type=MODEL_TYPE, model_version=published.version
        )


@flow(name="retrain")
def retrain(
    lookback_days: float = 30,
    symbols: list[str] | None = None,
    params: dict[str, Any] | None = None,
    distributed: bool = False,
) -> dict[str, Any]:
    """Train on the last `lookback_days` of stored klines (ending at the newest bar).

    Labelling runs in symbol chunks, one task run each; `distributed` submits them to the
    flow's task runner (Dask through `run_retrain_flow`).

    `params` override LightGBM parameters. Returns `PublishResult.summary`: run_id,
    version, metrics (NaN as None), promoted, decision, rejection_reason,
    previous_champion, champion_auc; run_id and
    version are None (and `skipped` says why) when there is too little labelled data.
    """
    logger = get_run_logger()
    settings = get_settings()
    chosen = [normalize_symbol(s) for s in (symbols or settings.symbols)]
    dataset = label_history(chosen, lookback_days, settings, distributed=distributed)
    logger.info("%d labelled candidates from %d symbols", len(dataset), len(chosen))
    result = fit(dataset, settings, params)
    if isinstance(result, str):
        logger.warning("retrain skipped: %s", result)
        return {
            "run_id": None,
            "version": None,
            "metrics": {},
            "promoted": False,
            "skipped": result,
        }
    importance = rank_features(result)
    run_params = {
        "symbols": ",".join(chosen),
        "lookback_days": lookback_days,
        "candidates": len(dataset),
        "exchange": settings.exchange,
    }
    published = publish(result, importance, settings, run_params)
    save_importance(importance, published)
    logger.info(
        "version %s: auc %.4f, %s",
        published.version,
        result.metrics["auc"],
        "promoted" if published.promoted else f"rejected: {published.rejection_reason}",
    )
    return published.summary(result.metrics)


def run_retrain_flow(*, workers: int | None = None, **params: Any) -> dict[str, Any]:
    """Run retrain here, or label on Dask when `workers` > 0 or a scheduler is set."""
    settings = get_settings()
    if uses_dask(settings, workers):
        dask_flow = retrain.with_options(task_runner=dask_runner(settings, workers))  # type: ignore[arg-type]
        summary: dict[str, Any] = dask_flow(distributed=True, **params)
        return summary
    result: dict[str, Any] = retrain(**params)
    return result

"""Retrain the AI filter on stored klines, log it to MLflow and promote it if it earned it."""

from __future__ import annotations

from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from signalengine.core.config import Settings, get_settings
from signalengine.core.db import connect
from signalengine.core.symbols import normalize_symbol
from signalengine.tasks.engine.config import EngineConfig
from signalengine.tasks.learning.decisions import store_decision
from signalengine.tasks.learning.importance import extract_importance, store_importance
from signalengine.tasks.learning.labels import build_dataset, load_training_bars
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


@task(cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[2, 5, 15])
def load_history(
    exchange: str, symbols: list[str], lookback_days: float
) -> dict[str, pd.DataFrame]:
    """The last `lookback_days` of stored 1m bars per symbol."""
    with connect() as conn:
        return load_training_bars(
            conn, exchange=exchange, symbols=symbols, lookback_days=lookback_days
        )


@task(cache_policy=NO_CACHE)
def label_history(bars: dict[str, pd.DataFrame], settings: Settings) -> pd.DataFrame:
    """Every pre-filter engine candidate with its triple-barrier label."""
    return build_dataset(
        bars, config=EngineConfig.from_settings(settings), exchange=settings.exchange
    )


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
) -> dict[str, Any]:
    """Train on the last `lookback_days` of stored klines (ending at the newest bar).

    `params` override LightGBM parameters. Returns `PublishResult.summary`: run_id,
    version, metrics (NaN as None), promoted, decision, rejection_reason,
    previous_champion, champion_auc; run_id and
    version are None (and `skipped` says why) when there is too little labelled data.
    """
    logger = get_run_logger()
    settings = get_settings()
    chosen = [normalize_symbol(s) for s in (symbols or settings.symbols)]
    bars = load_history(settings.exchange, chosen, lookback_days)
    dataset = label_history(bars, settings)
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

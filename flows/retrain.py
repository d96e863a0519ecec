"""Retrain the AI filters on stored klines, log them to MLflow and promote what earned it.

Each configured strategy (SIGNALENGINE_STRATEGIES, default: the built-in one) trains its own
filter on its own candidates and registers it as `signalengine-filter-<strategy>` with its
own champion (tasks.learning.registry)."""

from __future__ import annotations

from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from signalengine.core.config import Settings, get_settings
from signalengine.core.db import connect
from signalengine.core.errors import ConfigurationError
from signalengine.core.symbols import normalize_symbol
from signalengine.core.vocabulary import DEFAULT_STRATEGY
from signalengine.flows.chunk_runner import dask_runner, uses_dask
from signalengine.tasks.engine.config import EngineConfig
from signalengine.tasks.engine.loader import load_strategies
from signalengine.tasks.engine.strategy import Strategy
from signalengine.tasks.learning.chunked import label_chunk, merge_datasets, training_window
from signalengine.tasks.learning.decisions import store_decision
from signalengine.tasks.learning.importance import extract_importance, store_importance
from signalengine.tasks.learning.labels import dataset_columns, model_columns
from signalengine.tasks.learning.promotion import PromotionPolicy
from signalengine.tasks.learning.registry import (
    PublishResult,
    artifact_location,
    model_type,
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
    strategies: str | None = None,
    strategy: str | None = None,
) -> pd.DataFrame:
    """Every pre-filter candidate of `strategy` (a name in the SIGNALENGINE_STRATEGIES
    value `strategies`, loaded here so a Dask worker imports its code; None: the built-in
    one) in a chunk, with its triple-barrier label."""
    chosen = None if strategy is None else _strategy(strategies, config, strategy)
    with connect() as conn:
        return label_chunk(
            conn,
            symbols=symbols,
            exchange=exchange,
            window=window,
            config=config,
            strategy=chosen,
        )


def _strategy(spec: str | None, config: EngineConfig, name: str) -> Strategy:
    """The strategy called `name` among those `spec` configures."""
    for candidate in load_strategies(spec, config):
        if candidate.name == name:
            return candidate
    raise ConfigurationError(f"strategy {name!r} is not configured (SIGNALENGINE_STRATEGIES)")


def label_history(
    symbols: list[str],
    lookback_days: float,
    settings: Settings,
    *,
    distributed: bool = False,
    strategy: Strategy | None = None,
) -> pd.DataFrame:
    """Label the universe chunk by chunk (on the flow's task runner when `distributed`),
    with `strategy`'s candidates (None: the built-in one)."""
    columns = dataset_columns(strategy)
    window = find_window(settings.exchange, symbols, lookback_days)
    if window is None:
        return merge_datasets([], columns=columns)
    chunks = chunk_symbols(symbols, settings.backtest_chunk_symbols)
    args: dict[str, Any] = {
        "exchange": settings.exchange,
        "window": window,
        "config": EngineConfig.from_settings(settings),
        "strategies": settings.strategies,
        "strategy": None if strategy is None else strategy.name,
    }
    if distributed:
        futures = [label_chunk_task.submit(i, c, **args) for i, c in enumerate(chunks)]
        return merge_datasets([f.result() for f in futures], columns=columns)
    parts = [label_chunk_task(i, c, **args) for i, c in enumerate(chunks)]
    return merge_datasets(parts, columns=columns)


@task(cache_policy=NO_CACHE)
def fit(
    dataset: pd.DataFrame,
    settings: Settings,
    params: dict[str, Any] | None,
    columns: tuple[str, ...] | None = None,
) -> TrainingResult | str:
    """Purged time split, LightGBM fit and holdout metrics; why not, if data is too thin."""
    try:
        return train_filter(
            dataset,
            config=TrainingConfig.from_settings(settings),
            params=params,
            columns=columns or model_columns(),
        )
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
    strategy: str = DEFAULT_STRATEGY,
) -> PublishResult:
    """Log the run and register the strategy's model; move its `champion` if it beats no
    filter and the current champion."""
    return publish_model(
        result,
        importance,
        uri=tracking_uri(settings),
        location=artifact_location(settings),
        min_auc_gain=settings.ai_promotion_min_auc_gain,
        policy=PromotionPolicy.from_settings(settings),
        params=run_params,
        run_name="retrain" if strategy == DEFAULT_STRATEGY else f"retrain-{strategy}",
        strategy=strategy,
    )


@task(cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[2, 5, 15])
def save_importance(
    importance: dict[str, float], published: PublishResult, strategy: str = DEFAULT_STRATEGY
) -> int:
    """Write the version's importances to `feature_importance` and its decision (under the
    strategy's model_type)."""
    with connect() as conn:
        store_decision(
            conn,
            model_type=model_type(strategy),
            model_version=published.version,
            run_id=published.run_id,
            promoted=published.promoted,
            reason=published.rejection_reason,
            has_importance=bool(importance),
        )
        return store_importance(
            conn, importance, model_type=model_type(strategy), model_version=published.version
        )


@flow(name="retrain")
def retrain(
    lookback_days: float = 30,
    symbols: list[str] | None = None,
    params: dict[str, Any] | None = None,
    distributed: bool = False,
    strategies: list[str] | None = None,
) -> dict[str, Any]:
    """Train each strategy's filter on the last `lookback_days` of stored klines (ending at
    the newest bar).

    `strategies`: names among the configured ones (SIGNALENGINE_STRATEGIES) to retrain;
    default: all of them. Labelling runs in symbol chunks, one task run each; `distributed`
    submits them to the flow's task runner (Dask through `run_retrain_flow`).

    `params` override LightGBM parameters. Returns the first strategy's
    `PublishResult.summary` (run_id, version, metrics (NaN as None), promoted, decision,
    rejection_reason, previous_champion, champion_auc; run_id and version are None and
    `skipped` says why when there is too little labelled data) with its `strategy`, and
    `by_strategy`: every retrained strategy's summary by name.
    """
    settings = get_settings()
    chosen = [normalize_symbol(s) for s in (symbols or settings.symbols)]
    picked = pick_strategies(settings, strategies)
    by_strategy = {
        s.name: _retrain_one(
            s, chosen, lookback_days, settings, params=params, distributed=distributed
        )
        for s in picked
    }
    first = next(iter(by_strategy))
    return {**by_strategy[first], "strategy": first, "by_strategy": by_strategy}


def _retrain_one(
    strategy: Strategy,
    symbols: list[str],
    lookback_days: float,
    settings: Settings,
    *,
    params: dict[str, Any] | None,
    distributed: bool,
) -> dict[str, Any]:
    """Label, fit, publish and record one strategy's filter; its summary."""
    logger = get_run_logger()
    name = strategy.name
    dataset = label_history(
        symbols, lookback_days, settings, distributed=distributed, strategy=strategy
    )
    logger.info("%s: %d labelled candidates from %d symbols", name, len(dataset), len(symbols))
    result = fit(dataset, settings, params, model_columns(strategy))
    if isinstance(result, str):
        logger.warning("%s: retrain skipped: %s", name, result)
        return {
            "run_id": None,
            "version": None,
            "metrics": {},
            "promoted": False,
            "skipped": result,
        }
    importance = rank_features(result)
    run_params = {
        "symbols": ",".join(symbols),
        "lookback_days": lookback_days,
        "candidates": len(dataset),
        "exchange": settings.exchange,
        "strategy_version": strategy.version,
    }
    published = publish(result, importance, settings, run_params, name)
    save_importance(importance, published, name)
    logger.info(
        "%s: version %s: auc %.4f, %s",
        name,
        published.version,
        result.metrics["auc"],
        "promoted" if published.promoted else f"rejected: {published.rejection_reason}",
    )
    return published.summary(result.metrics)


def pick_strategies(settings: Settings, names: list[str] | None) -> list[Strategy]:
    """The configured strategies called `names` (None: all), in configured order;
    ConfigurationError for a name that is not configured."""
    configured = load_strategies(settings.strategies, EngineConfig.from_settings(settings))
    known = [s.name for s in configured]
    unknown = sorted(set(names or []) - set(known))
    if unknown:
        raise ConfigurationError(f"strategies {unknown} are not configured; configured: {known}")
    return [s for s in configured if names is None or s.name in names]


def run_retrain_flow(*, workers: int | None = None, **params: Any) -> dict[str, Any]:
    """Run retrain here, or label on Dask when `workers` > 0 or a scheduler is set (bad
    strategy names fail here, before any flow run)."""
    settings = get_settings()
    pick_strategies(settings, params.get("strategies"))
    if uses_dask(settings, workers):
        dask_flow = retrain.with_options(task_runner=dask_runner(settings, workers))  # type: ignore[arg-type]
        summary: dict[str, Any] = dask_flow(distributed=True, **params)
        return summary
    result: dict[str, Any] = retrain(**params)
    return result

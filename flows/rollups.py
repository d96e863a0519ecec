"""Recompute performance rollups (scheduled every 5 minutes)."""

from __future__ import annotations

from typing import Any, cast

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from signalengine.core.config import get_settings
from signalengine.core.db import connect
from signalengine.tasks.outcomes.controls import (
    decayed_strategies,
    decide_controls,
    load_all_controls,
    rollup_strategies,
    save_controls,
)
from signalengine.tasks.outcomes.rollups import overall_figures, refresh_rollups

RETRAIN_DEPLOYMENT = "retrain/retrain"


@task(cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[2, 5, 15])
def refresh() -> dict[str, Any]:
    """Rebuild the rollups table from signal_performance."""
    settings = get_settings()
    with connect() as conn:
        conn.autocommit = True
        rollups = refresh_rollups(conn, now=pd.Timestamp.now(tz="UTC"))
        stored = load_all_controls(conn, exchange=settings.exchange)
        disabled: list[str] = []
        for strategy in sorted(set(rollup_strategies(rollups)) | set(stored)):
            current = stored.get(strategy, {})
            controls = decide_controls(rollups, current, settings=settings, strategy=strategy)
            save_controls(conn, controls, exchange=settings.exchange, strategy=strategy)
            disabled += [f"{strategy}:{s}" for s, c in controls.items() if not c.enabled]
    decayed = decayed_strategies(rollups, settings=settings)
    return {
        "rows": len(rollups),
        "runs": overall_figures(rollups),
        "disabled": sorted(disabled),  # strategy:symbol
        "retrain_needed": bool(decayed),
        "retrain_strategies": decayed,
    }


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[5, 15])
def trigger_retrain(strategies: list[str] | None = None) -> str | None:
    """Start the retrain deployment (without waiting) for `strategies` (None: all of them);
    None when it is not deployed."""
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    try:
        # sync_compatible: called from sync code it returns the FlowRun, not a coroutine
        run = cast(
            FlowRun,
            run_deployment(
                RETRAIN_DEPLOYMENT,
                timeout=0,
                tags=["triggered-by-rollups"],
                parameters={} if strategies is None else {"strategies": strategies},
            ),
        )
    except ObjectNotFound:
        return None
    return str(run.id)


@flow(name="rollups")
def rollups() -> dict[str, Any]:
    """Refresh every rollup window."""
    logger = get_run_logger()
    summary = refresh()
    logger.info("rollups refreshed: %d rows; disabled: %s", summary["rows"], summary["disabled"])
    if summary["retrain_needed"]:
        summary["retrain_flow_run"] = trigger_retrain(summary["retrain_strategies"])
        logger.warning(
            "live win rate of %s decayed; retrain run %s",
            summary["retrain_strategies"],
            summary["retrain_flow_run"],
        )
    return summary

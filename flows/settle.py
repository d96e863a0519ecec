"""Settle open live signals on closed 1m bars (scheduled every minute; idempotent)."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from signalengine.core.config import get_settings
from signalengine.core.db import connect
from signalengine.core.vocabulary import STREAM_RUNS
from signalengine.tasks.outcomes.settle import settle_open, settlement_summary


@task(cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[2, 5, 15])
def settle_run(run_id: str, fee_bps: float, slippage_bps: float) -> dict[str, Any]:
    """Claim, settle and record every settleable open signal of a run."""
    with connect() as conn:
        conn.autocommit = True
        rows = settle_open(conn, run_id=run_id, fee_bps=fee_bps, slippage_bps=slippage_bps)
    return settlement_summary(rows)


@flow(name="settle")
def settle(run_ids: list[str] | None = None) -> dict[str, Any]:
    """Settle what can be settled now (live and shadow runs by default); safe concurrently."""
    settings = get_settings()
    summary: dict[str, Any] = {}
    for run_id in run_ids or list(STREAM_RUNS):
        summary[run_id] = settle_run(run_id, settings.fee_bps, settings.slippage_bps)
        get_run_logger().info("settled %s signals of run %s", summary[run_id]["settled"], run_id)
    return summary

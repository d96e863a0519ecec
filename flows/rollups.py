"""Recompute performance rollups (scheduled every 5 minutes)."""

from __future__ import annotations

from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from core.db import connect
from tasks.rollups import refresh_rollups


@task(cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[2, 5, 15])
def refresh() -> dict[str, Any]:
    """Rebuild the rollups table from signal_performance."""
    with connect() as conn:
        conn.autocommit = True
        rollups = refresh_rollups(conn, now=pd.Timestamp.now(tz="UTC"))
    overall = rollups[(rollups["symbol"] == "*") & (rollups["timeframe"] == "*")
                      & (rollups["direction"] == "*") & (rollups["window_days"] == 0)]
    return {"rows": len(rollups),
            "runs": overall[["run_id", "count", "win_rate", "sharpe"]].to_dict("records")}


@flow(name="rollups")
def rollups() -> dict[str, Any]:
    """Refresh every rollup window."""
    summary = refresh()
    get_run_logger().info("rollups refreshed: %d rows", summary["rows"])
    return summary

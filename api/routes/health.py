"""GET /health: liveness plus whether the database answers (open, no token needed).

It also reports the live AI filter of the running stream shards: a champion that rejects
every candidate silences the engine, so that makes the answer `degraded` (still 200: the
API itself works), with the model version and the counts in `ai_filter`. Likewise
`ingest`: stored bars more than `ingest_lag_degraded_seconds` behind the exchange's clock
(a stall), or an exchange clock that far behind the stored bars (nothing new is stored),
as the stream measured them (tasks.marketdata.staleness).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

import psycopg
from fastapi import APIRouter, Response, status
from psycopg_pool import PoolTimeout

from signalengine.api.db.models import filter_health, ingest_health
from signalengine.api.deps import StateDep
from signalengine.api.schemas import AiFilterHealth, Health, IngestHealth

router = APIRouter(tags=["health"])

HEALTH_POOL_TIMEOUT_SECONDS = 2.0


def summarize_filter(rows: list[dict[str, Any]]) -> AiFilterHealth:
    """One status over the shards' recent reports (the worst wins)."""
    if not rows:
        return AiFilterHealth(status="unknown")
    silenced = [r for r in rows if r["rejecting_all"]]
    versions = [r["model_version"] for r in rows if r["model_version"] is not None]
    state: Literal["ok", "unfiltered", "rejecting_all"]
    if silenced:
        state = "rejecting_all"
        version = silenced[0]["model_version"]
    else:
        state = "ok" if versions else "unfiltered"
        version = versions[0] if versions else None
    return AiFilterHealth(
        status=state,
        model_version=version,
        scored=sum(int(r["scored"]) for r in rows),
        passed=sum(int(r["passed"]) for r in rows),
    )


def summarize_ingest(rows: list[dict[str, Any]], *, limit_seconds: float) -> IngestHealth:
    """The worst shard: the largest lag, or an exchange clock behind the stored bars."""
    measured = [r for r in rows if r["lag_seconds"] is not None]
    if not measured:
        return IngestHealth(status="unknown")
    behind = min(measured, key=lambda r: r["lag_seconds"])
    worst = max(measured, key=lambda r: r["lag_seconds"])
    row = worst
    state: Literal["ok", "lagging", "clock_behind"] = "ok"
    if behind["lag_seconds"] < -limit_seconds:
        row, state = behind, "clock_behind"
    elif worst["lag_seconds"] > limit_seconds:
        state = "lagging"
    return IngestHealth(
        status=state,
        lag_seconds=float(row["lag_seconds"]),
        newest_close=row["newest_close"],
        exchange_time=row["exchange_time"],
    )


@router.get("/health", responses={503: {"model": Health}})
async def health(state: StateDep, response: Response) -> Health:
    """`ok` when the database answers, the feed listens and the AI filter lets signals
    through; `degraded` otherwise."""
    database = False
    ai_filter = AiFilterHealth(status="unknown")
    ingest = IngestHealth(status="unknown")
    if state.pool is not None:
        try:
            timeout = min(HEALTH_POOL_TIMEOUT_SECONDS, state.settings.api_db_timeout_seconds)
            async with state.pool.connection(timeout=timeout) as conn:
                await conn.execute("SELECT 1")
                database = True
                fresh = timedelta(seconds=state.settings.ai_health_stale_seconds)
                ai_filter = summarize_filter(await filter_health(conn=conn, fresh_within=fresh))
                ingest = summarize_ingest(
                    await ingest_health(conn=conn, fresh_within=fresh),
                    limit_seconds=state.settings.ingest_lag_degraded_seconds,
                )
        except (psycopg.Error, PoolTimeout, OSError):
            pass
    feed_ok = state.feed is not None and state.feed.listening.is_set()
    # Only a lost database makes the replica useless (503); while the feed reconnects,
    # REST still works, so the answer stays 200 with status "degraded".
    if not database:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    healthy = (
        database
        and feed_ok
        and ai_filter.status != "rejecting_all"
        and ingest.status in ("ok", "unknown")
    )
    return Health(
        status="ok" if healthy else "degraded",
        database=database,
        feed=feed_ok,
        ingest=ingest,
        ai_filter=ai_filter,
        version=state.version,
    )

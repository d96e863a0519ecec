"""GET /health: liveness plus whether the database answers (open, no token needed).

It also reports the live AI filter of the running stream shards: a champion that rejects
every candidate silences the engine, so that makes the answer `degraded` (still 200: the
API itself works), with the model version and the counts in `ai_filter`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

import psycopg
from fastapi import APIRouter, Response, status
from psycopg_pool import PoolTimeout

from signalengine.api.db.models import filter_health
from signalengine.api.deps import StateDep
from signalengine.api.schemas import AiFilterHealth, Health

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


@router.get("/health", responses={503: {"model": Health}})
async def health(state: StateDep, response: Response) -> Health:
    """`ok` when the database answers, the feed listens and the AI filter lets signals
    through; `degraded` otherwise."""
    database = False
    ai_filter = AiFilterHealth(status="unknown")
    if state.pool is not None:
        try:
            timeout = min(HEALTH_POOL_TIMEOUT_SECONDS, state.settings.api_db_timeout_seconds)
            async with state.pool.connection(timeout=timeout) as conn:
                await conn.execute("SELECT 1")
                database = True
                fresh = timedelta(seconds=state.settings.ai_health_stale_seconds)
                ai_filter = summarize_filter(await filter_health(conn=conn, fresh_within=fresh))
        except (psycopg.Error, PoolTimeout, OSError):
            pass
    feed_ok = state.feed is not None and state.feed.listening.is_set()
    # Only a lost database makes the replica useless (503); while the feed reconnects,
    # REST still works, so the answer stays 200 with status "degraded".
    if not database:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    healthy = database and feed_ok and ai_filter.status != "rejecting_all"
    return Health(
        status="ok" if healthy else "degraded",
        database=database,
        feed=feed_ok,
        ai_filter=ai_filter,
        version=state.version,
    )

"""GET /health: liveness plus whether the database answers (open, no token needed)."""

from __future__ import annotations

import psycopg
from fastapi import APIRouter, Response, status
from psycopg_pool import PoolTimeout

from signalengine.api.deps import StateDep
from signalengine.api.schemas import Health

router = APIRouter(tags=["health"])

HEALTH_POOL_TIMEOUT_SECONDS = 2.0


@router.get("/health", responses={503: {"model": Health}})
async def health(state: StateDep, response: Response) -> Health:
    """`ok` when the database answers and the feed listens; `degraded` otherwise."""
    database = False
    if state.pool is not None:
        try:
            timeout = min(HEALTH_POOL_TIMEOUT_SECONDS, state.settings.api_db_timeout_seconds)
            async with state.pool.connection(timeout=timeout) as conn:
                await conn.execute("SELECT 1")
            database = True
        except (psycopg.Error, PoolTimeout, OSError):
            database = False
    feed_ok = state.feed is not None and state.feed.listening.is_set()
    # Only a lost database makes the replica useless (503); while the feed reconnects,
    # REST still works, so the answer stays 200 with status "degraded".
    if not database:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return Health(
        status="ok" if database and feed_ok else "degraded",
        database=database,
        feed=feed_ok,
        version=state.version,
    )

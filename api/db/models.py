"""Reads of `model_decisions` and `ai_filter_health` (sql/009): the AI filter's state."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from signalengine.api.db import AsyncConn

__all__ = ["filter_health", "ingest_health", "latest_decision"]


async def latest_decision(*, conn: AsyncConn, model_type: str) -> dict[str, Any] | None:
    """The newest decision of `model_type` and its current champion version (or None).

    Columns: model_type, model_version, run_id, promoted, reason, has_importance,
    decided_at (UTC), champion_version (the newest promoted version; null if none).
    """
    cur = await conn.execute(
        """
        SELECT d.*, (SELECT p.model_version FROM model_decisions p
                     WHERE p.model_type = d.model_type AND p.promoted
                     ORDER BY p.decided_at DESC LIMIT 1) AS champion_version
        FROM model_decisions d WHERE d.model_type = %s
        ORDER BY d.decided_at DESC, d.model_version DESC LIMIT 1
        """,
        [model_type],
    )
    return await cur.fetchone()


async def ingest_health(*, conn: AsyncConn, fresh_within: timedelta) -> list[dict[str, Any]]:
    """Stream shards' staleness reports (sql/009_stream_health) updated within `fresh_within`."""
    cur = await conn.execute(
        "SELECT name, exchange_time, newest_close, lag_seconds FROM stream_health"
        " WHERE updated_at >= now() - %s ORDER BY name",
        [fresh_within],
    )
    return await cur.fetchall()


async def filter_health(*, conn: AsyncConn, fresh_within: timedelta) -> list[dict[str, Any]]:
    """Stream shards' filter reports updated within `fresh_within` (older ones: stopped)."""
    cur = await conn.execute(
        "SELECT name, model_version, scored, passed, rejecting_all, updated_at"
        " FROM ai_filter_health WHERE updated_at >= now() - %s ORDER BY name",
        [fresh_within],
    )
    return await cur.fetchall()

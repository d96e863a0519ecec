"""Reads of `webhook_outbox`: delivery state and attempts, counts by status."""

from __future__ import annotations

from typing import Any

from signalengine.api.db import AsyncConn
from signalengine.tasks.alerts.outbox import STATUSES
from signalengine.tasks.alerts.webhooks import redact_url


async def delivery_counts(*, conn: AsyncConn) -> dict[str, int]:
    """Deliveries by status (every status present); from the table, so restarts keep them."""
    cur = await conn.execute("SELECT status, count(*) AS n FROM webhook_outbox GROUP BY status")
    counts = dict.fromkeys(STATUSES, 0)
    counts.update({str(r["status"]): int(r["n"]) for r in await cur.fetchall()})
    return counts


async def deliveries(*, conn: AsyncConn, status: str | None, limit: int) -> list[dict[str, Any]]:
    """The newest deliveries, optionally of one status; URLs without query or credentials."""
    cur = await conn.execute(
        "SELECT id, signal_id, url, status, attempts, created_at, next_attempt_at,"
        " last_attempt_at, delivered_at, last_status, last_error FROM webhook_outbox"
        " WHERE %s::text IS NULL OR status = %s ORDER BY created_at DESC, id DESC LIMIT %s",
        [status, status, limit],
    )
    return [{**row, "url": redact_url(row["url"])} for row in await cur.fetchall()]

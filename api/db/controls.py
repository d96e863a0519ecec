"""Reads of `symbol_controls`: which symbols the adaptive control switched off, and why."""

from __future__ import annotations

from typing import Any

from signalengine.api.db import AsyncConn


async def symbol_controls(
    *, conn: AsyncConn, exchange: str, strategy: str | None = None
) -> list[dict[str, Any]]:
    """Every controlled strategy x symbol of an exchange (of one strategy when given),
    disabled ones first."""
    cur = await conn.execute(
        "SELECT exchange, strategy, symbol, enabled, reason, score_threshold, updated_at"
        " FROM symbol_controls WHERE exchange = %s AND (%s::text IS NULL OR strategy = %s)"
        " ORDER BY enabled, symbol, strategy",
        [exchange, strategy, strategy],
    )
    return await cur.fetchall()


async def strategy_checks(*, conn: AsyncConn) -> list[dict[str, Any]]:
    """Every stored `strategy check` verdict (newest first) with the names of failed checks."""
    cur = await conn.execute(
        "SELECT strategy, strategy_version, passed, checked_at,"
        " ARRAY(SELECT key FROM jsonb_each(verdict->'checks') AS c(key, value)"
        "       WHERE NOT (value->>'passed')::boolean ORDER BY key) AS failed"
        " FROM strategy_checks ORDER BY checked_at DESC, strategy"
    )
    return await cur.fetchall()


async def strategy_overrides(*, conn: AsyncConn) -> list[dict[str, Any]]:
    """Streams that ran a strategy without a passing verdict on operator override."""
    cur = await conn.execute(
        "SELECT strategy, strategy_version, run_id, reason, allowed_at"
        " FROM strategy_overrides ORDER BY allowed_at DESC, strategy"
    )
    return await cur.fetchall()

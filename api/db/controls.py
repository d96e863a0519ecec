"""Reads of `symbol_controls`: which symbols the adaptive control switched off, and why."""

from __future__ import annotations

from typing import Any

from signalengine.api.db import AsyncConn


async def symbol_controls(*, conn: AsyncConn, exchange: str) -> list[dict[str, Any]]:
    """Every controlled symbol of an exchange, disabled ones first."""
    cur = await conn.execute(
        "SELECT exchange, symbol, enabled, reason, score_threshold, updated_at"
        " FROM symbol_controls WHERE exchange = %s ORDER BY enabled, symbol",
        [exchange],
    )
    return await cur.fetchall()

"""GET /controls: the adaptive control's per-symbol decisions (enabled, reason, threshold)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from signalengine.api.db.controls import symbol_controls
from signalengine.api.deps import TEXT_PATTERN, ConnDep, SettingsDep

router = APIRouter(prefix="/controls", tags=["controls"])


class SymbolControlOut(BaseModel):
    """A symbol the adaptive control has judged; disabled ones emit shadow signals only."""

    exchange: str
    symbol: str
    enabled: bool
    reason: str | None = Field(description="Why it is disabled (null when enabled).")
    score_threshold: float | None = Field(description="Its own score threshold, if moved.")
    updated_at: datetime


@router.get("")
async def list_controls(
    conn: ConnDep,
    settings: SettingsDep,
    exchange: Annotated[str | None, Query(max_length=40, pattern=TEXT_PATTERN)] = None,
) -> list[SymbolControlOut]:
    """Per-symbol controls of an exchange (default: the configured one)."""
    rows = await symbol_controls(conn=conn, exchange=exchange or settings.exchange)
    return [SymbolControlOut(**row) for row in rows]

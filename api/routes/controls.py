"""GET /controls: the adaptive control's per-symbol decisions (enabled, reason, threshold);
GET /controls/strategies: `strategy check` verdicts and the streams that overrode them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from signalengine.api.db.controls import strategy_checks, strategy_overrides, symbol_controls
from signalengine.api.deps import TEXT_PATTERN, ConnDep, SettingsDep, StrategyQuery

router = APIRouter(prefix="/controls", tags=["controls"])


class SymbolControlOut(BaseModel):
    """A strategy x symbol the adaptive control has judged; a disabled one emits shadow
    signals only (the strategy's other symbols, and other strategies on it, stay live)."""

    exchange: str
    strategy: str
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
    strategy: StrategyQuery = None,
) -> list[SymbolControlOut]:
    """Per-strategy, per-symbol controls of an exchange (default: the configured one)."""
    rows = await symbol_controls(
        conn=conn, exchange=exchange or settings.exchange, strategy=strategy
    )
    return [SymbolControlOut(**row) for row in rows]


class StrategyCheckOut(BaseModel):
    """The stored verdict of one strategy version (`signalengine strategy check`)."""

    strategy: str
    strategy_version: str
    passed: bool
    failed: list[str] = Field(description="Checks it failed (lookahead, warmup, ...).")
    checked_at: datetime


class StrategyOverrideOut(BaseModel):
    """A stream that ran a strategy without a passing verdict, on operator override."""

    strategy: str
    strategy_version: str
    run_id: str
    reason: str
    allowed_at: datetime


class StrategyControlsOut(BaseModel):
    """Which strategy versions may run live, and who ran one that may not."""

    allow_unchecked: bool = Field(
        description="SIGNALENGINE_ALLOW_UNCHECKED_STRATEGIES of this replica's settings."
    )
    checks: list[StrategyCheckOut]
    overrides: list[StrategyOverrideOut]


@router.get("/strategies")
async def list_strategy_controls(conn: ConnDep, settings: SettingsDep) -> StrategyControlsOut:
    """Strategy check verdicts per version and the live overrides of them."""
    checks = await strategy_checks(conn=conn)
    overrides = await strategy_overrides(conn=conn)
    return StrategyControlsOut(
        allow_unchecked=settings.allow_unchecked_strategies,
        checks=[StrategyCheckOut(**row) for row in checks],
        overrides=[StrategyOverrideOut(**row) for row in overrides],
    )

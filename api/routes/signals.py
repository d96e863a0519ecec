"""GET /signals and /signals/{id}: stored signals, newest first."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, HTTPException, Query, status

from signalengine.api.db.signals import SignalFilter, get_signal, list_signals
from signalengine.api.deps import (
    ConnDep,
    ExchangeFilter,
    RunIdQuery,
    StrategyQuery,
    SymbolQuery,
    TimeframeQuery,
    UtcDatetime,
)
from signalengine.api.schemas import Direction, ErrorDetail, Signal, SignalPage
from signalengine.core.vocabulary import LIVE_RUN

router = APIRouter(prefix="/signals", tags=["signals"])

MAX_LIMIT = 1000
MAX_OFFSET = 100_000


def encode_cursor(emitted_at: datetime, signal_id: UUID) -> str:
    """An opaque keyset cursor pointing just after (emitted_at, id)."""
    raw = json.dumps([emitted_at.isoformat(), str(signal_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID] | None:
    """The (emitted_at, id) a cursor points after, or None if it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        emitted_at, signal_id = json.loads(raw)
        parsed = datetime.fromisoformat(emitted_at)
        if parsed.tzinfo is None:
            return None
        return parsed, UUID(signal_id)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        return None


@router.get("", responses={400: {"model": ErrorDetail}})
async def signals(
    conn: ConnDep,
    symbol: SymbolQuery,
    timeframe: TimeframeQuery,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    direction: Direction | None = None,
    since: Annotated[
        UtcDatetime | None,
        Query(description="Only signals emitted at or after (ISO 8601; UTC if no offset)."),
    ] = None,
    run_id: RunIdQuery = LIVE_RUN,
    cursor: Annotated[
        str | None,
        Query(
            max_length=200,
            pattern=r"^[A-Za-z0-9_-]+$",
            description="`next_cursor` of the previous page.",
        ),
    ] = None,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    exchange: ExchangeFilter = None,
    strategy: StrategyQuery = None,
) -> SignalPage:
    """Signals of a run, newest first; page with `cursor` (preferred) or `offset`."""
    before = None
    if cursor is not None:
        before = decode_cursor(cursor)
        if before is None:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, "invalid cursor")
    where = SignalFilter(
        run_id=run_id,
        symbol=symbol,
        direction=direction,
        timeframe=timeframe,
        since=since,
        exchange=exchange,
        strategy=strategy,
    )
    rows = await list_signals(conn=conn, where=where, limit=limit, offset=offset, before=before)
    items = [Signal.model_validate(row) for row in rows]
    next_cursor = encode_cursor(items[-1].emitted_at, items[-1].id) if len(items) == limit else None
    return SignalPage(signals=items, next_cursor=next_cursor)


@router.get("/{signal_id}", responses={404: {"model": ErrorDetail}})
async def signal(conn: ConnDep, signal_id: UUID) -> Signal:
    """One signal by id."""
    row = await get_signal(conn=conn, signal_id=signal_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "signal not found")
    return Signal.model_validate(row)

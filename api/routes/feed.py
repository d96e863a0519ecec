"""WebSocket /ws/feed: live signals, status and keepalive messages (see api.feed)."""

from __future__ import annotations

import contextlib
import logging
from datetime import UTC, datetime

from fastapi import APIRouter, WebSocket, WebSocketDisconnect, status

from signalengine.api.deps import StateDep, token_matches

logger = logging.getLogger(__name__)

router = APIRouter(tags=["feed"])


BEARER_SUBPROTOCOL = "signalengine.bearer"


def _offered(websocket: WebSocket) -> list[str]:
    raw = websocket.headers.get("sec-websocket-protocol", "")
    return [p.strip() for p in raw.split(",") if p.strip()]


def _token(websocket: WebSocket) -> str | None:
    """The token: `Authorization: Bearer`, else the subprotocol pair
    `["signalengine.bearer", <token>]` (what browsers can send), else `?token=` (kept for
    old clients; access logs redact it)."""
    header = websocket.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer" and credentials:
        return credentials.strip()
    offered = _offered(websocket)
    if BEARER_SUBPROTOCOL in offered:
        rest = offered[offered.index(BEARER_SUBPROTOCOL) + 1 :]
        return rest[0] if rest else None
    return websocket.query_params.get("token")


def _since(websocket: WebSocket) -> tuple[bool, datetime | None]:
    """(valid, value) of `?since=`: an ISO 8601 time, UTC when no offset is given."""
    raw = websocket.query_params.get("since")
    if raw is None:
        return True, None
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return False, None
    return True, parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@router.websocket("/ws/feed")
async def feed(websocket: WebSocket, state: StateDep) -> None:
    """Send `connected`, replay signals stored after `?since=` (created_at), then live ones.

    Clients may send `{"type": "subscribe", "symbols": [...], "directions": [...],
    "timeframes": [...]}` to filter signals. Close codes: 1008 bad token or parameters,
    1013 the client fell too far behind, 1011 the feed is not running.
    """
    # a browser drops the connection unless one offered subprotocol is selected
    chosen = BEARER_SUBPROTOCOL if BEARER_SUBPROTOCOL in _offered(websocket) else None
    await websocket.accept(subprotocol=chosen)
    token = state.settings.api_token
    if token is not None and not token_matches(token, _token(websocket)):
        await websocket.close(code=status.WS_1008_POLICY_VIOLATION, reason="unauthorized")
        return
    valid, since = _since(websocket)
    if not valid:
        await websocket.close(code=status.WS_1008_POLICY_VIOLATION, reason="invalid since")
        return
    if state.feed is None:
        await websocket.close(code=status.WS_1011_INTERNAL_ERROR, reason="feed not running")
        return
    with contextlib.suppress(WebSocketDisconnect, OSError):
        await state.feed.serve(websocket, since=since)

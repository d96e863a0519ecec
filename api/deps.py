"""Annotated dependencies of the routes: state, settings, a pooled connection, auth, parameters."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Path, Query, status
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import AsyncConnectionPool
from starlette.requests import HTTPConnection

from api.cache import VersionedCache
from api.db import AsyncConn
from api.feed import Feed
from api.metrics import ApiMetrics
from api.symbols import normalize_symbol
from core.config import Settings

POOL_TIMEOUT_SECONDS = 5.0
SYMBOL_MAX_LENGTH = 41


@dataclass
class ApiState:
    """Everything a replica holds for its lifetime (kept on `app.state.api`)."""

    settings: Settings
    version: str
    metrics: ApiMetrics
    cache: VersionedCache
    pool: AsyncConnectionPool[Any] | None = None
    feed: Feed | None = None


def get_state(connection: HTTPConnection) -> ApiState:
    state: ApiState = connection.app.state.api
    return state


StateDep = Annotated[ApiState, Depends(get_state)]


def get_settings(state: StateDep) -> Settings:
    return state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


async def get_conn(state: StateDep) -> AsyncIterator[AsyncConn]:
    """A pooled autocommit connection with dict rows, returned to the pool afterwards."""
    if state.pool is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "database unavailable")
    async with state.pool.connection(timeout=POOL_TIMEOUT_SECONDS) as conn:
        yield conn


ConnDep = Annotated[AsyncConn, Depends(get_conn)]


def get_cache(state: StateDep) -> VersionedCache:
    return state.cache


CacheDep = Annotated[VersionedCache, Depends(get_cache)]

_bearer = HTTPBearer(auto_error=False, description="The API token, when one is configured.")


def token_matches(expected: str, given: str | None) -> bool:
    """Constant-time comparison, so response timing does not leak the token."""
    return given is not None and secrets.compare_digest(expected.encode(), given.encode())


async def require_token(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """401 unless `Authorization: Bearer <api_token>` is sent (when a token is configured)."""
    if settings.api_token is None:
        return
    if credentials is None or not token_matches(settings.api_token, credentials.credentials):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing or invalid bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )


def _invalid(location: tuple[str, str], value: Any, message: str) -> RequestValidationError:
    """A 422 shaped like FastAPI's own validation errors."""
    return RequestValidationError(
        [{"type": "value_error", "loc": location, "msg": message, "input": value}]
    )


def _normalize(value: str, location: tuple[str, str]) -> str:
    try:
        return normalize_symbol(value)
    except ValueError as exc:
        raise _invalid(location, value, str(exc)) from exc


def symbol_path(
    symbol: Annotated[
        str,
        Path(max_length=SYMBOL_MAX_LENGTH, description="BTC/USDT, BTCUSDT, btcusdt or BTC-USDT"),
    ],
) -> str:
    return _normalize(symbol, ("path", "symbol"))


def symbol_query(
    symbol: Annotated[
        str | None,
        Query(max_length=SYMBOL_MAX_LENGTH, description="BTC/USDT, BTCUSDT or BTC-USDT"),
    ] = None,
) -> str | None:
    return None if symbol is None else _normalize(symbol, ("query", "symbol"))


SymbolPath = Annotated[str, Depends(symbol_path)]
SymbolQuery = Annotated[str | None, Depends(symbol_query)]


def timeframe_query(
    settings: SettingsDep,
    timeframe: Annotated[
        str | None, Query(max_length=8, description="One of the configured timeframes.")
    ] = None,
) -> str | None:
    if timeframe is not None and timeframe not in settings.timeframes:
        raise _invalid(
            ("query", "timeframe"), timeframe, f"timeframe must be one of {settings.timeframes}"
        )
    return timeframe


TimeframeQuery = Annotated[str | None, Depends(timeframe_query)]

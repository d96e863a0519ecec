"""Annotated dependencies of the routes: state, settings, a pooled connection, auth, parameters."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Path, Query, status
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import AsyncConnectionPool
from pydantic import AfterValidator, BeforeValidator
from starlette.requests import HTTPConnection, Request

from signalengine.api.cache import VersionedCache
from signalengine.api.db import AsyncConn
from signalengine.api.feed import Feed
from signalengine.api.metrics import ApiMetrics
from signalengine.core.config import Settings
from signalengine.core.symbols import SYMBOL_PATTERN, normalize_symbol
from signalengine.core.vocabulary import STRATEGY_NAME_PATTERN

SYMBOL_MAX_LENGTH = 41
# Free text that reaches PostgreSQL: printable only (a NUL byte cannot be stored in text).
TEXT_PATTERN = r"^[^\x00-\x1f\x7f]+$"


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
    async with state.pool.connection(timeout=state.settings.api_db_timeout_seconds) as conn:
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
        Path(
            max_length=SYMBOL_MAX_LENGTH,
            pattern=SYMBOL_PATTERN,
            description="BTC/USDT, BTCUSDT, btcusdt or BTC-USDT",
        ),
    ],
) -> str:
    return _normalize(symbol, ("path", "symbol"))


def symbol_query(
    symbol: Annotated[
        str | None,
        Query(
            max_length=SYMBOL_MAX_LENGTH,
            pattern=SYMBOL_PATTERN,
            description="BTC/USDT, BTCUSDT or BTC-USDT",
        ),
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


def _to_utc(value: datetime) -> datetime:
    """Naive means UTC; an offset beyond the representable range clamps to min/max."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        edge = datetime.min if value.year < 2000 else datetime.max
        return edge.replace(tzinfo=UTC)


def _iso_only(value: object) -> object:
    """Query datetimes are ISO 8601 text, as the schema says; pydantic alone would also
    read a bare number as Unix seconds, which the OpenAPI `date-time` format forbids."""
    if isinstance(value, str):
        try:
            datetime.fromisoformat(value)
        except ValueError as error:
            raise ValueError("expected an ISO 8601 date-time, e.g. 2025-01-31T12:00:00Z") from error
    return value


UtcDatetime = Annotated[datetime, BeforeValidator(_iso_only), AfterValidator(_to_utc)]


def _query_names(dependant: Any) -> frozenset[str]:
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return frozenset(names)


_known_query: dict[int, frozenset[str]] = {}


def reject_unknown_query(request: Request) -> None:
    """422 for a query parameter the route does not define: a typo such as `?symbl=`
    must not silently widen the answer."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    known = _known_query.get(id(route))
    if known is None:
        known = _known_query[id(route)] = _query_names(dependant)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise RequestValidationError(
            [
                {
                    "type": "extra_forbidden",
                    "loc": ("query", name),
                    "msg": "unknown query parameter",
                    "input": request.query_params.get(name),
                }
                for name in unknown
            ]
        )


RunIdQuery = Annotated[
    str,
    Query(
        min_length=1,
        max_length=200,
        pattern=TEXT_PATTERN,
        description="`live`, or a backtest/replay run id.",
    ),
]
StrategyQuery = Annotated[
    str | None,
    Query(
        max_length=64,
        pattern=STRATEGY_NAME_PATTERN,
        description="Only this strategy's rows (`default`: the built-in engine); default: all.",
    ),
]
EXCHANGE_PATTERN = r"^[a-z][a-z0-9]{1,49}$"  # a ccxt exchange id: binance, bybit, ...
ExchangeQuery = Annotated[
    str | None,
    Query(
        max_length=50,
        pattern=EXCHANGE_PATTERN,
        description="ccxt exchange id; default: the configured one.",
    ),
]
ExchangeFilter = Annotated[
    str | None,
    Query(
        max_length=50,
        pattern=EXCHANGE_PATTERN,
        description="Only this exchange (ccxt id: binance, bybit, ...); default: every one.",
    ),
]

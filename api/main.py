"""The FastAPI application: `create_app()` builds it, `serve()` runs it with uvicorn.

uvicorn --factory api.main:create_app      # or: signalengine api
"""

from __future__ import annotations

import asyncio
import importlib.metadata
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from signalengine.api.cache import VersionedCache
from signalengine.api.db import AsyncConn
from signalengine.api.deps import ApiState, reject_unknown_query, require_token
from signalengine.api.errors import install_error_handlers
from signalengine.api.feed import Feed
from signalengine.api.limits import install_log_redaction, server_options
from signalengine.api.metrics import ApiMetrics, HttpMetricsMiddleware
from signalengine.api.routes import (
    controls,
    dashboard,
    features,
    feed,
    health,
    klines,
    metrics,
    performance,
    signals,
    webhooks,
)
from signalengine.api.routes.dashboard import STATIC_DIR
from signalengine.api.routes.docs import install_docs
from signalengine.api.schemas import ErrorDetail
from signalengine.core.config import Settings, get_settings
from signalengine.core.db import database_url

POOL_MIN_SIZE = 1
POOL_MAX_SIZE = 10
# Client messages are small JSON filters; refuse anything bigger.
WS_MAX_MESSAGE_BYTES = 64 * 1024

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorDetail},
    401: {"model": ErrorDetail},
    503: {"model": ErrorDetail},
}


def _version() -> str:
    try:
        return importlib.metadata.version("signalengine")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


async def _configure(conn: AsyncConn) -> None:
    # UTC so naive timestamps mean UTC; no JIT, whose compile time dwarfs these queries.
    await conn.execute("SET TimeZone = 'UTC'")
    await conn.execute("SET jit = off")


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open the pool (without waiting: a down database gives 503s, not a dead API) and
    start the feed; undo both at shutdown."""
    state: ApiState = app.state.api
    url = await asyncio.to_thread(database_url, state.settings)
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        url,
        min_size=POOL_MIN_SIZE,
        max_size=POOL_MAX_SIZE,
        kwargs={"autocommit": True, "row_factory": dict_row},
        configure=_configure,
        check=AsyncConnectionPool.check_connection,
        name="signalengine-api",
        open=False,
    )
    await pool.open(wait=False)
    settings = state.settings
    live_feed = Feed(
        url=url,
        pool=pool,
        metrics=state.metrics,
        cache=state.cache,
        version=state.version,
        queue_size=settings.ws_queue_size,
        status_seconds=settings.ws_status_seconds,
        keepalive_seconds=settings.ws_keepalive_seconds,
    )
    await live_feed.start()
    state.pool, state.feed = pool, live_feed
    try:
        yield
    finally:
        state.pool, state.feed = None, None
        await live_feed.stop()
        await pool.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new API application (nothing connects until its lifespan starts)."""
    settings = settings or get_settings()
    install_log_redaction()  # the token must never reach a log line
    version = _version()
    api_metrics = ApiMetrics()
    app = FastAPI(
        title="SignalEngine API",
        version=version,
        description="Signals, klines, features, performance and a live WebSocket feed.",
        lifespan=_lifespan,
        docs_url=None,  # served from local assets by install_docs below
        redoc_url=None,
    )
    app.state.api = ApiState(
        settings=settings, version=version, metrics=api_metrics, cache=VersionedCache()
    )
    install_error_handlers(app)
    app.add_middleware(HttpMetricsMiddleware, metrics=api_metrics)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET"],
            allow_headers=["Authorization", "Content-Type"],
        )
    protected = [Depends(require_token), Depends(reject_unknown_query)]
    app.include_router(health.router)
    for router in (
        signals.router,
        klines.router,
        features.router,
        performance.router,
        controls.router,
        webhooks.router,
    ):
        app.include_router(router, dependencies=protected, responses=_ERRORS)
    app.include_router(metrics.router, dependencies=protected, responses=_ERRORS)
    app.include_router(dashboard.router)
    app.include_router(feed.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    install_docs(app)
    _customize_openapi(app, settings)
    return app


def _customize_openapi(app: FastAPI, settings: Settings) -> None:
    """Make the schema say what this instance does: `timeframe` is an enum of the
    configured timeframes, and bearer auth is listed only when a token is configured."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                if settings.api_token is None:
                    operation.pop("security", None)
                for parameter in operation.get("parameters", []):
                    if parameter.get("name") == "timeframe":
                        parameter["schema"] = {
                            "anyOf": [
                                {"type": "string", "enum": list(settings.timeframes)},
                                {"type": "null"},
                            ],
                            "title": "Timeframe",
                        }
        if settings.api_token is None:
            schema.get("components", {}).pop("securitySchemes", None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def serve(
    host: str | None = None, port: int | None = None, *, settings: Settings | None = None
) -> None:
    """Run the API in the foreground until interrupted (what `signalengine api` calls)."""
    settings = settings or get_settings()
    uvicorn.run(
        create_app(settings),
        host=host or settings.api_host,
        port=port or settings.api_port,
        ws_max_size=WS_MAX_MESSAGE_BYTES,
        # permessage-deflate would compress every signal once per client: with a thousand
        # clients that is most of the fan-out's CPU; messages are ~2 KB, so send them plain.
        ws_per_message_deflate=False,
        log_level="info",
        **server_options(),  # 431 for oversized request heads
    )


def __getattr__(name: str) -> Any:
    """`api.main.app` builds an app on first access, so `uvicorn api.main:app` also works."""
    if name == "app":
        application = create_app()
        globals()["app"] = application
        return application
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

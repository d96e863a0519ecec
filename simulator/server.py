"""The exchange simulator: a Starlette app served by uvicorn on 127.0.0.1.

It speaks Binance's protocol (below) by default, or Bybit v5's (`exchange="bybit"`, see
`_bybit`) over the same synthetic market.

REST (the spot endpoints ccxt's `binance` uses for markets and candles):
`/api/v3/ping`, `/api/v3/time`, `/api/v3/exchangeInfo`, `/api/v3/klines`.
WebSocket market streams: `/ws` and `/ws/<stream>[/<stream>...]` (raw events, what
`ccxt.pro.binance` connects to, as `/ws/<n>` plus SUBSCRIBE), `/stream?streams=a/b`
(combined: `{"stream", "data"}`). `/sim/status` reports sim time, symbols, speed, faults
and counters. Errors use Binance's body, `{"code": -1121, "msg": "Invalid symbol."}`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from signalengine.simulator._bybit import BybitApi, BybitConnection, BybitError, bybit_error
from signalengine.simulator._exchange_info import exchange_info
from signalengine.simulator._klines import (
    INTERVAL_MINUTES,
    interval_klines,
    klines_window,
    rest_row,
)
from signalengine.simulator._state import SimState
from signalengine.simulator._streams import Connection, streams_from_path
from signalengine.simulator.config import DEFAULT_SYMBOLS, Faults, SimulatorConfig
from signalengine.simulator.market import MINUTE_MS

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
KLINES_DEFAULT_LIMIT = 500
KLINES_MAX_LIMIT = 1000
_STARTUP_TIMEOUT_S = 10.0


class _BinanceError(Exception):
    def __init__(self, code: int, msg: str, *, status: int = 400) -> None:
        super().__init__(msg)
        self.code, self.msg, self.status = code, msg, status


async def _binance_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, _BinanceError)
    return JSONResponse({"code": exc.code, "msg": exc.msg}, status_code=exc.status)


def _int_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 20:
        msg = f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'."
        raise _BinanceError(-1100, msg)
    return int(raw)


class _Api:
    def __init__(self, state: SimState) -> None:
        self.state = state
        self._rest_seq = 0

    def _count_request(self) -> Response | None:
        """Count a REST request; return the 429 answer when the fault says so."""
        self.state.counters["rest_requests"] += 1
        self._rest_seq += 1
        faults = self.state.config.faults
        if faults.rest_429_every is not None and self._rest_seq % faults.rest_429_every == 0:
            self.state.counters["rest_429"] += 1
            body = {"code": -1003, "msg": "Too many requests; simulated rate limit."}
            headers = {"Retry-After": str(faults.retry_after_s)}
            return JSONResponse(body, status_code=429, headers=headers)
        return None

    def _symbol(self, market: str | None) -> str:
        if not market:
            raise _BinanceError(
                -1102,
                "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
            )
        symbol = self.state.symbol_by_id.get(market)
        if symbol is None:
            raise _BinanceError(-1121, "Invalid symbol.")
        return symbol

    async def ping(self, request: Request) -> Response:
        return self._count_request() or JSONResponse({})

    async def server_time(self, request: Request) -> Response:
        return self._count_request() or JSONResponse({"serverTime": self.state.clock.now_ms()})

    async def exchange_info(self, request: Request) -> Response:
        if (limited := self._count_request()) is not None:
            return limited
        symbols = list(self.state.config.symbols)
        if "symbol" in request.query_params:
            symbols = [self._symbol(request.query_params["symbol"])]
        elif "symbols" in request.query_params:
            try:
                wanted = json.loads(request.query_params["symbols"])
            except ValueError as exc:
                raise _BinanceError(-1100, "Illegal characters found in 'symbols'.") from exc
            symbols = [self._symbol(str(m)) for m in wanted]
        now = self.state.clock.now_ms()
        return JSONResponse(exchange_info(symbols, server_time_ms=now))

    async def klines(self, request: Request) -> Response:
        if (limited := self._count_request()) is not None:
            return limited
        symbol = self._symbol(request.query_params.get("symbol"))
        interval = request.query_params.get("interval")
        if not interval:
            raise _BinanceError(
                -1102,
                "Mandatory parameter 'interval' was not sent, was empty/null, or malformed.",
            )
        if interval not in INTERVAL_MINUTES:
            raise _BinanceError(-1120, "Invalid interval.")
        start, end = _int_param(request, "startTime"), _int_param(request, "endTime")
        limit = _int_param(request, "limit") or KLINES_DEFAULT_LIMIT
        limit = min(limit, KLINES_MAX_LIMIT)
        if start is not None and end is not None and start > end:
            raise _BinanceError(-1023, "Start time is greater than end time.")
        width = INTERVAL_MINUTES[interval] * MINUTE_MS
        lo, hi = klines_window(self.state.clock.now_ms(), width, start=start, end=end, limit=limit)
        rows = interval_klines(symbol, interval, lo, hi, seed=self.state.seed)
        return JSONResponse([rest_row(rec) for rec in rows])

    async def status(self, request: Request) -> Response:
        return JSONResponse(self.state.status())

    async def ws_raw(self, websocket: WebSocket) -> None:
        await websocket.accept()
        connection = Connection(websocket, self.state, combined=False)
        connection.subscribe(streams_from_path(websocket.path_params.get("streams", "")))
        await connection.run()

    async def ws_combined(self, websocket: WebSocket) -> None:
        await websocket.accept()
        connection = Connection(websocket, self.state, combined=True)
        names = websocket.query_params.get("streams", "")
        connection.subscribe([n for n in names.split("/") if n])
        await connection.run()


def _bybit_app(state: SimState) -> Starlette:
    api = BybitApi(state)

    async def ws_spot(websocket: WebSocket) -> None:
        await websocket.accept()
        await BybitConnection(websocket, state).run()

    async def status(request: Request) -> Response:
        return JSONResponse(state.status())

    routes = [
        Route("/v5/market/time", api.server_time),
        Route("/v5/market/instruments-info", api.instruments),
        Route("/v5/market/kline", api.klines),
        Route("/sim/status", status),
        WebSocketRoute("/v5/public/spot", ws_spot),
    ]
    return Starlette(routes=routes, exception_handlers={BybitError: bybit_error})


def create_app(config: SimulatorConfig | None = None) -> Starlette:
    """The simulator's ASGI app, in the config's dialect; its clock starts now."""
    state = SimState(config or SimulatorConfig())
    if state.config.exchange == "bybit":
        app = _bybit_app(state)
        app.state.sim = state
        return app
    api = _Api(state)
    routes = [
        Route("/api/v3/ping", api.ping),
        Route("/api/v3/time", api.server_time),
        Route("/api/v3/exchangeInfo", api.exchange_info),
        Route("/api/v3/klines", api.klines),
        Route("/sim/status", api.status),
        WebSocketRoute("/ws", api.ws_raw),
        WebSocketRoute("/ws/{streams:path}", api.ws_raw),
        WebSocketRoute("/stream", api.ws_combined),
    ]
    app = Starlette(routes=routes, exception_handlers={_BinanceError: _binance_error})
    app.state.sim = state
    return app


def _config(
    *,
    symbols: list[str] | tuple[str, ...],
    seed: int | None,
    speed: float,
    faults: Faults | None,
    anchor_ms: int | None,
    exchange: str,
) -> SimulatorConfig:
    return SimulatorConfig(
        exchange=exchange,
        symbols=tuple(symbols),
        seed=seed,
        speed=speed,
        anchor_ms=anchor_ms,
        faults=faults or Faults(),
    )


def serve(
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    symbols: list[str] | tuple[str, ...] = DEFAULT_SYMBOLS,
    seed: int | None = None,
    speed: float = 1.0,
    faults: Faults | None = None,
    anchor_ms: int | None = None,
    log_level: str = "info",
    exchange: str = "binance",
) -> None:
    """Run the simulator in the foreground until interrupted (Ctrl-C).

    `exchange` is the dialect (binance or bybit); `seed=None` is the dialect's default.
    """
    config = _config(
        symbols=symbols,
        seed=seed,
        speed=speed,
        faults=faults,
        anchor_ms=anchor_ms,
        exchange=exchange,
    )
    app = create_app(config)
    uvicorn.run(app, host=host, port=port, log_level=log_level, lifespan="off")


@contextmanager
def running_simulator(
    *,
    port: int = 0,
    symbols: list[str] | tuple[str, ...] = DEFAULT_SYMBOLS,
    seed: int | None = None,
    speed: float = 1.0,
    faults: Faults | None = None,
    anchor_ms: int | None = None,
    exchange: str = "binance",
) -> Iterator[str]:
    """Run the simulator in a background thread; yields its base URL `http://127.0.0.1:P`.

    Port 0 picks a free port. The server stops when the block exits. `exchange` is the
    dialect (binance or bybit); `seed=None` is the dialect's default (`venue_seed`).
    """
    sim_config = _config(
        symbols=symbols,
        seed=seed,
        speed=speed,
        faults=faults,
        anchor_ms=anchor_ms,
        exchange=exchange,
    )
    app = create_app(sim_config)
    config = uvicorn.Config(
        app,
        host=DEFAULT_HOST,
        port=port,
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="exchange-simulator", daemon=True)
    thread.start()
    deadline = time.monotonic() + _STARTUP_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the exchange simulator did not start")
        time.sleep(0.01)
    bound: Any = server.servers[0].sockets[0].getsockname()
    try:
        yield f"http://{DEFAULT_HOST}:{bound[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)

"""Bybit's v5 public spot dialect over the same synthetic market: REST and WebSocket klines.

REST (what `ccxt.bybit` uses for markets, clock and candles): `/v5/market/time`,
`/v5/market/instruments-info?category=spot`, `/v5/market/kline`. Answers are HTTP 200
with Bybit's envelope `{"retCode", "retMsg", "result", "retExtInfo", "time"}`; a bad
parameter is `retCode` 10001 and the rate-limit fault `retCode` 10006 (HTTP 200 too, as
Bybit answers an API rate limit), with the `X-Bapi-Limit*` headers. Klines come newest
first, as Bybit sends them; only closed bars are served.

WebSocket `/v5/public/spot`: `{"op": "subscribe", "args": ["kline.1.BTCUSDT"]}` and
`ping`; kline pushes are `{"topic", "data": [{..., "confirm": bool}], "ts", "type"}`,
in-progress updates with `confirm: false`, then the closed bar once with `confirm: true`.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from signalengine.simulator._klines import INTERVAL_MINUTES, interval_klines, klines_window
from signalengine.simulator._state import SimState
from signalengine.simulator._streams import Connection
from signalengine.simulator.config import market_id, unified_symbol
from signalengine.simulator.market import MINUTE_MS, symbol_profile

KLINE_DEFAULT_LIMIT = 200
KLINE_MAX_LIMIT = 1000
# Bybit's interval ids and the simulator's interval names (Bybit has no 8h; W and M unserved).
INTERVALS: dict[str, str] = {
    "1": "1m",
    "3": "3m",
    "5": "5m",
    "15": "15m",
    "30": "30m",
    "60": "1h",
    "120": "2h",
    "240": "4h",
    "360": "6h",
    "720": "12h",
    "D": "1d",
}
_INTERVAL_IDS = {name: key for key, name in INTERVALS.items()}
_Stream = tuple[str, str]


def _num(value: float) -> str:
    """Bybit prints decimals without trailing zeros; the value parses back exactly."""
    text = f"{value:.8f}".rstrip("0")
    return text.removesuffix(".") if text.endswith(".") else text


class BybitError(Exception):
    """A v5 error answer: HTTP 200, non-zero `retCode`."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code, self.msg = code, msg


def envelope(result: Any, *, now_ms: int, code: int = 0, msg: str = "OK") -> dict[str, Any]:
    return {"retCode": code, "retMsg": msg, "result": result, "retExtInfo": {}, "time": now_ms}


def _instrument(symbol: str) -> dict[str, Any]:
    profile = symbol_profile(symbol)
    base, quote = unified_symbol(symbol).split("/")
    return {
        "symbol": market_id(symbol),
        "baseCoin": base,
        "quoteCoin": quote,
        "innovation": "0",
        "status": "Trading",
        "marginTrading": "none",
        "stTag": "0",
        "lotSizeFilter": {
            "basePrecision": _num(profile.step_size),
            "quotePrecision": "0.00000001",
            "minOrderQty": _num(profile.step_size),
            "maxOrderQty": "9000000",
            "minOrderAmt": "5",
            "maxOrderAmt": "9000000",
        },
        "priceFilter": {"tickSize": _num(profile.tick_size)},
        "riskParameters": {"priceLimitRatioX": "0.05", "priceLimitRatioY": "0.1"},
    }


class BybitApi:
    """The REST handlers of one simulator speaking Bybit v5."""

    def __init__(self, state: SimState) -> None:
        self.state = state
        self._rest_seq = 0

    def _answer(self, result: Any) -> Response:
        return JSONResponse(envelope(result, now_ms=self.state.clock.now_ms()))

    def _limited(self) -> Response | None:
        """Count a REST request; return Bybit's rate-limit answer when the fault says so."""
        self.state.counters["rest_requests"] += 1
        self._rest_seq += 1
        faults = self.state.config.faults
        if faults.rest_429_every is None or self._rest_seq % faults.rest_429_every:
            return None
        self.state.counters["rest_429"] += 1
        now = self.state.clock.now_ms()
        headers = {
            "X-Bapi-Limit": "600",
            "X-Bapi-Limit-Status": "0",
            "X-Bapi-Limit-Reset-Timestamp": str(now + faults.retry_after_s * 1000),
        }
        body = envelope({}, now_ms=now, code=10006, msg="Too many visits!")
        return JSONResponse(body, headers=headers)

    def _category(self, request: Request) -> None:
        category = request.query_params.get("category")
        if not category:
            raise BybitError(10001, "params error: category is required")
        if category != "spot":
            raise BybitError(10001, f"params error: category {category} is not served")

    def _symbol(self, market: str | None) -> str:
        if not market:
            raise BybitError(10001, "params error: symbol is required")
        symbol = self.state.symbol_by_id.get(market.upper())
        if symbol is None:
            raise BybitError(10001, "Not supported symbols")
        return symbol

    def _int(self, request: Request, name: str) -> int | None:
        raw = request.query_params.get(name)
        if raw is None or raw == "":
            return None
        if not raw.isdigit() or len(raw) > 19:
            raise BybitError(10001, f"params error: {name} invalid")
        return int(raw)

    async def server_time(self, request: Request) -> Response:
        if (limited := self._limited()) is not None:
            return limited
        now = self.state.clock.now_ms()
        result = {"timeSecond": str(now // 1000), "timeNano": str(now * 1_000_000)}
        return self._answer(result)

    async def instruments(self, request: Request) -> Response:
        if (limited := self._limited()) is not None:
            return limited
        self._category(request)
        symbols = list(self.state.config.symbols)
        if request.query_params.get("symbol"):
            symbols = [self._symbol(request.query_params["symbol"])]
        listed = [_instrument(s) for s in symbols]
        return self._answer({"category": "spot", "list": listed, "nextPageCursor": ""})

    async def klines(self, request: Request) -> Response:
        if (limited := self._limited()) is not None:
            return limited
        self._category(request)
        symbol = self._symbol(request.query_params.get("symbol"))
        interval_id = request.query_params.get("interval")
        if not interval_id:
            raise BybitError(10001, "params error: interval is required")
        interval = INTERVALS.get(interval_id)
        if interval is None:
            raise BybitError(10001, "params error: Invalid interval")
        start, end = self._int(request, "start"), self._int(request, "end")
        limit = self._int(request, "limit")
        if limit is not None and not 1 <= limit <= KLINE_MAX_LIMIT:
            raise BybitError(10001, "params error: limit must be within [1, 1000]")
        if start is not None and end is not None and start > end:
            raise BybitError(10001, "params error: start must be less than end")
        width = INTERVAL_MINUTES[interval] * MINUTE_MS
        now = self.state.clock.now_ms()
        lo, hi = klines_window(now, width, start=start, end=end, limit=limit or KLINE_DEFAULT_LIMIT)
        rows = interval_klines(symbol, interval, lo, hi, seed=self.state.seed)
        listed = [
            [
                str(int(rec["ts"])),
                _num(rec["open"]),
                _num(rec["high"]),
                _num(rec["low"]),
                _num(rec["close"]),
                _num(rec["volume"]),
                _num(rec["quote_volume"]),
            ]
            for rec in rows[::-1]  # newest first, as Bybit sends them
        ]
        result = {"symbol": market_id(symbol), "category": "spot", "list": listed}
        return self._answer(result)


async def bybit_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BybitError)
    state: SimState = request.app.state.sim
    return JSONResponse(envelope({}, now_ms=state.clock.now_ms(), code=exc.code, msg=exc.msg))


def topic_name(stream: _Stream) -> str:
    return f"kline.{_INTERVAL_IDS[stream[1]]}.{stream[0]}"


class BybitConnection(Connection):
    """A `/v5/public/spot` connection: Bybit's ops, topics and kline pushes."""

    def __init__(self, ws: Any, state: SimState) -> None:
        super().__init__(ws, state, combined=False)
        self.conn_id = str(uuid.UUID(int=state.connection_seq))

    def _stream_of(self, name: str) -> _Stream | None:
        kind, _, rest = name.partition(".")
        interval_id, _, mid = rest.partition(".")
        interval = INTERVALS.get(interval_id)
        if kind != "kline" or interval is None or mid not in self.state.symbol_by_id:
            return None
        return mid, interval

    def _event(self, stream: _Stream, rec: Any, *, closed: bool, event_ms: int) -> dict[str, Any]:
        candle = {
            "start": int(rec["ts"]),
            "end": int(rec["close_ts"]),
            "interval": _INTERVAL_IDS[stream[1]],
            "open": _num(rec["open"]),
            "close": _num(rec["close"]),
            "high": _num(rec["high"]),
            "low": _num(rec["low"]),
            "volume": _num(rec["volume"]),
            "turnover": _num(rec["quote_volume"]),
            "confirm": closed,
            "timestamp": event_ms,
        }
        return {"topic": topic_name(stream), "data": [candle], "ts": event_ms, "type": "snapshot"}

    def _broken(
        self, event: dict[str, Any], variant: int, tick_size: float
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        bad: dict[str, Any] = json.loads(json.dumps(event))
        candle = bad["data"][0]
        if variant == 0:  # high below low
            high, low = float(candle["high"]), float(candle["low"])
            candle["high"], candle["low"] = _num(min(high, low)), _num(max(high, low) + tick_size)
        elif variant == 1:  # not a number
            candle["close"] = "NaN"
        else:  # open time off the minute grid
            candle["start"] += 7_000
            candle["end"] += 7_000
        fields = {"t": candle["start"], "c": candle["close"]}
        fields.update(h=candle["high"], l=candle["low"])
        return bad, fields

    def _reply(self, op: str, req_id: Any, *, ok: bool = True, msg: str = "") -> dict[str, Any]:
        reply = {"success": ok, "ret_msg": msg, "conn_id": self.conn_id, "op": op}
        return {**reply, "req_id": "" if req_id is None else str(req_id)}

    async def _answer(self, text: str) -> None:
        try:
            request = json.loads(text)
            op, req_id = str(request["op"]), request.get("req_id")
            args = request.get("args") or []
            if not isinstance(args, list):
                raise TypeError("args must be a list")
        except (ValueError, KeyError, TypeError):
            await self._send(self._reply("", None, ok=False, msg="error:invalid op"))
            return
        if op == "ping":
            await self._send(self._reply("ping", req_id, msg="pong"))
        elif op == "subscribe":
            unknown = self.subscribe([str(a) for a in args])
            if unknown:
                msg = f"error:handler not found,topic:{unknown[0]}"
                await self._send(self._reply(op, req_id, ok=False, msg=msg))
                return
            await self._send(self._reply(op, req_id))
        elif op == "unsubscribe":
            gone = {self._stream_of(str(a)) for a in args}
            self.streams = [s for s in self.streams if s not in gone]
            await self._send(self._reply(op, req_id))
        else:
            await self._send(self._reply(op, req_id, ok=False, msg="error:invalid op"))

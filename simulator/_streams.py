"""Binance market streams over WebSocket: raw `/ws/...`, combined `/stream?streams=...`.

Each connection runs a reader (SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS requests,
`{"method": ..., "params": [...], "id": n}`) and a pump that walks the simulated clock in
quarter-minute ticks. On a tick that ends a bar the pump sends that bar once with
`x: true`; on the last due tick it sends the still-open bar with `x: false`. Faults are
applied to closed klines only, per connection.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from contextlib import suppress
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from signalengine.simulator._klines import (
    INTERVAL_MINUTES,
    PARTIAL_STEPS,
    interval_klines,
    partial_kline,
)
from signalengine.simulator._klines import ws_event as _ws_event
from signalengine.simulator._state import SimState
from signalengine.simulator.market import MINUTE_MS, symbol_profile

TICK_MS = MINUTE_MS // PARTIAL_STEPS
_Stream = tuple[str, str]  # (market id, interval)


def _stream_name(stream: _Stream) -> str:
    return f"{stream[0].lower()}@kline_{stream[1]}"


def _malformed(event: dict[str, Any], variant: int, tick_size: float) -> dict[str, Any]:
    """A copy of a closed-kline event broken in one of three ways."""
    bad: dict[str, Any] = json.loads(json.dumps(event))
    k = bad["k"]
    if variant == 0:  # high below low
        high, low = float(k["h"]), float(k["l"])
        k["h"], k["l"] = f"{min(high, low):.8f}", f"{max(high, low) + tick_size:.8f}"
    elif variant == 1:  # not a number
        k["c"] = "NaN"
    else:  # open time off the minute grid
        k["t"] += 7_000
        k["T"] += 7_000
    return bad


class Connection:
    """One client connection and its subscriptions."""

    def __init__(self, ws: WebSocket, state: SimState, *, combined: bool) -> None:
        self.ws = ws
        self.state = state
        self.combined = combined
        self.streams: list[_Stream] = []
        state.connection_seq += 1
        self._rng = random.Random(f"{state.config.seed}:{state.connection_seq}")
        self._held: dict[_Stream, dict[str, Any]] = {}
        self._send_lock = asyncio.Lock()

    def _stream_of(self, name: str) -> _Stream | None:
        """(market id, interval) of a stream or topic name in this dialect, else None."""
        return self.state.stream_of(name)

    def _event(self, stream: _Stream, rec: Any, *, closed: bool, event_ms: int) -> dict[str, Any]:
        """One kline as this dialect's WebSocket message."""
        return _ws_event(stream[0], stream[1], rec, closed=closed, event_ms=event_ms)

    def _broken(
        self, event: dict[str, Any], variant: int, tick_size: float
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """A malformed copy of a closed-kline message, and its `t c h l` for the log."""
        bad = _malformed(event, variant, tick_size)
        return bad, bad["k"]

    def subscribe(self, names: list[str]) -> list[str]:
        """Add streams by name; returns the names that are not known streams."""
        unknown = []
        for name in names:
            stream = self._stream_of(name)
            if stream is None:
                unknown.append(name)
            elif stream not in self.streams:
                self.streams.append(stream)
        return unknown

    async def run(self) -> None:
        """Serve the connection until the client leaves or a drop fault closes it."""
        self.state.counters["ws_connections"] += 1
        reader = asyncio.create_task(self._read())
        try:
            await self._pump(reader)
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass  # the client went away mid-send
        finally:
            reader.cancel()
            with suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
                await reader

    async def _send(self, payload: dict[str, Any], stream: _Stream | None = None) -> None:
        if self.combined and stream is not None:
            payload = {"stream": _stream_name(stream), "data": payload}
        async with self._send_lock:
            await self.ws.send_text(json.dumps(payload, separators=(",", ":")))

    async def _read(self) -> None:
        while True:
            try:
                text = await self.ws.receive_text()
            except (WebSocketDisconnect, RuntimeError):
                return
            await self._answer(text)

    async def _answer(self, text: str) -> None:
        try:
            request = json.loads(text)
            method, req_id = request["method"], request.get("id")
            params = request.get("params", [])
        except (ValueError, KeyError, TypeError):
            await self._send({"error": {"code": 3, "msg": "Invalid JSON"}, "id": None})
            return
        if method == "SUBSCRIBE":
            unknown = self.subscribe(list(params))
            if unknown:
                msg = f"Invalid request: unknown stream(s) {', '.join(unknown)}"
                await self._send({"error": {"code": 2, "msg": msg}, "id": req_id})
                return
            await self._send({"result": None, "id": req_id})
        elif method == "UNSUBSCRIBE":
            gone = {self.state.stream_of(name) for name in params}
            self.streams = [s for s in self.streams if s not in gone]
            await self._send({"result": None, "id": req_id})
        elif method == "LIST_SUBSCRIPTIONS":
            await self._send({"result": [_stream_name(s) for s in self.streams], "id": req_id})
        else:
            await self._send({"error": {"code": 2, "msg": "Invalid request"}, "id": req_id})

    async def _pump(self, reader: asyncio.Task[None]) -> None:
        clock, faults = self.state.clock, self.state.config.faults
        drop_at = None
        if faults.ws_drop_every_s is not None:
            drop_at = time.monotonic() + faults.ws_drop_every_s
        next_tick = (clock.now_ms() // TICK_MS + 1) * TICK_MS
        while not reader.done():
            wait = clock.real_seconds_until(next_tick)
            if drop_at is not None:
                wait = min(wait, drop_at - time.monotonic())
            if wait > 0:
                await asyncio.wait({reader}, timeout=wait)
                continue
            if drop_at is not None and time.monotonic() >= drop_at:
                self.state.counters["ws_drops"] += 1
                await self.ws.close(code=1001, reason="simulated drop")
                return
            last_due = clock.now_ms() // TICK_MS * TICK_MS
            for tick in range(next_tick, last_due + 1, TICK_MS):
                await self._emit(tick, with_partials=tick == last_due)
            next_tick = last_due + TICK_MS

    async def _emit(self, tick: int, *, with_partials: bool) -> None:
        seed = self.state.seed
        for stream in list(self.streams):
            mid, interval = stream
            symbol = self.state.symbol_by_id[mid]
            width = INTERVAL_MINUTES[interval] * MINUTE_MS
            if tick % width == 0:
                rec = interval_klines(symbol, interval, tick - width, tick - width, seed=seed)
                event = self._event(stream, rec[0], closed=True, event_ms=tick)
                await self._send_closed(stream, event)
            elif with_partials:
                part = partial_kline(symbol, interval, tick - tick % width, tick, seed=seed)
                if part is not None:
                    event = self._event(stream, part[0], closed=False, event_ms=tick)
                    self.state.counters["klines_sent"] += 1
                    await self._send(event, stream)

    async def _send_closed(self, stream: _Stream, event: dict[str, Any]) -> None:
        faults, counters = self.state.config.faults, self.state.counters
        if faults.malformed_rate and self._rng.random() < faults.malformed_rate:
            tick_size = symbol_profile(self.state.symbol_by_id[stream[0]]).tick_size
            bad, fields = self._broken(event, self._rng.randrange(3), tick_size)
            await self._send(bad, stream)
            counters["malformed"] += 1  # counted once sent: a failed send reached nobody
            self.state.note_malformed(stream[0], fields)
        if (
            faults.out_of_order_rate
            and stream not in self._held
            and self._rng.random() < faults.out_of_order_rate
        ):
            counters["out_of_order"] += 1
            self._held[stream] = event
            return
        copies = 1
        if faults.duplicate_rate and self._rng.random() < faults.duplicate_rate:
            counters["duplicates"] += 1
            copies = 2
        late = self._held.pop(stream, None)
        for payload in [event] * copies + ([late] if late is not None else []):
            counters["klines_sent"] += 1
            counters["closed_klines_sent"] += 1
            await self._send(payload, stream)


def streams_from_path(path: str) -> list[str]:
    """Stream names in a `/ws/a@kline_1m/b@kline_1m` tail; ccxt's `/ws/0` has none."""
    return [part for part in path.split("/") if "@" in part]

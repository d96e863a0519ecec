"""/ws/feed over real WebSockets: signals inserted into PostgreSQL reach the clients."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlparse

import httpx
import psycopg
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.api.conftest import api_settings
from tests.api.server import ApiServer
from tests.utils.signals import create_random_signal, insert_signals, random_signal

Conn = psycopg.Connection[Any]
TIMEOUT = 5.0


async def receive(ws: ClientConnection, within: float = TIMEOUT) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), within))
    return message


async def next_of_type(ws: ClientConnection, kind: str, within: float = TIMEOUT) -> dict[str, Any]:
    """The next message of type `kind`, skipping others."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        message = await receive(ws, deadline - asyncio.get_running_loop().time())
        if message["type"] == kind:
            return message


async def signal_ids(ws: ClientConnection, expected: set[str]) -> list[str]:
    """Ids of every signal message received until all of `expected` arrived."""
    got: list[str] = []
    while not expected <= set(got):
        got.append((await next_of_type(ws, "signal"))["data"]["id"])
    return got


async def settle(ws: ClientConnection) -> None:
    """Round-trip a ping, so that messages sent before it were processed by the server."""
    await ws.send(json.dumps({"type": "ping"}))
    await next_of_type(ws, "keepalive")


@pytest.fixture
async def feed(api: ApiServer) -> AsyncIterator[ClientConnection]:
    async with connect(api.ws_url) as ws:
        assert (await receive(ws))["type"] == "connected"
        yield ws


async def test_connected_then_a_new_signal_arrives_in_full(api: ApiServer, db: Conn) -> None:
    async with connect(api.ws_url) as ws:
        hello = await receive(ws)
        assert hello["type"] == "connected"
        assert hello["data"]["message"] and hello["data"]["version"]
        stored = create_random_signal(db, symbol="SOL/USDT", direction="short")
        message = await next_of_type(ws, "signal")
    data = message["data"]
    assert data["id"] == str(stored["id"])
    assert data["symbol"] == "SOL/USDT" and data["direction"] == "short"
    assert data["mtf_details"] == stored["mtf_details"]
    assert data["entry_price"] == pytest.approx(stored["entry_price"])
    assert set(data) >= {"take_profit", "stop_loss", "score", "mtf_aligned", "events", "created_at"}


async def test_status_and_keepalive_arrive_periodically(feed: ClientConnection, db: Conn) -> None:
    status = await next_of_type(feed, "status")
    metrics = status["data"]["metrics"]
    assert {"total_signals", "win_rate", "avg_return_pct", "cpu_percent", "memory_bytes"} <= set(
        metrics
    )
    assert status["data"]["connected_clients"] >= 1
    assert await next_of_type(feed, "keepalive") == {"type": "keepalive"}


async def test_backtest_signals_are_not_broadcast(feed: ClientConnection, db: Conn) -> None:
    create_random_signal(db, run_id="backtest-7")
    live = create_random_signal(db)
    assert await signal_ids(feed, {str(live["id"])}) == [str(live["id"])]


async def test_subscribe_filters_signals(feed: ClientConnection, db: Conn) -> None:
    await feed.send(
        json.dumps(
            {
                "type": "subscribe",
                "symbols": ["ethusdt"],
                "directions": ["short"],
                "timeframes": ["5m"],
            }
        )
    )
    await settle(feed)
    rows = [
        random_signal(symbol="BTC/USDT", direction="short", timeframe="5m"),
        random_signal(symbol="ETH/USDT", direction="long", timeframe="5m"),
        random_signal(symbol="ETH/USDT", direction="short", timeframe="15m"),
        random_signal(symbol="ETH/USDT", direction="short", timeframe="5m"),
    ]
    insert_signals(db, rows)  # one transaction: notified in this order
    assert await signal_ids(feed, {str(rows[-1]["id"])}) == [str(rows[-1]["id"])]
    await feed.send(json.dumps({"type": "subscribe"}))  # back to everything
    await settle(feed)
    other = create_random_signal(db, symbol="BNB/USDT")
    assert await signal_ids(feed, {str(other["id"])}) == [str(other["id"])]


async def test_invalid_client_messages_are_dropped(feed: ClientConnection, db: Conn) -> None:
    for junk in (
        "not json",
        json.dumps({"type": "nope"}),
        json.dumps({"type": "subscribe", "directions": ["up"]}),
        json.dumps({"type": "subscribe", "symbols": ["NOTAPAIR"]}),
        json.dumps([1, 2]),
    ):
        await feed.send(junk)
    await feed.send(b"\x00\x01binary")
    await settle(feed)
    stored = create_random_signal(db)
    assert await signal_ids(feed, {str(stored["id"])}) == [str(stored["id"])]


async def test_since_replays_missed_signals_in_order(api: ApiServer, db: Conn) -> None:
    seen = create_random_signal(db)
    missed = [create_random_signal(db) for _ in range(3)]
    create_random_signal(db, run_id="backtest-8")
    since = seen["created_at"].isoformat()
    async with connect(f"{api.ws_url}?since={since.replace('+', '%2B')}") as ws:
        assert (await receive(ws))["type"] == "connected"
        replayed = [(await next_of_type(ws, "signal"))["data"]["id"] for _ in missed]
        assert replayed == [str(s["id"]) for s in missed]
        live = create_random_signal(db)
        assert await signal_ids(ws, {str(live["id"])}) == [str(live["id"])]


async def test_an_invalid_since_closes_with_1008(api: ApiServer) -> None:
    async with connect(f"{api.ws_url}?since=yesterday") as ws:
        with pytest.raises(ConnectionClosed):
            await receive(ws)
    assert ws.close_code == 1008


async def test_two_replicas_each_deliver_every_signal_once(
    api: ApiServer, database_url: str, db: Conn
) -> None:
    with ApiServer(api_settings(database_url)) as other:
        async with connect(api.ws_url) as first, connect(other.ws_url) as second:
            for ws in (first, second):
                assert (await receive(ws))["type"] == "connected"
            rows = [random_signal() for _ in range(15)]
            insert_signals(db, rows[:10])
            for row in rows[10:]:
                insert_signals(db, [row])
            expected = {str(r["id"]) for r in rows}
            for ws in (first, second):
                got = await signal_ids(ws, expected)
                await settle(ws)  # nothing else (no duplicate) is in flight
                with pytest.raises(TimeoutError):
                    await next_of_type(ws, "signal", within=0.3)
                assert sorted(got) == sorted(expected)


def _tiny_receive_buffer_socket(url: str) -> socket.socket:
    """A connected socket that accepts little data until the client reads."""
    parsed = urlparse(url)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((parsed.hostname, parsed.port))
    return sock


async def test_a_slow_client_is_closed_with_1013(database_url: str, db: Conn) -> None:
    with ApiServer(api_settings(database_url, ws_queue_size=16)) as server:
        # No compression: the repetitive JSON would otherwise shrink ~10x in the buffers.
        slow = await connect(
            server.ws_url,
            sock=_tiny_receive_buffer_socket(server.ws_url),
            max_queue=1,
            compression=None,
        )
        async with connect(server.ws_url) as fast, httpx.AsyncClient(base_url=server.url) as http:
            fast_ids: list[str] = []
            inserted: set[str] = set()
            all_inserted = asyncio.Event()  # set once the insert loop is over
            fast_got_all = asyncio.Event()

            async def read_fast() -> None:
                async for raw in fast:
                    message = json.loads(raw)
                    if message["type"] == "signal":
                        fast_ids.append(message["data"]["id"])
                    if all_inserted.is_set() and inserted <= set(fast_ids):
                        fast_got_all.set()

            reader = asyncio.create_task(read_fast())
            dropped = 0.0
            for _ in range(30):
                rows = [random_signal() for _ in range(500)]
                await asyncio.to_thread(insert_signals, db, rows)
                inserted |= {str(r["id"]) for r in rows}
                await asyncio.sleep(0.2)
                legacy = (await http.get("/metrics/legacy")).json()
                dropped = legacy["ws_clients_dropped_total"]
                if dropped:
                    break
            assert dropped == 1
            all_inserted.set()
            with pytest.raises(ConnectionClosed):
                while True:
                    await asyncio.wait_for(slow.recv(), TIMEOUT)
            assert slow.close_code == 1013
            if not inserted <= set(fast_ids):
                await asyncio.wait_for(fast_got_all.wait(), TIMEOUT)
            assert set(fast_ids) == inserted and len(fast_ids) == len(inserted)
            reader.cancel()
        await slow.close()

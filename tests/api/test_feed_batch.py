"""One NOTIFY per insert statement (sql/011), still one WebSocket message per signal.

A primary close at desk scale stores hundreds of signals at once: the trigger announces
them in a few chunked notifications, in insertion order, and the feed turns those back
into exactly one message per signal, in the same order.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pandas as pd
import psycopg
from websockets.asyncio.client import connect

from signalengine.tasks.outcomes.signals import insert_signals
from tests.api.server import ApiServer
from tests.api.test_feed import next_of_type, receive
from tests.utils.signals import random_signal

Conn = psycopg.Connection[Any]
BATCH = 500  # one close of 500 symbols, each firing


def _rows(n: int, **overrides: Any) -> list[dict[str, Any]]:
    return [random_signal(**overrides) for _ in range(n)]


def test_one_statement_notifies_its_ids_in_chunks_in_order(db: Conn, database_url: str) -> None:
    rows = _rows(BATCH)
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("LISTEN signals")
        assert insert_signals(db, pd.DataFrame(rows)) == BATCH
        payloads = [json.loads(n.payload) for n in listener.notifies(timeout=2.0)]
        # stored again: nothing new, so no notification at all
        assert insert_signals(db, pd.DataFrame(rows)) == 0
        again = list(listener.notifies(timeout=0.5))
    assert len(payloads) == 4  # 150 ids at most per payload (under NOTIFY's 8000 bytes)
    assert {p["run_id"] for p in payloads} == {"live"}
    assert [i for p in payloads for i in p["ids"]] == [str(r["id"]) for r in rows]
    assert again == []


async def test_a_batch_reaches_a_client_as_one_message_per_signal_in_order(
    api: ApiServer, db: Conn
) -> None:
    async with connect(api.ws_url, max_queue=None) as ws:
        assert (await receive(ws))["type"] == "connected"
        live = _rows(BATCH)
        mixed = live[:200] + _rows(20, run_id="backtest-9") + live[200:]
        await asyncio.to_thread(insert_signals, db, pd.DataFrame(mixed))
        got = [(await next_of_type(ws, "signal"))["data"]["id"] for _ in range(BATCH)]
        assert got == [str(r["id"]) for r in live]
        # nothing more: the answer to a ping is the next message after the last signal
        await ws.send(json.dumps({"type": "ping"}))
        follow = await receive(ws)
        while follow["type"] == "status":
            follow = await receive(ws)
        assert follow["type"] == "keepalive"

"""A steadily slow /ws/feed client: it always gets a 1013 close frame saying how much it
lost and where to resume, and `since` gives it back everything it missed."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import httpx
import psycopg
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.api.conftest import api_settings
from tests.api.server import ApiServer
from tests.api.test_feed import _tiny_receive_buffer_socket
from tests.utils.signals import insert_signals, random_signal

Conn = psycopg.Connection[Any]
REASON = re.compile(r"too slow: (\d+) messages dropped; resume with since=(\S+)$")


async def test_slow_reader_gets_1013_with_count_and_resumes_without_loss(
    database_url: str, db: Conn
) -> None:
    with ApiServer(api_settings(database_url, ws_queue_size=16)) as server:
        slow = await connect(
            server.ws_url,
            sock=_tiny_receive_buffer_socket(server.ws_url),
            max_queue=1,
            compression=None,
        )
        got: set[str] = set()

        async def read_slowly() -> None:
            # keeps reading the whole time, just slower than signals arrive
            try:
                while True:
                    message = json.loads(await slow.recv())
                    if message["type"] == "signal":
                        got.add(message["data"]["id"])
                    await asyncio.sleep(0.005)
            except ConnectionClosed:
                return

        reader = asyncio.create_task(read_slowly())
        inserted: set[str] = set()
        for _ in range(10):
            rows = [random_signal() for _ in range(500)]
            await asyncio.to_thread(insert_signals, db, rows)
            inserted |= {str(r["id"]) for r in rows}
            await asyncio.sleep(0.1)
        await asyncio.wait_for(reader, 60)  # the close frame got through to a reader
        assert slow.close_code == 1013
        match = REASON.match(slow.close_reason or "")
        assert match, slow.close_reason
        dropped, since = int(match.group(1)), match.group(2)
        assert dropped > 0 and got < inserted
        async with httpx.AsyncClient(base_url=server.url) as http:
            text = (await http.get("/metrics")).text
        counted = float(re.search(r"^ws_messages_dropped_total (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]
        assert counted >= dropped
        # reconnect with the advertised `since`: everything missed comes back
        async with connect(f"{server.ws_url}?since={since}", max_size=None) as again:
            while not inserted <= got:
                message = json.loads(await asyncio.wait_for(again.recv(), 10))
                if message["type"] == "signal":
                    got.add(message["data"]["id"])
        assert inserted <= got

"""Outages: a database that is down gives 503 JSON; a lost LISTEN connection recovers."""

from __future__ import annotations

import json
from typing import Any

import httpx
import psycopg
from websockets.asyncio.client import connect

from signalengine.api.feed import LISTEN_APPLICATION_NAME
from tests.api.conftest import api_settings
from tests.api.server import ApiServer, free_port
from tests.api.test_feed import next_of_type, signal_ids
from tests.utils.signals import create_random_signal

Conn = psycopg.Connection[Any]


def test_a_database_that_is_down_gives_503_json(database_url: str) -> None:
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/none?connect_timeout=1"
    settings = api_settings(nowhere, api_db_timeout_seconds=0.5)
    with ApiServer(settings, wait_healthy=False) as server:
        health = httpx.get(f"{server.url}/health", timeout=10)
        assert health.status_code == 503
        assert health.json()["status"] == "degraded" and health.json()["database"] is False
        response = httpx.get(f"{server.url}/signals", timeout=15)
        assert response.status_code == 503
        assert response.json() == {"detail": "database unavailable"}


async def test_the_feed_recovers_signals_stored_while_listen_was_down(
    api: ApiServer, db: Conn
) -> None:
    async with connect(api.ws_url) as ws:
        assert json.loads(await ws.recv())["type"] == "connected"
        first = create_random_signal(db)
        await signal_ids(ws, {str(first["id"])})
        killed = db.execute(
            "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity"
            " WHERE application_name = %s AND datname = current_database()",
            [LISTEN_APPLICATION_NAME],
        ).fetchone()
        assert killed is not None and killed["n"] >= 1
        missed = create_random_signal(db)  # stored while no replica listens
        got = await signal_ids(ws, {str(missed["id"])})
        assert got.count(str(missed["id"])) == 1
        later = create_random_signal(db)  # and live delivery works again
        await signal_ids(ws, {str(later["id"])})
        await ws.send(json.dumps({"type": "ping"}))
        await next_of_type(ws, "keepalive")

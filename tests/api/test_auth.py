"""With `api_token` set: REST needs the bearer token, WebSocket closes 1008 without it."""

from __future__ import annotations

import json

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.api.conftest import API_TOKEN
from tests.api.server import ApiServer

PROTECTED = [
    "/signals",
    "/signals/00000000-0000-0000-0000-000000000000",
    "/klines/BTCUSDT",
    "/features/BTCUSDT",
    "/performance/stats",
    "/performance/by-symbol",
    "/performance/equity",
    "/performance/feature-importance",
    "/metrics",
    "/metrics/legacy",
]


@pytest.mark.parametrize("path", PROTECTED)
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {API_TOKEN}"}],
    ids=["none", "wrong", "basic"],
)
def test_rest_without_the_token_is_401_json(
    secured_api: ApiServer, path: str, headers: dict[str, str]
) -> None:
    response = httpx.get(secured_api.url + path, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"detail": "missing or invalid bearer token"}
    assert response.headers["www-authenticate"] == "Bearer"


def test_rest_with_the_token_works(secured_api: ApiServer) -> None:
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    assert httpx.get(f"{secured_api.url}/signals", headers=headers).status_code == 200
    assert httpx.get(f"{secured_api.url}/metrics", headers=headers).status_code == 200


@pytest.mark.parametrize("path", ["/health", "/dashboard", "/dashboard_realtime.html"])
def test_health_and_dashboard_stay_open(secured_api: ApiServer, path: str) -> None:
    assert httpx.get(secured_api.url + path).status_code == 200


@pytest.mark.parametrize("query", ["", "?token=wrong"])
async def test_websocket_without_the_token_closes_1008(secured_api: ApiServer, query: str) -> None:
    async with connect(secured_api.ws_url + query) as ws:
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    assert ws.close_code == 1008


async def test_websocket_token_in_query_or_header(secured_api: ApiServer) -> None:
    async with connect(f"{secured_api.ws_url}?token={API_TOKEN}") as ws:
        assert json.loads(await ws.recv())["type"] == "connected"
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    async with connect(secured_api.ws_url, additional_headers=headers) as ws:
        assert json.loads(await ws.recv())["type"] == "connected"

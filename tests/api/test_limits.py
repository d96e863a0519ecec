"""Header limits (431 before the app) and a token that never reaches a log line."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import httpx
import websockets

from tests.api.conftest import API_TOKEN
from tests.utils.net import free_port
from tests.utils.processes import running, signalengine, stop, wait_http


def _raw_request(port: int, head: bytes) -> bytes:
    """Send a raw request head; what came back before the server closed (b"" if reset)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(head)
        except OSError:  # closed on us mid-send: also a refusal
            pass
        chunks = []
        try:
            while data := sock.recv(65536):
                chunks.append(data)
        except OSError:
            pass
    return b"".join(chunks)


def test_a_1_mb_header_gets_431(api) -> None:  # type: ignore[no-untyped-def]
    port = int(api.url.rsplit(":", 1)[1])
    big = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1024 * 1024) + b"\r\n\r\n"
    answer = _raw_request(port, big)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431")
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(200))
    answer = _raw_request(port, b"GET /health HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431")
    # ordinary requests still pass
    assert httpx.get(f"{api.url}/health", headers={"X-Small": "a" * 4000}).status_code in (200, 503)


def test_token_never_appears_in_the_logs(database_url, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    env = {
        **os.environ,
        "SIGNALENGINE_DATABASE_URL": database_url,
        "SIGNALENGINE_API_TOKEN": API_TOKEN,
    }
    log = tmp_path / "api.log"
    proc = signalengine(["api", "--port", str(port)], env=env, log=log)
    base = f"http://127.0.0.1:{port}"
    with running([proc]):
        wait_http(f"{base}/health", timeout=30, proc=proc)
        bearer = {"Authorization": f"Bearer {API_TOKEN}"}
        assert httpx.get(f"{base}/signals", headers=bearer).status_code == 200
        assert httpx.get(f"{base}/dashboard", params={"token": API_TOKEN}).status_code == 200
        assert httpx.get(f"{base}/signals", params={"token": API_TOKEN}).status_code == 401

        async def feeds() -> None:
            ws = f"ws://127.0.0.1:{port}/ws/feed"
            async with websockets.connect(
                ws,
                subprotocols=["signalengine.bearer", API_TOKEN],  # type: ignore[list-item]
            ) as conn:
                assert '"connected"' in str(await conn.recv())
                assert conn.subprotocol == "signalengine.bearer"
            async with websockets.connect(f"{ws}?token={API_TOKEN}") as conn:  # old clients
                assert '"connected"' in str(await conn.recv())

        asyncio.run(feeds())
        stop(proc)
    text = log.read_text()
    assert "/ws/feed" in text and "/dashboard" in text  # the requests were logged ...
    assert API_TOKEN not in text  # ... without the token
    assert "token=***" in text


# The README's "open by design" list; every other GET route needs the token.
OPEN_BY_DESIGN = {
    "/health",
    "/dashboard",
    "/dashboard_realtime.html",
    "/docs",
    "/openapi.json",
}


def test_only_the_documented_routes_are_open(secured_api) -> None:  # type: ignore[no-untyped-def]
    schema = httpx.get(f"{secured_api.url}/openapi.json").json()
    fill = {"{symbol}": "BTCUSDT", "{signal_id}": "00000000-0000-0000-0000-000000000000"}
    paths = set(OPEN_BY_DESIGN)
    for path, operations in schema["paths"].items():
        if "get" in operations:
            for key, value in fill.items():
                path = path.replace(key, value)
            paths.add(path)
    assert "/webhooks/deliveries" in paths and "/signals" in paths
    for path in sorted(paths):
        status = httpx.get(f"{secured_api.url}{path}").status_code
        if path in OPEN_BY_DESIGN:
            assert status != 401, path
        else:
            assert status == 401, path

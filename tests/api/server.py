"""A real uvicorn server running the API in a background thread, on a free port."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from types import TracebackType
from typing import Any

import httpx
import uvicorn

from signalengine.api.limits import server_options
from signalengine.api.main import WS_MAX_MESSAGE_BYTES, create_app
from signalengine.core.config import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ApiServer:
    """`with ApiServer(settings) as server:` serves at `server.url` until the block ends.

    Entering waits until the lifespan ran and the replica LISTENs (/health is ok), so a
    signal inserted right after is delivered; `wait_healthy=False` waits for startup only.
    """

    def __init__(
        self, settings: Settings, *, startup_timeout: float = 15.0, wait_healthy: bool = True
    ) -> None:
        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws/feed"
        self._startup_timeout = startup_timeout
        self._wait_healthy = wait_healthy
        config = uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            ws_max_size=WS_MAX_MESSAGE_BYTES,
            lifespan="on",
            **server_options(),  # the header limits `signalengine api` runs with
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name=f"api-{self.port}", daemon=True)

    @property
    def app(self) -> Any:
        """The FastAPI application this server runs (tests read its state)."""
        return self._server.config.app

    def _run(self) -> None:
        asyncio.run(self._server.serve())

    def start(self) -> ApiServer:
        self._thread.start()
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            if self._server.started and not self._wait_healthy:
                return self
            if self._server.started:
                try:
                    if httpx.get(f"{self.url}/health", timeout=2).json().get("status") == "ok":
                        return self
                except httpx.HTTPError:
                    pass
            if not self._thread.is_alive():
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"API server on port {self.port} did not become healthy")

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=15)

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

"""API fixtures: real uvicorn servers (one open, one with a token) on the session's database."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from signalengine.core.config import Settings
from tests.api.server import ApiServer

API_TOKEN = "test-token-0123456789"


def api_settings(database_url: str, **overrides: object) -> Settings:
    """Settings for a test replica: fast status/keepalive periods."""
    values: dict[str, object] = {
        "database_url": database_url,
        "ws_status_seconds": 0.5,
        "ws_keepalive_seconds": 1.0,
        "api_token": None,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def api(database_url: str) -> Iterator[ApiServer]:
    """An open API replica for the whole session."""
    with ApiServer(api_settings(database_url)) as server:
        yield server


@pytest.fixture(scope="session")
def secured_api(database_url: str) -> Iterator[ApiServer]:
    """A replica that requires `Authorization: Bearer API_TOKEN`."""
    with ApiServer(api_settings(database_url, api_token=API_TOKEN)) as server:
        yield server


@pytest.fixture
def client(api: ApiServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.url, timeout=10) as http:
        yield http

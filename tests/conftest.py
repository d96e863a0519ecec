"""Shared fixtures: a fresh PostgreSQL database per test session, dropped at the end.

The TimescaleDB fixtures (real server or PGlite) live in tests/utils/timescale.py.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

pytest_plugins = ("tests.utils.timescale",)

# Nothing the tests start may phone home.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

# Tests never read the demo's state (the checkout's .state/: its MLflow store, the running
# stack's URLs, its database): every test process gets a state dir and MLflow store of its
# own, inherited by the processes it starts.
TEST_STATE_DIR = Path(tempfile.mkdtemp(prefix="signalengine-test-state-"))
atexit.register(shutil.rmtree, TEST_STATE_DIR, ignore_errors=True)
os.environ["SIGNALENGINE_STATE_DIR"] = str(TEST_STATE_DIR)
for _name in ("SIGNALENGINE_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI"):
    os.environ.pop(_name, None)

_LOCAL_PG = "postgresql://postgres@127.0.0.1:5432/postgres"


def _server_url(tmp_root: Path) -> str:
    """The test server: SIGNALENGINE_TEST_DATABASE_URL, local PostgreSQL, else embedded."""
    explicit = os.environ.get("SIGNALENGINE_TEST_DATABASE_URL")
    if explicit:
        return explicit
    with socket.socket() as sock:
        sock.settimeout(0.5)
        if sock.connect_ex(("127.0.0.1", 5432)) == 0:
            return _LOCAL_PG
    from signalengine.core.embedded_pg import ensure_embedded_postgres

    return ensure_embedded_postgres(tmp_root / "embedded-pg", port=54339).url


def _with_dbname(url: str, dbname: str) -> str:
    return psycopg.conninfo.make_conninfo(url, dbname=dbname)


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated database of our own for this run."""
    from signalengine.core.migrate import upgrade
    from signalengine.core.timescale import backend
    from tests.utils.timescale import pause_policies

    server = _server_url(tmp_path_factory.mktemp("pg"))
    name = f"signalengine_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _with_dbname(server, name)
    upgrade(url)
    with psycopg.connect(url, autocommit=True) as conn:
        if backend(conn).timescale:  # SIGNALENGINE_TEST_DATABASE_URL on TimescaleDB
            pause_policies(conn)
    os.environ["SIGNALENGINE_DATABASE_URL"] = url
    yield url
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[dict]]:  # type: ignore[type-arg]
    """A connection to the test database; tables written by a test, and every timeframe
    relation (4h, 1d ... included, on either backend), are emptied after it."""
    from psycopg.rows import dict_row

    from tests.utils.tables import empty_database

    with psycopg.connect(database_url, row_factory=dict_row, autocommit=True) as conn:
        yield conn
        empty_database(conn)

"""Task tests: `kline_db` runs a test on plain PostgreSQL and on TimescaleDB.

The TimescaleDB fixtures themselves (real server or PGlite) are in tests/utils/timescale.py.
"""

from __future__ import annotations

import psycopg
import pytest


@pytest.fixture(params=["postgresql", "timescaledb"])
def kline_db(request: pytest.FixtureRequest) -> psycopg.Connection[dict]:  # type: ignore[type-arg]
    """Each test using it runs on the suite's database and on TimescaleDB (real or PGlite)."""
    name = "db" if request.param == "postgresql" else "timescale_db"
    conn: psycopg.Connection[dict] = request.getfixturevalue(name)  # type: ignore[type-arg]
    return conn

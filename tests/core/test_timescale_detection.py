"""Whether TimescaleDB may be used is decided before `CREATE EXTENSION` is ever sent.

On a server that ships the extension without preloading it, `CREATE EXTENSION
timescaledb` is FATAL and drops the connection; such a server must stay on plain
PostgreSQL with one log line saying why. The decision itself is tested everywhere (pure
cases, and a plain server that has no extension at all); the real not-preloaded server
is used when SIGNALENGINE_TEST_TIMESCALE_NOT_PRELOADED_URL names one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from signalengine.core.timescale import (
    availability,
    backend,
    decide_availability,
    preloads_timescaledb,
    upgrade_timescale,
)
from tests.utils.timescale import NOT_PRELOADED_URL_ENV, create_database, drop_database

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("timescaledb", True),
        ("pg_stat_statements, timescaledb", True),
        ("'$libdir/timescaledb.so'", True),
        ('"timescaledb"', True),
        ("/usr/lib/postgresql/15/lib/timescaledb", True),
        ("", False),
        ("pg_stat_statements", False),
        ("timescaledb_toolkit", False),
        ("timescaledb-2.28.3", False),  # a versioned module is not the loader
    ],
)
def test_preload_list_parsing(setting: str, expected: bool) -> None:
    assert preloads_timescaledb(setting) is expected


def test_decision_cases() -> None:
    def usable(**kw: bool | None) -> bool:
        args: dict[str, bool | None] = {
            "available": True,
            "preloaded": False,
            "loader_active": False,
            "wasm": False,
        }
        args.update(kw)
        return decide_availability(**args).usable  # type: ignore[arg-type]

    assert not usable(available=False, preloaded=True)
    assert usable(preloaded=True)
    assert usable(preloaded=None, loader_active=True)  # a role that may not read the list
    assert usable(wasm=True)  # PGlite loads extensions itself
    assert not usable()
    assert not usable(preloaded=None)
    reason = decide_availability(
        available=True, preloaded=False, loader_active=False, wasm=False
    ).reason
    assert "not preloaded" in reason and "shared_preload_libraries" in reason


def test_a_plain_server_is_detected_without_trying(plain_db: psycopg.Connection[dict]) -> None:  # type: ignore[type-arg]
    found = availability(plain_db)
    assert not found.usable
    # 5432 here has no extension files; a server that has them unloaded is the other case
    assert found.reason.startswith(("the timescaledb extension is not installed", "timescaledb is"))
    assert upgrade_timescale(plain_db) == []
    assert not plain_db.broken and plain_db.execute("SELECT 1 AS one").fetchone() == {"one": 1}


def test_the_timescaledb_server_is_usable(timescale_db: psycopg.Connection[dict]) -> None:  # type: ignore[type-arg]
    assert availability(timescale_db).usable


@pytest.fixture
def not_preloaded_url() -> Iterator[str]:
    server = os.environ.get(NOT_PRELOADED_URL_ENV)
    if not server:
        pytest.skip(
            f"{NOT_PRELOADED_URL_ENV} is not set (a server with the extension installed but"
            " not preloaded); the decision is tested above without it"
        )
    url = create_database(server, "signalengine_np_test")
    yield url
    drop_database(url)


def test_db_upgrade_where_timescaledb_is_installed_but_not_preloaded(
    not_preloaded_url: str, tmp_path: Path
) -> None:
    with psycopg.connect(not_preloaded_url) as conn:
        found = availability(conn)
        assert not found.usable and "not preloaded" in found.reason
    env = {**os.environ, "SIGNALENGINE_DATABASE_URL": not_preloaded_url}
    done = subprocess.run(
        [sys.executable, "-m", "signalengine", "db", "upgrade"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["applied"]
    why = [line for line in done.stderr.splitlines() if line.strip()]
    assert why == [found.reason], done.stderr  # one line, and it says why
    with psycopg.connect(not_preloaded_url, row_factory=psycopg.rows.dict_row) as conn:
        assert not backend(conn).timescale
        kinds = conn.execute(
            "SELECT relname, relkind::text FROM pg_class WHERE relname IN"
            " ('klines', 'klines_5m', 'klines_15m', 'klines_1h') ORDER BY relname"
        ).fetchall()
        assert {r["relkind"] for r in kinds} == {"r"} and len(kinds) == 4
        installed = conn.execute(
            "SELECT count(*) AS n FROM pg_extension WHERE extname = 'timescaledb'"
        ).fetchone()
        assert installed == {"n": 0}

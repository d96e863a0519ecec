"""TimescaleDB for the tests (a pytest plugin, loaded by tests/conftest.py).

Two tiers, same tests:

- real: `SIGNALENGINE_TEST_TIMESCALE_URL` names a server that preloads TimescaleDB (or,
  without it, `SIGNALENGINE_TEST_DATABASE_URL` does). Every TimescaleDB test runs there,
  in a database of its own that is dropped at the end; several connections at once.
- PGlite (default): the real extension (2.23) inside PGlite (tools/pglite), one client
  connection at a time (later ones wait in line).

Policy jobs are paused in test databases so that the tests decide when a policy runs
(`run_refresh_policies`, i.e. `CALL run_job`), including in the middle of concurrent
writes. `plain_url` is a plain-PostgreSQL database whatever the tiers are, for the tests
that are about staying plain.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row, tuple_row

from tests.utils.tables import empty_database

TIMESCALE_URL_ENV = "SIGNALENGINE_TEST_TIMESCALE_URL"
NOT_PRELOADED_URL_ENV = "SIGNALENGINE_TEST_TIMESCALE_NOT_PRELOADED_URL"
PGLITE_DIR = Path(__file__).resolve().parents[2] / "tools" / "pglite"
START_TIMEOUT_SECONDS = 90.0
_POLICIES = ("policy_refresh_continuous_aggregate", "policy_compression", "policy_retention")
Conn = psycopg.Connection[dict[str, Any]]


@dataclass(frozen=True)
class TimescaleServer:
    """Where the TimescaleDB tests run."""

    url: str
    real: bool  # several connections at once; False: PGlite, one client at a time


def usable(url: str) -> bool:
    """Whether the server at `url` answers and can run TimescaleDB."""
    from signalengine.core.timescale import availability

    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            return availability(conn).usable
    except psycopg.OperationalError:
        return False


def with_dbname(url: str, dbname: str) -> str:
    return psycopg.conninfo.make_conninfo(url, dbname=dbname)


def create_database(server: str, prefix: str) -> str:
    """A new empty database on `server`; returns its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return with_dbname(server, name)


def drop_database(url: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    with psycopg.connect(with_dbname(url, "postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pause_policies(conn: psycopg.Connection[Any]) -> None:
    """Unschedule every policy job of this database (`run_job` still runs them)."""
    conn.execute(
        "SELECT alter_job(job_id, scheduled => false) FROM timescaledb_information.jobs"
        " WHERE proc_name = ANY(%s) AND scheduled",
        (list(_POLICIES),),
    )


def refresh_jobs(conn: psycopg.Connection[Any]) -> list[int]:
    """Job ids of the refresh policies, smallest timeframe first."""
    from signalengine.core.timescale_objects import aggregate_relation, aggregate_timeframes

    order = {aggregate_relation(tf): i for i, tf in enumerate(aggregate_timeframes(conn))}
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(
            "SELECT job_id, hypertable_name FROM timescaledb_information.jobs"
            " WHERE proc_name = 'policy_refresh_continuous_aggregate'"
            " AND hypertable_schema = current_schema()"
        ).fetchall()
    return [job for job, name in sorted(rows, key=lambda r: order.get(r[1], len(order)))]


def run_refresh_policies(conn: psycopg.Connection[Any], *, attempts: int = 200) -> int:
    """Run every refresh policy now (`CALL run_job`), bottom-up, as the scheduler would.

    A policy meeting a writer's refresh of an overlapping window fails with
    LockNotAvailable, as a scheduled run would, and is tried again (up to `attempts`
    times each). Needs an autocommit connection; returns how many runs were busy.
    """
    busy = 0
    for job in refresh_jobs(conn):
        for _ in range(attempts):
            try:
                conn.execute("CALL run_job(%s)", (job,))
                break
            except psycopg.errors.LockNotAvailable:
                busy += 1
                time.sleep(0.05)
        else:
            raise AssertionError(f"refresh job {job} stayed busy for {attempts} attempts")
    return busy


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def pglite_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a fresh in-memory PGlite with TimescaleDB (one client at a time)."""
    assert shutil.which("node") and shutil.which("npm"), "Node.js runs TimescaleDB in PGlite"
    if not (PGLITE_DIR / "node_modules").is_dir():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=PGLITE_DIR,
            check=True,
            capture_output=True,
            timeout=300,
        )
    port = _free_port()
    log = tmp_path_factory.mktemp("pglite") / "server.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            ["node", "server.mjs", str(port)], cwd=PGLITE_DIR, stdout=out, stderr=subprocess.STDOUT
        )
    # PGlite wants some password; it checks none.
    url = f"postgresql://postgres:pglite@127.0.0.1:{port}/postgres?sslmode=disable"
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"PGlite exited early:\n{log.read_text()}")
            try:
                psycopg.connect(url, connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture(scope="session")
def timescale_server(request: pytest.FixtureRequest) -> TimescaleServer:
    """The real server when one is configured, PGlite otherwise."""
    explicit = os.environ.get(TIMESCALE_URL_ENV)
    if explicit:
        assert usable(explicit), f"{TIMESCALE_URL_ENV} must name a server preloading TimescaleDB"
        return TimescaleServer(explicit, real=True)
    suite = os.environ.get("SIGNALENGINE_TEST_DATABASE_URL")
    if suite and usable(suite):
        return TimescaleServer(suite, real=True)
    return TimescaleServer(request.getfixturevalue("pglite_url"), real=False)


@pytest.fixture
def real_timescale(timescale_server: TimescaleServer) -> TimescaleServer:
    """The real server; skips (before any costlier fixture) on PGlite, whose single
    connection cannot serve a test's processes at once. Such tests name the PGlite or
    plain-PostgreSQL test that covers the same ground."""
    if not timescale_server.real:
        pytest.skip(
            f"needs a multi-connection TimescaleDB server: set {TIMESCALE_URL_ENV}"
            " (PGlite serves one client connection at a time)"
        )
    return timescale_server


@pytest.fixture(scope="session")
def timescale_url(timescale_server: TimescaleServer) -> Iterator[str]:
    """A migrated TimescaleDB database (plain migrations, then sql/timescale), policies paused."""
    from signalengine.core.migrate import upgrade

    url = (
        create_database(timescale_server.url, "signalengine_ts_test")
        if timescale_server.real
        else timescale_server.url
    )
    try:
        upgrade(url)
        with psycopg.connect(url, autocommit=True) as conn:
            pause_policies(conn)
        yield url
    finally:
        if timescale_server.real:
            drop_database(url)


@pytest.fixture
def timescale_db(timescale_url: str) -> Iterator[Conn]:
    """A connection to the TimescaleDB test database; every table it wrote emptied after."""
    with psycopg.connect(timescale_url, row_factory=dict_row, autocommit=True) as conn:
        pause_policies(conn)  # a test that reset the policies got scheduled jobs back
        yield conn
        pause_policies(conn)
        empty_database(conn)


@pytest.fixture
def timescale_clean(timescale_url: str) -> Iterator[str]:
    """The TimescaleDB URL, emptied after the test, for tests that open their own
    connections one after another (no connection is held meanwhile: PGlite serves one
    client at a time) or start processes."""
    yield timescale_url
    with psycopg.connect(timescale_url, autocommit=True) as conn:
        pause_policies(conn)
        empty_database(conn)


@pytest.fixture(scope="session")
def plain_url(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated database on plain PostgreSQL: the suite's own when that is plain, else
    one on 127.0.0.1:5432 (when it answers without TimescaleDB) or an embedded server."""
    from signalengine.core.migrate import upgrade

    if not usable(database_url):
        yield database_url
        return
    local = "postgresql://postgres@127.0.0.1:5432/postgres"
    embedded = None
    if not _answers(5432) or usable(local):
        from signalengine.core.embedded_pg import ensure_embedded_postgres

        embedded = ensure_embedded_postgres(tmp_path_factory.mktemp("plain-pg"), port=54341)
        local = embedded.url
    url = create_database(local, "signalengine_plain_test")
    try:
        upgrade(url)
        yield url
    finally:
        drop_database(url)
        if embedded is not None and embedded.started:
            embedded.stop()


def _answers(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def plain_db(plain_url: str) -> Iterator[Conn]:
    """A connection to the plain-PostgreSQL database (tests here only read the schema)."""
    with psycopg.connect(plain_url, row_factory=dict_row, autocommit=True) as conn:
        yield conn

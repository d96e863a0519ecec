"""TimescaleDB for the tests: the real extension inside PGlite (tools/pglite), one per session."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

PGLITE_DIR = Path(__file__).resolve().parents[2] / "tools" / "pglite"
START_TIMEOUT_SECONDS = 90.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _install() -> None:
    if (PGLITE_DIR / "node_modules").is_dir():
        return
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund"],
        cwd=PGLITE_DIR,
        check=True,
        capture_output=True,
        timeout=300,
    )


@pytest.fixture(scope="session")
def pglite_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a fresh in-memory PGlite with TimescaleDB (one client at a time)."""
    assert shutil.which("node") and shutil.which("npm"), "Node.js runs TimescaleDB in PGlite"
    _install()
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
def timescale_url(pglite_url: str) -> str:
    """The PGlite database, migrated: plain migrations, then the TimescaleDB ones."""
    from signalengine.core.migrate import upgrade
    from signalengine.core.timescale import upgrade_timescale

    upgrade(pglite_url)
    with psycopg.connect(pglite_url, autocommit=True) as conn:
        upgrade_timescale(conn)
    return pglite_url


@pytest.fixture
def timescale_db(timescale_url: str) -> Iterator[psycopg.Connection[dict]]:  # type: ignore[type-arg]
    """A connection to the PGlite TimescaleDB; klines and every aggregate emptied after."""
    from psycopg.rows import dict_row

    from signalengine.core.timescale import aggregate_timeframes

    with psycopg.connect(timescale_url, row_factory=dict_row, autocommit=True) as conn:
        yield conn
        # Truncating an aggregate also resets its watermark, so the next test starts clean.
        views = ", ".join(f"klines_{tf}" for tf in aggregate_timeframes(conn))
        conn.execute(f"TRUNCATE klines, klines_rejected, {views}")


@pytest.fixture(params=["postgresql", "timescaledb"])
def kline_db(request: pytest.FixtureRequest) -> psycopg.Connection[dict]:  # type: ignore[type-arg]
    """Each test using it runs on plain PostgreSQL and on TimescaleDB (PGlite)."""
    name = "db" if request.param == "postgresql" else "timescale_db"
    conn: psycopg.Connection[dict] = request.getfixturevalue(name)  # type: ignore[type-arg]
    return conn

"""ReconnectingConnection.run: work cut off by a dropped connection runs again on a fresh one."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from signalengine.core.dbconn import ReconnectingConnection


def test_work_is_repeated_on_a_fresh_connection_after_each_drop(database_url, db) -> None:  # type: ignore[no-untyped-def]
    conn_db = ReconnectingConnection(database_url)
    backends: list[int] = []

    async def work(conn: psycopg.Connection) -> int:  # type: ignore[type-arg]
        backends.append(conn.info.backend_pid)
        if len(backends) <= 3:  # the server cuts this very connection, three times running
            db.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
        row = conn.execute("SELECT 41 + 1 AS answer").fetchone()
        assert row is not None
        return int(row["answer"])

    try:
        assert asyncio.run(conn_db.run(work)) == 42
    finally:
        conn_db.close()
    assert len(backends) == 4
    assert len(set(backends)) == 4  # each attempt had a connection of its own


def test_an_error_on_a_live_connection_is_raised_not_retried(database_url) -> None:  # type: ignore[no-untyped-def]
    conn_db = ReconnectingConnection(database_url)
    attempts: list[int] = []

    async def work(conn: psycopg.Connection) -> None:  # type: ignore[type-arg]
        attempts.append(1)
        conn.execute("SET statement_timeout = '50ms'")
        conn.execute("SELECT pg_sleep(1)")  # QueryCanceled: an OperationalError, alive conn

    try:
        with pytest.raises(psycopg.errors.QueryCanceled):
            asyncio.run(conn_db.run(work))
    finally:
        conn_db.close()
    assert attempts == [1]

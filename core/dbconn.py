"""A connection that heals: long-running flows reconnect after the database drops them.

`get()` is for synchronous callers and gives up after a few attempts. `ready()` is for
the async stream: it waits for the database for as long as it takes (capped backoff),
never blocking the event loop (the connect runs in a thread, the waits are
`asyncio.sleep`), and reports the wait in `state` for health checks and gauges.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import psycopg
from psycopg.rows import dict_row

from signalengine.core.db import DbConn
from signalengine.core.errors import TemporaryDatabaseError
from signalengine.core.retry import backoff_seconds

logger = logging.getLogger(__name__)
RECONNECT_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0)
WAIT_BASE_SECONDS = 0.5
WAIT_CAP_SECONDS = 15.0  # longest pause between two connection attempts while waiting
CONNECT_TIMEOUT_SECONDS = 5
T = TypeVar("T")


@dataclass
class DatabaseState:
    """What the connection knows about the database, for `/health`-style reports."""

    connected: bool = False
    waiting_since: float | None = None  # Unix s at which the current outage was noticed
    attempts: int = 0  # failed connection attempts in the current outage
    outages: int = 0  # outages seen since start

    def outage_seconds(self, now: float | None = None) -> float:
        if self.waiting_since is None:
            return 0.0
        return max(0.0, (time.time() if now is None else now) - self.waiting_since)


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


class ReconnectingConnection:
    """Hands out a live connection, reconnecting (with backoff and jitter) when it broke."""

    def __init__(
        self,
        url: str,
        *,
        attempts: int = len(RECONNECT_DELAYS) + 1,
        wait_cap_seconds: float = WAIT_CAP_SECONDS,
        on_state: Callable[[DatabaseState], None] | None = None,
    ) -> None:
        self.url = url
        self.attempts = attempts
        self.wait_cap_seconds = wait_cap_seconds
        self.state = DatabaseState()
        self._on_state = on_state
        self._conn: DbConn | None = None

    def _alive(self) -> DbConn | None:
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        return None

    def _connect(self) -> DbConn:
        conn = psycopg.connect(
            self.url,
            autocommit=True,
            row_factory=dict_row,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
        )
        self._conn = conn
        return conn

    def _report(self, *, connected: bool) -> None:
        state = self.state
        if connected:
            if state.waiting_since is not None:
                logger.warning("database back after %.0f s", state.outage_seconds())
            state.connected, state.waiting_since, state.attempts = True, None, 0
        else:
            if state.waiting_since is None:
                state.waiting_since = time.time()
                state.outages += 1
            state.connected = False
            state.attempts += 1
        if self._on_state is not None:
            self._on_state(state)

    def get(self) -> DbConn:
        """The connection, reconnecting a few times (blocking); for synchronous callers."""
        alive = self._alive()
        if alive is not None:
            return alive
        last_error: Exception | None = None
        for attempt in range(self.attempts):
            try:
                conn = self._connect()
                self._report(connected=True)
                return conn
            except psycopg.OperationalError as error:
                last_error = error
                self._report(connected=False)
                delay = RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)]
                logger.warning("database unreachable (%s); retrying in %.1f s", error, delay)
                time.sleep(delay * random.uniform(0.8, 1.2))
        raise TemporaryDatabaseError(f"database unreachable: {last_error}") from last_error

    async def ready(self) -> DbConn:
        """The connection, waiting for the database as long as it takes (async, never gives up).

        A connection that looks alive is checked with a round trip first, so a server
        restart is noticed here rather than half-way through the caller's work.
        """
        alive = self._alive()
        if alive is not None:
            try:
                await asyncio.to_thread(alive.execute, "SELECT 1")
                return alive
            except psycopg.Error:
                self.close()
        attempt = 0
        while True:
            try:
                conn = await asyncio.to_thread(self._connect)
                self._report(connected=True)
                return conn
            except psycopg.OperationalError as error:
                self._report(connected=False)
                delay = backoff_seconds(attempt, base=WAIT_BASE_SECONDS, cap=self.wait_cap_seconds)
                logger.warning(
                    "database unreachable for %.0f s (%s); next try in %.1f s",
                    self.state.outage_seconds(),
                    _first_line(error),
                    delay,
                )
                attempt += 1
                await asyncio.sleep(delay)

    async def run(self, work: Callable[[DbConn], Awaitable[T]]) -> T:
        """`work` on a live connection, run again on a fresh one each time the database
        drops the connection mid-way, for as long as that takes (like `ready()`).

        A stream task's work is safe to repeat (each step is keyed and idempotent), so a
        connection cut every second still converges; a task-level retry count would give up
        after a few cuts. Errors on a connection that is still alive are raised as they are.
        """
        drops = 0
        while True:
            conn = await self.ready()
            try:
                return await work(conn)
            except psycopg.OperationalError as error:
                if not (conn.broken or conn.closed):
                    raise
                drops += 1
                self.close()
                self.state.outages += 1
                delay = backoff_seconds(
                    min(drops, 3), base=WAIT_BASE_SECONDS, cap=WAIT_BASE_SECONDS * 8
                )
                logger.warning(
                    "database connection lost mid-work (%s; %d in a row); again in %.1f s",
                    _first_line(error),
                    drops,
                    delay,
                )
                await asyncio.sleep(delay)

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass
            self._conn = None

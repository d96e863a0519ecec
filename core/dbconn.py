"""A connection that heals: long-running flows reconnect after the database drops them."""

from __future__ import annotations

import logging
import random
import time

import psycopg
from psycopg.rows import dict_row

from signalengine.core.db import DbConn
from signalengine.core.errors import TemporaryDatabaseError

logger = logging.getLogger(__name__)
RECONNECT_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0)


class ReconnectingConnection:
    """Hands out a live connection, reconnecting (with backoff and jitter) when it broke."""

    def __init__(self, url: str, *, attempts: int = len(RECONNECT_DELAYS) + 1) -> None:
        self.url = url
        self.attempts = attempts
        self._conn: DbConn | None = None

    def get(self) -> DbConn:
        if self._conn is not None and not self._conn.closed and not self._conn.broken:
            return self._conn
        last_error: Exception | None = None
        for attempt in range(self.attempts):
            try:
                self._conn = psycopg.connect(self.url, autocommit=True, row_factory=dict_row)
                return self._conn
            except psycopg.OperationalError as error:
                last_error = error
                delay = RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)]
                logger.warning("database unreachable (%s); retrying in %.1f s", error, delay)
                time.sleep(delay * random.uniform(0.8, 1.2))
        raise TemporaryDatabaseError(f"database unreachable: {last_error}") from last_error

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

"""Database access: resolving the URL, connections and a pool (psycopg 3)."""

from __future__ import annotations

import atexit
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeAlias

import psycopg
from psycopg.rows import dict_row

from signalengine.core.config import Settings, get_settings
from signalengine.core.embedded_pg import ensure_embedded_postgres

# Every connection of the project is opened with `row_factory=dict_row`.
DbConn: TypeAlias = psycopg.Connection[dict[str, Any]]

_embedded_url: str | None = None


def database_url(settings: Settings | None = None) -> str:
    """The configured URL, or the embedded server's (started on first use, stopped at exit)."""
    global _embedded_url
    settings = settings or get_settings()
    if settings.database_url:
        return settings.database_url
    if _embedded_url is None:
        server = ensure_embedded_postgres(settings.state_dir, port=settings.embedded_pg_port)
        if server.started:
            atexit.register(server.stop)
        _embedded_url = server.url
    return _embedded_url


def connect(url: str | None = None, *, autocommit: bool = False) -> DbConn:
    """One connection with dict rows."""
    return psycopg.connect(url or database_url(), autocommit=autocommit, row_factory=dict_row)


@contextmanager
def transaction(url: str | None = None) -> Iterator[DbConn]:
    """A connection inside one transaction, committed on success."""
    with connect(url) as conn, conn.transaction():
        yield conn

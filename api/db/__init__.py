"""Database reads of the API: plain async functions taking a keyword-only `conn`."""

from __future__ import annotations

from typing import Any, TypeAlias

from psycopg import AsyncConnection

AsyncConn: TypeAlias = AsyncConnection[dict[str, Any]]

__all__ = ["AsyncConn"]

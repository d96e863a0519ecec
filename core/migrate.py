"""Forward-only migrations: apply `sql/NNN_*.sql` in order, once each, recorded in a table."""

from __future__ import annotations

from importlib.resources.abc import Traversable

import psycopg

from signalengine.core.sqlfiles import SQL_DIR, apply_pending
from signalengine.core.sqlfiles import migration_files as numbered_files
from signalengine.core.timescale import upgrade_timescale

# A fixed advisory-lock key so two processes migrating at once serialize instead of racing.
_LOCK_KEY = 7_334_119


def migration_files(sql_dir: Traversable = SQL_DIR) -> list[Traversable]:
    """The plain-PostgreSQL migration files, sorted by their number."""
    return numbered_files(sql_dir)


def upgrade(url: str, *, sql_dir: Traversable = SQL_DIR) -> list[str]:
    """Apply pending migrations; returns the names applied now (empty when up to date)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            applied_now = apply_pending(conn, sql_dir, ledger="schema_migrations")
            applied_now += upgrade_timescale(conn)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now

"""Forward-only migrations: apply `sql/NNN_*.sql` in order, once each, recorded in a table."""

from __future__ import annotations

import hashlib
from importlib.resources.abc import Traversable

import psycopg

from signalengine.core.sqlfiles import SQL_DIR
from signalengine.core.sqlfiles import migration_files as numbered_files
from signalengine.core.timescale import upgrade_timescale

# A fixed advisory-lock key so two processes migrating at once serialize instead of racing.
_LOCK_KEY = 7_334_119


def migration_files(sql_dir: Traversable = SQL_DIR) -> list[Traversable]:
    """The plain-PostgreSQL migration files, sorted by their number."""
    return numbered_files(sql_dir)


def upgrade(url: str, *, sql_dir: Traversable = SQL_DIR) -> list[str]:
    """Apply pending migrations; returns the names applied now (empty when up to date)."""
    applied_now: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " name text PRIMARY KEY, checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {row[0] for row in conn.execute("SELECT name FROM schema_migrations")}
            for path in migration_files(sql_dir):
                if path.name in done:
                    continue
                sql = path.read_text()
                with conn.transaction():
                    conn.execute(sql.encode())
                    conn.execute(
                        "INSERT INTO schema_migrations (name, checksum) VALUES (%s, %s)",
                        (path.name, hashlib.sha256(sql.encode()).hexdigest()),
                    )
                applied_now.append(path.name)
            applied_now += upgrade_timescale(conn)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now

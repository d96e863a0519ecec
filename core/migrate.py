"""Forward-only migrations: apply `sql/NNN_*.sql` in order, once each, recorded in a table."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import psycopg

from core.timescale import upgrade_timescale

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
# A fixed advisory-lock key so two processes migrating at once serialize instead of racing.
_LOCK_KEY = 7_334_119


def migration_files(sql_dir: Path = SQL_DIR) -> list[Path]:
    """Migration files sorted by their number."""
    return sorted(p for p in sql_dir.iterdir() if _NAME.match(p.name))


def upgrade(url: str, *, sql_dir: Path = SQL_DIR) -> list[str]:
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


def upgrade_with_timeframes(url: str, timeframes: list[str]) -> list[str]:
    """`upgrade`, then make sure every configured timeframe has its relation (e.g. 4h, 1d)."""
    from tasks.timeframes import ensure_timeframe_tables

    applied = upgrade(url)
    with psycopg.connect(url, autocommit=True) as conn:
        ensure_timeframe_tables(conn, timeframes)
    return applied

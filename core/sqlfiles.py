"""Where the migrations are: the `signalengine.sql` package data, read with importlib.resources.

Read this way, `db upgrade` finds them whatever the working directory and however the
package is installed (wheel, editable, image).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any

import psycopg
from psycopg.rows import tuple_row

SQL_DIR: Traversable = files("signalengine.sql")
TIMESCALE_SQL_DIR: Traversable = SQL_DIR / "timescale"
_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")

__all__ = ["SQL_DIR", "TIMESCALE_SQL_DIR", "apply_pending", "migration_files"]


def migration_files(sql_dir: Traversable) -> list[Traversable]:
    """The numbered migration files (`NNN_name.sql`) of a folder, sorted by their number."""
    return sorted((p for p in sql_dir.iterdir() if _NAME.match(p.name)), key=lambda p: p.name)


def apply_pending(
    conn: psycopg.Connection[Any],
    sql_dir: Traversable,
    *,
    ledger: str,
    prefix: str = "",
    alongside: Callable[[psycopg.Connection[Any]], object] | None = None,
) -> list[str]:
    """Apply the files of `sql_dir` not yet recorded in table `ledger`, in order.

    Each file runs in one transaction together with its ledger row (name `prefix + file`,
    sha256 checksum) and with `alongside(conn)`, so a failed file leaves nothing half
    applied. `conn` must be in autocommit mode. Returns the names applied now.
    """
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {ledger} ("
        " name text PRIMARY KEY, checksum text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )
    with conn.cursor(row_factory=tuple_row) as cur:
        done = {row[0] for row in cur.execute(f"SELECT name FROM {ledger}")}
    applied: list[str] = []
    for path in migration_files(sql_dir):
        name = prefix + path.name
        if name in done:
            continue
        text = path.read_text()
        with conn.transaction():
            conn.execute(text.encode())
            if alongside is not None:
                alongside(conn)
            conn.execute(
                f"INSERT INTO {ledger} (name, checksum) VALUES (%s, %s)",
                (name, hashlib.sha256(text.encode()).hexdigest()),
            )
        applied.append(name)
    return applied

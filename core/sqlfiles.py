"""Where the migrations are: the `signalengine.sql` package data, read with importlib.resources.

Read this way, `db upgrade` finds them whatever the working directory and however the
package is installed (wheel, editable, image).
"""

from __future__ import annotations

import re
from importlib.resources import files
from importlib.resources.abc import Traversable

SQL_DIR: Traversable = files("signalengine.sql")
TIMESCALE_SQL_DIR: Traversable = SQL_DIR / "timescale"
_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")

__all__ = ["SQL_DIR", "TIMESCALE_SQL_DIR", "migration_files"]


def migration_files(sql_dir: Traversable) -> list[Traversable]:
    """The numbered migration files (`NNN_name.sql`) of a folder, sorted by their number."""
    return sorted((p for p in sql_dir.iterdir() if _NAME.match(p.name)), key=lambda p: p.name)

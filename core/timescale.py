"""TimescaleDB backend: whether the server can have it, which backend a connection is on,
and its migrations (`sql/timescale/NNN_*.sql`), aggregates and policies.

The backend is chosen at migration time. TimescaleDB is used only when the server has
the extension *and* preloads its library (`shared_preload_libraries`): a server that
ships the files without preloading them answers `CREATE EXTENSION timescaledb` with a
FATAL error that drops the connection, so that is checked first and such a server stays
on plain PostgreSQL with one log line saying why. Then `klines` becomes a hypertable,
each higher timeframe a hierarchical real-time continuous aggregate `klines_<tf>_cagg`
and `klines_<tf>` an exact view over it (core.timescale_objects); refreshes after writes
are core.timescale_refresh, policies core.timescale_policies. On plain PostgreSQL nothing
here changes the schema; relation names and columns are the same on both backends.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from signalengine.core.config import Settings, get_settings
from signalengine.core.sqlfiles import TIMESCALE_SQL_DIR, apply_pending
from signalengine.core.sqlfiles import migration_files as numbered_files
from signalengine.core.timescale_objects import (
    aggregate_timeframes,
    ensure_exact_views,
    ensure_timeframe_aggregates,
)
from signalengine.core.timescale_policies import set_policies
from signalengine.core.timescale_refresh import sweep_pending

__all__ = [
    "Availability",
    "Backend",
    "aggregate_timeframes",
    "availability",
    "backend",
    "decide_availability",
    "ensure_timeframe_aggregates",
    "migration_files",
    "preloads_timescaledb",
    "upgrade_timescale",
]

logger = logging.getLogger(__name__)

Connection = psycopg.Connection[Any]


@dataclass(frozen=True)
class Backend:
    """What the server behind a connection can do; see `backend`."""

    timescale: bool  # klines is a hypertable, timeframes are continuous aggregates
    copy: bool  # COPY FROM STDIN works (not on PGlite, the WASM build used in tests)
    pending: bool  # klines_pending exists (the exact views of sql/timescale/003)


_BACKENDS: weakref.WeakKeyDictionary[Connection, Backend] = weakref.WeakKeyDictionary()


def backend(conn: Connection) -> Backend:
    """The backend of this connection, probed once and remembered for its lifetime.

    TimescaleDB counts only when the timescale migrations ran (the extension is there and
    `klines_5m` is no longer a plain table), so a server that merely ships the extension
    keeps the plain-PostgreSQL upkeep until it is migrated.
    """
    known = _BACKENDS.get(conn)
    if known is None:
        with conn.cursor(row_factory=tuple_row) as cur:
            row = cur.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')"
                " AND coalesce((SELECT relkind <> 'r' FROM pg_class"
                "               WHERE oid = to_regclass('klines_5m')), false),"
                " version() ILIKE '%emscripten%', to_regclass('klines_pending') IS NOT NULL"
            ).fetchone()
        timescale, wasm, pending = row if row else (False, False, False)
        known = Backend(timescale=bool(timescale), copy=not wasm, pending=bool(pending))
        _BACKENDS[conn] = known
    return known


@dataclass(frozen=True)
class Availability:
    """Whether `CREATE EXTENSION timescaledb` may be run here, and why (for the log)."""

    usable: bool
    reason: str


def preloads_timescaledb(setting: str) -> bool:
    """Whether a `shared_preload_libraries` value names the TimescaleDB loader.

    The value is a comma-separated list; entries may be quoted, carry `$libdir/` or a
    directory, or a `.so` suffix (`'$libdir/timescaledb.so'`).
    """
    for entry in setting.split(","):
        name = entry.strip().strip("'\"").rsplit("/", 1)[-1].removesuffix(".so")
        if name == "timescaledb":
            return True
    return False


def decide_availability(
    *, available: bool, preloaded: bool | None, loader_active: bool, wasm: bool
) -> Availability:
    """The decision of `availability`, from what the server reported.

    `preloaded` is None when `shared_preload_libraries` is hidden from this role (only
    superusers and pg_read_all_settings see it); the loader's own setting
    (`timescaledb.disable_load`) exists in every session of a server that preloads it.
    PGlite (WASM) loads extensions itself and has no preload list.
    """
    if not available:
        return Availability(False, "the timescaledb extension is not installed on this server")
    if wasm or loader_active or preloaded:
        return Availability(True, "timescaledb is available and preloaded")
    return Availability(
        False,
        "timescaledb is installed on this server but not preloaded (it is not in"
        " shared_preload_libraries), so CREATE EXTENSION would fail and drop the"
        " connection; staying on plain PostgreSQL. To use TimescaleDB, add timescaledb"
        " to shared_preload_libraries, restart PostgreSQL and run `signalengine db upgrade`",
    )


def availability(conn: Connection) -> Availability:
    """Whether this server can run TimescaleDB; never creates anything, never fails."""
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'),"
            " (SELECT setting FROM pg_settings WHERE name = 'shared_preload_libraries'),"
            " current_setting('timescaledb.disable_load', true) IS NOT NULL,"
            " version() ILIKE '%emscripten%'"
        ).fetchone()
    assert row is not None
    available, setting, loader_active, wasm = row
    return decide_availability(
        available=bool(available),
        preloaded=None if setting is None else preloads_timescaledb(setting),
        loader_active=bool(loader_active),
        wasm=bool(wasm),
    )


def migration_files(sql_dir: Traversable = TIMESCALE_SQL_DIR) -> list[Traversable]:
    """TimescaleDB migration files sorted by their number."""
    return numbered_files(sql_dir)


def _create_extension(conn: Connection) -> bool:
    found = availability(conn)
    if not found.usable:
        if found.reason.startswith("timescaledb is installed"):
            logger.warning("%s", found.reason)  # the one line saying why
        return False
    try:
        with conn.transaction():
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except psycopg.DatabaseError as error:  # e.g. a role that may not create extensions
        if conn.broken:
            raise
        logger.warning("TimescaleDB unusable, staying on plain PostgreSQL: %s", error)
        return False
    return True


def upgrade_timescale(
    conn: Connection,
    *,
    settings: Settings | None = None,
    sql_dir: Traversable = TIMESCALE_SQL_DIR,
) -> list[str]:
    """After the plain migrations: switch to TimescaleDB if the server has it.

    `conn` must be in autocommit mode. Applies pending `sql/timescale` files (recorded as
    `timescale/NAME` in `timescale_migrations`), each in one transaction together with
    the exact views it makes possible, creates the aggregates of extra configured
    timeframes, (re)sets the policies and sweeps pending ranges left by dead writers.
    Returns the files applied now; [] on plain PostgreSQL, where it changes nothing.
    """
    if not _create_extension(conn):
        return []
    settings = settings or get_settings()
    # each file with the exact views it makes possible: no moment without `klines_<tf>`
    applied = apply_pending(
        conn,
        sql_dir,
        ledger="timescale_migrations",
        prefix="timescale/",
        alongside=ensure_exact_views,
    )
    with conn.transaction():
        ensure_timeframe_aggregates(conn, settings.timeframes)
        set_policies(conn, settings)
    _BACKENDS.pop(conn, None)
    try:  # what dead writers left pending; the upgrade itself is done either way
        sweep_pending(conn)
    except psycopg.Error as error:
        logger.warning("pending aggregate ranges not swept now: %s", error)
    return applied

"""TimescaleDB backend: detection, its migrations (`sql/timescale/NNN_*.sql`) and policies.

The backend is chosen at migration time: when `CREATE EXTENSION IF NOT EXISTS timescaledb`
succeeds, `klines` becomes a hypertable and every timeframe relation (`klines_5m` ...) a
hierarchical, real-time continuous aggregate; otherwise nothing here changes the plain
PostgreSQL schema. Relation names and columns are the same on both backends.

Real-time aggregation serves buckets past an aggregate's last refresh from the level
below, so fresh 1m bars show at once. A bar written *behind* the last refresh (a
backfill) only shows after that range is refreshed again: `refresh_after_write` does
that right after the writer commits, and the refresh policies catch anything else.
Refreshes never go past `now - end_offset`, so live bars always land in the real-time part.
"""

from __future__ import annotations

import hashlib
import logging
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib.resources.abc import Traversable
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

from signalengine.core.config import Settings, get_settings
from signalengine.core.sqlfiles import TIMESCALE_SQL_DIR
from signalengine.core.sqlfiles import migration_files as numbered_files
from signalengine.core.vocabulary import TIMEFRAME_MINUTES, source_timeframe

logger = logging.getLogger(__name__)

# Refresh policies leave the newest END_OFFSET_BUCKETS buckets to real-time aggregation,
# so a late 1m bar of a recently closed bucket never lands in materialized data.
END_OFFSET_BUCKETS = 3
MAX_SCHEDULE = timedelta(hours=1)
_SMALLEST_END_OFFSET = END_OFFSET_BUCKETS * timedelta(
    minutes=min(m for m in TIMEFRAME_MINUTES.values() if m > 1)
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Connection = psycopg.Connection[Any]


@dataclass(frozen=True)
class Backend:
    """What the server behind a connection can do; see `backend`."""

    timescale: bool  # klines is a hypertable, timeframes are continuous aggregates
    copy: bool  # COPY FROM STDIN works (not on PGlite, the WASM build used in tests)


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
                " version() ILIKE '%emscripten%'"
            ).fetchone()
        timescale, wasm = row if row else (False, False)
        known = Backend(timescale=bool(timescale), copy=not wasm)
        _BACKENDS[conn] = known
    return known


def migration_files(sql_dir: Traversable = TIMESCALE_SQL_DIR) -> list[Traversable]:
    """TimescaleDB migration files sorted by their number."""
    return numbered_files(sql_dir)


def _create_extension(conn: Connection) -> bool:
    with conn.cursor(row_factory=tuple_row) as cur:
        available = cur.execute(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
        ).fetchone()
    if available is None:  # plain PostgreSQL: no need to try (and log an error there)
        return False
    try:
        with conn.transaction():
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except psycopg.DatabaseError as error:  # e.g. installed but not preloaded
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
    `timescale/NAME` in `timescale_migrations`), creates the aggregates of extra configured
    timeframes and (re)sets the policies. Returns the files applied now; [] on plain
    PostgreSQL, where it changes nothing.
    """
    if not _create_extension(conn):
        return []
    settings = settings or get_settings()
    conn.execute(
        "CREATE TABLE IF NOT EXISTS timescale_migrations ("
        " name text PRIMARY KEY, checksum text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )
    with conn.cursor(row_factory=tuple_row) as cur:
        done = {row[0] for row in cur.execute("SELECT name FROM timescale_migrations")}
    applied: list[str] = []
    for path in migration_files(sql_dir):
        name = f"timescale/{path.name}"
        if name in done:
            continue
        text = path.read_text()
        with conn.transaction():
            conn.execute(text.encode())
            conn.execute(
                "INSERT INTO timescale_migrations (name, checksum) VALUES (%s, %s)",
                (name, hashlib.sha256(text.encode()).hexdigest()),
            )
        applied.append(name)
    with conn.transaction():
        ensure_timeframe_aggregates(conn, settings.timeframes)
        set_policies(conn, settings)
    _BACKENDS.pop(conn, None)
    return applied


def aggregate_timeframes(conn: Connection) -> list[str]:
    """Timeframes that have a continuous aggregate, smallest first."""
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(
            "SELECT view_name FROM timescaledb_information.continuous_aggregates"
            " WHERE view_schema = current_schema() AND view_name LIKE 'klines\\_%'"
        ).fetchall()
    found = [name.removeprefix("klines_") for (name,) in rows]
    known = [tf for tf in found if tf in TIMEFRAME_MINUTES]
    return sorted(known, key=TIMEFRAME_MINUTES.__getitem__)


def ensure_timeframe_aggregates(conn: Connection, timeframes: list[str]) -> list[str]:
    """Create the aggregate of every configured timeframe that has none; returns those created."""
    available = aggregate_timeframes(conn)
    created: list[str] = []
    for tf in sorted(set(timeframes) - {"1m"}, key=TIMEFRAME_MINUTES.__getitem__):
        if tf in available:
            continue
        source = source_timeframe(tf, available)
        bars = sql.SQL("count(*)::integer") if source == "1m" else sql.SQL("sum(bars)::integer")
        conn.execute(
            sql.SQL(
                "CREATE MATERIALIZED VIEW IF NOT EXISTS {view}"
                " WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS"
                " SELECT exchange, symbol, time_bucket({width}::interval, ts) AS ts,"
                " first(open, ts) AS open, max(high) AS high, min(low) AS low,"
                " last(close, ts) AS close, sum(volume) AS volume, {bars} AS bars"
                " FROM {source} GROUP BY exchange, symbol, time_bucket({width}::interval, ts)"
                " WITH NO DATA"
            ).format(
                view=sql.Identifier(f"klines_{tf}"),
                width=sql.Literal(f"{TIMEFRAME_MINUTES[tf]} minutes"),
                bars=bars,
                source=sql.Identifier("klines" if source == "1m" else f"klines_{source}"),
            )
        )
        available = sorted([*available, tf], key=TIMEFRAME_MINUTES.__getitem__)
        created.append(tf)
    return created


def _width(timeframe: str) -> timedelta:
    return timedelta(minutes=TIMEFRAME_MINUTES[timeframe])


def end_offset(timeframe: str) -> timedelta:
    """How far behind now an aggregate's refreshes stop (the rest is real-time)."""
    return END_OFFSET_BUCKETS * _width(timeframe)


def _job(
    conn: Connection, proc: str, relation: str
) -> tuple[int, dict[str, Any], timedelta] | None:
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(
            "SELECT job_id, config, schedule_interval FROM timescaledb_information.jobs"
            " WHERE proc_name = %s AND hypertable_schema = current_schema()"
            " AND hypertable_name = %s",
            (proc, relation),
        ).fetchone()
    return None if row is None else (int(row[0]), dict(row[1] or {}), row[2])


def _same_interval(conn: Connection, stored: Any, wanted: timedelta | None) -> bool:
    if stored is None or wanted is None:
        return stored is None and wanted is None
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute("SELECT %s::interval = %s::interval", (str(stored), wanted)).fetchone()
    return bool(row and row[0])


def _set_policy(
    conn: Connection,
    *,
    kind: str,
    relation: str,
    wanted: dict[str, timedelta | None] | None,
    schedule: timedelta | None = None,
) -> None:
    """Make the `kind` policy ('compression', 'retention', 'refresh') of a relation match."""
    proc = {
        "compression": "policy_compression",
        "retention": "policy_retention",
        "refresh": "policy_refresh_continuous_aggregate",
    }[kind]
    remove = {
        "compression": "remove_compression_policy",
        "retention": "remove_retention_policy",
        "refresh": "remove_continuous_aggregate_policy",
    }[kind]
    add = {
        "compression": "add_compression_policy",
        "retention": "add_retention_policy",
        "refresh": "add_continuous_aggregate_policy",
    }[kind]
    job = _job(conn, proc, relation)
    if job is not None and wanted is not None:
        _, config, interval = job
        same = all(_same_interval(conn, config.get(k), v) for k, v in wanted.items())
        if same and (schedule is None or interval == schedule):
            return
    if job is not None:
        conn.execute(
            sql.SQL("SELECT {}(%s, if_exists => true)").format(sql.Identifier(remove)), (relation,)
        )
    if wanted is None:
        return
    args: list[sql.Composable] = [
        sql.SQL("{} => %s::interval").format(sql.Identifier(k)) for k in wanted
    ]
    params: list[Any] = [relation, *wanted.values()]
    if schedule is not None:
        args.append(sql.SQL("schedule_interval => %s::interval"))
        params.append(schedule)
    conn.execute(
        sql.SQL("SELECT {}(%s, {})").format(sql.Identifier(add), sql.SQL(", ").join(args)),
        params,
    )


def set_policies(conn: Connection, settings: Settings) -> None:
    """Compression, retention and refresh policies as configured (idempotent)."""
    compress = settings.timescale_compress_after_days
    retention = settings.timescale_retention_days
    _set_policy(
        conn,
        kind="compression",
        relation="klines",
        wanted=None if compress is None else {"compress_after": timedelta(days=compress)},
    )
    _set_policy(
        conn,
        kind="retention",
        relation="klines",
        wanted=None if retention is None else {"drop_after": timedelta(days=retention)},
    )
    available = aggregate_timeframes(conn)
    for tf in available:
        width = _width(tf)
        start: timedelta | None = None
        if retention is not None and source_timeframe(tf, available) == "1m":
            # Never re-aggregate 1m ranges that retention may have dropped already.
            start = max(timedelta(days=retention), end_offset(tf) + 2 * width)
        _set_policy(
            conn,
            kind="refresh",
            relation=f"klines_{tf}",
            wanted={"start_offset": start, "end_offset": end_offset(tf)},
            schedule=min(width, MAX_SCHEDULE),
        )


def _floor(ts: datetime, width: timedelta) -> datetime:
    return _EPOCH + ((ts - _EPOCH) // width) * width


def refresh_aggregates(conn: Connection, *, start: datetime, end: datetime) -> None:
    """Re-materialize every aggregate over the buckets overlapping [start, end), bottom-up.

    Needs a connection outside any transaction (autocommit). Each refresh stops at that
    aggregate's `now - end_offset`, where the real-time part begins.
    """
    now = datetime.now(UTC)
    for tf in aggregate_timeframes(conn):
        width = _width(tf)
        lo = _floor(start, width)
        hi = min(
            _floor(end - timedelta(microseconds=1), width) + width,
            _floor(now - end_offset(tf), width),
        )
        if hi <= lo:
            continue
        conn.execute(
            sql.SQL(
                "CALL refresh_continuous_aggregate({}, {}::timestamptz, {}::timestamptz)"
            ).format(sql.Literal(f"klines_{tf}"), sql.Literal(lo), sql.Literal(hi))
        )


def refresh_after_write(conn: Connection, *, start: datetime, end: datetime) -> bool:
    """After a committed write of 1m bars in [start, end): refresh what it made stale.

    Bars newer than the smallest end offset (3 x the smallest timeframe) are served in
    real time already; older ones may sit behind the last refresh. A refresh needs no
    open transaction: a connection in autocommit mode, or an idle one (switched to
    autocommit for the call). Inside a caller's transaction nothing happens (the refresh
    policy catches up). Returns whether it refreshed.
    """
    if start >= datetime.now(UTC) - _SMALLEST_END_OFFSET:
        return False
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        return False
    if conn.autocommit:
        refresh_aggregates(conn, start=start, end=end)
        return True
    conn.autocommit = True
    try:
        refresh_aggregates(conn, start=start, end=end)
    finally:
        conn.autocommit = False
    return True

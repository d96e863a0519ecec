"""TimescaleDB policies (compression, retention, aggregate refresh), set from the settings.

Three rules, each for a failure seen on a real server:

- Every policy starts after a delay (`initial_start`), never at the instant it is created:
  created jobs used to fire at once, racing the first import into a fresh database.
- A refresh policy materializes its whole window in one transaction
  (`buckets_per_batch => 0` where the server has batching, 2.19+). Batched refreshes go
  newest batch first and commit each one, and the watermark jumps to the newest batch at
  once: until the older batches commit, their buckets sit below the watermark without
  being materialized, so readers (and the next level's refresh) see them missing.
- End offsets are 3 buckets of each level, so a level's refresh window ends well behind
  what its source level has already refreshed (45 min behind now for 15m, whose source
  5m refreshes up to 15 min behind now every 5 min); live bars never land behind one.

The current API is used where the server has it (`add_columnstore_policy`, 2.18+) and the
older one otherwise (`add_compression_policy`), so 2.13+ keeps working (PGlite has 2.23).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

from signalengine.core.config import Settings
from signalengine.core.timescale_objects import (
    aggregate_relation,
    aggregate_timeframes,
    end_offset,
    width,
)
from signalengine.core.vocabulary import source_timeframe

__all__ = ["MAX_SCHEDULE", "POLICY_START_DELAY", "set_policies"]

Connection = psycopg.Connection[Any]
MAX_SCHEDULE = timedelta(hours=1)
# First run of a compression or retention policy after it is (re)created.
POLICY_START_DELAY = timedelta(hours=1)
_PROCS = {
    "compression": "policy_compression",
    "retention": "policy_retention",
    "refresh": "policy_refresh_continuous_aggregate",
}


def _has_routine(conn: Connection, name: str, argument: str | None = None) -> bool:
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_proc WHERE proname = %s"
            " AND (%s::text IS NULL OR %s::text = ANY(proargnames)))",
            (name, argument, argument),
        ).fetchone()
    return bool(row and row[0])


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


def _same(conn: Connection, stored: Any, wanted: timedelta | int | None) -> bool:
    if stored is None or wanted is None:
        return stored is None and wanted is None
    if isinstance(wanted, int):
        return bool(stored == wanted)
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute("SELECT %s::interval = %s::interval", (str(stored), wanted)).fetchone()
    return bool(row and row[0])


def _matches(
    conn: Connection, job: tuple[int, dict[str, Any], timedelta], wanted: dict[str, Any]
) -> tuple[bool, timedelta]:
    _, config, interval = job
    return all(_same(conn, config.get(k), v) for k, v in wanted.items()), interval


def _remove(conn: Connection, kind: str, relation: str) -> None:
    if kind == "compression" and _has_routine(conn, "remove_columnstore_policy"):
        conn.execute("CALL remove_columnstore_policy(%s, if_exists => true)", (relation,))
        return
    remove = {
        "compression": "remove_compression_policy",
        "retention": "remove_retention_policy",
        "refresh": "remove_continuous_aggregate_policy",
    }[kind]
    conn.execute(
        sql.SQL("SELECT {}(%s, if_exists => true)").format(sql.Identifier(remove)), (relation,)
    )


def _add(
    conn: Connection,
    kind: str,
    relation: str,
    wanted: dict[str, Any],
    *,
    schedule: timedelta | None,
) -> None:
    params: dict[str, Any] = {"relation": relation, **wanted}
    args: list[sql.Composable] = [
        sql.SQL("{} => %({})s::{}").format(
            sql.Identifier(k), sql.SQL(k), sql.SQL("integer" if isinstance(v, int) else "interval")
        )
        for k, v in wanted.items()
    ]
    if kind == "compression" and _has_routine(conn, "add_columnstore_policy"):
        statement = "CALL add_columnstore_policy"
        args = [sql.SQL("after => %(compress_after)s::interval")]
    else:
        statement = {
            "compression": "SELECT add_compression_policy",
            "retention": "SELECT add_retention_policy",
            "refresh": "SELECT add_continuous_aggregate_policy",
        }[kind]
    if schedule is not None:
        args.append(sql.SQL("schedule_interval => %(schedule)s::interval"))
        params["schedule"] = schedule
    # Never at once: a refresh waits one schedule interval, the others POLICY_START_DELAY.
    args.append(sql.SQL("initial_start => now() + %(delay)s::interval"))
    params["delay"] = schedule if kind == "refresh" else POLICY_START_DELAY
    conn.execute(
        sql.SQL("{}(%(relation)s, {})").format(sql.SQL(statement), sql.SQL(", ").join(args)),
        params,
    )


def _set_policy(
    conn: Connection,
    *,
    kind: str,
    relation: str,
    wanted: dict[str, Any] | None,
    schedule: timedelta | None = None,
) -> None:
    """Make the `kind` policy ('compression', 'retention', 'refresh') of a relation match."""
    job = _job(conn, _PROCS[kind], relation)
    if job is not None and wanted is not None:
        same, interval = _matches(conn, job, wanted)
        if same and (schedule is None or interval == schedule):
            return
    if job is not None:
        _remove(conn, kind, relation)
    if wanted is not None:
        _add(conn, kind, relation, wanted, schedule=schedule)


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
    batching = _has_routine(conn, "add_continuous_aggregate_policy", "buckets_per_batch")
    available = aggregate_timeframes(conn)
    for tf in available:
        start: timedelta | None = None
        if retention is not None and source_timeframe(tf, available) == "1m":
            # Never re-aggregate 1m ranges that retention may have dropped already.
            start = max(timedelta(days=retention), end_offset(tf) + 2 * width(tf))
        wanted: dict[str, Any] = {"start_offset": start, "end_offset": end_offset(tf)}
        if batching:
            wanted["buckets_per_batch"] = 0  # one transaction per run (see the module doc)
        _set_policy(
            conn,
            kind="refresh",
            relation=aggregate_relation(tf),
            wanted=wanted,
            schedule=min(width(tf), MAX_SCHEDULE),
        )

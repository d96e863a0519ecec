"""Reads of `signal_performance` and `feature_importance` (returns in percent, times UTC).

Compounded equity multiplies (1 + return_pct / 100) in (exit_time, signal_id) order,
starting at 1.0; a factor is floored at 1e-12 so that a loss beyond -100 % (possible
for a short) zeroes the equity instead of breaking the logarithm.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import sql

from signalengine.api.db import AsyncConn
from signalengine.core.vocabulary import LIVE_RUN

_LOG_FACTOR = "ln(greatest(1 + return_pct / 100, 1e-12))"
_ORDER = "ORDER BY exit_time, signal_id ROWS UNBOUNDED PRECEDING"
# exp() of more than ~709 overflows a double: such equity is reported as null (or capped).
_MAX_LOG = "700"


@dataclass(frozen=True)
class PerformanceFilter:
    """Which settled signals to aggregate; None means any. `since` bounds exit_time."""

    run_id: str = LIVE_RUN
    symbol: str | None = None
    timeframe: str | None = None
    direction: str | None = None
    since: datetime | None = None
    exchange: str | None = None
    strategy: str | None = None

    def where(self) -> tuple[sql.Composable, list[Any]]:
        """The WHERE condition and its parameters."""
        clauses: list[sql.Composable] = [sql.SQL("run_id = %s")]
        params: list[Any] = [self.run_id]
        for column, value in (
            ("symbol", self.symbol),
            ("timeframe", self.timeframe),
            ("direction", self.direction),
            ("exchange", self.exchange),
            ("strategy", self.strategy),
        ):
            if value is not None:
                clauses.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
                params.append(value)
        if self.since is not None:
            clauses.append(sql.SQL("exit_time >= %s"))
            params.append(self.since)
        return sql.SQL(" AND ").join(clauses), params


async def data_versions(*, conn: AsyncConn, names: list[str]) -> tuple[int, ...] | None:
    """Change counters of tables (bumped by sql/004 triggers); None if one is missing."""
    cur = await conn.execute(
        "SELECT name, version FROM api_data_versions WHERE name = ANY(%s)", [names]
    )
    found = {row["name"]: int(row["version"]) for row in await cur.fetchall()}
    if len(found) != len(names):
        return None
    return tuple(found[name] for name in names)


async def performance_aggregates(*, conn: AsyncConn, where: PerformanceFilter) -> dict[str, Any]:
    """One row: count, wins, losses, expired, avg/median/total/compounded return, gross
    gain and loss, sample std of return_pct, avg duration (s), max drawdown (percent)."""
    condition, params = where.where()
    query = sql.SQL(
        """
        SELECT count(*) AS count,
               count(*) FILTER (WHERE outcome = 'tp_hit') AS wins,
               count(*) FILTER (WHERE outcome = 'sl_hit') AS losses,
               count(*) FILTER (WHERE outcome = 'expired') AS expired,
               avg(return_pct) AS avg_return_pct,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY return_pct) AS median_return_pct,
               sum(return_pct) AS total_return_pct,
               CASE WHEN sum(log_factor) < %(max_log)s
                    THEN (exp(sum(log_factor)) - 1) * 100 END AS compounded_return_pct,
               coalesce(sum(return_pct) FILTER (WHERE return_pct > 0), 0) AS gross_gain,
               coalesce(-sum(return_pct) FILTER (WHERE return_pct < 0), 0) AS gross_loss,
               stddev_samp(return_pct) AS std_return_pct,
               avg(duration_sec) AS avg_duration_sec,
               max(1 - exp(log_equity - greatest(0, peak))) * 100 AS max_drawdown_pct
        FROM (
            SELECT *, max(log_equity) OVER (%(order)s) AS peak
            FROM (
                SELECT return_pct, outcome, duration_sec, exit_time, signal_id,
                       %(log)s AS log_factor,
                       sum(%(log)s) OVER (%(order)s) AS log_equity
                FROM signal_performance WHERE {}
            ) e
        ) d
        """.replace("%(order)s", _ORDER)
        .replace("%(log)s", _LOG_FACTOR)
        .replace("%(max_log)s", _MAX_LOG)
    ).format(condition)
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    assert row is not None  # an aggregate without GROUP BY always returns one row
    return row


async def equity_curve(
    *, conn: AsyncConn, where: PerformanceFilter, points: int
) -> list[dict[str, Any]]:
    """Compounded equity after each trade, thinned to about `points` rows (last kept).

    Columns: exit_time, signal_id, symbol, return_pct, equity (from 1.0), drawdown_pct,
    total (trades before thinning).
    """
    condition, params = where.where()
    query = sql.SQL(
        """
        SELECT exit_time, signal_id, symbol, return_pct,
               exp(least(log_equity, %(max_log)s)) AS equity,
               (1 - exp(log_equity - greatest(0, peak))) * 100 AS drawdown_pct, total
        FROM (
            SELECT *, max(log_equity) OVER (%(order)s) AS peak,
                   row_number() OVER (%(order)s) AS rn, count(*) OVER () AS total
            FROM (
                SELECT exit_time, signal_id, symbol, return_pct,
                       sum(%(log)s) OVER (%(order)s) AS log_equity
                FROM signal_performance WHERE {}
            ) e
        ) d
        WHERE rn %% greatest(1, ceil(total::float8 / %s))::bigint = 0 OR rn = total
        ORDER BY exit_time, signal_id
        """.replace("%(order)s", _ORDER)
        .replace("%(log)s", _LOG_FACTOR)
        .replace("%(max_log)s", _MAX_LOG)
    ).format(condition)
    cur = await conn.execute(query, [*params, points])
    return await cur.fetchall()


async def performance_by_symbol(
    *, conn: AsyncConn, where: PerformanceFilter
) -> list[dict[str, Any]]:
    """Per symbol: count, wins (tp_hit), avg_return_pct, total_return_pct, sample std."""
    condition, params = where.where()
    query = sql.SQL(
        "SELECT symbol, count(*) AS count, count(*) FILTER (WHERE outcome = 'tp_hit') AS wins,"
        " avg(return_pct) AS avg_return_pct, sum(return_pct) AS total_return_pct,"
        " stddev_samp(return_pct) AS std_return_pct"
        " FROM signal_performance WHERE {} GROUP BY symbol ORDER BY symbol"
    ).format(condition)
    cur = await conn.execute(query, params)
    return await cur.fetchall()


async def performance_by_strategy(
    *, conn: AsyncConn, where: PerformanceFilter, by_symbol: bool = False
) -> list[dict[str, Any]]:
    """Per strategy (and symbol with `by_symbol`): count, wins (tp_hit), avg_return_pct,
    total_return_pct, sample std."""
    condition, params = where.where()
    keys = sql.SQL("strategy, symbol" if by_symbol else "strategy")
    query = sql.SQL(
        "SELECT {keys}, count(*) AS count, count(*) FILTER (WHERE outcome = 'tp_hit') AS wins,"
        " avg(return_pct) AS avg_return_pct, sum(return_pct) AS total_return_pct,"
        " stddev_samp(return_pct) AS std_return_pct"
        " FROM signal_performance WHERE {condition} GROUP BY {keys} ORDER BY {keys}"
    ).format(keys=keys, condition=condition)
    cur = await conn.execute(query, params)
    return await cur.fetchall()


async def outcome_counts(*, conn: AsyncConn, run_id: str = LIVE_RUN) -> dict[str, int]:
    """Settled signals per outcome."""
    cur = await conn.execute(
        "SELECT outcome, count(*) AS n FROM signal_performance WHERE run_id = %s GROUP BY outcome",
        [run_id],
    )
    return {row["outcome"]: int(row["n"]) for row in await cur.fetchall()}


async def cumulative_counts(
    *, conn: AsyncConn, column: str, bounds: tuple[float, ...], run_id: str = LIVE_RUN
) -> tuple[list[int], float, int]:
    """Prometheus histogram of a column: counts <= each bound, the sum and the count."""
    buckets = [
        sql.SQL("count(*) FILTER (WHERE {} <= {}) AS {}").format(
            sql.Identifier(column), sql.Literal(bound), sql.Identifier(f"b{i}")
        )
        for i, bound in enumerate(bounds)
    ]
    query = sql.SQL(
        "SELECT {}, coalesce(sum({}), 0) AS total, count(*) AS n"
        " FROM signal_performance WHERE run_id = %s"
    ).format(sql.SQL(", ").join(buckets), sql.Identifier(column))
    cur = await conn.execute(query, [run_id])
    row = await cur.fetchone()
    assert row is not None
    counts = [int(row[f"b{i}"]) for i in range(len(bounds))]
    return counts, float(row["total"]), int(row["n"])


async def latest_feature_importance(
    *, conn: AsyncConn, model_type: str | None
) -> list[dict[str, Any]]:
    """Rows of the newest model_version of each model type (or of `model_type`),
    by model type and decreasing importance."""
    params: list[Any] = []
    condition = sql.SQL("")
    if model_type is not None:
        condition = sql.SQL("WHERE model_type = %s")
        params.append(model_type)
    query = sql.SQL(
        """
        WITH latest AS (
            SELECT DISTINCT ON (model_type) model_type, model_version
            FROM feature_importance {}
            ORDER BY model_type, timestamp DESC, model_version DESC
        )
        SELECT f.model_type, f.model_version, f.feature_name, f.importance, f.timestamp
        FROM feature_importance f JOIN latest USING (model_type, model_version)
        ORDER BY f.model_type, f.importance DESC, f.feature_name
        """
    ).format(condition)
    cur = await conn.execute(query, params)
    return await cur.fetchall()

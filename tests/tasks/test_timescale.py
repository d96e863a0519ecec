"""TimescaleDB backend: migrations, schema, policies, the store path on a hypertable
(compressed chunks included), and plain PostgreSQL untouched.

On the real server when SIGNALENGINE_TEST_TIMESCALE_URL is set, on TimescaleDB 2.23 inside
PGlite otherwise (tests/utils/timescale.py).
"""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import psycopg
import pytest

from signalengine.core.config import Settings
from signalengine.core.migrate import upgrade
from signalengine.core.timescale import backend, migration_files, upgrade_timescale
from signalengine.tasks.marketdata.klines import load_bars, store_klines
from signalengine.tasks.marketdata.timeframes import refresh_buckets
from signalengine.tasks.marketdata.validation import validate_klines
from tests.utils.klines import random_klines

TIMEFRAMES = ["1m", "5m", "15m", "1h"]
Conn = psycopg.Connection[dict]  # type: ignore[type-arg]


def _jobs(conn: Conn) -> list[tuple[object, ...]]:
    rows = conn.execute(
        "SELECT job_id, proc_name, hypertable_name, config::text AS config, schedule_interval"
        " FROM timescaledb_information.jobs WHERE hypertable_name IS NOT NULL ORDER BY job_id"
    ).fetchall()
    return [tuple(r.values()) for r in rows]


def test_migrations_apply_twice(timescale_url: str) -> None:
    assert upgrade(timescale_url) == []
    with psycopg.connect(timescale_url, autocommit=True, row_factory=psycopg.rows.dict_row) as conn:
        before = _jobs(conn)
        assert upgrade_timescale(conn) == []
        assert _jobs(conn) == before  # policies already as configured: left alone
        names = [
            r["name"]
            for r in conn.execute("SELECT name FROM timescale_migrations ORDER BY name").fetchall()
        ]
    assert names == [f"timescale/{p.name}" for p in migration_files()]


def _columns(conn: Conn, relation: str) -> list[tuple[str, str]]:
    rows = conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
        (relation,),
    ).fetchall()
    return [(r["column_name"], r["data_type"]) for r in rows]


def test_hypertable_and_hierarchical_real_time_aggregates(
    timescale_db: Conn, plain_db: Conn
) -> None:
    assert backend(timescale_db).timescale and not backend(plain_db).timescale
    hypertable = timescale_db.execute(
        "SELECT compression_enabled FROM timescaledb_information.hypertables"
        " WHERE hypertable_name = 'klines'"
    ).fetchone()
    assert hypertable == {"compression_enabled": True}
    segment_by = timescale_db.execute(
        "SELECT array_agg(attname::text ORDER BY segmentby_column_index) AS cols"
        " FROM timescaledb_information.compression_settings"
        " WHERE hypertable_name = 'klines' AND segmentby_column_index IS NOT NULL"
    ).fetchone()
    assert segment_by == {"cols": ["exchange", "symbol"]}
    views = {
        r["view_name"]: r
        for r in timescale_db.execute(
            "SELECT view_name, materialized_only, view_definition"
            " FROM timescaledb_information.continuous_aggregates"
        ).fetchall()
    }
    for tf, source in [("5m", "klines"), ("15m", "klines_5m_cagg"), ("1h", "klines_15m_cagg")]:
        view = views[f"klines_{tf}_cagg"]
        assert view["materialized_only"] is False
        assert f"FROM {source}\n" in view["view_definition"]
        # the contract: the same columns and types as the plain-PostgreSQL tables, both
        # for the exact view every reader uses and for the aggregate behind it
        assert _columns(timescale_db, f"klines_{tf}") == _columns(plain_db, f"klines_{tf}")
        assert _columns(timescale_db, f"klines_{tf}_cagg") == _columns(plain_db, f"klines_{tf}")
    assert not any(name.startswith("klines_") and not name.endswith("_cagg") for name in views)


def test_policies_follow_settings(timescale_db: Conn) -> None:
    def policies() -> dict[tuple[str, str], dict[str, object]]:
        rows = timescale_db.execute(
            "SELECT proc_name, hypertable_name, config FROM timescaledb_information.jobs"
            " WHERE hypertable_name IS NOT NULL"
        ).fetchall()
        return {(r["proc_name"], r["hypertable_name"]): r["config"] for r in rows}

    refresh = "policy_refresh_continuous_aggregate"

    try:
        upgrade_timescale(
            timescale_db,
            settings=Settings(timescale_compress_after_days=None, timescale_retention_days=30),
        )
        changed = policies()
        assert ("policy_compression", "klines") not in changed
        assert changed[("policy_retention", "klines")]["drop_after"] == "30 days"
        # the 5m aggregate never re-reads 1m ranges that retention may have dropped
        assert changed[(refresh, "klines_5m_cagg")]["start_offset"] == "30 days"
        assert changed[(refresh, "klines_1h_cagg")]["start_offset"] is None
    finally:
        upgrade_timescale(
            timescale_db,
            settings=Settings(timescale_compress_after_days=7, timescale_retention_days=None),
        )
    restored = policies()
    assert restored[("policy_compression", "klines")]["compress_after"] == "7 days"
    assert ("policy_retention", "klines") not in restored
    five = restored[(refresh, "klines_5m_cagg")]
    # one transaction per run: no batch of buckets committed ahead of the older ones
    assert five == {
        "end_offset": "00:15:00",
        "start_offset": None,
        "buckets_per_batch": 0,
        "mat_hypertable_id": five["mat_hypertable_id"],
    }
    # end offsets chained: each level stops 3 of its buckets behind now, far behind
    # what the level below has refreshed by then
    offsets = [restored[(refresh, f"klines_{tf}_cagg")]["end_offset"] for tf in ("15m", "1h")]
    assert offsets == ["00:45:00", "03:00:00"]


def test_policies_start_after_a_delay_not_when_created(timescale_db: Conn) -> None:
    timescale_db.execute(  # so that upgrade_timescale creates every policy anew
        "SELECT delete_job(job_id) FROM timescaledb_information.jobs"
        " WHERE hypertable_name IS NOT NULL"
    )
    upgrade_timescale(
        timescale_db,
        settings=Settings(timescale_compress_after_days=3, timescale_retention_days=40),
    )
    try:
        rows = timescale_db.execute(
            "SELECT proc_name, hypertable_name, schedule_interval,"
            " next_start - now() AS wait FROM timescaledb_information.jobs"
            " WHERE hypertable_name IS NOT NULL"
        ).fetchall()
    finally:
        upgrade_timescale(
            timescale_db,
            settings=Settings(timescale_compress_after_days=7, timescale_retention_days=None),
        )
    kinds = {r["proc_name"] for r in rows}
    assert kinds == {
        "policy_compression",
        "policy_retention",
        "policy_refresh_continuous_aggregate",
    }
    for row in rows:
        # created just now (inside this test's transaction time), first run one schedule
        # interval later for a refresh, an hour later for compression and retention
        least = (
            row["schedule_interval"]
            if row["proc_name"] == "policy_refresh_continuous_aggregate"
            else timedelta(hours=1)
        )
        assert row["wait"] >= least - timedelta(seconds=30), row


def _store(conn: Conn, frame: pd.DataFrame) -> dict[str, int]:
    return store_klines(conn, validate_klines(frame), timeframes=TIMEFRAMES).as_dict()


def test_store_path_on_compressed_hypertable(timescale_db: Conn) -> None:
    frame = random_klines(minutes=2 * 1440, gap_fraction=0.05, seed=11)
    hole = frame.iloc[100:103]
    assert _store(timescale_db, frame.drop(hole.index)) == {
        "rows_read": len(frame) - 3,
        "inserted": len(frame) - 3,
        "duplicates": 0,
        "rejected": 0,
    }
    chunks = timescale_db.execute(
        "SELECT count(compress_chunk(c)) AS n FROM show_chunks('klines') c"
    ).fetchone()
    assert chunks is not None and chunks["n"] >= 2
    refresh_buckets(timescale_db, TIMEFRAMES, touched="no_such_table")  # a no-op here

    again = frame.iloc[:5]
    changed = frame.iloc[5:7].copy()
    changed["close"] = changed["close"] * 1.01
    changed["high"] = changed[["high", "close"]].max(axis=1)
    bad = frame.iloc[7:8].copy()
    bad["high"] = bad["low"] - 1
    summary = _store(timescale_db, pd.concat([again, changed, bad, hole], ignore_index=True))
    assert summary == {"rows_read": 11, "inserted": 3, "duplicates": 5, "rejected": 3}
    reasons = [
        r["reason"]
        for r in timescale_db.execute("SELECT reason FROM klines_rejected ORDER BY id").fetchall()
    ]
    assert reasons == [
        "high below max(open, close)",
        "differs from the stored bar",
        "differs from the stored bar",
    ]
    bars = load_bars(timescale_db, exchange="binance", symbols=["BTC/USDT"], timeframe="1h")
    hour = bars["BTC/USDT"].iloc[1]  # the hour the hole was in, refreshed after the fill
    assert hour["bars"] == frame["ts"].between(hour.name, hour.name + pd.Timedelta("59min")).sum()


def test_backfill_is_refreshed_after_commit_on_a_non_autocommit_connection(
    timescale_db: Conn,
) -> None:
    timescale_db.autocommit = False
    try:
        _store(timescale_db, random_klines(minutes=600, seed=13))
        assert not timescale_db.autocommit
        assert timescale_db.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    finally:
        timescale_db.autocommit = True
    materialized = timescale_db.execute(
        "SELECT format('%I.%I', materialization_hypertable_schema,"
        " materialization_hypertable_name) AS name"
        " FROM timescaledb_information.continuous_aggregates WHERE view_name = 'klines_5m_cagg'"
    ).fetchone()
    assert materialized is not None
    count = timescale_db.execute(f"SELECT count(*) AS n FROM {materialized['name']}").fetchone()
    assert count == {"n": 120}  # 10 hours of old bars: materialized, not left to real time
    # and refreshed through every level, so nothing is left pending
    assert timescale_db.execute("SELECT count(*) AS n FROM klines_pending").fetchone() == {"n": 0}


def test_plain_postgres_stays_plain(plain_db: Conn) -> None:
    assert upgrade_timescale(plain_db) == []
    assert not backend(plain_db).timescale
    kinds = plain_db.execute(
        "SELECT relname, relkind::text FROM pg_class WHERE relname IN"
        " ('klines', 'klines_5m', 'klines_15m', 'klines_1h') ORDER BY relname"
    ).fetchall()
    assert [(r["relname"], r["relkind"]) for r in kinds] == [
        ("klines", "r"),
        ("klines_15m", "r"),
        ("klines_1h", "r"),
        ("klines_5m", "r"),
    ]


def test_pglite_server_reassembles_messages_and_refuses_copy(pglite_url: str) -> None:
    """About tools/pglite itself, so on PGlite whichever tier the other tests use."""
    with psycopg.connect(pglite_url, autocommit=True, row_factory=psycopg.rows.dict_row) as conn:
        big = "x" * 3_000_000  # far larger than one TCP read
        row = conn.execute("SELECT length(%s) AS n", (big,)).fetchone()
        assert row == {"n": len(big)}
        conn.execute("CREATE TEMP TABLE copy_target (raw text, reason text)")
        with pytest.raises(psycopg.errors.FeatureNotSupported), conn.cursor() as cur:
            with cur.copy("COPY copy_target (raw, reason) FROM STDIN") as copy:
                copy.write_row(('{"a": 1}', "x"))
        assert conn.execute("SELECT 1 AS one").fetchone() == {"one": 1}


def test_exact_views_are_planned_cheaply_enough_never_to_be_jit_compiled(
    timescale_db: Conn,
) -> None:
    """The estimated cost is what decides JIT (`jit_above_cost`). Had the pending ranges
    been estimated at the table's default size, ten daily chunks already cost ~17000 and
    a year of them crossed the threshold: 37 s of JIT per read. Declared one row, the view
    costs about what its aggregate does, so a year stays far below the threshold."""
    _store(timescale_db, random_klines(minutes=10 * 1440, seed=21))
    threshold = float(
        timescale_db.execute("SELECT current_setting('jit_above_cost') AS c").fetchone()["c"]
    )  # type: ignore[index]
    for tf in ("5m", "15m", "1h"):
        costs = {}
        for relation in (f"klines_{tf}", f"klines_{tf}_cagg"):
            plan = timescale_db.execute(
                f"EXPLAIN (FORMAT JSON) SELECT * FROM {relation}"
                " WHERE exchange = 'binance' AND symbol = ANY(ARRAY['BTC/USDT'])"
                " ORDER BY symbol, ts"
            ).fetchone()
            assert plan is not None
            costs[relation] = plan["QUERY PLAN"][0]["Plan"]["Total Cost"]
        assert costs[f"klines_{tf}"] < threshold / 100, costs

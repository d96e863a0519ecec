"""Migrations apply in order, are recorded, and a second run changes nothing."""

from __future__ import annotations

import psycopg

from signalengine.core.migrate import migration_files, upgrade


def _schema(url: str) -> list[tuple[str, str, str, str]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable"
            " FROM information_schema.columns WHERE table_schema = 'public'"
            " ORDER BY table_name, column_name"
        ).fetchall()


def test_upgrade_twice_is_a_no_op(database_url: str) -> None:
    before = _schema(database_url)
    assert upgrade(database_url) == []
    assert _schema(database_url) == before
    with psycopg.connect(database_url) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM schema_migrations ORDER BY name")]
    assert names == [p.name for p in migration_files()]


def test_contract_relations_exist(database_url: str) -> None:
    tables = {row[0] for row in _schema(database_url)}
    for name in (
        "klines",
        "klines_1m",
        "klines_5m",
        "klines_15m",
        "klines_1h",
        "klines_rejected",
        "signals",
        "signal_performance",
        "feature_importance",
    ):
        assert name in tables


def test_extra_timeframes_get_their_relation_and_the_writer_fills_it(
    database_url: str,
    db: psycopg.Connection[dict],  # type: ignore[type-arg]
) -> None:
    """`db` empties every timeframe relation after (klines_4h included, on either backend)."""
    import pandas as pd

    from signalengine.tasks.marketdata.klines import load_bars, store_klines
    from signalengine.tasks.marketdata.timeframes import upgrade_with_timeframes
    from signalengine.tasks.marketdata.validation import validate_klines
    from tests.utils.klines import random_klines

    timeframes = ["1m", "5m", "15m", "1h", "4h"]
    upgrade_with_timeframes(database_url, timeframes)
    frame = random_klines(minutes=2 * 1440, symbol="FOURH/USDT", seed=9)
    with psycopg.connect(database_url, autocommit=True) as conn:
        store_klines(conn, validate_klines(frame), timeframes=timeframes)
        got = load_bars(conn, exchange="binance", symbols=["FOURH/USDT"], timeframe="4h")
    want = frame.set_index("ts")["close"].resample("4h", label="left", closed="left").last()
    assert len(got["FOURH/USDT"]) == 12
    pd.testing.assert_series_equal(
        got["FOURH/USDT"]["close"], want, check_names=False, check_freq=False
    )

"""Migrations apply in order, are recorded, and a second run changes nothing."""

from __future__ import annotations

import psycopg

from core.migrate import migration_files, upgrade


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

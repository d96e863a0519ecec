"""/performance/stats at 100,000 settled signals: warm answers come from the cache."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg

from tests.api.server import ApiServer

Conn = psycopg.Connection[Any]
ROWS = 100_000
VARIANTS: list[dict[str, Any]] = [
    {},
    {"symbol": "ETHUSDT"},
    {"direction": "long", "timeframe": "5m"},
    {"lookback_days": 200},
]


def _bulk_settle(database_url: str, db: Conn, rows: int) -> None:
    """`rows` live signals and their outcomes, generated inside PostgreSQL.

    Triggers are off for the bulk insert (session_replication_role): 100k NOTIFYs would
    keep the API's feed busy and time that instead. A no-op statement then bumps the
    cache version as any real write does.
    """
    with psycopg.connect(database_url, autocommit=True) as bulk:
        bulk.execute("SET session_replication_role = replica")
        _insert(bulk, rows)
    db.execute("DELETE FROM signal_performance WHERE false")
    db.execute("ANALYZE signal_performance")


def _insert(db: psycopg.Connection[Any], rows: int) -> None:
    db.execute(
        """
        INSERT INTO signals (id, run_id, exchange, symbol, timeframe, direction, ts, emitted_at,
                             entry_price, take_profit, stop_loss, expires_at, score, status)
        SELECT gen_random_uuid(), 'live', 'binance',
               (ARRAY['BTC/USDT','ETH/USDT','SOL/USDT','BNB/USDT'])[1 + i %% 4],
               (ARRAY['5m','15m'])[1 + i %% 2], (ARRAY['long','short'])[1 + (i / 2) %% 2],
               now() - interval '400 days' + i * interval '5 minutes',
               now() - interval '400 days' + i * interval '5 minutes' + interval '5 minutes',
               100, 102, 99,
               now() - interval '400 days' + i * interval '5 minutes' + interval '1 hour',
               random(), 'tp_hit'
        FROM generate_series(1, %s) AS i
        """,
        [rows],
    )
    db.execute(
        """
        INSERT INTO signal_performance
        SELECT id, run_id, exchange, symbol, direction, timeframe, entry_price, 101, emitted_at,
               emitted_at + random() * interval '1 hour',
               (ARRAY['tp_hit','sl_hit','expired'])[1 + floor(random() * 3)::int],
               (random() - 0.48) * 4, random() * 3600, score
        FROM signals
        """
    )


def test_stats_at_100k_rows_are_answered_from_the_cache_until_a_write(
    api: ApiServer, client: httpx.Client, database_url: str, db: Conn
) -> None:
    """The speed of warm answers comes from the versioned cache: at 100k settled signals
    every repeat is a cache hit that equals the computed answer, and one write to
    signal_performance makes the next answer a fresh computation (timings: bench/api.py)."""
    _bulk_settle(database_url, db, ROWS)
    cache = api.app.state.api.cache
    misses = cache.misses
    first = {}
    for i, params in enumerate(VARIANTS):  # first answers compute
        response = client.get("/performance/stats", params=params)
        assert response.status_code == 200, (params, response.status_code, response.text)
        first[i] = response.json()
        assert first[i]["count"] > 0
    assert cache.misses == misses + len(VARIANTS)
    hits = cache.hits
    for _ in range(50):
        for i, params in enumerate(VARIANTS):
            response = client.get("/performance/stats", params=params)
            assert response.status_code == 200 and response.json() == first[i]
    assert cache.hits == hits + 50 * len(VARIANTS) and cache.misses == misses + len(VARIANTS)
    db.execute(
        "DELETE FROM signal_performance WHERE signal_id IN"
        " (SELECT signal_id FROM signal_performance LIMIT 1)"
    )
    after = client.get("/performance/stats", params=VARIANTS[0]).json()
    assert cache.misses == misses + len(VARIANTS) + 1
    assert after["count"] == first[0]["count"] - 1

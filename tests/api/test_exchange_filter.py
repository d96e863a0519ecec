"""The exchange filter of /signals, /performance/stats and the /ws/feed subscription."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from websockets.asyncio.client import ClientConnection

from tests.api.test_feed import feed, settle, signal_ids  # noqa: F401  # fixture
from tests.utils.signals import (
    create_random_performance,
    create_random_signal,
    insert_signals,
    random_signal,
)

Conn = psycopg.Connection[Any]
RUN = "exchange-filter"


def test_signals_filter_by_exchange(client: httpx.Client, db: Conn) -> None:
    t0 = datetime(2025, 4, 1, tzinfo=UTC)
    by_venue = {
        venue: [
            create_random_signal(db, run_id=RUN, exchange=venue, ts=t0 + timedelta(minutes=5 * i))
            for i in range(count)
        ]
        for venue, count in (("binance", 3), ("bybit", 2))
    }
    everything = client.get("/signals", params={"run_id": RUN}).json()["signals"]
    assert len(everything) == 5
    for venue, stored in by_venue.items():
        page = client.get("/signals", params={"run_id": RUN, "exchange": venue}).json()
        assert {s["id"] for s in page["signals"]} == {str(s["id"]) for s in stored}
        assert {s["exchange"] for s in page["signals"]} == {venue}
    none = client.get("/signals", params={"run_id": RUN, "exchange": "kraken"}).json()
    assert none["signals"] == []


def test_performance_stats_filter_by_exchange(client: httpx.Client, db: Conn) -> None:
    run = f"{RUN}-perf"
    returns = {"binance": [1.0, -0.5, 2.0], "bybit": [-1.0, 0.25]}
    for venue, values in returns.items():
        for value in values:
            signal = create_random_signal(db, run_id=run, exchange=venue)
            outcome = "tp_hit" if value > 0 else "sl_hit"
            create_random_performance(db, signal, outcome=outcome, return_pct=value)
    both = client.get("/performance/stats", params={"run_id": run}).json()
    assert both["count"] == 5 and both["exchange"] is None
    for venue, values in returns.items():
        stats = client.get("/performance/stats", params={"run_id": run, "exchange": venue}).json()
        assert stats["exchange"] == venue
        assert stats["count"] == len(values)
        assert stats["wins"] == sum(v > 0 for v in values)
        assert stats["total_return_pct"] == pytest.approx(sum(values))


@pytest.mark.parametrize("value", ["Binance", "by bit", "x", "binance;drop", "é", "a" * 51])
@pytest.mark.parametrize("path", ["/signals", "/performance/stats"])
def test_a_malformed_exchange_is_422_json(client: httpx.Client, path: str, value: str) -> None:
    response = client.get(path, params={"exchange": value})
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/json")


async def test_feed_subscription_filters_by_exchange(feed: ClientConnection, db: Conn) -> None:  # noqa: F811
    await feed.send(json.dumps({"type": "subscribe", "exchanges": ["bybit"]}))
    await settle(feed)
    rows = [random_signal(exchange=v) for v in ("binance", "bybit", "binance", "bybit")]
    insert_signals(db, rows)  # one transaction: notified in this order
    wanted = [str(r["id"]) for r in rows if r["exchange"] == "bybit"]
    assert await signal_ids(feed, set(wanted)) == wanted
    # a malformed exchange list is dropped: the previous subscription stays
    await feed.send(json.dumps({"type": "subscribe", "exchanges": ["BYBIT!"]}))
    await settle(feed)
    later = [random_signal(exchange="binance"), random_signal(exchange="bybit")]
    insert_signals(db, later)
    assert await signal_ids(feed, {str(later[1]["id"])}) == [str(later[1]["id"])]

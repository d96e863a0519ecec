"""Backfill edges: a --since before the stored range fills it; the rate limit is upserted."""

from __future__ import annotations

import pandas as pd

from signalengine.simulator import running_simulator
from tests.utils.market import market_frame

SYMBOL = "BTC/USDT"
ANCHOR_MS = int(pd.Timestamp("2025-04-10", tz="UTC").value // 1_000_000)


async def test_a_since_before_the_stored_range_backfills_that_range(
    db, prefect_harness, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    from signalengine.flows.backfill import backfill

    with running_simulator(symbols=[SYMBOL], speed=1, anchor_ms=ANCHOR_MS) as url:
        monkeypatch.setenv("SIGNALENGINE_EXCHANGE_URL", url)
        later = await backfill(symbols=[SYMBOL], since="2025-04-08", until="2025-04-09")
        assert later["inserted"] == 1440
        # before issue 15 this resumed after the newest bar and fetched nothing
        earlier = await backfill(symbols=[SYMBOL], since="2025-04-07", until="2025-04-09")
    assert earlier["inserted"] == 1440
    rows = db.execute(
        "SELECT ts, open, close FROM klines WHERE symbol = %s ORDER BY ts", (SYMBOL,)
    ).fetchall()
    truth = market_frame(SYMBOL, "2025-04-07", 2)
    assert len(rows) == 2 * 1440
    assert pd.Timestamp(rows[0]["ts"]) == truth["ts"].iloc[0]
    assert [r["close"] for r in rows] == truth["close"].tolist()


async def test_the_rate_limit_is_created_once_and_updated(prefect_harness) -> None:  # type: ignore[no-untyped-def]
    from prefect.client.orchestration import get_client

    from signalengine.flows.backfill import ensure_rate_limit

    name = "exchange-edges-rest"
    assert await ensure_rate_limit.fn(name, 5.0) == name
    assert await ensure_rate_limit.fn(name, 5.0) == name  # a repeat is a no-op
    await ensure_rate_limit.fn(name, 8.0)  # a changed rate updates the one limit
    async with get_client() as client:
        limits = [g for g in await client.read_global_concurrency_limits() if g.name == name]
        assert [(g.limit, g.slot_decay_per_second) for g in limits] == [(8, 8.0)]
        await client.delete_global_concurrency_limit_by_name(name)

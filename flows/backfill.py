"""Backfill history for many symbols in parallel, within the exchange's rate limits."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.concurrency.asyncio import rate_limit
from prefect.exceptions import ObjectAlreadyExists

from signalengine.core.config import get_settings
from signalengine.core.db import connect, database_url
from signalengine.core.progress import progress_bar
from signalengine.tasks.marketdata.backfill import backfill_symbol
from signalengine.tasks.marketdata.batching import MINUTE_MS
from signalengine.tasks.marketdata.markets import unlisted_symbols


@task(cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[1, 5, 15])
async def ensure_rate_limit(name: str, per_second: float) -> str:
    """A Prefect global concurrency limit that refills `per_second` request slots a second.

    Read before create: creating an existing limit makes the Prefect server log a long
    UNIQUE-constraint traceback on every repeated backfill, although nothing is wrong.
    """
    slots = max(1, int(per_second))
    async with get_client() as client:
        try:
            await client.upsert_global_concurrency_limit_by_name(
                name, slots, slot_decay_per_second=per_second
            )
        except ObjectAlreadyExists:  # created by a concurrent backfill in between
            pass
    return name


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[2, 10])
async def unknown_symbols(symbols: list[str], *, exchange: str, base_url: str | None) -> list[str]:
    """The symbols the exchange does not list (its markets are loaded once)."""
    return await unlisted_symbols(symbols, exchange=exchange, base_url=base_url)


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[5, 30])
async def backfill_one(
    symbol: str,
    *,
    exchange: str,
    base_url: str | None,
    since_ms: int,
    until_ms: int,
    timeframes: list[str],
    limit_name: str,
    advance: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """One symbol, page by page; every page waits for a slot of the shared rate limit."""
    from signalengine.tasks.marketdata.exchange import create_exchange

    logger = get_run_logger()
    client = create_exchange(exchange, base_url=base_url)

    async def acquire() -> None:
        await rate_limit(limit_name, strict=True)

    def progress(done: Any) -> None:
        if advance is not None:
            advance(len_of_last_page(done))
        if done.pages % 10 == 0:
            share = done.fetched * MINUTE_MS / max(1, done.end_ms - done.start_ms)
            logger.info("%s: %d bars (%.0f%%)", symbol, done.fetched, 100 * min(1.0, share))

    seen = {"fetched": 0}

    def len_of_last_page(done: Any) -> int:
        new, seen["fetched"] = done.fetched - seen["fetched"], done.fetched
        return int(new)

    try:
        with connect(database_url()) as conn:
            conn.autocommit = True
            result = await backfill_symbol(
                client,
                conn,
                exchange=exchange,
                symbol=symbol,
                since_ms=since_ms,
                until_ms=until_ms,
                timeframes=timeframes,
                acquire=acquire,
                on_page=progress,
            )
    finally:
        await client.close()
    return result.as_dict()


@flow(name="backfill")
async def backfill(
    symbols: list[str] | None = None,
    since: str | None = None,
    until: str | None = None,
    exchange: str | None = None,
) -> dict[str, Any]:
    """Backfill 1m klines of `symbols` for [since, until) (default: backfill_days to now)."""
    settings = get_settings().for_job(exchange)  # a configured venue: its URL and symbols
    exchange = settings.exchange
    chosen = symbols or settings.symbols
    end = pd.Timestamp(until, tz="UTC") if until else pd.Timestamp.now(tz="UTC").floor("min")
    start = (
        pd.Timestamp(since, tz="UTC") if since else end - pd.Timedelta(days=settings.backfill_days)
    )
    if start >= end:
        raise ValueError(f"since {start} must be before until {end}")
    # a symbol the exchange does not list would fail every page and every retry
    missing = await unknown_symbols(chosen, exchange=exchange, base_url=settings.exchange_url)
    if missing:
        raise ValueError(f"{exchange} lists no market {', '.join(missing)}")
    limit_name = await ensure_rate_limit(
        f"exchange-{exchange}-rest", settings.backfill_requests_per_second
    )
    since_ms, until_ms = int(start.value // 1_000_000), int(end.value // 1_000_000)
    with progress_bar() as bar:
        minutes = (until_ms - since_ms) // MINUTE_MS
        job = bar.add_task("backfill", total=minutes * len(chosen))
        results = await asyncio.gather(
            *[
                backfill_one(
                    symbol,
                    exchange=exchange,
                    base_url=settings.exchange_url,
                    since_ms=since_ms,
                    until_ms=until_ms,
                    timeframes=settings.timeframes,
                    limit_name=limit_name,
                    advance=lambda n: bar.update(job, advance=n),
                )
                for symbol in chosen
            ]
        )
    summary = {
        "symbols": len(chosen),
        "inserted": sum(r["inserted"] for r in results),
        "fetched": sum(r["fetched"] for r in results),
        "rejected": sum(r["rejected"] for r in results),
        "retries": sum(r["retries"] for r in results),
        "per_symbol": results,
    }
    get_run_logger().info("backfilled %d bars for %d symbols", summary["inserted"], len(chosen))
    return summary

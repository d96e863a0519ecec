"""The long-running streaming flow: closed 1m bars in, signals out, one batch per minute."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State
from prefect.runtime import flow_run
from prefect.states import Cancelled

from signalengine.core.config import get_settings
from signalengine.core.db import database_url
from signalengine.core.dbconn import ReconnectingConnection
from signalengine.core.vocabulary import LIVE_RUN, TIMEFRAME_MINUTES
from signalengine.flows.cancellation import CancellationWatch
from signalengine.tasks import metrics
from signalengine.tasks.marketdata.batching import MINUTE_MS, shard_symbols
from signalengine.tasks.marketdata.collection import LiveCollection
from signalengine.tasks.marketdata.exchange import create_exchange
from signalengine.tasks.marketdata.ingest import (
    Watermarks,
    exchange_time_ms,
    fill_gaps,
    primary_closes,
    store_live_minute,
    stored_span,
)
from signalengine.tasks.runs.live import LiveEngine


@task(cache_policy=NO_CACHE, retries=5, retry_delay_seconds=[1, 2, 5, 10, 20])
async def catch_up(
    db: ReconnectingConnection,
    client: Any,
    marks: Watermarks,
    *,
    upto_ms: int,
    default_start_ms: int,
    timeframes: list[str],
) -> int:
    """Backfill every missing minute before `upto_ms` over REST."""
    return await fill_gaps(
        db.get(),
        client,
        marks=marks,
        upto_ms=upto_ms,
        default_start_ms=default_start_ms,
        timeframes=timeframes,
    )


@task(cache_policy=NO_CACHE, retries=5, retry_delay_seconds=[1, 2, 5, 10, 20])
async def ingest_minute(
    db: ReconnectingConnection,
    client: Any,
    marks: Watermarks,
    *,
    minute_ms: int,
    bars: dict[str, dict[str, Any]],
    timeframes: list[str],
) -> dict[str, int]:
    """Fill any gap before this minute, store the minute's closed bars, then fetch the
    minute over REST for any symbol whose WebSocket bar has not arrived: the engine must
    never evaluate a primary close on an incomplete bucket."""
    conn = db.get()
    await fill_gaps(
        conn,
        client,
        marks=marks,
        upto_ms=minute_ms,
        default_start_ms=minute_ms,
        timeframes=timeframes,
    )
    summary = store_live_minute(conn, bars, marks=marks, timeframes=timeframes).as_dict()
    summary["inserted"] += await fill_gaps(
        conn,
        client,
        marks=marks,
        upto_ms=minute_ms + MINUTE_MS,
        default_start_ms=minute_ms,
        timeframes=timeframes,
    )
    return summary


@task(cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[1, 5, 10])
def emit_signals(db: ReconnectingConnection, engine: LiveEngine, *, closes_ms: list[int]) -> int:
    """Run the engine at each primary close and write the signals (idempotent)."""
    return engine.process_closes(db.get(), closes_ms)


REPLAY_CHUNK_CLOSES = 288  # primary closes per task run in a replay (a day of 5m bars)


@task(cache_policy=NO_CACHE)
def replay_window(
    db: ReconnectingConnection,
    *,
    exchange: str,
    symbols: list[str],
    start: str | None,
    end: str | None,
) -> tuple[int, int]:
    """The [first, last] 1m open times (ms) to replay: the request clipped to what is stored."""
    return stored_span(db.get(), exchange=exchange, symbols=symbols, start=start, end=end)


async def _replay(
    db: ReconnectingConnection,
    engine: LiveEngine,
    *,
    first_ms: int,
    last_ms: int,
    primary_minutes: int,
) -> int:
    closes = primary_closes(first_ms, last_ms + MINUTE_MS, primary_minutes)
    emitted = 0
    for i in range(0, len(closes), REPLAY_CHUNK_CLOSES):
        emitted += emit_signals(db, engine, closes_ms=closes[i : i + REPLAY_CHUNK_CLOSES])
    return emitted


@flow(name="stream")
async def stream(
    symbols: list[str] | None = None,
    shard: str | None = None,
    source: str = "live",
    run_id: str = LIVE_RUN,
    max_minutes: int | None = None,
    start: str | None = None,
    end: str | None = None,
) -> dict[str, Any] | State:
    """Ingest closed 1m bars and emit signals until cancelled (or after `max_minutes`).

    With `source="replay"` the same engine driver runs over stored klines in [start, end)
    as fast as it can, under `run_id` (default `replay-<start>`), and the flow ends.
    """
    logger = get_run_logger()
    settings = get_settings()
    chosen = shard_symbols(symbols or settings.symbols, shard)
    primary = TIMEFRAME_MINUTES[settings.primary_timeframe]
    if source == "replay":
        db = ReconnectingConnection(database_url(settings))
        first_ms, last_ms = replay_window(
            db, exchange=settings.exchange, symbols=chosen, start=start, end=end
        )
        run_id = run_id if run_id != LIVE_RUN else f"replay-{first_ms}"
        engine = LiveEngine.start(
            db.get(), settings=settings, symbols=chosen, run_id=run_id, shard=shard
        )
        emitted = await _replay(
            db, engine, first_ms=first_ms, last_ms=last_ms, primary_minutes=primary
        )
        db.close()
        logger.info("replay %s: %d signals", run_id, emitted)
        return {"run_id": run_id, "symbols": len(chosen), "signals": emitted}
    if source != "live":
        raise ValueError(f"unknown source {source!r}; use live or replay")
    if not metrics.start_metrics_server(settings.stream_metrics_port, settings.stream_metrics_host):
        logger.warning("metrics port %d is taken; metrics not served", settings.stream_metrics_port)
    db = ReconnectingConnection(database_url(settings))
    client = create_exchange(settings.exchange, base_url=settings.exchange_url)
    marks = Watermarks.load(db.get(), exchange=settings.exchange, symbols=chosen)
    engine = LiveEngine.start(
        db.get(), settings=settings, symbols=chosen, run_id=run_id, shard=shard
    )
    minutes_done, stored, emitted = 0, 0, 0
    async with CancellationWatch(flow_run.get_id()) as cancel:
        try:
            now_ms = await exchange_time_ms(client)
            current_minute = now_ms // MINUTE_MS * MINUTE_MS
            start_ms = current_minute - int(settings.backfill_days * 1440) * MINUTE_MS
            stored += await catch_up(
                db,
                client,
                marks,
                upto_ms=current_minute,
                default_start_ms=start_ms,
                timeframes=settings.timeframes,
            )
            engine.ensure_watermark(db.get(), current_minute)
            logger.info("caught up %d bars for %d symbols; streaming", stored, len(chosen))
            collection = LiveCollection(client, chosen, exchange=settings.exchange, logger=logger)
            async for minute_ms, bars in collection.minutes(race=cancel.race):
                summary = await ingest_minute(
                    db,
                    client,
                    marks,
                    minute_ms=minute_ms,
                    bars=bars,
                    timeframes=settings.timeframes,
                )
                stored += summary["inserted"]
                minutes_done += 1
                closes = primary_closes(engine.watermark_ms, minute_ms + MINUTE_MS, primary)
                if closes:
                    emitted += emit_signals(db, engine, closes_ms=closes)
                metrics.observe_stream_health(marks.by_symbol, now_ms=minute_ms + MINUTE_MS)
                if max_minutes is not None and minutes_done >= max_minutes:
                    break
            if cancel.requested.is_set():
                logger.info("cancellation requested; stopping after %d minutes", minutes_done)
        finally:
            await client.close()
            engine.close()
            db.close()
    summary = {
        "symbols": len(chosen),
        "minutes": minutes_done,
        "bars_stored": stored,
        "signals": emitted,
    }
    if cancel.requested.is_set():
        return Cancelled(message=f"cancelled after {minutes_done} minutes: {summary}")
    return summary

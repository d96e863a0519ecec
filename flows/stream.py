"""The long-running streaming flow: closed 1m bars in, signals out, one batch per minute.

Ingest and evaluation run side by side, joined by a bounded queue of stored minutes
(`event_queue_depth`): ingest reads the exchange and stores each minute (gap fills
included), then hands over exactly the bars it stored; evaluation advances the engine's
in-memory windows (`LiveWindows`, seeded from the database after the catch-up) by them
and evaluates the primary closes due, in a worker thread on its own database
connection, so a slow close never stops bars being read and stored. Behind (catching
up, or draining at a stop) it takes the queued minutes in batches, one task run each. A
full queue makes ingest wait (counted in `stream_ingest_backpressure_seconds_total`);
nothing is dropped, and a stop (cancel, `max_minutes`) first evaluates every minute
already stored.

Every REST request (server time, catch-up, gap fills) takes a slot of the Prefect global
limit `exchange-<id>-rest` shared with `backfill` and is retried per request; the
database is awaited indefinitely without blocking the event loop (`ReconnectingConnection
.ready`), while a heartbeat and the `stream_database_*` gauges show the wait.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import suppress
from typing import Any, TypeVar, cast

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State
from prefect.concurrency.asyncio import rate_limit
from prefect.context import TagsContext
from prefect.runtime import flow_run
from prefect.states import Cancelled
from prefect.utilities.annotations import quote

from signalengine.core.config import get_settings
from signalengine.core.db import DbConn, database_url
from signalengine.core.dbconn import ReconnectingConnection
from signalengine.core.vocabulary import LIVE_RUN, TIMEFRAME_MINUTES
from signalengine.flows.backfill import ensure_rate_limit
from signalengine.flows.cancellation import CancellationWatch
from signalengine.tasks import metrics
from signalengine.tasks.alerts.outbox import DeliveryPolicy, DeliveryWorker
from signalengine.tasks.engine.config import EngineConfig
from signalengine.tasks.engine.loader import load_strategies
from signalengine.tasks.marketdata.backfill import BackfillResult, fill_gaps
from signalengine.tasks.marketdata.batching import MINUTE_MS, MinuteBars, shard_symbols
from signalengine.tasks.marketdata.collection import LiveCollection
from signalengine.tasks.marketdata.exchange import (
    Acquire,
    RestPolicy,
    create_exchange,
    exchange_time_ms,
)
from signalengine.tasks.marketdata.handover import MinuteCommit, complete_minute
from signalengine.tasks.marketdata.ingest import (
    Watermarks,
    primary_closes,
    store_live_minute,
    stored_span,
)
from signalengine.tasks.marketdata.staleness import watch_staleness
from signalengine.tasks.runs.live import LiveEngine
from signalengine.tasks.runs.strategy_gate import admit_strategies

T = TypeVar("T")


def untagged() -> TagsContext:
    """A context whose task runs carry no tags: the stream's repeated task runs (every
    minute's store and evaluation, every replay chunk) start at once.

    Prefect gates every tagged task run on tag concurrency slots through a serial
    acquisition service on another thread (`tag:signalengine`, `tag:stream` from the
    command's `tags(...)`); at 500 symbols that gate held each minute's store and
    evaluation 1.8-2.4 s (bench/live.py). The stream sets no tag concurrency limits; its
    flow run keeps its tags (the zombie automation matches on them).
    """
    return TagsContext(current_tags=set())


def unwalked(value: T) -> T:
    """`value` as a task argument Prefect passes through without walking it (`quote`).

    Prefect visits every nested element of a task's arguments, looking for futures to
    track; a minute's 500 kline payloads, the watermarks and the engine state cost ~1.5 s
    of the event loop a minute at 500 symbols that way. Typed as the value itself.
    """
    return cast(T, quote(value))


@task(cache_policy=NO_CACHE, retries=5, retry_delay_seconds=[1, 2, 5, 10, 20])
async def catch_up(
    db: ReconnectingConnection,
    client: Any,
    marks: Watermarks,
    *,
    upto_ms: int,
    default_start_ms: int,
    timeframes: list[str],
    acquire: Acquire | None,
    tally: list[BackfillResult],
) -> int:
    """Backfill every missing minute before `upto_ms` over REST, page by page (each page
    stored as it arrives, so a retry resumes rather than starts over)."""
    return await db.run(
        lambda conn: fill_gaps(
            conn,
            client,
            marks=marks,
            upto_ms=upto_ms,
            default_start_ms=default_start_ms,
            timeframes=timeframes,
            acquire=acquire,
            tally=tally,
        )
    )


@task(cache_policy=NO_CACHE, retries=5, retry_delay_seconds=[1, 2, 5, 10, 20])
async def ingest_minute(
    db: ReconnectingConnection,
    client: Any,
    marks: Watermarks,
    *,
    minute_ms: int,
    bars: MinuteBars,
    timeframes: list[str],
    acquire: Acquire | None,
) -> dict[str, int]:
    """Fill any gap before this minute, store the minute's closed bars, then fetch the
    minute over REST for any symbol whose WebSocket bar has not arrived: the engine must
    never evaluate a primary close on an incomplete bucket."""

    async def work(conn: DbConn) -> dict[str, int]:
        before = await fill_gaps(
            conn,
            client,
            marks=marks,
            upto_ms=minute_ms,
            default_start_ms=minute_ms,
            timeframes=timeframes,
            acquire=acquire,
        )
        summary = store_live_minute(conn, bars, marks=marks, timeframes=timeframes).as_dict()
        summary["inserted"] += before + await fill_gaps(
            conn,
            client,
            marks=marks,
            upto_ms=minute_ms + MINUTE_MS,
            default_start_ms=minute_ms,
            timeframes=timeframes,
            acquire=acquire,
        )
        return summary

    return await db.run(work)


@task(cache_policy=NO_CACHE, retries=5, retry_delay_seconds=[1, 2, 5, 10, 20])
async def emit_signals(
    db: ReconnectingConnection, engine: LiveEngine, *, closes_ms: list[int]
) -> int:
    """Run the engine at each primary close and write the signals (one transaction per
    close; a retry yields exactly what a first attempt would)."""
    return await db.run(lambda conn: asyncio.to_thread(engine.process_closes, conn, closes_ms))


EVAL_QUEUE_MINUTES = 120  # stored minutes ingest may run ahead of evaluation, then it waits


class StoredMinute:
    """One minute handed from ingest to evaluation: every 1m bar stored for it (gap fills
    included) and the newest stored bar per symbol then (a plain class: Prefect does not
    walk it as task input). `commit`: a complete minute handed over before it is stored
    (tasks.marketdata.handover) resolves it once its bars are committed."""

    __slots__ = ("commit", "newest_ms", "stored", "upto_ms")

    def __init__(
        self,
        upto_ms: int,
        stored: pd.DataFrame,
        newest_ms: dict[str, int | None],
        commit: MinuteCommit | None = None,
    ):
        self.upto_ms, self.stored, self.newest_ms = upto_ms, stored, newest_ms
        self.commit = commit


EVAL_BATCH_MINUTES = 30  # queued minutes one evaluation task run takes when behind


@task(cache_policy=NO_CACHE, retries=5, retry_delay_seconds=[1, 2, 5, 10, 20])
async def evaluate_minutes(
    db: ReconnectingConnection, engine: LiveEngine, *, minutes: list[StoredMinute]
) -> int:
    """Advance the windows by each stored minute in turn and evaluate the primary closes
    due, in a worker thread on evaluation's own connection (the event loop keeps
    ingesting). One minute when the stream keeps up; the queued backlog when it is behind
    (catching up, or draining at a stop), so a task run's overhead is paid once per batch,
    not once per minute. A retry yields exactly what a first attempt would: a minute
    already evaluated is a no-op (`LiveEngine.on_minute`)."""

    def run(conn: DbConn) -> int:
        return sum(
            engine.on_minute(
                conn,
                upto_ms=minute.upto_ms,
                stored=minute.stored,
                newest_ms=minute.newest_ms,
                bars_stored=None if minute.commit is None else minute.commit.wait,
            )
            for minute in minutes
        )

    return await db.run(lambda conn: asyncio.to_thread(run, conn))


def _next_batch(
    first: StoredMinute, queue: asyncio.Queue[StoredMinute | None]
) -> tuple[list[StoredMinute], bool]:
    """`first` and the minutes already queued behind it (at most EVAL_BATCH_MINUTES), and
    whether the closing None was among them."""
    batch = [first]
    while len(batch) < EVAL_BATCH_MINUTES and not queue.empty():
        item = queue.get_nowait()
        if item is None:
            return batch, True
        batch.append(item)
    return batch, False


async def _evaluate(
    queue: asyncio.Queue[StoredMinute | None], db: ReconnectingConnection, engine: LiveEngine
) -> int:
    """The evaluation side: every queued minute in order, until the closing None."""
    emitted, depth = 0, metrics.EVENT_QUEUE_DEPTH.labels(engine.exchange)
    closed = False
    while not closed and (minute := await queue.get()) is not None:
        batch, closed = _next_batch(minute, queue)
        depth.set(queue.qsize())
        with untagged():
            emitted += await evaluate_minutes(db, unwalked(engine), minutes=unwalked(batch))
    depth.set(queue.qsize())
    return emitted


async def _hand_over(
    queue: asyncio.Queue[StoredMinute | None],
    item: StoredMinute | None,
    evaluation: asyncio.Task[int],
    *,
    exchange: str,
) -> None:
    """Queue an item for evaluation, waiting while the queue is full (back-pressure,
    counted per exchange); raises evaluation's error if it has failed."""
    if evaluation.done():
        evaluation.result()
        raise RuntimeError("evaluation stopped before the stream")
    if not queue.full():
        queue.put_nowait(item)
    else:
        started = time.monotonic()
        put = asyncio.ensure_future(queue.put(item))
        try:
            await asyncio.wait({put, evaluation}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            metrics.INGEST_BACKPRESSURE.labels(exchange).inc(time.monotonic() - started)
            if not put.done():
                put.cancel()
        if not put.done() or put.cancelled():
            evaluation.result()
            raise RuntimeError("evaluation stopped before the stream")
    metrics.EVENT_QUEUE_DEPTH.labels(exchange).set(queue.qsize())


async def _take_minute(
    db: ReconnectingConnection,
    client: Any,
    marks: Watermarks,
    *,
    minute_ms: int,
    bars: MinuteBars,
    timeframes: list[str],
    acquire: Acquire | None,
    handover: tuple[asyncio.Queue[StoredMinute | None], asyncio.Task[int]],
) -> int:
    """Store one collected minute and hand it to evaluation: a complete one before it is
    stored (evaluated meanwhile, its signals written after the commit), any other once
    stored, with its gap fills. Returns the 1m bars inserted."""
    queue, evaluation = handover
    upto_ms = minute_ms + MINUTE_MS
    complete = complete_minute(bars, marks, minute_ms)
    commit = MinuteCommit() if complete is not None else None
    if complete is not None:
        newest = dict(marks.by_symbol) | dict.fromkeys(marks.by_symbol, minute_ms)
        early = StoredMinute(upto_ms, complete, newest, commit)
        await _hand_over(queue, early, evaluation, exchange=marks.exchange)
    try:
        with untagged():
            summary = await ingest_minute(
                db,
                client,
                unwalked(marks),
                minute_ms=minute_ms,
                bars=unwalked(bars),
                timeframes=timeframes,
                acquire=acquire,
            )
    except BaseException as error:
        if commit is not None:
            commit.fail(error)
        raise
    written = marks.take_stored()
    if commit is not None:
        commit.done()  # it stored exactly what was handed over
    else:
        minute = StoredMinute(upto_ms, written, dict(marks.by_symbol))
        await _hand_over(queue, minute, evaluation, exchange=marks.exchange)
    return int(summary["inserted"])


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
        with untagged():
            emitted += await emit_signals(
                db, unwalked(engine), closes_ms=closes[i : i + REPLAY_CHUNK_CLOSES]
            )
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
    exchange: str | None = None,
    allow_unchecked: bool = False,
) -> dict[str, Any] | State:
    """Ingest closed 1m bars and emit signals until cancelled (or after `max_minutes`).

    With `source="replay"` the same engine driver runs over stored klines in [start, end)
    as fast as it can, under `run_id` (default `replay-<start>`), and the flow ends.
    `exchange` is one configured exchange (SIGNALENGINE_EXCHANGES; default: the first, or
    the single `exchange`): its URL, symbols, client, rate limit and watermarks.
    `allow_unchecked` (or SIGNALENGINE_ALLOW_UNCHECKED_STRATEGIES) lets the live stream run
    strategies that have not passed `signalengine strategy check` (tasks.runs.strategy_gate).
    """
    logger = get_run_logger()
    settings = get_settings().for_exchange(exchange)
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
    url = database_url(settings)
    db = ReconnectingConnection(url, wait_cap_seconds=settings.db_wait_cap_seconds)
    # a strategy without a passing `strategy check` of its version does not run live
    # (refused here, before the exchange, the model or any bar is touched)
    admit_strategies(
        await db.ready(),
        load_strategies(settings.strategies, EngineConfig.from_settings(settings)),
        allow_unchecked=allow_unchecked or settings.allow_unchecked_strategies,
        run_id=run_id,
        exchange=settings.exchange,
        symbols=chosen,
    )
    beat = asyncio.create_task(
        metrics.heartbeat(db.state.outage_seconds, lambda: db.state.connected)
    )
    limit = await ensure_rate_limit(
        f"exchange-{settings.exchange}-rest", settings.backfill_requests_per_second
    )

    async def acquire() -> None:
        await rate_limit(limit, strict=True)

    client = create_exchange(settings.exchange, base_url=settings.exchange_url)
    marks = Watermarks.load(await db.ready(), exchange=settings.exchange, symbols=chosen)
    engine = LiveEngine.start(
        await db.ready(), settings=settings, symbols=chosen, run_id=run_id, shard=shard
    )
    workers = [
        DeliveryWorker(url, DeliveryPolicy.from_settings(settings), name=f"webhooks-{i}").start()
        for i in range(settings.webhook_workers if engine.webhook_urls else 0)
    ]
    # evaluation's own connection: psycopg connections are not shared between threads
    eval_db = ReconnectingConnection(url, wait_cap_seconds=settings.db_wait_cap_seconds)
    queue: asyncio.Queue[StoredMinute | None] = asyncio.Queue(maxsize=EVAL_QUEUE_MINUTES)
    evaluation: asyncio.Task[int] | None = None
    minutes_done, stored, emitted, resumed_from = 0, 0, 0, -1
    # staleness against the exchange's clock on a timer: a stall shows in /health too
    staleness = asyncio.create_task(
        watch_staleness(
            client, marks, url=url, name=engine.watermark_name, policy=RestPolicy(acquire=acquire)
        )
    )
    async with CancellationWatch(flow_run.get_id()) as cancel:
        try:
            now_ms = await exchange_time_ms(client, policy=RestPolicy(acquire=acquire))
            current_minute = now_ms // MINUTE_MS * MINUTE_MS
            start_ms = current_minute - int(settings.backfill_days * 1440) * MINUTE_MS
            tally: list[BackfillResult] = []
            await catch_up(
                db,
                client,
                unwalked(marks),
                upto_ms=current_minute,
                default_start_ms=start_ms,
                timeframes=settings.timeframes,
                acquire=acquire,
                tally=unwalked(tally),
            )
            stored += sum(part.inserted for part in tally)  # every attempt's pages count
            engine.ensure_watermark(await db.ready(), current_minute)
            resumed_from = engine.watermark_ms
            windows = await asyncio.to_thread(
                engine.hold_windows, await eval_db.ready(), now_ms=current_minute
            )
            logger.info(
                "caught up %d bars for %d symbols; windows %.0f MB; streaming",
                stored,
                len(chosen),
                windows.nbytes() / 2**20,
            )
            marks.journal = True  # from here on, every stored bar goes to evaluation
            evaluation = asyncio.create_task(_evaluate(queue, eval_db, engine))
            collection = LiveCollection(client, chosen, exchange=settings.exchange, logger=logger)
            async for minute_ms, bars in collection.minutes(race=cancel.race):
                stored += await _take_minute(
                    db,
                    client,
                    marks,
                    minute_ms=minute_ms,
                    bars=bars,
                    timeframes=settings.timeframes,
                    acquire=acquire,
                    handover=(queue, evaluation),
                )
                minutes_done += 1
                metrics.observe_stream_health(
                    marks.by_symbol, exchange=marks.exchange, now_ms=minute_ms + MINUTE_MS
                )
                # stop after the minute in hand, not after a backlog of buffered minutes
                done = max_minutes is not None and minutes_done >= max_minutes
                if done or cancel.requested.is_set():
                    break
            if cancel.requested.is_set():
                logger.info("%s; stopping after %d minutes", cancel.reason, minutes_done)
            await _hand_over(
                queue, None, evaluation, exchange=engine.exchange
            )  # drain: every stored minute evaluated
            emitted = await evaluation
        finally:
            if evaluation is not None and not evaluation.done():
                evaluation.cancel()
                with suppress(asyncio.CancelledError):
                    await evaluation
            for background in (beat, staleness):
                background.cancel()
                with suppress(asyncio.CancelledError):
                    await background
            for worker in workers:
                await asyncio.to_thread(worker.stop)
            await client.close()
            engine.close()
            db.close()
            eval_db.close()
    summary = {
        "symbols": len(chosen),
        "minutes": minutes_done,
        "bars_stored": stored,
        "signals": emitted,
        # the primary close this run evaluated after (its watermark at start), epoch ms
        "evaluated_after_ms": resumed_from,
    }
    if cancel.requested.is_set():
        return Cancelled(message=f"cancelled after {minutes_done} minutes: {summary}")
    return summary

"""The stream's ingest -> evaluation hand-over: a full queue makes ingest wait (counted as
back-pressure) and drops nothing; a failed evaluation stops ingest with its error; a
backlog is evaluated in batches, in order, up to the closing None."""

from __future__ import annotations

import asyncio

import pandas as pd
import pytest

from signalengine.flows.stream import EVAL_BATCH_MINUTES, StoredMinute, _hand_over, _next_batch
from signalengine.tasks import metrics

EXCHANGE = "binance"  # the gauges are per exchange: one process may stream several


def _minute(i: int) -> StoredMinute:
    return StoredMinute(i, pd.DataFrame(), {})


async def test_a_full_queue_waits_and_drops_nothing() -> None:
    queue: asyncio.Queue[StoredMinute | None] = asyncio.Queue(maxsize=2)
    release = asyncio.Event()
    seen: list[int] = []

    async def slow_evaluation() -> int:
        await release.wait()  # evaluation stuck on a slow close
        while (item := await queue.get()) is not None:
            seen.append(item.upto_ms)
        return len(seen)

    evaluation = asyncio.create_task(slow_evaluation())
    waited_before = metrics.INGEST_BACKPRESSURE.labels(EXCHANGE)._value.get()
    await _hand_over(queue, _minute(1), evaluation, exchange=EXCHANGE)
    await _hand_over(queue, _minute(2), evaluation, exchange=EXCHANGE)
    assert metrics.EVENT_QUEUE_DEPTH.labels(EXCHANGE)._value.get() == 2
    third = asyncio.create_task(_hand_over(queue, _minute(3), evaluation, exchange=EXCHANGE))
    await asyncio.sleep(0.05)
    assert not third.done()  # ingest waits on the full queue ...
    release.set()
    await third  # ... until evaluation takes a minute
    await _hand_over(queue, None, evaluation, exchange=EXCHANGE)
    assert await evaluation == 3
    assert seen == [1, 2, 3]  # in order, none dropped
    assert metrics.INGEST_BACKPRESSURE.labels(EXCHANGE)._value.get() > waited_before


async def test_a_failed_evaluation_stops_ingest_with_its_error() -> None:
    queue: asyncio.Queue[StoredMinute | None] = asyncio.Queue(maxsize=1)
    fail = asyncio.Event()

    async def failing_evaluation() -> int:
        await fail.wait()
        raise RuntimeError("database gone for good")

    evaluation = asyncio.create_task(failing_evaluation())
    await _hand_over(queue, _minute(1), evaluation, exchange=EXCHANGE)
    waiting = asyncio.create_task(_hand_over(queue, _minute(2), evaluation, exchange=EXCHANGE))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # the queue is full: ingest waits
    fail.set()
    with pytest.raises(RuntimeError, match="database gone"):
        await waiting  # the wait ends with evaluation's error, not a hang
    with pytest.raises(RuntimeError, match="database gone"):
        await _hand_over(queue, _minute(3), evaluation, exchange=EXCHANGE)


def test_a_backlog_is_taken_in_order_in_bounded_batches_up_to_the_close() -> None:
    queue: asyncio.Queue[StoredMinute | None] = asyncio.Queue()
    total = EVAL_BATCH_MINUTES + 5
    for i in range(2, total + 1):
        queue.put_nowait(_minute(i))
    queue.put_nowait(None)
    queue.put_nowait(_minute(99))  # never reached: the stream stopped before it
    batch, closed = _next_batch(_minute(1), queue)
    assert [m.upto_ms for m in batch] == list(range(1, EVAL_BATCH_MINUTES + 1)) and not closed
    batch, closed = _next_batch(queue.get_nowait(), queue)  # type: ignore[arg-type]
    assert [m.upto_ms for m in batch] == list(range(EVAL_BATCH_MINUTES + 1, total + 1))
    assert closed
    # keeping up: nothing queued behind the minute, a batch of one
    alone, closed = _next_batch(_minute(7), asyncio.Queue())
    assert [m.upto_ms for m in alone] == [7] and not closed

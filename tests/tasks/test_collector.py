"""Micro-batching of closed bars, gap ranges, primary closes and sharding."""

from __future__ import annotations

from signalengine.tasks.marketdata.batching import MinuteBatcher, missing_range, shard_symbols
from signalengine.tasks.marketdata.ingest import primary_closes

M = 60_000


def test_minute_flushes_when_every_symbol_reported() -> None:
    batcher = MinuteBatcher(["A", "B"], flush_after=60)
    batcher.add("A", 10 * M, {"t": 10 * M})
    assert batcher.ready(now=0) == []
    batcher.add("B", 10 * M, {"t": 10 * M})
    ready = batcher.ready()
    assert [(minute, sorted(bars)) for minute, bars in ready] == [(10 * M, ["A", "B"])]
    assert batcher.depth() == 0


def test_minute_flushes_when_overtaken_or_stale_and_late_bars_get_a_batch() -> None:
    batcher = MinuteBatcher(["A", "B"], flush_after=5)
    batcher.add("A", 10 * M, {})
    batcher.add("A", 11 * M, {})
    ready = batcher.ready()
    assert [minute for minute, _ in ready] == [10 * M]
    batcher.add("B", 10 * M, {})  # late: minute 10 was already flushed without B
    assert [minute for minute, _ in batcher.ready()] == [10 * M]
    import time

    assert batcher.ready(now=time.monotonic() + 6) == [(11 * M, {"A": [{}]})]


def test_every_distinct_payload_of_a_minute_is_kept() -> None:
    """A malformed kline followed by the genuine one: both reach validation, once each."""
    batcher = MinuteBatcher(["A"], flush_after=60)
    broken = {"t": 10 * M, "c": "NaN"}
    genuine = {"t": 10 * M, "c": "1.5"}
    batcher.add("A", 10 * M, broken)
    batcher.add("A", 10 * M, genuine)
    batcher.add("A", 10 * M, dict(genuine))  # an exact duplicate
    assert batcher.depth() == 2
    assert batcher.ready() == [(10 * M, {"A": [broken, genuine]})]


def test_missing_range() -> None:
    assert missing_range(None, 5 * M) is None
    assert missing_range(4 * M, 5 * M) is None
    assert missing_range(1 * M, 5 * M) == (2 * M, 5 * M)


def test_primary_closes() -> None:
    assert primary_closes(0, 4 * M, 5) == []
    assert primary_closes(0, 5 * M, 5) == [5 * M]
    assert primary_closes(5 * M, 21 * M, 5) == [10 * M, 15 * M, 20 * M]


def test_shards_partition_symbols() -> None:
    symbols = [f"S{i}/USDT" for i in range(50)]
    parts = [shard_symbols(symbols, f"{i}/3") for i in range(3)]
    assert sorted(sum(parts, [])) == sorted(symbols)
    assert all(parts)
    assert shard_symbols(symbols, None) == symbols

"""Market data: exchange access, live collection, backfill, validation, klines, timeframes."""

from signalengine.tasks.marketdata.backfill import BackfillResult, backfill_symbol
from signalengine.tasks.marketdata.batching import MinuteBatcher, shard_symbols
from signalengine.tasks.marketdata.exchange import (
    ClosedBar,
    connected_exchange,
    create_exchange,
    fetch_ohlcv_range,
    watch_closed_bars,
)
from signalengine.tasks.marketdata.files import read_klines_file, write_klines_file
from signalengine.tasks.marketdata.klines import StoreResult, load_bars, store_klines
from signalengine.tasks.marketdata.timeframes import ensure_timeframe_tables
from signalengine.tasks.marketdata.validation import ValidatedBatch, validate_klines

__all__ = [
    "BackfillResult",
    "ClosedBar",
    "MinuteBatcher",
    "StoreResult",
    "ValidatedBatch",
    "backfill_symbol",
    "connected_exchange",
    "create_exchange",
    "ensure_timeframe_tables",
    "fetch_ohlcv_range",
    "load_bars",
    "read_klines_file",
    "shard_symbols",
    "store_klines",
    "validate_klines",
    "watch_closed_bars",
    "write_klines_file",
]

"""Market data: exchange access, live collection, backfill, validation, klines, timeframes.

Exports load on first use (PEP 562), so reading or storing klines does not import ccxt.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_EXPORTS = {
    "BackfillResult": "backfill",
    "backfill_symbol": "backfill",
    "MinuteBatcher": "batching",
    "shard_symbols": "batching",
    "ClosedBar": "exchange",
    "connected_exchange": "exchange",
    "create_exchange": "exchange",
    "fetch_ohlcv_range": "exchange",
    "watch_closed_bars": "exchange",
    "read_klines_file": "files",
    "write_klines_file": "files",
    "StoreResult": "klines",
    "load_bars": "klines",
    "store_klines": "klines",
    "ensure_timeframe_tables": "timeframes",
    "ValidatedBatch": "validation",
    "validate_klines": "validation",
}

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


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value

"""Retrain labelling in symbol chunks: each chunk reads its own bars, labels, releases them.

Why: labelling needs the 1m bars of every symbol in the window, but only the labelled
candidates (a few hundred rows per symbol and month) outlive it. Reading a chunk, building
its part of the dataset (tasks.learning.labels.build_dataset) and dropping its bars keeps
peak memory flat in the symbol count, and a chunk is what a Dask worker takes.

`merge_datasets` restores the order `build_dataset` gives over all symbols at once
(emitted_at, then symbol, stable): symbols are labelled independently, so the merged
dataset equals the one-pass dataset row for row.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from signalengine.core.db import DbConn
from signalengine.tasks.engine.buckets import MINUTE_NS
from signalengine.tasks.engine.config import EngineConfig
from signalengine.tasks.engine.strategy import Strategy
from signalengine.tasks.learning.labels import DATASET_COLUMNS, build_dataset
from signalengine.tasks.marketdata.columnar import read_bars
from signalengine.tasks.marketdata.klines import last_stored_ts

__all__ = ["label_chunk", "merge_datasets", "training_window"]


def training_window(
    conn: DbConn,
    *,
    exchange: str,
    symbols: Sequence[str],
    lookback_days: float,
) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    """[end - lookback_days, end) with end = close of the newest stored 1m bar of any
    symbol (as `load_training_bars`); None when none of them has bars."""
    newest = [last_stored_ts(conn, exchange=exchange, symbol=s) for s in symbols]
    known = [pd.Timestamp(t) for t in newest if t is not None]
    if not known:
        return None
    end = max(known) + pd.Timedelta(MINUTE_NS, unit="ns")
    return end - pd.Timedelta(days=lookback_days), end


def label_chunk(
    conn: DbConn,
    *,
    symbols: Sequence[str],
    exchange: str,
    window: tuple[pd.Timestamp, pd.Timestamp],
    config: EngineConfig,
    strategy: Strategy | None = None,
) -> pd.DataFrame:
    """The labelled candidates (DATASET_COLUMNS) of a chunk of symbols over `window`, of
    `strategy` (default: the built-in one)."""
    columns = read_bars(
        conn,
        exchange=exchange,
        symbols=list(symbols),
        timeframe="1m",
        start=window[0],
        end=window[1],
    )
    bars = columns.frames(with_bars=False, unit="ns")
    del columns
    return build_dataset(bars, config=config, exchange=exchange, strategy=strategy)


def merge_datasets(
    parts: Sequence[pd.DataFrame], *, columns: Sequence[str] = DATASET_COLUMNS
) -> pd.DataFrame:
    """Chunk datasets (in chunk order) as one, ordered like `build_dataset`'s (`columns`
    when there is none)."""
    filled = [p for p in parts if not p.empty]
    if not filled:
        return pd.DataFrame(columns=list(columns))
    data = pd.concat(filled, ignore_index=True)
    return data.sort_values(["emitted_at", "symbol"], kind="stable").reset_index(drop=True)

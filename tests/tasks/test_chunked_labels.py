"""Retrain labelling in symbol chunks equals labelling every symbol in one pass."""

from __future__ import annotations

import dataclasses

import pandas as pd

from signalengine.tasks.engine.config import EngineConfig
from signalengine.tasks.learning.chunked import label_chunk, merge_datasets, training_window
from signalengine.tasks.learning.labels import build_dataset, load_training_bars
from signalengine.tasks.runs.chunks import chunk_symbols
from tests.utils.market import store_market

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
CFG = dataclasses.replace(EngineConfig(), signal_score_threshold=0.35, mtf_min_aligned=1)


def test_chunked_dataset_equals_the_one_pass_dataset(db) -> None:
    store_market(db, SYMBOLS, "2025-04-01", 5)
    one_pass = build_dataset(
        load_training_bars(db, exchange="binance", symbols=SYMBOLS, lookback_days=4),
        config=CFG,
        exchange="binance",
    )
    window = training_window(db, exchange="binance", symbols=SYMBOLS, lookback_days=4)
    assert window == (pd.Timestamp("2025-04-02", tz="UTC"), pd.Timestamp("2025-04-06", tz="UTC"))
    parts = [
        label_chunk(db, symbols=c, exchange="binance", window=window, config=CFG)
        for c in chunk_symbols(SYMBOLS, 2)
    ]
    chunked = merge_datasets(parts)
    assert len(one_pass) > 20 and set(one_pass["symbol"]) == set(SYMBOLS)
    pd.testing.assert_frame_equal(chunked, one_pass, check_exact=True)


def test_no_bars_no_window(db) -> None:
    assert training_window(db, exchange="binance", symbols=["NONE/USDT"], lookback_days=4) is None
    assert merge_datasets([]).empty

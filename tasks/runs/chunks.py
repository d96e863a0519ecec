"""A backtest in symbol chunks: each chunk is read, simulated, settled, stored, released.

Why chunks: a symbol-year of 1m bars is ~525k rows; holding the whole universe (bars,
features, settlement arrays) at once grows memory with the symbol count. A chunk holds
`chunk_symbols` symbols only, so peak memory stays flat however many symbols run, and a
chunk is the unit a Dask worker takes (it reads its own bars from the database; only the
chunk's small results travel back).

Every symbol is independent in the engine (features, cooldown and settlement are per
symbol), so running the universe chunk by chunk, in any process, gives the same signals
and outcomes as one pass; `merge_chunks` restores the one-pass order.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pandas as pd

from signalengine.core.db import DbConn
from signalengine.tasks.engine.config import EngineConfig
from signalengine.tasks.engine.strategy import Strategy
from signalengine.tasks.outcomes.settlement import PERFORMANCE_COLUMNS
from signalengine.tasks.runs.backtest import run_backtest
from signalengine.tasks.runs.history import load_history_columns, store_results

__all__ = ["DEFAULT_CHUNK_SYMBOLS", "ChunkResult", "chunk_symbols", "merge_chunks", "run_chunk"]

# Symbols per chunk: a symbol-year in flight costs roughly 150-250 MB, so four keep a
# chunk well under a gigabyte while amortising the per-query and per-task overheads.
DEFAULT_CHUNK_SYMBOLS = 4


@dataclass(frozen=True)
class ChunkResult:
    """What a chunk hands back: counts, its settled trades and where its time went.

    `performance` has the `signal_performance` columns (small: one row per settled signal);
    `seconds` splits wall time into load / engine / store.
    """

    index: int
    symbols: tuple[str, ...]
    bars: int
    signals: int
    stored: int
    performance: pd.DataFrame
    seconds: dict[str, float] = field(default_factory=dict)


def chunk_symbols(symbols: Sequence[str], size: int) -> list[list[str]]:
    """Consecutive groups of at most `size` symbols, in the given order (duplicates dropped)."""
    if size < 1:
        raise ValueError(f"chunk size must be at least 1, got {size}")
    unique = list(dict.fromkeys(symbols))
    return [unique[i : i + size] for i in range(0, len(unique), size)]


def run_chunk(
    conn: DbConn,
    *,
    index: int,
    symbols: Sequence[str],
    exchange: str,
    start: pd.Timestamp,
    end: pd.Timestamp,
    run_id: str,
    config: EngineConfig,
    on_symbol: Callable[[str, int], None] | None = None,
    strategies: Sequence[Strategy] | None = None,
) -> ChunkResult:
    """Load the chunk's 1m bars, backtest them, store signals and outcomes with COPY."""
    began = time.perf_counter()
    bars = load_history_columns(
        conn, exchange=exchange, symbols=list(symbols), start=start, end=end
    )
    loaded = time.perf_counter()
    signals, performance, summary = run_backtest(
        bars,
        config=config,
        run_id=run_id,
        exchange=exchange,
        on_symbol=on_symbol,
        strategies=strategies,
    )
    del bars  # the chunk's bars are released before its results are written
    simulated = time.perf_counter()
    stored = store_results(conn, signals=signals, performance=performance)
    done = time.perf_counter()
    return ChunkResult(
        index=index,
        symbols=tuple(symbols),
        bars=int(summary["bars_processed"]),
        signals=len(signals),
        stored=stored,
        performance=performance,
        seconds={
            "load": round(loaded - began, 6),
            "engine": round(simulated - loaded, 6),
            "store": round(done - simulated, 6),
        },
    )


def merge_chunks(results: Sequence[ChunkResult]) -> tuple[pd.DataFrame, dict[str, float]]:
    """All chunks' trades in the one-pass order (exit time, then symbol), and summed times."""
    ordered = sorted(results, key=lambda r: r.index)
    frames = [r.performance for r in ordered if not r.performance.empty]
    if frames:
        perf = pd.concat(frames, ignore_index=True)
        perf = perf.sort_values(["exit_time", "symbol"], kind="stable").reset_index(drop=True)
    else:
        perf = pd.DataFrame(columns=list(PERFORMANCE_COLUMNS))
    seconds: dict[str, float] = {"load": 0.0, "engine": 0.0, "store": 0.0}
    for r in ordered:
        for key, value in r.seconds.items():
            seconds[key] = round(seconds.get(key, 0.0) + value, 6)
    return perf, seconds

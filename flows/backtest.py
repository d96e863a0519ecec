"""Backtest: replay stored history through the engine, settle, store and report.

The universe runs in symbol chunks (tasks.runs.chunks), one Prefect task run per chunk:
in this process at most IN_PROCESS_CHUNKS at a time (bounded memory), or on Dask workers
when `run_backtest_flow` is given workers or `SIGNALENGINE_DASK_ADDRESS` is set. Both give the
same signals, outcomes and summary.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, cast

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture, as_completed
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from signalengine.core.config import get_settings
from signalengine.core.db import connect
from signalengine.core.progress import progress_bar
from signalengine.flows.chunk_runner import dask_runner, uses_dask
from signalengine.tasks.engine.config import EngineConfig
from signalengine.tasks.engine.loader import load_strategies
from signalengine.tasks.runs.backtest import summarize_performance
from signalengine.tasks.runs.chunks import ChunkResult, chunk_symbols, merge_chunks, run_chunk
from signalengine.tasks.runs.history import clear_run, load_history, load_markers

# The report charts this many symbols' prices (tasks.runs.report.MAX_PRICE_CHARTS; not
# imported from there, as that module loads matplotlib).
MAX_PRICE_CHARTS = 6


@task(cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[2, 5, 15])
def clear(run_id: str) -> int:
    """Delete an earlier run of the same id (its outcomes cascade)."""
    with connect() as conn:
        conn.autocommit = True
        return clear_run(conn, run_id=run_id)


# No retries: a chunk that stored its rows and then failed would store them twice.
@task(cache_policy=NO_CACHE, task_run_name="chunk {index}: {symbols[0]}..")
def simulate_chunk(
    index: int,
    symbols: list[str],
    exchange: str,
    start: pd.Timestamp,
    end: pd.Timestamp,
    run_id: str,
    config: EngineConfig,
    strategies: str | None = None,
) -> ChunkResult:
    """Read the chunk's 1m bars, run engine and settlement, store the results (COPY).

    `strategies`: the SIGNALENGINE_STRATEGIES value, loaded here (a Dask worker imports
    the strategies' code itself)."""
    chosen = load_strategies(strategies, config)
    with connect() as conn:
        conn.autocommit = True
        return run_chunk(
            conn,
            index=index,
            symbols=symbols,
            exchange=exchange,
            start=start,
            end=end,
            run_id=run_id,
            config=config,
            strategies=chosen,
        )


@task(cache_policy=NO_CACHE)
def report(
    out: str,
    summary: dict[str, Any],
    performance: pd.DataFrame,
    charted: list[str],
    window: tuple[pd.Timestamp, pd.Timestamp],
) -> str:
    """Write the HTML report; the charted symbols' bars and markers are read back here."""
    from signalengine.tasks.runs.report import write_report  # matplotlib: only when reporting

    exchange, run_id = str(summary["exchange"]), str(summary["run_id"])
    with connect() as conn:
        bars = load_history(
            conn, exchange=exchange, symbols=charted, start=window[0], end=window[1]
        )
        markers = load_markers(conn, run_id=run_id, symbols=charted)
    path = write_report(
        Path(out), summary=summary, signals=markers, performance=performance, bars_1m=bars
    )
    return str(path)


def _run_chunks(chunks: list[list[str]], args: dict[str, Any]) -> list[ChunkResult]:
    """Submit every chunk to the flow's task runner; a progress bar counts finished chunks."""
    results: list[ChunkResult] = []
    with progress_bar() as bar:
        job = bar.add_task("backtest chunks", total=len(chunks))
        futures = [simulate_chunk.submit(index=i, symbols=c, **args) for i, c in enumerate(chunks)]
        for future in as_completed(futures):
            result = future.result()
            results.append(result)
            bar.update(job, advance=1, description=f"backtest {result.symbols[-1]}")
    return results


# In this process two chunks are in flight: one reads from the database (the server works,
# this process waits with the GIL released) while the other computes. Memory: two chunks.
IN_PROCESS_CHUNKS = 2


# (Prefect types its runners by future class; the thread runner's does not widen for mypy)
_THREADS = cast(
    "TaskRunner[PrefectFuture[Any]]", ThreadPoolTaskRunner(max_workers=IN_PROCESS_CHUNKS)
)


@flow(name="backtest", task_runner=_THREADS)
def backtest(
    symbols: list[str] | None = None,
    start: str | None = None,
    end: str | None = None,
    exchange: str | None = None,
    run_id: str | None = None,
    out: str | None = None,
    chunk_size: int | None = None,
) -> dict[str, Any]:
    """Backtest `symbols` over [start, end) (default: the last 30 days) and summarize.

    The chunks go to the flow's task runner: two threads here, or Dask workers through
    `run_backtest_flow`.
    """
    settings = get_settings()
    logger = get_run_logger()
    exchange = exchange or settings.exchange
    chosen = symbols or settings.symbols
    stop = pd.Timestamp(end, tz="UTC") if end else pd.Timestamp.now(tz="UTC").floor("min")
    begin = pd.Timestamp(start, tz="UTC") if start else stop - pd.Timedelta(days=30)
    if begin >= stop:
        raise ValueError(f"start {begin} must be before end {stop}")
    run_id = run_id or f"backtest-{uuid.uuid4().hex[:8]}"
    chunks = chunk_symbols(chosen, chunk_size or settings.backtest_chunk_symbols)
    config = EngineConfig.from_settings(settings)
    load_strategies(settings.strategies, config)  # a bad spec fails here, before any chunk
    clear(run_id)
    args = {
        "exchange": exchange,
        "start": begin,
        "end": stop,
        "run_id": run_id,
        "config": config,
        "strategies": settings.strategies,
    }
    results = _run_chunks(chunks, args)
    performance, seconds = merge_chunks(results)
    summary = summarize_performance(performance, signals=sum(r.signals for r in results))
    summary["symbols"] = sum(len(r.symbols) for r in results)
    summary["bars_processed"] = sum(r.bars for r in results)
    summary["seconds"] = seconds["engine"]
    summary["seconds_split"] = seconds
    summary["chunks"] = len(chunks)
    summary["run_id"] = run_id
    summary["exchange"] = exchange
    summary["stored_signals"] = sum(r.stored for r in results)
    if out:
        charted = list(dict.fromkeys(chosen))[:MAX_PRICE_CHARTS]  # as report.MAX_PRICE_CHARTS
        summary["report"] = report(out, summary, performance, charted, (begin, stop))
    logger.info(
        "backtest %s: %d signals, win rate %s", run_id, summary["signals"], summary["win_rate"]
    )
    return summary


def run_backtest_flow(*, workers: int | None = None, **params: Any) -> dict[str, Any]:
    """Run the backtest flow here, or on Dask when `workers` > 0 or a scheduler is set."""
    settings = get_settings()
    if uses_dask(settings, workers):
        runner = dask_runner(settings, workers)
        # DaskTaskRunner is a TaskRunner of PrefectDaskFuture, which mypy cannot widen
        dask_flow = backtest.with_options(task_runner=runner)  # type: ignore[arg-type]
        summary: dict[str, Any] = dask_flow(**params)
        return summary
    result: dict[str, Any] = backtest(**params)
    return result

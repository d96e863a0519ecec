"""Backtest: replay stored history through the engine, settle, store and report."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from signalengine.core.config import get_settings
from signalengine.core.db import connect
from signalengine.core.progress import progress_bar
from signalengine.tasks.engine.config import EngineConfig
from signalengine.tasks.runs.backtest import run_backtest
from signalengine.tasks.runs.history import load_history, store_backtest
from signalengine.tasks.runs.report import write_report


@task(cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[2, 5, 15])
def load(
    exchange: str, symbols: list[str], start: pd.Timestamp, end: pd.Timestamp
) -> dict[str, pd.DataFrame]:
    """Read the 1m bars of the period."""
    with connect() as conn:
        return load_history(conn, exchange=exchange, symbols=symbols, start=start, end=end)


@task(cache_policy=NO_CACHE)
def simulate(
    bars: dict[str, pd.DataFrame], exchange: str, run_id: str
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Run the engine and the settlement over the history (a progress bar in a terminal)."""
    with progress_bar() as bar:
        job = bar.add_task("backtest", total=sum(len(frame) for frame in bars.values()))
        return run_backtest(
            bars,
            config=EngineConfig.from_settings(get_settings()),
            run_id=run_id,
            exchange=exchange,
            on_symbol=lambda symbol, n: bar.update(job, advance=n, description=symbol),
        )


@task(cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[2, 5, 15])
def store(run_id: str, signals: pd.DataFrame, performance: pd.DataFrame) -> int:
    """Write the run's signals and outcomes (replacing an earlier run of the same id)."""
    with connect() as conn:
        conn.autocommit = True
        return store_backtest(conn, run_id=run_id, signals=signals, performance=performance)


@task(cache_policy=NO_CACHE)
def report(
    out: str,
    summary: dict[str, Any],
    signals: pd.DataFrame,
    performance: pd.DataFrame,
    bars: dict[str, pd.DataFrame],
) -> str:
    """Write the HTML report with its charts."""
    path = write_report(
        Path(out), summary=summary, signals=signals, performance=performance, bars_1m=bars
    )
    return str(path)


@flow(name="backtest")
def backtest(
    symbols: list[str] | None = None,
    start: str | None = None,
    end: str | None = None,
    exchange: str | None = None,
    run_id: str | None = None,
    out: str | None = None,
) -> dict[str, Any]:
    """Backtest `symbols` over [start, end) (default: the last 30 days) and summarize."""
    settings = get_settings()
    logger = get_run_logger()
    exchange = exchange or settings.exchange
    chosen = symbols or settings.symbols
    stop = pd.Timestamp(end, tz="UTC") if end else pd.Timestamp.now(tz="UTC").floor("min")
    begin = pd.Timestamp(start, tz="UTC") if start else stop - pd.Timedelta(days=30)
    if begin >= stop:
        raise ValueError(f"start {begin} must be before end {stop}")
    run_id = run_id or f"backtest-{uuid.uuid4().hex[:8]}"
    bars = load(exchange, chosen, begin, stop)
    signals, performance, summary = simulate(bars, exchange, run_id)
    summary["run_id"] = run_id
    summary["stored_signals"] = store(run_id, signals, performance)
    if out:
        summary["report"] = report(out, summary, signals, performance, bars)
    logger.info(
        "backtest %s: %d signals, win rate %s", run_id, summary["signals"], summary["win_rate"]
    )
    return summary

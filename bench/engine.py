"""Engine benchmark: backtest throughput and live-evaluation latency; prints one JSON object.

Backtest: one year of seeded synthetic 1m candles per symbol, 1 and 20 symbols, full
pipeline (resample to 5m/15m/1h, features, events, MTF over 4 timeframes, settlement).
Peer: freqtrade's backtester on the one-symbol data (bench/freqtrade_peer.py, its own
venv, offline) and the ratio of 1m bars per second, ours / freqtrade.
Live: one closed-bar batch of 500 symbols x 4 timeframes, each with a `live_window_bars`
window, as one `evaluate_latest_batch` call and as 500 `evaluate_latest` calls (both
must emit the same signals). Data generation is not timed.

Run from the repository root:
`.venv/bin/python bench/engine.py [--symbols 20] [--days 365] [--no-freqtrade]`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.freqtrade_peer import SEED as PEER_SEED  # noqa: E402
from bench.freqtrade_peer import run_peer  # noqa: E402
from signalengine.tasks.engine.buckets import timeframe_ns  # noqa: E402
from signalengine.tasks.engine.pipeline import (  # noqa: E402
    CooldownState,
    EngineConfig,
    Signal,
    evaluate_latest,
    evaluate_latest_batch,
)
from signalengine.tasks.runs.backtest import run_backtest  # noqa: E402
from tests.utils.bars import make_bars_1m  # noqa: E402

CFG = EngineConfig()
GOAL_BARS_PER_SECOND = 8_000_000  # issue 13: one symbol-year in memory
GOAL_LIVE_BATCH_MS = 100.0


def _backtest(symbols: int, days: int, repeats: int = 1) -> dict[str, Any]:
    """Median of `repeats` runs (a one-symbol year takes ~0.15 s: one run is noisy)."""
    data = {f"SYM{i}/USDT": make_bars_1m(days=days, seed=PEER_SEED + i) for i in range(symbols)}
    runs = [run_backtest(data, config=CFG, run_id="bench", exchange="sim") for _ in range(repeats)]
    signals, perf, summary = runs[0]
    seconds = statistics.median(run[2]["seconds"] for run in runs)
    bars = summary["bars_processed"]
    return {
        "symbols": symbols,
        "bars_1m": bars,
        "seconds": round(seconds, 4),
        "bars_per_second": round(bars / seconds),
        "signals": len(signals),
        "settled": len(perf),
        "win_rate": summary["win_rate"],
    }


def _live_universe(symbols: int) -> dict[str, dict[str, pd.DataFrame]]:
    window = CFG.live_window_bars
    at = _LIVE_AT
    universe: dict[str, dict[str, pd.DataFrame]] = {}
    for i in range(symbols):
        by_tf = {}
        for j, tf in enumerate(CFG.timeframes):
            walk = make_bars_1m(minutes=window, seed=10_000 + 10 * i + j)
            step = pd.Timedelta(timeframe_ns(tf), unit="ns")
            index = pd.date_range(end=at - step, periods=window, freq=step, tz="UTC", name="ts")
            by_tf[tf] = walk.set_axis(index.as_unit("ns"))
        universe[f"SYM{i}/USDT"] = by_tf
    return universe


_LIVE_AT = pd.Timestamp("2024-06-01", tz="UTC")


def _one_by_one(universe: dict[str, dict[str, pd.DataFrame]]) -> list[Signal]:
    state = CooldownState()
    return [
        signal
        for symbol, by_tf in universe.items()
        for signal in evaluate_latest(
            by_tf, at=_LIVE_AT, state=state, symbol=symbol, exchange="sim", config=CFG
        )
    ]


def _batched(universe: dict[str, dict[str, pd.DataFrame]]) -> list[Signal]:
    state = CooldownState()
    return evaluate_latest_batch(universe, at=_LIVE_AT, state=state, exchange="sim", config=CFG)


def _median_ms(run: Any, universe: Any, repeats: int) -> tuple[float, list[Signal]]:
    timings = []
    signals: list[Signal] = []
    for _ in range(repeats):
        started = time.perf_counter()
        signals = run(universe)
        timings.append(time.perf_counter() - started)
    return round(statistics.median(timings) * 1e3, 2), signals


def _live_batch(symbols: int, repeats: int) -> dict[str, Any]:
    universe = _live_universe(symbols)
    batch_ms, batch = _median_ms(_batched, universe, repeats)
    loop_ms, loop = _median_ms(_one_by_one, universe, repeats)
    if batch != loop:
        raise AssertionError("evaluate_latest_batch and evaluate_latest disagree")
    return {
        "symbols": symbols,
        "timeframes": len(CFG.timeframes),
        "window_bars": CFG.live_window_bars,
        "goal_batch_ms": GOAL_LIVE_BATCH_MS,
        "evaluate_latest_batch_ms": batch_ms,
        "evaluate_latest_loop_ms": loop_ms,
        "per_symbol_ms_batch": round(batch_ms / symbols, 4),
        "per_symbol_ms_loop": round(loop_ms / symbols, 4),
        "signals_per_batch": len(batch),
    }


def _peer(ours: dict[str, Any], days: int) -> dict[str, Any]:
    theirs = run_peer(days)
    data_s = theirs["backtest_breakdown_seconds"].get("load_data", 0.0)
    without_load = theirs["bars_1m"] / (theirs["backtest_seconds"] - data_s)
    return {
        "ours_bars_per_second": ours["bars_per_second"],
        "freqtrade_bars_per_second": theirs["bars_per_second"],
        "ratio_ours_to_freqtrade": round(ours["bars_per_second"] / theirs["bars_per_second"], 1),
        "ratio_excluding_freqtrade_data_load": round(ours["bars_per_second"] / without_load, 1),
        "freqtrade": theirs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--live-symbols", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-freqtrade", action="store_true", help="skip the freqtrade peer")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    one = _backtest(1, args.days, repeats=args.repeats)
    many = _backtest(args.symbols, args.days)
    report: dict[str, Any] = {
        "loadavg_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "goal_bars_per_second": GOAL_BARS_PER_SECOND,
        "backtest_1_symbol": one,
        f"backtest_{args.symbols}_symbols": many,
    }
    if not args.no_freqtrade:
        report["freqtrade_peer_1_symbol"] = _peer(one, args.days)
    report["live_batch"] = _live_batch(args.live_symbols, args.repeats)
    print(json.dumps(report, indent=2))  # noqa: T201


if __name__ == "__main__":
    main()

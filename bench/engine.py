"""Engine benchmark: backtest throughput and live-evaluation latency; prints one JSON object.

Backtest: one year of seeded synthetic 1m candles per symbol, 1 and 20 symbols, full
pipeline (resample to 5m/15m/1h, features, events, MTF over 4 timeframes, settlement).
Live: one closed-bar batch = `evaluate_latest` for 500 symbols x 4 timeframes, each with a
`live_window_bars` window. Data generation is not timed.

Run from the repository root: `.venv/bin/python bench/engine.py [--symbols 20] [--days 365]`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.backtest import run_backtest  # noqa: E402
from tasks.engine import CooldownState, EngineConfig, evaluate_latest  # noqa: E402
from tasks.resample import timeframe_ns  # noqa: E402
from tests.utils.bars import make_bars_1m  # noqa: E402

CFG = EngineConfig()
GOAL_BARS_PER_SECOND = 1_000_000


def _backtest(symbols: int, days: int) -> dict[str, Any]:
    data = {f"SYM{i}/USDT": make_bars_1m(days=days, seed=100 + i) for i in range(symbols)}
    signals, perf, summary = run_backtest(data, config=CFG, run_id="bench", exchange="sim")
    bars = summary["bars_processed"]
    return {
        "symbols": symbols,
        "bars_1m": bars,
        "seconds": round(summary["seconds"], 4),
        "bars_per_second": round(bars / summary["seconds"]),
        "signals": len(signals),
        "settled": len(perf),
        "win_rate": summary["win_rate"],
    }


def _live_batch(symbols: int, repeats: int) -> dict[str, Any]:
    window = CFG.live_window_bars
    at = pd.Timestamp("2024-06-01", tz="UTC")
    universe: list[dict[str, pd.DataFrame]] = []
    for i in range(symbols):
        by_tf = {}
        for j, tf in enumerate(CFG.timeframes):
            walk = make_bars_1m(minutes=window, seed=10_000 + 10 * i + j)
            step = pd.Timedelta(timeframe_ns(tf), unit="ns")
            index = pd.date_range(end=at - step, periods=window, freq=step, tz="UTC", name="ts")
            by_tf[tf] = walk.set_axis(index.as_unit("ns"))
        universe.append(by_tf)
    timings = []
    emitted = 0
    for _ in range(repeats):
        state = CooldownState()
        started = time.perf_counter()
        for i, by_tf in enumerate(universe):
            emitted += len(
                evaluate_latest(
                    by_tf, at=at, state=state, symbol=f"SYM{i}/USDT", exchange="sim", config=CFG
                )
            )
        timings.append(time.perf_counter() - started)
    batch = statistics.median(timings)
    return {
        "symbols": symbols,
        "timeframes": len(CFG.timeframes),
        "window_bars": window,
        "batch_ms": round(batch * 1e3, 2),
        "per_symbol_ms": round(batch * 1e3 / symbols, 4),
        "signals_per_batch": emitted / repeats,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--live-symbols", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    one = _backtest(1, args.days)
    many = _backtest(args.symbols, args.days)
    live = _live_batch(args.live_symbols, args.repeats)
    print(
        json.dumps(
            {
                "goal_bars_per_second": GOAL_BARS_PER_SECOND,
                "backtest_1_symbol": one,
                f"backtest_{args.symbols}_symbols": many,
                "live_evaluate_latest": live,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

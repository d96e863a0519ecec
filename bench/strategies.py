"""Several strategies in one backtest: cost of N strategies relative to one; prints JSON.

The same seeded synthetic 1m year(s) as bench/engine.py, run through `run_backtest` with
the built-in default alone and with the default plus tuned copies of it (different
threshold, events, exits; the same detectors' code, so a fair "one more strategy" cost).
Features are computed once per symbol and timeframe whatever the number of strategies,
so the ratio stays well under N. Data generation is not timed; each figure is the median
of `--repeats` runs.

Run from the repository root: `.venv/bin/python bench/strategies.py [--symbols 4] [--days 365]`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from signalengine.tasks.engine.config import EngineConfig  # noqa: E402
from signalengine.tasks.engine.loader import load_strategies  # noqa: E402
from signalengine.tasks.runs.backtest import run_backtest  # noqa: E402
from tests.utils.bars import make_bars_1m  # noqa: E402

CFG = EngineConfig()
THREE = [
    {"name": "default"},
    {"name": "fast", "use": "default", "params": {"signal_score_threshold": 0.45}},
    {
        "name": "trend",
        "use": "default",
        "params": {
            "events": ["ema_cross", "macd_cross", "trend_pullback"],
            "exit": "risk_reward",
            "risk_reward": 3.0,
        },
    },
]


def _median_seconds(
    data: dict[str, Any], specs: list[dict[str, Any]], repeats: int
) -> tuple[float, int]:
    """(median seconds, signals) of a backtest running `specs` together."""
    strategies = load_strategies(json.dumps(specs), CFG)
    times, signals = [], 0
    for _ in range(repeats):
        began = time.perf_counter()
        out, _, _ = run_backtest(
            data, config=CFG, run_id="bench", exchange="sim", strategies=strategies
        )
        times.append(time.perf_counter() - began)
        signals = len(out)
    return statistics.median(times), signals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--symbols", type=int, default=4)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    data = {f"SYM{i}/USDT": make_bars_1m(days=args.days, seed=42 + i) for i in range(args.symbols)}
    (one, one_signals), (three, three_signals) = (
        _median_seconds(data, specs, args.repeats) for specs in (THREE[:1], THREE)
    )
    print(  # noqa: T201
        json.dumps(
            {
                "symbols": args.symbols,
                "days": args.days,
                "seconds_1_strategy": round(one, 3),
                "seconds_3_strategies": round(three, 3),
                "ratio_3_over_1": round(three / one, 3),
                "signals_1_strategy": one_signals,
                "signals_3_strategies": three_signals,
            }
        )
    )


if __name__ == "__main__":
    main()

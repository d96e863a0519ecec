"""Retrain wall time on 200,000 candidates; prints one JSON line.

The engine emits only a few candidates per symbol-day on the simulator market (measured
below as `engine_candidates_per_symbol_day`), so 200,000 real candidates would take tens of
thousands of symbol-days of klines. The benchmark therefore trains on *synthetic*
candidates with the real model columns (a weak signal in rsi_14 and direction), and times
separately how fast the engine and settlement turn simulator klines into labelled rows.

Stages timed: purged split + LightGBM fit + holdout metrics (`fit_seconds`), gain
importance, MLflow logging + registration into a fresh SQLite store (`publish_seconds`;
the second publish also loads and re-scores the champion on the holdout).

Usage: .venv/bin/python bench/retrain.py [--rows 200000] [--rounds N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from signalengine.core.config import Settings  # noqa: E402
from signalengine.simulator.market import DAY_MS, EPOCH_MS, bars_to_frame, market_bars  # noqa: E402
from signalengine.tasks.engine.config import EngineConfig
from signalengine.tasks.learning.importance import extract_importance  # noqa: E402
from signalengine.tasks.learning.labels import MODEL_COLUMNS, build_dataset  # noqa: E402
from signalengine.tasks.learning.registry import publish_model  # noqa: E402
from signalengine.tasks.learning.training import TrainingConfig, train_filter  # noqa: E402


def synthetic_candidates(rows: int, seed: int = 11) -> pd.DataFrame:
    """`rows` candidates, 20 symbols' worth, one per symbol every 5 minutes, 1 h labels."""
    rng = np.random.default_rng(seed)
    data = pd.DataFrame(rng.normal(size=(rows, len(MODEL_COLUMNS))), columns=list(MODEL_COLUMNS))
    data["rsi_14"] = rng.uniform(0.0, 100.0, rows)
    data["direction"] = rng.choice([-1.0, 1.0], rows)
    data["score"] = rng.uniform(0.5, 1.0, rows)
    data["mtf_score"] = rng.choice([0.5, 0.75, 1.0], rows)
    logit = -0.7 + 0.02 * (data["rsi_14"] - 50.0) * data["direction"] + 0.5 * data["score"]
    label = rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))
    data["label"] = label.astype(np.int64)
    data["return_pct"] = np.where(label, 0.8, -0.45)
    emitted = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(
        (np.arange(rows) // 20) * 5, unit="min"
    )
    data["emitted_at"] = emitted
    data["expires_at"] = emitted + pd.Timedelta("1h")
    return data


def engine_rate(symbols: list[str], days: int) -> dict[str, float]:
    """Candidates per symbol-day and seconds for the engine + settlement on simulator klines."""
    start = EPOCH_MS + 10 * DAY_MS
    bars = {s: bars_to_frame(market_bars(s, start, start + days * DAY_MS)) for s in symbols}
    started = time.perf_counter()
    data = build_dataset(bars, config=EngineConfig.from_settings(Settings()), exchange="binance")
    seconds = time.perf_counter() - started
    return {
        "engine_symbol_days": float(len(symbols) * days),
        "engine_candidates": float(len(data)),
        "engine_candidates_per_symbol_day": round(len(data) / (len(symbols) * days), 2),
        "engine_dataset_seconds": round(seconds, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=Settings().retrain_num_boost_round)
    args = parser.parse_args()
    config = TrainingConfig(num_boost_round=args.rounds)
    out: dict[str, object] = {"rows": args.rows, "synthetic": True, "num_boost_round": args.rounds}
    out.update(engine_rate(["BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT"], 30))
    data = synthetic_candidates(args.rows)
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(sys.stderr):
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        location = (Path(tmp) / "artifacts").as_uri()
        for attempt in (1, 2):
            started = time.perf_counter()
            result = train_filter(data, config=config)
            fitted = time.perf_counter()
            importance = extract_importance(result.booster)
            published = publish_model(result, importance, uri=uri, location=location)
            done = time.perf_counter()
            out[f"run{attempt}_fit_seconds"] = round(fitted - started, 3)
            out[f"run{attempt}_publish_seconds"] = round(done - fitted, 3)
            out[f"run{attempt}_total_seconds"] = round(done - started, 3)
            out[f"run{attempt}_promoted"] = published.promoted
        out["train_rows"] = int(result.metrics["train_rows"])
        out["holdout_rows"] = int(result.metrics["holdout_rows"])
        out["holdout_auc"] = round(result.metrics["auc"], 4)
    print(json.dumps(out))


if __name__ == "__main__":
    main()

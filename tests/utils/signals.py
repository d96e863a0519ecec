"""Factories for `signals` and `signal_performance` rows (valid per sql/003)."""

from __future__ import annotations

import itertools
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT")
_JSON_COLUMNS = ("events", "mtf_details", "features")
# Distinct trigger bars for every generated signal, so the unique key never collides.
_BAR_NUMBERS = itertools.count(random.randrange(0, 1_000_000))


def random_signal(rng: random.Random | None = None, **overrides: Any) -> dict[str, Any]:
    """Column values of one plausible signal; `overrides` replace any of them."""
    rng = rng or random.Random()
    direction = overrides.get("direction", rng.choice(("long", "short")))
    timeframe = overrides.get("timeframe", "5m")
    ts = overrides.get(
        "ts",
        datetime(2025, 1, 1, tzinfo=UTC) + timedelta(minutes=5 * next(_BAR_NUMBERS)),
    )
    entry = overrides.get("entry_price", round(rng.uniform(10, 60_000), 2))
    sign = 1 if direction == "long" else -1
    row: dict[str, Any] = {
        "id": uuid.uuid4(),
        "run_id": "live",
        "exchange": "binance",
        "symbol": rng.choice(SYMBOLS),
        "timeframe": timeframe,
        "direction": direction,
        "ts": ts,
        "emitted_at": ts + timedelta(minutes=5),
        "entry_price": entry,
        "take_profit": entry * (1 + sign * 0.02),
        "stop_loss": entry * (1 - sign * 0.01),
        "expires_at": ts + timedelta(hours=1, minutes=5),
        "score": round(rng.uniform(0.5, 1.0), 4),
        "events": [{"type": "ema_cross", "direction": direction}],
        "mtf_aligned": True,
        "mtf_score": round(rng.uniform(0.5, 1.0), 4),
        "mtf_details": {"1m": direction, "5m": direction, "15m": "neutral", "1h": direction},
        "ai_probability": None,
        "model_version": None,
        "features": {"rsi_14": round(rng.uniform(20, 80), 2)},
        "status": "open",
    }
    row.update(overrides)
    return row


def insert_signals(conn: psycopg.Connection[Any], rows: list[dict[str, Any]]) -> None:
    """Insert rows built by `random_signal` in one statement (one transaction)."""
    if not rows:
        return
    columns = list(rows[0])
    values = [tuple(Jsonb(r[c]) if c in _JSON_COLUMNS else r[c] for c in columns) for r in rows]
    placeholders = ", ".join(["%s"] * len(columns))
    with conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO signals ({', '.join(columns)}) VALUES ({placeholders})", values
        )


def create_random_signal(conn: psycopg.Connection[Any], **overrides: Any) -> dict[str, Any]:
    """Insert one valid signal and return the stored row (dict, with `created_at`)."""
    row = random_signal(**overrides)
    columns = list(row)
    values = [Jsonb(row[c]) if c in _JSON_COLUMNS else row[c] for c in columns]
    cur = conn.execute(
        f"INSERT INTO signals ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})"
        " RETURNING *",
        values,
    )
    stored = cur.fetchone()
    assert stored is not None
    return dict(stored) if not isinstance(stored, dict) else stored


def create_random_performance(
    conn: psycopg.Connection[Any], signal: dict[str, Any], **overrides: Any
) -> dict[str, Any]:
    """Settle `signal` (a stored row) with a random outcome; returns the performance row."""
    rng = random.Random()
    outcome = overrides.get("outcome", rng.choice(("tp_hit", "sl_hit", "expired")))
    default_return = {"tp_hit": 1.9, "sl_hit": -1.1, "expired": rng.uniform(-0.8, 0.8)}[outcome]
    return_pct = overrides.get("return_pct", default_return)
    duration = overrides.get("duration_sec", float(rng.randrange(300, 3900)))
    sign = 1 if signal["direction"] == "long" else -1
    row: dict[str, Any] = {
        "signal_id": signal["id"],
        "run_id": signal["run_id"],
        "exchange": signal["exchange"],
        "symbol": signal["symbol"],
        "direction": signal["direction"],
        "timeframe": signal["timeframe"],
        "entry_price": signal["entry_price"],
        "exit_price": signal["entry_price"] * (1 + sign * return_pct / 100),
        "entry_time": signal["emitted_at"],
        "exit_time": signal["emitted_at"] + timedelta(seconds=duration),
        "outcome": outcome,
        "return_pct": return_pct,
        "duration_sec": duration,
        "score": signal["score"],
    }
    row.update(overrides)
    columns = list(row)
    conn.execute(
        f"INSERT INTO signal_performance ({', '.join(columns)})"
        f" VALUES ({', '.join(['%s'] * len(columns))})",
        [row[c] for c in columns],
    )
    return row

"""Value types of the signal engine: the Signal record (and how candidates become records),
cooldown state, ids."""

from __future__ import annotations

import uuid
from collections.abc import Callable, MutableMapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from signalengine.core.vocabulary import FloatArray
from signalengine.tasks.engine.buckets import timeframe_ns
from signalengine.tasks.engine.config import EngineConfig
from signalengine.tasks.engine.events import EVENT_TYPES, EventSeries
from signalengine.tasks.engine.features import FEATURE_COLUMNS
from signalengine.tasks.engine.mtf import mtf_details

# Row-wise model: candidate features (FEATURE_COLUMNS + direction (+1/-1), score, mtf_score)
# -> probability per row. It must score each row on its own so that live and backtest agree.
SignalFilter = Callable[[pd.DataFrame], NDArray[np.float64]]

# The `signals` table columns (DESIGN §3), in order.
SIGNAL_COLUMNS: tuple[str, ...] = (
    "id",
    "run_id",
    "exchange",
    "symbol",
    "timeframe",
    "direction",
    "ts",
    "emitted_at",
    "entry_price",
    "take_profit",
    "stop_loss",
    "expires_at",
    "score",
    "events",
    "mtf_aligned",
    "mtf_score",
    "mtf_details",
    "ai_probability",
    "model_version",
    "features",
    "status",
)
_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "signalengine/signals")
_SIDE = {1: "long", -1: "short"}

__all__ = [
    "SIGNAL_COLUMNS",
    "Candidates",
    "CooldownState",
    "Signal",
    "SignalFilter",
    "candidate_records",
    "signal_id",
    "signals_to_frame",
]


@dataclass(frozen=True)
class Signal:
    """One emitted signal; the fields are the `signals` table columns (DESIGN §3)."""

    id: str
    run_id: str
    exchange: str
    symbol: str
    timeframe: str
    direction: str
    ts: pd.Timestamp
    emitted_at: pd.Timestamp
    entry_price: float
    take_profit: float
    stop_loss: float
    expires_at: pd.Timestamp
    score: float
    events: list[dict[str, Any]]
    mtf_aligned: bool
    mtf_score: float
    mtf_details: dict[str, str]
    ai_probability: float | None
    model_version: str | None
    features: dict[str, float | None]
    status: str = "open"

    def as_record(self) -> dict[str, Any]:
        """The signal as a plain dict (column -> value)."""
        return asdict(self)


@dataclass
class CooldownState:
    """Live cooldown state: open time (ns) of the last emitted signal per series and side.

    Keyed by (symbol, timeframe) -> {+1 | -1: ts_ns}. Rebuild it after a restart with
    `from_signals` from the run's stored signals.
    """

    last_emitted: dict[tuple[str, str], dict[int, int]] = field(default_factory=dict)

    def for_series(self, symbol: str, timeframe: str) -> MutableMapping[int, int]:
        """The mutable {side: ts_ns} map of one symbol and timeframe."""
        return self.last_emitted.setdefault((symbol, timeframe), {})

    @classmethod
    def from_signals(cls, signals: pd.DataFrame) -> CooldownState:
        """State from stored signals (columns symbol, timeframe, direction, ts)."""
        state = cls()
        times = pd.DatetimeIndex(pd.to_datetime(signals["ts"], utc=True)).as_unit("ns").asi8
        cols = (signals["symbol"], signals["timeframe"], signals["direction"], times.tolist())
        for symbol, timeframe, direction, ts_ns in zip(*cols, strict=True):
            side = 1 if direction == "long" else -1
            series = state.for_series(str(symbol), str(timeframe))
            series[side] = max(ts_ns, series.get(side, ts_ns))
        return state


@dataclass(frozen=True)
class Candidates:
    """The engine's emitted candidates of one symbol: what their signal records need.

    `rows` index the per-row arrays `events` / `features` (the engine's scored rows); the
    other arrays have one entry per candidate.
    """

    rows: NDArray[np.int64]
    ts_ns: NDArray[np.int64]
    entry: FloatArray
    side: NDArray[np.int8]
    score: FloatArray
    votes: NDArray[np.int8]
    aligned: NDArray[np.bool_]
    mtf_score: FloatArray
    probability: FloatArray | None
    events: dict[str, EventSeries]
    features: dict[str, FloatArray]


def _json_float(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def candidate_records(
    cand: Candidates,
    cfg: EngineConfig,
    *,
    symbol: str,
    exchange: str,
    run_id: str,
    model_version: str | None,
) -> list[dict[str, Any]]:
    """Signal records (SIGNAL_COLUMNS, as dicts) of the emitted candidates."""
    tf = cfg.primary_timeframe
    tf_ns = timeframe_ns(tf)
    records: list[dict[str, Any]] = []
    for k, row in enumerate(cand.rows.tolist()):
        side = int(cand.side[k])
        direction = _SIDE[side]
        ts = pd.Timestamp(int(cand.ts_ns[k]), unit="ns", tz="UTC")
        entry = float(cand.entry[k])
        atr = float(cand.features["atr_14"][row])
        events = [
            {
                "type": name,
                "direction": _SIDE[int(cand.events[name].direction[row])],
                "strength": float(cand.events[name].strength[row]),
            }
            for name in EVENT_TYPES
            if cand.events[name].direction[row] != 0
        ]
        prob = None if cand.probability is None else _json_float(cand.probability[k])
        records.append(
            {
                "id": signal_id(
                    run_id=run_id,
                    exchange=exchange,
                    symbol=symbol,
                    timeframe=tf,
                    direction=direction,
                    ts=ts,
                ),
                "run_id": run_id,
                "exchange": exchange,
                "symbol": symbol,
                "timeframe": tf,
                "direction": direction,
                "ts": ts,
                "emitted_at": ts + pd.Timedelta(tf_ns, unit="ns"),
                "entry_price": entry,
                "take_profit": entry + side * cfg.tp_atr_multiple * atr,
                "stop_loss": entry - side * cfg.sl_atr_multiple * atr,
                "expires_at": ts + pd.Timedelta((1 + cfg.expiry_bars) * tf_ns, unit="ns"),
                "score": float(cand.score[k]),
                "events": events,
                "mtf_aligned": bool(cand.aligned[k]),
                "mtf_score": float(cand.mtf_score[k]),
                "mtf_details": mtf_details(cand.votes[k].tolist(), cfg.timeframes),
                "ai_probability": prob,
                "model_version": model_version if prob is not None else None,
                "features": {c: _json_float(cand.features[c][row]) for c in FEATURE_COLUMNS},
                "status": "open",
            }
        )
    return records


def signal_id(
    *, run_id: str, exchange: str, symbol: str, timeframe: str, direction: str, ts: pd.Timestamp
) -> str:
    """Deterministic id: uuid5 of run_id|exchange|symbol|timeframe|direction|ts (ISO, UTC)."""
    iso = pd.Timestamp(ts).tz_convert("UTC").isoformat()
    key = f"{run_id}|{exchange}|{symbol}|{timeframe}|{direction}|{iso}"
    return str(uuid.uuid5(_ID_NAMESPACE, key))


def signals_to_frame(records: list[dict[str, Any]] | list[Signal]) -> pd.DataFrame:
    """A SIGNAL_COLUMNS frame (times as datetime64[ns, UTC]) from records or Signals."""
    rows = [r.as_record() if isinstance(r, Signal) else r for r in records]
    frame = pd.DataFrame(rows, columns=list(SIGNAL_COLUMNS))
    for col in ("ts", "emitted_at", "expires_at"):
        frame[col] = pd.to_datetime(frame[col], utc=True).dt.as_unit("ns")
    return frame

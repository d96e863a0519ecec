"""Value types of the signal engine: the Signal record (and how candidates become records),
cooldown state, ids."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from signalengine.core.vocabulary import DEFAULT_STRATEGY, FloatArray
from signalengine.tasks.engine.buckets import timeframe_ns
from signalengine.tasks.engine.config import EngineConfig
from signalengine.tasks.engine.events import EventSeries
from signalengine.tasks.engine.features import FEATURE_COLUMNS  # noqa: F401  (re-exported)
from signalengine.tasks.engine.mtf import mtf_details
from signalengine.tasks.engine.shared import column_at

# Row-wise model: candidate features (the strategy's filter_columns, FEATURE_COLUMNS for the
# default; + direction (+1/-1), score, mtf_score)
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
    "strategy",
    "strategy_version",
)
_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "signalengine/signals")
_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_UUID_DASHES = (8, 13, 18, 23)
_UUID_DIGITS = [i for i in range(36) if i not in _UUID_DASHES]
_SIDE = {1: "long", -1: "short"}

__all__ = [
    "SIGNAL_COLUMNS",
    "Candidates",
    "CooldownState",
    "Signal",
    "SignalFilter",
    "candidate_columns",
    "candidate_frame",
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
    strategy: str = DEFAULT_STRATEGY
    strategy_version: str | None = None

    def as_record(self) -> dict[str, Any]:
        """The signal as a plain dict (column -> value)."""
        return asdict(self)


@dataclass
class CooldownState:
    """Live cooldown state: open time (ns) of the last emitted signal per series and side.

    Keyed by (strategy, symbol, timeframe) -> {+1 | -1: ts_ns}: each strategy has its own
    cooldown. Rebuild it after a restart with `from_signals` from the run's stored signals.
    """

    last_emitted: dict[tuple[str, str, str], dict[int, int]] = field(default_factory=dict)

    def for_series(
        self, symbol: str, timeframe: str, strategy: str = DEFAULT_STRATEGY
    ) -> MutableMapping[int, int]:
        """The mutable {side: ts_ns} map of one strategy, symbol and timeframe."""
        return self.last_emitted.setdefault((strategy, symbol, timeframe), {})

    @classmethod
    def from_signals(cls, signals: pd.DataFrame, *, strategy: str | None = None) -> CooldownState:
        """State from stored signals (columns symbol, timeframe, direction, ts and, if
        present, strategy); without a strategy column they are `strategy`'s (or default's)."""
        state = cls()
        times = pd.DatetimeIndex(pd.to_datetime(signals["ts"], utc=True)).as_unit("ns").asi8
        if "strategy" in signals.columns:
            names = [str(s) for s in signals["strategy"]]
        else:
            names = [strategy or DEFAULT_STRATEGY] * len(signals)
        cols = (names, signals["symbol"], signals["timeframe"], signals["direction"])
        for name, symbol, timeframe, direction, ts_ns in zip(*cols, times.tolist(), strict=True):
            side = 1 if direction == "long" else -1
            series = state.for_series(str(symbol), str(timeframe), name)
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
    events: Mapping[str, EventSeries]
    features: Mapping[str, FloatArray]
    # What the strategy that emitted them decided (tasks.engine.strategy.Strategy).
    take_profit: FloatArray
    stop_loss: FloatArray
    expiry_bars: int
    strategy: str
    strategy_version: str | None
    vote_timeframes: tuple[str, ...]
    feature_columns: tuple[str, ...]


def _json_float(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _json_floats(matrix: FloatArray) -> list[list[float | None]]:
    """Rows of a float matrix as Python floats, None where not finite (JSON has no NaN)."""
    values = matrix.astype(object)
    values[~np.isfinite(matrix)] = None
    rows: list[list[float | None]] = values.tolist()
    return rows


def _signal_ids(keys: list[str]) -> list[str]:
    """`str(uuid.uuid5(_ID_NAMESPACE, key))` of each key, formatted for all keys at once.

    uuid5 is the first 16 bytes of sha1(namespace + key) with the version (5) and the
    RFC 4122 variant bits set; only the hashing stays per key (uuid.UUID objects and
    their string formatting were most of a backtest's id cost).
    """
    if not keys:
        return []
    prefix = _ID_NAMESPACE.bytes
    digests = b"".join(
        [hashlib.sha1(prefix + key.encode(), usedforsecurity=False).digest()[:16] for key in keys]
    )
    raw = np.frombuffer(digests, dtype=np.uint8).reshape(-1, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x50
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    nibbles = np.empty((raw.shape[0], 32), dtype=np.uint8)
    nibbles[:, 0::2], nibbles[:, 1::2] = _HEX_DIGITS[raw >> 4], _HEX_DIGITS[raw & 0x0F]
    text = np.full((raw.shape[0], 36), ord("-"), dtype=np.uint8)
    text[:, _UUID_DIGITS] = nibbles
    ids: list[str] = text.view("S36").ravel().astype(str).tolist()
    return ids


def _iso_utc(ts_ns: NDArray[np.int64]) -> list[str]:
    """`pd.Timestamp(t, tz="UTC").isoformat()` of each time, vectorized for whole seconds."""
    if bool(np.all(ts_ns % 1_000_000_000 == 0)):
        seconds = np.datetime_as_string(ts_ns.view("datetime64[ns]"), unit="s").tolist()
        return [f"{text}+00:00" for text in seconds]
    return [pd.Timestamp(int(t), unit="ns", tz="UTC").isoformat() for t in ts_ns.tolist()]


def _event_lists(cand: Candidates) -> list[list[dict[str, Any]]]:
    """Per candidate: its events (the strategy's order; the default's is EVENT_TYPES) as
    {"type", "direction", "strength"}; only the (candidate, event) pairs that fired are
    visited (row-major: each candidate's in event order)."""
    rows, names = cand.rows, list(cand.events)
    out: list[list[dict[str, Any]]] = [[] for _ in range(rows.size)]
    if not names:
        return out
    sides = np.column_stack([cand.events[n].direction[rows] for n in names])
    strengths = np.column_stack([cand.events[n].strength[rows] for n in names])
    at, event = np.nonzero(sides)
    fired = (at.tolist(), event.tolist(), sides[at, event].tolist(), strengths[at, event].tolist())
    for i, j, side, strength in zip(*fired, strict=True):
        out[i].append({"type": names[j], "direction": _SIDE[side], "strength": float(strength)})
    return out


def _mtf_detail_dicts(votes: NDArray[np.int8], timeframes: list[str]) -> list[dict[str, str]]:
    """mtf_details of each votes row; few distinct rows exist, so each is built once."""
    seen: dict[tuple[int, ...], dict[str, str]] = {}
    out: list[dict[str, str]] = []
    for row in map(tuple, votes.tolist()):
        details = seen.get(row)
        if details is None:
            details = seen[row] = mtf_details(row, timeframes)
        out.append(dict(details))  # a dict of its own per signal: callers may mutate it
    return out


_TIME_COLUMNS = ("ts", "emitted_at", "expires_at")


def candidate_columns(
    cand: Candidates,
    cfg: EngineConfig,
    *,
    symbol: str,
    exchange: str,
    run_id: str,
    model_version: str | None,
) -> dict[str, Any]:
    """SIGNAL_COLUMNS of the emitted candidates, column by column (one entry per candidate).

    Numeric columns are computed as whole arrays with the same float operations, in the
    same order, as a per-signal loop would do, so every value is bit-identical; only the
    JSON columns (events, mtf_details, features) remain Python objects per signal.
    Times (`_TIME_COLUMNS`) are int64 ns since the epoch, UTC: the frame path makes one
    DatetimeIndex of each, the records path Timestamps (pandas on a few rows per symbol
    would cost more than the rest of a live close).
    """
    tf = cfg.primary_timeframe
    tf_ns = timeframe_ns(tf)
    n = int(cand.rows.size)
    side = cand.side.astype(np.int64)
    direction = [_SIDE[s] for s in side.tolist()]
    ts_ns = cand.ts_ns.astype(np.int64)
    entry = cand.entry.astype(np.float64)
    suffix = "" if cand.strategy == DEFAULT_STRATEGY else f"|{cand.strategy}"
    keys = [
        f"{run_id}|{exchange}|{symbol}|{tf}|{d}|{iso}{suffix}"
        for d, iso in zip(direction, _iso_utc(ts_ns), strict=True)
    ]
    columns = cand.feature_columns
    at = [column_at(cand.features, c, cand.rows) for c in columns]
    features = np.column_stack(at or [entry[:0]])
    if cand.probability is None:
        prob: list[float | None] = [None] * n
    else:
        prob = [p[0] for p in _json_floats(cand.probability.reshape(-1, 1))]
    return {
        "id": _signal_ids(keys),
        "run_id": [run_id] * n,
        "exchange": [exchange] * n,
        "symbol": [symbol] * n,
        "timeframe": [tf] * n,
        "direction": direction,
        "ts": ts_ns,
        "emitted_at": ts_ns + tf_ns,
        "entry_price": entry,
        "take_profit": cand.take_profit.astype(np.float64),
        "stop_loss": cand.stop_loss.astype(np.float64),
        "expires_at": ts_ns + (1 + cand.expiry_bars) * tf_ns,
        "score": cand.score.astype(np.float64),
        "events": _event_lists(cand),
        "mtf_aligned": cand.aligned.astype(np.bool_),
        "mtf_score": cand.mtf_score.astype(np.float64),
        "mtf_details": _mtf_detail_dicts(cand.votes, list(cand.vote_timeframes)),
        "ai_probability": prob,
        "model_version": [model_version if p is not None else None for p in prob],
        "features": [dict(zip(columns, row, strict=True)) for row in _json_floats(features)],
        "status": ["open"] * n,
        "strategy": [cand.strategy] * n,
        "strategy_version": [cand.strategy_version] * n,
    }


def candidate_frame(
    cand: Candidates,
    cfg: EngineConfig,
    *,
    symbol: str,
    exchange: str,
    run_id: str,
    model_version: str | None,
) -> pd.DataFrame:
    """The emitted candidates as a SIGNAL_COLUMNS frame, equal to `signals_to_frame` of
    `candidate_records` (the backtest's path: no per-signal dicts of columns)."""
    columns = candidate_columns(
        cand, cfg, symbol=symbol, exchange=exchange, run_id=run_id, model_version=model_version
    )
    if not len(columns["id"]):
        return signals_to_frame([])
    for c in _TIME_COLUMNS:
        columns[c] = pd.DatetimeIndex(columns[c].view("datetime64[ns]")).tz_localize("UTC")
    return pd.DataFrame({c: columns[c] for c in SIGNAL_COLUMNS})


def _list_or_array(values: Any) -> Any:
    """Numeric arrays as lists of Python scalars, like a frame built from records."""
    if isinstance(values, np.ndarray):
        return values.tolist()
    return values


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
    columns = candidate_columns(
        cand, cfg, symbol=symbol, exchange=exchange, run_id=run_id, model_version=model_version
    )
    for c in _TIME_COLUMNS:
        columns[c] = [pd.Timestamp(ns, tz="UTC") for ns in columns[c].tolist()]
    values = [_list_or_array(columns[c]) for c in SIGNAL_COLUMNS]
    return [dict(zip(SIGNAL_COLUMNS, row, strict=True)) for row in zip(*values, strict=True)]


def signal_id(
    *,
    run_id: str,
    exchange: str,
    symbol: str,
    timeframe: str,
    direction: str,
    ts: pd.Timestamp,
    strategy: str = DEFAULT_STRATEGY,
) -> str:
    """Deterministic id: uuid5 of run_id|exchange|symbol|timeframe|direction|ts (ISO, UTC),
    with `|strategy` appended for any strategy but the default (whose ids predate them)."""
    iso = pd.Timestamp(ts).tz_convert("UTC").isoformat()
    suffix = "" if strategy == DEFAULT_STRATEGY else f"|{strategy}"
    key = f"{run_id}|{exchange}|{symbol}|{timeframe}|{direction}|{iso}{suffix}"
    return str(uuid.uuid5(_ID_NAMESPACE, key))


def signals_to_frame(records: list[dict[str, Any]] | list[Signal]) -> pd.DataFrame:
    """A SIGNAL_COLUMNS frame (times as datetime64[ns, UTC]) from records or Signals."""
    rows = [r.as_record() if isinstance(r, Signal) else r for r in records]
    frame = pd.DataFrame(rows, columns=list(SIGNAL_COLUMNS))
    for col in ("ts", "emitted_at", "expires_at"):
        frame[col] = pd.to_datetime(frame[col], utc=True).dt.as_unit("ns")
    return frame

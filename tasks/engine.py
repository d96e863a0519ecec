"""The signal engine: closed candles of every timeframe -> scored, MTF-checked signals.

One code path, two drivers (DESIGN §4 "one engine, two drivers"):

- `evaluate_symbol_history` (backtest/replay) runs the vectorized pipeline over every
  primary bar of a symbol's history;
- `evaluate_latest` (live stream) runs the *same* function on a trailing window of
  `live_window_bars` closed bars per timeframe and keeps the primary bar that closed at
  `at`. With a window of >= 1000 bars the seeds of the recursive indicators (EMA, Wilder
  RSI/ATR) have decayed below float precision, and the 20-bar statistics are
  window-local, so both drivers produce the same signals bit for bit.

Pipeline per primary bar (open time ts, close time t = ts + tf):
features (tasks.features) -> events (tasks.events) -> direction and score
(tasks.scoring) -> score >= signal_score_threshold and ATR > 0 -> MTF votes of every
timeframe's last bar closed by t (tasks.mtf) -> mtf_alignment_required -> optional AI
filter -> cooldown. Entry = close of the trigger bar; take profit / stop loss =
entry +/- tp_atr_multiple / sl_atr_multiple * atr_14 (mirrored for short);
expires_at = t + expiry_bars * tf.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from core.config import Settings
from tasks.engine_types import (
    SIGNAL_COLUMNS,
    CooldownState,
    EngineConfig,
    Signal,
    SignalFilter,
    engine_config,
    signal_id,
    signals_to_frame,
)
from tasks.events import EVENT_TYPES, EventSeries, detect_events
from tasks.features import FEATURE_COLUMNS, FloatArray, feature_arrays, vote_feature_arrays
from tasks.mtf import mtf_agreement, mtf_details, vote, votes_at
from tasks.resample import OHLCV_COLUMNS, index_ns, resample_bars, timeframe_ns
from tasks.scoring import cooldown_mask, score_events

_SIDE = {1: "long", -1: "short"}

__all__ = [
    "SIGNAL_COLUMNS",
    "CooldownState",
    "EngineConfig",
    "Signal",
    "SignalFilter",
    "evaluate_latest",
    "evaluate_symbol_history",
    "signal_id",
    "signals_to_frame",
]


class _Series:
    """One timeframe's closed bars: `ts` open times (ns); OHLCV arrays read on first use."""

    def __init__(self, bars: pd.DataFrame, ts: NDArray[np.int64], begin: int, end: int) -> None:
        self._bars, self._begin, self._end = bars, begin, end
        self.ts = ts[begin:end]
        self._cols: dict[str, FloatArray] | None = None

    @property
    def cols(self) -> dict[str, FloatArray]:
        """Contiguous float64 OHLCV arrays of the selected rows."""
        if self._cols is None:
            rows = slice(self._begin, self._end)
            try:  # one block copy when every column is numeric (the common case)
                where = [self._bars.columns.get_loc(c) for c in OHLCV_COLUMNS]
                values = self._bars.to_numpy(dtype=np.float64)
                picked = [values[rows, j] for j in where]
            except (TypeError, ValueError):
                picked = [self._bars[c].to_numpy(dtype=np.float64)[rows] for c in OHLCV_COLUMNS]
            self._cols = {
                c: np.ascontiguousarray(a) for c, a in zip(OHLCV_COLUMNS, picked, strict=True)
            }
        return self._cols


def _series(bars: pd.DataFrame, tf_ns: int, as_of_ns: int | None, window: int | None) -> _Series:
    ts = index_ns(bars)
    end = ts.size if as_of_ns is None else int(np.searchsorted(ts, as_of_ns - tf_ns, "right"))
    begin = max(0, end - window) if window is not None else 0
    return _Series(bars, ts, begin, end)


def _prepare(
    bars_by_tf: Mapping[str, pd.DataFrame],
    cfg: EngineConfig,
    *,
    as_of_ns: int | None,
    window: int | None,
) -> dict[str, _Series]:
    """Closed bars (open + tf <= as_of) of every configured timeframe, last `window` rows.

    A timeframe missing from `bars_by_tf` is resampled from its "1m" frame.
    """
    out: dict[str, _Series] = {}
    for tf in cfg.timeframes:
        bars = bars_by_tf.get(tf)
        if bars is None:
            if "1m" not in bars_by_tf:
                raise KeyError(f"no bars for timeframe {tf!r} and no 1m bars to build them")
            bars = resample_bars(bars_by_tf["1m"], tf)
        out[tf] = _series(bars, timeframe_ns(tf), as_of_ns, window)
    return out


@dataclass(frozen=True)
class _Candidates:
    """Emitted rows of the primary series and what the signal records need."""

    rows: NDArray[np.int64]
    side: NDArray[np.int8]
    score: FloatArray
    votes: NDArray[np.int8]
    aligned: NDArray[np.bool_]
    mtf_score: FloatArray
    probability: FloatArray | None
    events: dict[str, EventSeries]
    features: dict[str, FloatArray]


def _votes(
    series: dict[str, _Series],
    primary_feats: dict[str, FloatArray],
    cfg: EngineConfig,
    rows: NDArray[np.int64],
) -> NDArray[np.int8]:
    """(len(rows), n_timeframes) votes at the close time of each primary row."""
    primary = series[cfg.primary_timeframe]
    at_ns = primary.ts[rows] + timeframe_ns(cfg.primary_timeframe)
    out = np.zeros((rows.size, len(cfg.timeframes)), dtype=np.int8)
    if rows.size == 0:  # nothing to vote on: skip the other timeframes' features
        return out
    for j, tf in enumerate(cfg.timeframes):
        if tf == cfg.primary_timeframe:
            f = primary_feats
            out[:, j] = vote(f["ema_12"], f["ema_26"], f["ema_slope"], f["rsi_14"])[rows]
            continue
        s = series[tf]
        f = vote_feature_arrays(s.cols["close"])
        tf_votes = vote(f["ema_12"], f["ema_26"], f["ema_slope"], f["rsi_14"])
        out[:, j] = votes_at(s.ts + timeframe_ns(tf), tf_votes, at_ns)
    return out


def _candidates(
    series: dict[str, _Series],
    cfg: EngineConfig,
    *,
    last_emitted: MutableMapping[int, int],
    only_last: bool,
    signal_filter: SignalFilter | None,
) -> _Candidates:
    """The vectorized pipeline over one symbol's primary series (see module docstring)."""
    p = series[cfg.primary_timeframe]
    feats = feature_arrays(p.cols["high"], p.cols["low"], p.cols["close"], p.cols["volume"])
    events = detect_events({**p.cols, **feats})
    side, score = score_events(events)
    atr = feats["atr_14"]
    mask = (side != 0) & (score >= cfg.signal_score_threshold) & (atr > 0)
    if only_last:
        mask[:-1] = False
    rows = np.flatnonzero(mask).astype(np.int64)
    votes = _votes(series, feats, cfg, rows)
    aligned, mtf_score = mtf_agreement(side[rows], votes, min_aligned=cfg.mtf_min_aligned)
    keep = aligned if cfg.mtf_alignment_required else np.ones(rows.size, dtype=np.bool_)
    probability: FloatArray | None = None
    if signal_filter is not None and keep.any():
        frame = pd.DataFrame({c: feats[c][rows] for c in FEATURE_COLUMNS})
        frame["direction"], frame["score"], frame["mtf_score"] = side[rows], score[rows], mtf_score
        probability = np.asarray(signal_filter(frame[keep]), dtype=np.float64)
        full = np.full(rows.size, np.nan)
        full[keep] = probability
        probability = full
        keep = keep & (full >= cfg.ai_min_probability)
    tf_ns = timeframe_ns(cfg.primary_timeframe)
    kept = np.flatnonzero(keep)
    survive = cooldown_mask(
        p.ts[rows[kept]],
        side[rows[kept]],
        cooldown_ns=cfg.cooldown_bars * tf_ns,
        last_emitted=last_emitted,
    )
    sel = kept[survive]
    return _Candidates(
        rows=rows[sel],
        side=side[rows[sel]],
        score=score[rows[sel]],
        votes=votes[sel],
        aligned=aligned[sel],
        mtf_score=mtf_score[sel],
        probability=None if probability is None else probability[sel],
        events=events,
        features=feats,
    )


def _json_float(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _records(
    cand: _Candidates,
    series: dict[str, _Series],
    cfg: EngineConfig,
    *,
    symbol: str,
    exchange: str,
    run_id: str,
    model_version: str | None,
) -> list[dict[str, Any]]:
    """Signal records (SIGNAL_COLUMNS) of the emitted candidates."""
    p = series[cfg.primary_timeframe]
    tf = cfg.primary_timeframe
    tf_ns = timeframe_ns(tf)
    records: list[dict[str, Any]] = []
    for k, row in enumerate(cand.rows.tolist()):
        side = int(cand.side[k])
        direction = _SIDE[side]
        ts = pd.Timestamp(int(p.ts[row]), unit="ns", tz="UTC")
        entry = float(p.cols["close"][row])
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


def _ns_of(value: pd.Timestamp) -> int:
    return int(pd.Timestamp(value).as_unit("ns").value)


def evaluate_symbol_history(
    bars_by_tf: Mapping[str, pd.DataFrame],
    *,
    symbol: str,
    exchange: str,
    run_id: str,
    config: EngineConfig | Settings,
    as_of: pd.Timestamp | None = None,
    signal_filter: SignalFilter | None = None,
    model_version: str | None = None,
) -> pd.DataFrame:
    """All signals of one symbol's history, vectorized over every primary bar (backtest).

    `bars_by_tf`: timeframe -> frame indexed by UTC bar open time with OHLCV columns
    (a missing timeframe is resampled from "1m"). Only buckets closed by `as_of` are
    used; `as_of` defaults to the close of the last 1m bar (so a trailing, still-filling
    bucket is ignored) or, without 1m bars, to no limit. Returns SIGNAL_COLUMNS rows
    ordered by ts.
    """
    cfg = engine_config(config)
    if as_of is not None:
        as_of_ns: int | None = _ns_of(as_of)
    elif "1m" in bars_by_tf and len(bars_by_tf["1m"]):
        as_of_ns = int(index_ns(bars_by_tf["1m"])[-1]) + timeframe_ns("1m")
    else:
        as_of_ns = None
    series = _prepare(bars_by_tf, cfg, as_of_ns=as_of_ns, window=None)
    cand = _candidates(series, cfg, last_emitted={}, only_last=False, signal_filter=signal_filter)
    records = _records(
        cand,
        series,
        cfg,
        symbol=symbol,
        exchange=exchange,
        run_id=run_id,
        model_version=model_version,
    )
    return signals_to_frame(records)


def evaluate_latest(
    bars_by_tf: Mapping[str, pd.DataFrame],
    *,
    at: pd.Timestamp,
    state: CooldownState,
    symbol: str,
    exchange: str,
    config: EngineConfig | Settings,
    run_id: str = "live",
    signal_filter: SignalFilter | None = None,
    model_version: str | None = None,
) -> list[Signal]:
    """Signals of the primary bar that closed at `at` (live stream); updates `state`.

    `bars_by_tf` holds each timeframe's recent bars (more than `live_window_bars` is
    fine; bars not closed by `at` are ignored). Returns [] when no primary bar closed
    exactly at `at`.
    """
    cfg = engine_config(config)
    at_ns = _ns_of(at)
    series = _prepare(bars_by_tf, cfg, as_of_ns=at_ns, window=cfg.live_window_bars)
    primary = series[cfg.primary_timeframe]
    if not primary.ts.size or primary.ts[-1] + timeframe_ns(cfg.primary_timeframe) != at_ns:
        return []
    cand = _candidates(
        series,
        cfg,
        last_emitted=state.for_series(symbol, cfg.primary_timeframe),
        only_last=True,
        signal_filter=signal_filter,
    )
    records = _records(
        cand,
        series,
        cfg,
        symbol=symbol,
        exchange=exchange,
        run_id=run_id,
        model_version=model_version,
    )
    return [Signal(**r) for r in records]

"""The signal engine: closed candles of every timeframe -> scored, MTF-checked signals.

One code path, two drivers (DESIGN §4 "one engine, two drivers"):

- `evaluate_symbol_history` (backtest/replay) runs the vectorized pipeline over every
  primary bar of a symbol's history;
- `evaluate_latest` / `evaluate_latest_batch` (live stream) run the *same* functions on
  a trailing window of `live_window_bars` closed bars per timeframe, for the primary bar
  that closed at `at`. With a window of >= 1000 bars the seeds of the recursive
  indicators (EMA, Wilder RSI/ATR) have decayed below float precision, and the 20-bar
  statistics are window-local, so both drivers produce the same signals bit for bit.
  Only what that bar reads is computed: the recursive indicators over the window, the
  window-local features, events and score over its last LIVE_TAIL_BARS rows, stacked
  across the batch's symbols (`tasks.engine.features.feature_tails`); the other timeframes are
  read only when the bar fires.

Pipeline per primary bar (open time ts, close time t = ts + tf):
features (tasks.engine.features) -> events (tasks.engine.events) -> direction and score
(tasks.scoring) -> score >= signal_score_threshold and ATR > 0 -> MTF votes of every
timeframe's last bar closed by t (tasks.engine.mtf) -> mtf_alignment_required -> optional AI
filter -> cooldown. Entry = close of the trigger bar; take profit / stop loss =
entry +/- tp_atr_multiple / sl_atr_multiple * atr_14 (mirrored for short);
expires_at = t + expiry_bars * tf.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from signalengine.core.vocabulary import LIVE_RUN, FloatArray
from signalengine.tasks.engine.buckets import OHLCV_COLUMNS, ClosedSeries, index_ns, timeframe_ns
from signalengine.tasks.engine.config import EngineConfig
from signalengine.tasks.engine.events import EVENT_LOOKBACK_BARS, EventSeries, detect_events
from signalengine.tasks.engine.features import (
    FEATURE_COLUMNS,
    WINDOW_LOOKBACK_BARS,
    feature_arrays,
    feature_tails,
    vote_features_at,
)
from signalengine.tasks.engine.mtf import mtf_agreement, vote
from signalengine.tasks.engine.records import (
    SIGNAL_COLUMNS,
    Candidates,
    CooldownState,
    Signal,
    SignalFilter,
    candidate_frame,
    candidate_records,
    signal_id,
    signals_to_frame,
)
from signalengine.tasks.engine.scoring import cooldown_mask, score_events

# Primary rows the live stream scores: the closing bar and the ones its events read.
LIVE_TAIL_BARS = EVENT_LOOKBACK_BARS + 1
# Shorter live series (fresh listings) take the plain full-series path instead.
_STACK_MIN_BARS = LIVE_TAIL_BARS + WINDOW_LOOKBACK_BARS

__all__ = [
    "SIGNAL_COLUMNS",
    "CooldownState",
    "EngineConfig",
    "Signal",
    "SignalFilter",
    "evaluate_latest",
    "evaluate_latest_batch",
    "evaluate_latest_series",
    "evaluate_symbol_history",
    "signal_id",
    "signals_to_frame",
]


def _prepare(
    bars_by_tf: Mapping[str, pd.DataFrame],
    cfg: EngineConfig,
    *,
    as_of_ns: int | None,
    window: int | None,
) -> dict[str, ClosedSeries]:
    """Closed bars (open + tf <= as_of) of every configured timeframe, last `window` rows.

    A timeframe missing from `bars_by_tf` is resampled from its "1m" frame.
    """
    out: dict[str, ClosedSeries] = {}
    for tf in cfg.timeframes:
        bars = bars_by_tf.get(tf)
        resample = bars is None
        if bars is None:
            if "1m" not in bars_by_tf:
                raise KeyError(f"no bars for timeframe {tf!r} and no 1m bars to build them")
            bars = bars_by_tf["1m"]
        out[tf] = ClosedSeries(bars, tf, as_of_ns=as_of_ns, window=window, resample=resample)
    return out


@dataclass(frozen=True)
class _Scored:
    """Features, events, direction and score of the primary series from row `offset` on.

    A backtest scores every row (offset 0), the live stream the last LIVE_TAIL_BARS.
    """

    offset: int
    feats: dict[str, FloatArray]
    events: dict[str, EventSeries]
    side: NDArray[np.int8]
    score: FloatArray


def _score(
    frame: Mapping[str, FloatArray],
) -> tuple[dict[str, EventSeries], NDArray[np.int8], FloatArray]:
    """(events, side, score) of OHLCV + feature columns, 1-D or stacked 2-D."""
    events = detect_events(frame)
    side, score = score_events(events)
    return events, side, score


def _fires(
    side: NDArray[np.int8], score: FloatArray, atr: FloatArray, cfg: EngineConfig
) -> NDArray[np.bool_]:
    """Candidate rows before MTF: a direction, score >= threshold and a usable ATR."""
    fires = (side != 0) & (score >= cfg.signal_score_threshold) & (atr > 0)
    return np.asarray(fires, dtype=np.bool_)


def _history_scored(primary: ClosedSeries) -> _Scored:
    c = primary.cols
    feats = feature_arrays(c["high"], c["low"], c["close"], c["volume"])
    events, side, score = _score({**c, **feats})
    return _Scored(offset=0, feats=feats, events=events, side=side, score=score)


def _latest_scored(primaries: list[ClosedSeries], cfg: EngineConfig) -> list[_Scored | None]:
    """Per primary series: its last LIVE_TAIL_BARS rows scored if its last row fires, else None.

    Series long enough are stacked and go through features' window-local part, the
    events and the scoring together (numpy overhead paid once per batch, not per
    symbol); `feature_tails` keeps them bit-identical to the full-series pipeline.
    """
    out: list[_Scored | None] = [None] * len(primaries)
    stacked = [k for k, p in enumerate(primaries) if p.ts.size >= _STACK_MIN_BARS]
    if stacked:
        cols = [primaries[k].cols for k in stacked]
        feats = feature_tails(
            [(c["high"], c["low"], c["close"], c["volume"]) for c in cols], tail=LIVE_TAIL_BARS
        )
        ohlcv = {n: np.array([c[n][-LIVE_TAIL_BARS:] for c in cols]) for n in OHLCV_COLUMNS}
        events, side, score = _score({**ohlcv, **feats})
        for j in np.flatnonzero(_fires(side, score, feats["atr_14"], cfg)[:, -1]).tolist():
            k = stacked[j]
            out[k] = _Scored(
                offset=primaries[k].ts.size - LIVE_TAIL_BARS,
                feats={name: v[j] for name, v in feats.items()},
                events={n: EventSeries(e.direction[j], e.strength[j]) for n, e in events.items()},
                side=side[j],
                score=score[j],
            )
    for k, primary in enumerate(primaries):
        if primary.ts.size < _STACK_MIN_BARS:  # a short history: the plain path
            scored = _history_scored(primary)
            if _fires(scored.side, scored.score, scored.feats["atr_14"], cfg)[-1]:
                out[k] = scored
    return out


def _votes(
    series: Mapping[str, ClosedSeries],
    primary_feats: dict[str, FloatArray],
    cfg: EngineConfig,
    rows: NDArray[np.int64],
    at_ns: NDArray[np.int64],
) -> NDArray[np.int8]:
    """(len(rows), n_timeframes) votes at `at_ns`, the close time of each primary row."""
    out = np.zeros((rows.size, len(cfg.timeframes)), dtype=np.int8)
    if rows.size == 0:  # nothing to vote on: skip the other timeframes' features
        return out
    for j, tf in enumerate(cfg.timeframes):
        if tf == cfg.primary_timeframe:
            f = primary_feats
            out[:, j] = vote(f["ema_12"], f["ema_26"], f["ema_slope"], f["rsi_14"])[rows]
            continue
        # The vote of each timeframe's last bar closed by at_ns (0 if none), as `votes_at`
        # of `vote` over every bar, but the votes are formed only at the bars read.
        s = series[tf]
        last = np.searchsorted(s.ts, at_ns - timeframe_ns(tf), side="right") - 1
        f = vote_features_at(s.cols["close"], np.maximum(last, 0))
        tf_votes = vote(f["ema_12"], f["ema_26"], f["ema_slope"], f["rsi_14"])
        out[:, j] = np.where(last >= 0, tf_votes, 0)
    return out


def _candidates(
    series: Mapping[str, ClosedSeries],
    cfg: EngineConfig,
    scored: _Scored,
    *,
    rows: NDArray[np.int64],
    last_emitted: MutableMapping[int, int],
    signal_filter: SignalFilter | None,
) -> Candidates:
    """MTF, AI filter and cooldown over the primary `rows` that fired (see module docstring)."""
    p = series[cfg.primary_timeframe]
    tf_ns = timeframe_ns(cfg.primary_timeframe)
    feats, side, score = scored.feats, scored.side, scored.score
    ts_ns = p.ts[scored.offset + rows]
    votes = _votes(series, feats, cfg, rows, ts_ns + tf_ns)
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
    kept = np.flatnonzero(keep)
    survive = cooldown_mask(
        ts_ns[kept],
        side[rows[kept]],
        cooldown_ns=cfg.cooldown_bars * tf_ns,
        last_emitted=last_emitted,
    )
    sel = kept[survive]
    return Candidates(
        rows=rows[sel],
        ts_ns=ts_ns[sel],
        entry=p.cols["close"][scored.offset + rows[sel]],
        side=side[rows[sel]],
        score=score[rows[sel]],
        votes=votes[sel],
        aligned=aligned[sel],
        mtf_score=mtf_score[sel],
        probability=None if probability is None else probability[sel],
        events=scored.events,
        features=feats,
    )


def _ns_of(value: pd.Timestamp) -> int:
    return int(pd.Timestamp(value).as_unit("ns").value)


def evaluate_symbol_history(
    bars_by_tf: Mapping[str, pd.DataFrame],
    *,
    symbol: str,
    exchange: str,
    run_id: str,
    config: EngineConfig,
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
    cfg = config
    if as_of is not None:
        as_of_ns: int | None = _ns_of(as_of)
    elif "1m" in bars_by_tf and len(bars_by_tf["1m"]):
        as_of_ns = int(index_ns(bars_by_tf["1m"])[-1]) + timeframe_ns("1m")
    else:
        as_of_ns = None
    series = _prepare(bars_by_tf, cfg, as_of_ns=as_of_ns, window=None)
    scored = _history_scored(series[cfg.primary_timeframe])
    rows = np.flatnonzero(_fires(scored.side, scored.score, scored.feats["atr_14"], cfg))
    cand = _candidates(
        series,
        cfg,
        scored,
        rows=rows.astype(np.int64),
        last_emitted={},
        signal_filter=signal_filter,
    )
    return candidate_frame(
        cand, cfg, symbol=symbol, exchange=exchange, run_id=run_id, model_version=model_version
    )


def evaluate_latest_batch(
    bars_by_symbol: Mapping[str, Mapping[str, pd.DataFrame]],
    *,
    at: pd.Timestamp,
    state: CooldownState,
    exchange: str,
    config: EngineConfig,
    run_id: str = LIVE_RUN,
    signal_filter: SignalFilter | None = None,
    model_version: str | None = None,
) -> list[Signal]:
    """Signals of every symbol's primary bar that closed at `at` (live stream); updates `state`.

    `bars_by_symbol`: symbol -> `bars_by_tf` as for `evaluate_latest`. Symbols whose
    primary timeframe has no bar closing exactly at `at` are skipped. Equal to calling
    `evaluate_latest` per symbol in the mapping's order, only faster: the symbols'
    window-local features, events and scores are computed together.
    """
    at_ns = _ns_of(at)
    series_by_symbol = {
        symbol: _prepare(bars_by_tf, config, as_of_ns=at_ns, window=config.live_window_bars)
        for symbol, bars_by_tf in bars_by_symbol.items()
    }
    return evaluate_latest_series(
        series_by_symbol,
        at=at,
        state=state,
        exchange=exchange,
        config=config,
        run_id=run_id,
        signal_filter=signal_filter,
        model_version=model_version,
    )


def evaluate_latest_series(
    series_by_symbol: Mapping[str, Mapping[str, ClosedSeries]],
    *,
    at: pd.Timestamp,
    state: CooldownState,
    exchange: str,
    config: EngineConfig,
    run_id: str = LIVE_RUN,
    signal_filter: SignalFilter | None = None,
    model_version: str | None = None,
) -> list[Signal]:
    """`evaluate_latest_batch` on series already selected: per symbol and timeframe the
    closed bars by `at`, at most `live_window_bars` of them (`ClosedSeries.from_arrays`:
    the live stream's in-memory windows, no DataFrame per symbol)."""
    cfg = config
    at_ns = _ns_of(at)
    primary_tf, tf_ns = cfg.primary_timeframe, timeframe_ns(cfg.primary_timeframe)
    due: list[tuple[str, Mapping[str, ClosedSeries]]] = []
    for symbol, series in series_by_symbol.items():
        ts = series[primary_tf].ts
        if ts.size and int(ts[-1]) + tf_ns == at_ns:
            due.append((symbol, series))
    signals: list[Signal] = []
    latest = _latest_scored([series[primary_tf] for _, series in due], cfg)
    for (symbol, series), scored in zip(due, latest, strict=True):
        if scored is None:
            continue
        cand = _candidates(
            series,
            cfg,
            scored,
            rows=np.array([scored.side.size - 1], dtype=np.int64),
            last_emitted=state.for_series(symbol, primary_tf),
            signal_filter=signal_filter,
        )
        records = candidate_records(
            cand, cfg, symbol=symbol, exchange=exchange, run_id=run_id, model_version=model_version
        )
        signals.extend(Signal(**r) for r in records)
    return signals


def evaluate_latest(
    bars_by_tf: Mapping[str, pd.DataFrame],
    *,
    at: pd.Timestamp,
    state: CooldownState,
    symbol: str,
    exchange: str,
    config: EngineConfig,
    run_id: str = LIVE_RUN,
    signal_filter: SignalFilter | None = None,
    model_version: str | None = None,
) -> list[Signal]:
    """Signals of the primary bar that closed at `at` (live stream); updates `state`.

    `bars_by_tf` holds each timeframe's recent bars (more than `live_window_bars` is
    fine; bars not closed by `at` are ignored). Returns [] when no primary bar closed
    exactly at `at`. For many symbols at once, `evaluate_latest_batch` is faster.
    """
    return evaluate_latest_batch(
        {symbol: bars_by_tf},
        at=at,
        state=state,
        exchange=exchange,
        config=config,
        run_id=run_id,
        signal_filter=signal_filter,
        model_version=model_version,
    )

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

Pipeline per primary bar (open time ts, close time t = ts + tf), per strategy
(tasks.engine.strategy; the built-in `default` when none is given):
features (tasks.engine.features, computed once per symbol and timeframe and shared by every
strategy) -> the strategy's entry rule (direction and score; the default's: events of
tasks.engine.events scored by tasks.engine.scoring) -> its `fires` (the default's: score >=
signal_score_threshold and ATR > 0) -> its MTF votes of every timeframe's last bar closed
by t -> mtf_alignment_required -> optional AI filter -> its cooldown. Entry = close of the
trigger bar; take profit / stop loss from its `exits` (the default's: entry +/-
tp_atr_multiple / sl_atr_multiple * atr_14, mirrored for short); expires_at = t +
expiry_bars * tf. Several strategies' signals come out ordered by ts, then strategy order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from signalengine.core.vocabulary import LIVE_RUN
from signalengine.tasks.engine.buckets import OHLCV_COLUMNS, ClosedSeries, index_ns, timeframe_ns
from signalengine.tasks.engine.candidates import Scored, select_candidates
from signalengine.tasks.engine.config import EngineConfig
from signalengine.tasks.engine.events import EVENT_LOOKBACK_BARS, EventSeries
from signalengine.tasks.engine.features import (
    WINDOW_LOOKBACK_BARS,
    feature_arrays,
    feature_tails,
)
from signalengine.tasks.engine.records import (
    SIGNAL_COLUMNS,
    CooldownState,
    Signal,
    SignalFilter,
    candidate_frame,
    candidate_records,
    signal_id,
    signals_to_frame,
)
from signalengine.tasks.engine.shared import Columns, SeriesFeatures, shared_features
from signalengine.tasks.engine.strategies.default import DefaultStrategy
from signalengine.tasks.engine.strategy import DEFAULT_STRATEGY, Entry, Frame, Strategy

# Primary rows the live stream scores: the closing bar and the ones its events read (at
# least; a strategy whose entry rule reads further back widens it).
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


@lru_cache(maxsize=64)
def _default_strategy(config: EngineConfig) -> Strategy:
    return DefaultStrategy(name=DEFAULT_STRATEGY, config=config)


def _strategies(config: EngineConfig, strategies: Sequence[Strategy] | None) -> list[Strategy]:
    """The strategies to run: the given ones, else the built-in default bound to `config`."""
    return list(strategies) if strategies else [_default_strategy(config)]


def _run_entry(strategy: Strategy, frame: Frame) -> tuple[Entry, NDArray[np.bool_]]:
    """A strategy's entry over OHLCV + feature columns (1-D or stacked 2-D), and its fires."""
    entry = strategy.entry(frame)
    return entry, np.asarray(strategy.fires(frame, entry), dtype=np.bool_)


def _history_scored(primary: ClosedSeries, strategies: Sequence[Strategy]) -> list[Scored]:
    """Every strategy scored over the whole primary series, on one feature pass."""
    c = primary.cols
    feats = feature_arrays(c["high"], c["low"], c["close"], c["volume"])
    frame = Columns(c, feats)  # lazily: the columns no rule reads are formed where read
    out = []
    for strategy in strategies:
        entry, fires = _run_entry(strategy, frame)
        out.append(
            Scored(
                offset=0,
                feats=Columns(entry.features, feats),
                events=entry.events,
                side=entry.direction,
                score=entry.score,
                fires=fires,
            )
        )
    return out


def _live_tail(strategies: Sequence[Strategy]) -> int:
    """Primary rows the live path scores: enough for every strategy's entry rule."""
    return max([LIVE_TAIL_BARS, *(s.entry_lookback_bars + 1 for s in strategies)])


def _latest_scored(
    primaries: list[ClosedSeries], strategies: Sequence[Strategy]
) -> list[list[Scored | None]]:
    """Per strategy, per primary series: its tail scored if its last row fires, else None.

    Series long enough are stacked and go through features' window-local part, the
    entry rules and the scoring together (numpy overhead paid once per batch, not per
    symbol); `feature_tails` keeps them bit-identical to the full-series pipeline. The
    features are computed once and read by every strategy.
    """
    tail = _live_tail(strategies)
    stack_min = tail + WINDOW_LOOKBACK_BARS
    out: list[list[Scored | None]] = [[None] * len(primaries) for _ in strategies]
    stacked = [k for k, p in enumerate(primaries) if p.ts.size >= stack_min]
    if stacked:
        cols = [primaries[k].cols for k in stacked]
        feats = feature_tails(
            [(c["high"], c["low"], c["close"], c["volume"]) for c in cols], tail=tail
        )
        ohlcv = {n: np.array([c[n][-tail:] for c in cols]) for n in OHLCV_COLUMNS}
        frame = {**ohlcv, **feats}
        for i, strategy in enumerate(strategies):
            entry, fires = _run_entry(strategy, frame)
            every = {**feats, **entry.features}
            for j in np.flatnonzero(fires[:, -1]).tolist():
                k = stacked[j]
                out[i][k] = Scored(
                    offset=primaries[k].ts.size - tail,
                    feats={name: v[j] for name, v in every.items()},
                    events={
                        n: EventSeries(e.direction[j], e.strength[j])
                        for n, e in entry.events.items()
                    },
                    side=entry.direction[j],
                    score=entry.score[j],
                    fires=fires[j],
                )
    for k, primary in enumerate(primaries):
        if primary.ts.size < stack_min:  # a short history: the plain path
            for i, scored in enumerate(_history_scored(primary, strategies)):
                if scored.fires.size and scored.fires[-1]:
                    out[i][k] = scored
    return out


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
    strategies: Sequence[Strategy] | None = None,
) -> pd.DataFrame:
    """All signals of one symbol's history, vectorized over every primary bar (backtest).

    `bars_by_tf`: timeframe -> frame indexed by UTC bar open time with OHLCV columns
    (a missing timeframe is resampled from "1m"). Only buckets closed by `as_of` are
    used; `as_of` defaults to the close of the last 1m bar (so a trailing, still-filling
    bucket is ignored) or, without 1m bars, to no limit. `strategies` run together over
    features computed once (default: the built-in one). Returns SIGNAL_COLUMNS rows
    ordered by ts, then strategy order.
    """
    cfg = config
    if as_of is not None:
        as_of_ns: int | None = _ns_of(as_of)
    elif "1m" in bars_by_tf and len(bars_by_tf["1m"]):
        as_of_ns = int(index_ns(bars_by_tf["1m"])[-1]) + timeframe_ns("1m")
    else:
        as_of_ns = None
    chosen = _strategies(cfg, strategies)
    series = _prepare(bars_by_tf, cfg, as_of_ns=as_of_ns, window=None)
    frames = shared_features(series)
    out = []
    for strategy, scored in zip(
        chosen, _history_scored(series[cfg.primary_timeframe], chosen), strict=True
    ):
        cand = select_candidates(
            frames,
            cfg,
            strategy,
            scored,
            rows=np.flatnonzero(scored.fires).astype(np.int64),
            last_emitted={},
            signal_filter=signal_filter,
        )
        out.append(
            candidate_frame(
                cand,
                cfg,
                symbol=symbol,
                exchange=exchange,
                run_id=run_id,
                model_version=model_version,
            )
        )
    if len(out) == 1:
        return out[0]
    found = [f for f in out if not f.empty]
    if not found:
        return out[0]
    merged = pd.concat(found, ignore_index=True)
    return merged.sort_values("ts", kind="stable").reset_index(drop=True)


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
    strategies: Sequence[Strategy] | None = None,
    run_ids: Mapping[str, str] | None = None,
    filters: Mapping[str, tuple[SignalFilter | None, str | None]] | None = None,
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
        strategies=strategies,
        run_ids=run_ids,
        filters=filters,
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
    strategies: Sequence[Strategy] | None = None,
    run_ids: Mapping[str, str] | None = None,
    filters: Mapping[str, tuple[SignalFilter | None, str | None]] | None = None,
) -> list[Signal]:
    """`evaluate_latest_batch` on series already selected: per symbol and timeframe the
    closed bars by `at`, at most `live_window_bars` of them (`ClosedSeries.from_arrays`:
    the live stream's in-memory windows, no DataFrame per symbol).

    `strategies` run together over features computed once (default: the built-in one),
    each with its own cooldown in `state`; `run_ids` maps a strategy name to the run its
    signals go to (default `run_id`); `filters` maps a strategy name to its own AI filter
    and model version (default `signal_filter`, `model_version`). Signals come per
    symbol, then strategy order.
    """
    cfg = config
    at_ns = _ns_of(at)
    chosen = _strategies(cfg, strategies)
    primary_tf, tf_ns = cfg.primary_timeframe, timeframe_ns(cfg.primary_timeframe)
    due: list[tuple[str, Mapping[str, ClosedSeries]]] = []
    for symbol, series in series_by_symbol.items():
        ts = series[primary_tf].ts
        if ts.size and int(ts[-1]) + tf_ns == at_ns:
            due.append((symbol, series))
    signals: list[Signal] = []
    latest = _latest_scored([series[primary_tf] for _, series in due], chosen)
    for k, (symbol, series) in enumerate(due):
        frames: dict[str, SeriesFeatures] | None = None
        for strategy, scored_by_symbol in zip(chosen, latest, strict=True):
            scored = scored_by_symbol[k]
            if scored is None:
                continue
            frames = frames or shared_features(series)  # once per symbol, for all strategies
            own_filter, own_version = (filters or {}).get(
                strategy.name, (signal_filter, model_version)
            )
            cand = select_candidates(
                frames,
                cfg,
                strategy,
                scored,
                rows=np.array([scored.side.size - 1], dtype=np.int64),
                last_emitted=state.for_series(symbol, primary_tf, strategy.name),
                signal_filter=own_filter,
            )
            records = candidate_records(
                cand,
                cfg,
                symbol=symbol,
                exchange=exchange,
                run_id=(run_ids or {}).get(strategy.name, run_id),
                model_version=own_version,
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
    strategies: Sequence[Strategy] | None = None,
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
        strategies=strategies,
    )

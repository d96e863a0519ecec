"""Strategies as `strategy check` sees them (`CheckSubject`): their two drivers and declarations."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from signalengine.core.vocabulary import FloatArray
from signalengine.tasks.engine.buckets import (
    OHLCV_COLUMNS,
    ClosedSeries,
    closed_bars,
    index_ns,
    timeframe_ns,
)
from signalengine.tasks.engine.config import EngineConfig
from signalengine.tasks.engine.features import (
    FEATURE_WARMUP_BARS,
    compute_features,
    feature_arrays,
)
from signalengine.tasks.engine.mtf import mtf_agreement, mtf_details, votes_at
from signalengine.tasks.engine.pipeline import evaluate_latest_series, evaluate_symbol_history
from signalengine.tasks.engine.records import (
    SIGNAL_COLUMNS,
    CooldownState,
    Signal,
    signal_id,
    signals_to_frame,
)
from signalengine.tasks.engine.scoring import cooldown_mask
from signalengine.tasks.engine.strategy import Entry, Strategy
from signalengine.tasks.runs.strategy_check import CHECK_RUN, CheckSubject

__all__ = ["engine_subject", "strategy_subject"]


def _primary_closed(bars_by_tf: Mapping[str, pd.DataFrame], primary: str) -> pd.DataFrame:
    bars = bars_by_tf[primary]
    one = bars_by_tf.get("1m")
    if one is None or one.empty:
        return bars
    as_of = pd.Timestamp(int(index_ns(one)[-1]) + timeframe_ns("1m"), tz="UTC")
    return closed_bars(bars, primary, as_of)


def engine_subject(
    config: EngineConfig, *, exchange: str, name: str = "default", version: str | None = None
) -> CheckSubject:
    """The built-in engine (tasks.engine.pipeline) with `config`."""

    def history(bars_by_tf: Mapping[str, pd.DataFrame], *, symbol: str) -> pd.DataFrame:
        return evaluate_symbol_history(
            bars_by_tf, symbol=symbol, exchange=exchange, run_id=CHECK_RUN, config=config
        )

    def latest(
        series_by_symbol: Mapping[str, Mapping[str, ClosedSeries]],
        *,
        at: pd.Timestamp,
        state: CooldownState,
    ) -> list[Signal]:
        return evaluate_latest_series(
            series_by_symbol, at=at, state=state, exchange=exchange, config=config, run_id=CHECK_RUN
        )

    def features(bars_by_tf: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
        return compute_features(_primary_closed(bars_by_tf, config.primary_timeframe))

    return CheckSubject(
        name=name,
        version=version,
        timeframes=config.timeframes,
        primary_timeframe=config.primary_timeframe,
        lookback_bars=FEATURE_WARMUP_BARS,
        cooldown_bars=config.cooldown_bars,
        live_window_bars=config.live_window_bars,
        history=history,
        latest=latest,
        features=features,
    )


def _frame(series: ClosedSeries) -> dict[str, FloatArray]:
    """OHLCV and the standard features of one timeframe's selected bars."""
    c = series.cols
    return {**c, **feature_arrays(c["high"], c["low"], c["close"], c["volume"])}


def _none_if_nan(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


@dataclass(frozen=True)
class _Evaluated:
    """One strategy's evaluation of a symbol's series (its candidates and their votes)."""

    frame: dict[str, FloatArray]
    entry: Entry
    rows: NDArray[np.int64]
    votes: NDArray[np.int8]


def _votes_at(
    strategy: Strategy,
    series: Mapping[str, ClosedSeries],
    frame: Mapping[str, FloatArray],
    rows: NDArray[np.int64],
    at_ns: NDArray[np.int64],
) -> NDArray[np.int8]:
    """(rows, timeframes) votes: each timeframe's last bar closed by each `at_ns`."""
    out = np.zeros((rows.size, len(strategy.timeframes)), dtype=np.int8)
    if rows.size == 0:
        return out
    for j, tf in enumerate(strategy.timeframes):
        if tf == strategy.primary_timeframe:
            out[:, j] = strategy.vote(frame)[rows]
            continue
        s = series[tf]
        out[:, j] = votes_at(s.ts + timeframe_ns(tf), strategy.vote(_frame(s)), at_ns)
    return out


def _evaluate(
    strategy: Strategy, series: Mapping[str, ClosedSeries], *, last_only: bool
) -> _Evaluated:
    primary = series[strategy.primary_timeframe]
    base = _frame(primary)
    entry = strategy.entry(base)
    frame = {**base, **entry.features}
    fires = strategy.fires(frame, entry)
    if last_only:
        n = fires.size
        rows = np.array([n - 1] if n and fires[-1] else [], dtype=np.int64)
    else:
        rows = np.flatnonzero(fires).astype(np.int64)
    at_ns = primary.ts[rows] + timeframe_ns(strategy.primary_timeframe)
    return _Evaluated(frame, entry, rows, _votes_at(strategy, series, frame, rows, at_ns))


def _records(
    strategy: Strategy,
    series: Mapping[str, ClosedSeries],
    ev: _Evaluated,
    *,
    symbol: str,
    exchange: str,
    last_emitted: MutableMapping[int, int],
) -> list[dict[str, Any]]:
    """MTF rule, cooldown and exits of the candidates; their signal records."""
    tf = strategy.primary_timeframe
    tf_ns = timeframe_ns(tf)
    primary = series[tf]
    side = ev.entry.direction[ev.rows]
    aligned, mtf_score = mtf_agreement(side, ev.votes, min_aligned=strategy.mtf_min_aligned)
    keep = aligned if strategy.mtf_alignment_required else np.ones(side.size, dtype=np.bool_)
    kept = np.flatnonzero(keep)
    ts_ns = primary.ts[ev.rows]
    survive = cooldown_mask(
        ts_ns[kept],
        side[kept],
        cooldown_ns=strategy.cooldown_bars * tf_ns,
        last_emitted=last_emitted,
    )
    sel = kept[survive]
    rows = ev.rows[sel]
    entry_price = primary.cols["close"][rows]
    sub = {name: values[rows] for name, values in ev.frame.items()}
    take_profit, stop_loss = strategy.exits(entry_price, side[sel].astype(np.int64), sub)
    out: list[dict[str, Any]] = []
    for k, row in enumerate(rows.tolist()):
        direction = "long" if side[sel[k]] > 0 else "short"
        ts = pd.Timestamp(int(ts_ns[sel[k]]), tz="UTC")
        record = {
            "id": signal_id(
                run_id=f"{CHECK_RUN}:{strategy.name}",
                exchange=exchange,
                symbol=symbol,
                timeframe=tf,
                direction=direction,
                ts=ts,
            ),
            "run_id": CHECK_RUN,
            "exchange": exchange,
            "symbol": symbol,
            "timeframe": tf,
            "direction": direction,
            "ts": ts,
            "emitted_at": ts + pd.Timedelta(tf_ns, unit="ns"),
            "entry_price": float(entry_price[k]),
            "take_profit": float(take_profit[k]),
            "stop_loss": float(stop_loss[k]),
            "expires_at": ts + pd.Timedelta((1 + strategy.expiry_bars) * tf_ns, unit="ns"),
            "score": float(ev.entry.score[row]),
            "events": [
                {
                    "type": name,
                    "direction": "long" if e.direction[row] > 0 else "short",
                    "strength": float(e.strength[row]),
                }
                for name, e in ev.entry.events.items()
                if e.direction[row] != 0
            ],
            "mtf_aligned": bool(aligned[sel[k]]),
            "mtf_score": float(mtf_score[sel[k]]),
            "mtf_details": mtf_details(ev.votes[sel[k]].tolist(), list(strategy.timeframes)),
            "ai_probability": None,
            "model_version": None,
            "features": {c: _none_if_nan(float(ev.frame[c][row])) for c in strategy.filter_columns},
            "status": "open",
            "strategy": strategy.name,
            "strategy_version": strategy.version,
        }
        out.append({c: record.get(c) for c in SIGNAL_COLUMNS})
    return out


def _series(
    bars_by_tf: Mapping[str, pd.DataFrame],
    timeframes: tuple[str, ...],
    as_of_ns: int | None,
    window: int | None,
) -> dict[str, ClosedSeries]:
    return {
        tf: ClosedSeries(bars_by_tf[tf], tf, as_of_ns=as_of_ns, window=window) for tf in timeframes
    }


def strategy_subject(strategy: Strategy, *, exchange: str) -> CheckSubject:
    """A `Strategy` (tasks.engine.strategy) run by this module's own small drivers: the
    engine's features, the strategy's entry/fires/vote/exits, the engine's MTF rule,
    cooldown and record layout, over the whole history (backtest) or a trailing window
    of `live_window_bars` per close (live)."""
    primary = strategy.primary_timeframe
    read = tuple(dict.fromkeys((primary, *strategy.timeframes)))
    window = strategy.config.live_window_bars

    def history(bars_by_tf: Mapping[str, pd.DataFrame], *, symbol: str) -> pd.DataFrame:
        one = bars_by_tf["1m"]
        as_of = int(index_ns(one)[-1]) + timeframe_ns("1m") if len(one) else None
        series = _series(bars_by_tf, read, as_of, None)
        ev = _evaluate(strategy, series, last_only=False)
        records = _records(strategy, series, ev, symbol=symbol, exchange=exchange, last_emitted={})
        return signals_to_frame(records)

    def latest(
        series_by_symbol: Mapping[str, Mapping[str, ClosedSeries]],
        *,
        at: pd.Timestamp,
        state: CooldownState,
    ) -> list[Signal]:
        at_ns, tf_ns = int(at.value), timeframe_ns(primary)
        out: list[Signal] = []
        for symbol, series in series_by_symbol.items():
            ts = series[primary].ts
            if not ts.size or int(ts[-1]) + tf_ns != at_ns:
                continue
            ev = _evaluate(strategy, series, last_only=True)
            records = _records(
                strategy,
                series,
                ev,
                symbol=symbol,
                exchange=exchange,
                last_emitted=state.for_series(symbol, primary),
            )
            out += [Signal(**r) for r in records]
        return out

    def features(bars_by_tf: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
        one = bars_by_tf["1m"]
        as_of = int(index_ns(one)[-1]) + timeframe_ns("1m") if len(one) else None
        series = _series(bars_by_tf, read, as_of, None)
        p = series[primary]
        base = _frame(p)
        entry = strategy.entry(base)
        frame = {**base, **entry.features}
        rows = np.arange(p.ts.size, dtype=np.int64)
        votes = _votes_at(strategy, series, frame, rows, p.ts + timeframe_ns(primary))
        columns = {
            **frame,
            **{f"vote_{tf}": votes[:, j] for j, tf in enumerate(strategy.timeframes)},
        }
        index = pd.DatetimeIndex(pd.to_datetime(p.ts, unit="ns", utc=True), name="ts")
        return pd.DataFrame(columns, index=index).drop(columns=list(OHLCV_COLUMNS))

    return CheckSubject(
        name=strategy.name,
        version=strategy.version,
        timeframes=read,
        primary_timeframe=primary,
        lookback_bars=strategy.lookback_bars,
        cooldown_bars=strategy.cooldown_bars,
        live_window_bars=window,
        history=history,
        latest=latest,
        features=features,
    )

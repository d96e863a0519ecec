"""From a strategy's fired rows to emitted candidates: MTF votes, AI filter, cooldown, exits.

Both drivers call `select_candidates` with the primary rows a strategy fired on (every
row of a history, or the closing bar live); see tasks.engine.pipeline for the whole
pipeline. The other timeframes' features come from the symbol's shared `SeriesFeatures`,
so several strategies never compute them twice.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from signalengine.core.vocabulary import FloatArray
from signalengine.tasks.engine.buckets import OHLCV_COLUMNS, timeframe_ns
from signalengine.tasks.engine.config import EngineConfig
from signalengine.tasks.engine.events import EventSeries
from signalengine.tasks.engine.mtf import mtf_agreement
from signalengine.tasks.engine.records import Candidates, SignalFilter
from signalengine.tasks.engine.scoring import cooldown_mask
from signalengine.tasks.engine.shared import Columns, SeriesFeatures, column_at, rows_of
from signalengine.tasks.engine.strategy import Strategy

__all__ = ["Scored", "candidate_votes", "select_candidates"]


@dataclass(frozen=True)
class Scored:
    """Features, events, direction and score of the primary series from row `offset` on,
    for one strategy; `fires` its candidate mask (before MTF).

    A backtest scores every row (offset 0), the live stream the last rows (its tail).
    """

    offset: int
    feats: Mapping[str, FloatArray]
    events: Mapping[str, EventSeries]
    side: NDArray[np.int8]
    score: FloatArray
    fires: NDArray[np.bool_]


def candidate_votes(
    frames: Mapping[str, SeriesFeatures],
    primary: Mapping[str, FloatArray],
    strategy: Strategy,
    rows: NDArray[np.int64],
    at_ns: NDArray[np.int64],
) -> NDArray[np.int8]:
    """(len(rows), len(strategy.timeframes)) votes at `at_ns`, the close of each primary row.

    `primary`: the scored primary rows' columns; `frames`: every timeframe's shared
    features. A timeframe votes with its last bar closed by at_ns (0 if none); the vote
    is formed only at the bars read.
    """
    out = np.zeros((rows.size, len(strategy.timeframes)), dtype=np.int8)
    if rows.size == 0:  # nothing to vote on: skip the other timeframes' features
        return out
    for j, tf in enumerate(strategy.timeframes):
        if tf == strategy.primary_timeframe:
            out[:, j] = strategy.vote(rows_of(primary, rows))
            continue
        f = frames[tf]
        last = np.searchsorted(f.series.ts, at_ns - timeframe_ns(tf), side="right") - 1
        tf_votes = strategy.vote(f.at(np.maximum(last, 0)))
        out[:, j] = np.where(last >= 0, tf_votes, 0)
    return out


def select_candidates(
    frames: Mapping[str, SeriesFeatures],
    cfg: EngineConfig,
    strategy: Strategy,
    scored: Scored,
    *,
    rows: NDArray[np.int64],
    last_emitted: MutableMapping[int, int],
    signal_filter: SignalFilter | None,
) -> Candidates:
    """MTF, AI filter and cooldown over the primary `rows` that fired (see module docstring)."""
    p = frames[cfg.primary_timeframe].series
    tf_ns = timeframe_ns(cfg.primary_timeframe)
    feats, side, score = scored.feats, scored.side, scored.score
    ts_ns = p.ts[scored.offset + rows]
    tail = {n: p.cols[n][scored.offset :] for n in OHLCV_COLUMNS}
    primary = Columns(feats, tail)
    votes = candidate_votes(frames, primary, strategy, rows, ts_ns + tf_ns)
    aligned, mtf_score = mtf_agreement(side[rows], votes, min_aligned=strategy.mtf_min_aligned)
    keep = aligned if strategy.mtf_alignment_required else np.ones(rows.size, dtype=np.bool_)
    probability: FloatArray | None = None
    if signal_filter is not None and keep.any():
        frame = pd.DataFrame({c: column_at(feats, c, rows) for c in strategy.filter_columns})
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
        cooldown_ns=strategy.cooldown_bars * tf_ns,
        last_emitted=last_emitted,
    )
    sel = kept[survive]
    entry = p.cols["close"][scored.offset + rows[sel]]
    take_profit, stop_loss = strategy.exits(
        entry.astype(np.float64), side[rows[sel]].astype(np.int64), rows_of(primary, rows[sel])
    )
    return Candidates(
        rows=rows[sel],
        ts_ns=ts_ns[sel],
        entry=entry,
        side=side[rows[sel]],
        score=score[rows[sel]],
        votes=votes[sel],
        aligned=aligned[sel],
        mtf_score=mtf_score[sel],
        probability=None if probability is None else probability[sel],
        events=scored.events,
        features=feats,
        take_profit=np.asarray(take_profit, dtype=np.float64),
        stop_loss=np.asarray(stop_loss, dtype=np.float64),
        expiry_bars=strategy.expiry_bars,
        strategy=strategy.name,
        strategy_version=strategy.version,
        vote_timeframes=tuple(strategy.timeframes),
        feature_columns=tuple(strategy.filter_columns),
    )

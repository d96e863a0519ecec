"""Multi-timeframe (MTF) votes and their alignment with a signal direction.

Vote of one timeframe bar (from `tasks.engine.features.VOTE_COLUMNS`):
long when ema_12 > ema_26, ema_slope > 0 and rsi_14 > 50; short when ema_12 < ema_26,
ema_slope < 0 and rsi_14 < 50; neutral otherwise (including warm-up bars).

At the primary bar closing at t, a timeframe votes with its last *closed* bar: the bar
opening at T closes at T + tf and is usable at t only if T + tf <= t. A timeframe with no
closed bar yet votes neutral.

`mtf_aligned` = at least `mtf_min_aligned` timeframes vote the signal's direction.
`mtf_score` = agreeing votes / number of configured timeframes, in [0, 1] (neutral and
opposing votes count against it equally).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from signalengine.core.vocabulary import FloatArray

VOTE_LABELS: dict[int, str] = {1: "long", -1: "short", 0: "neutral"}
RSI_MIDLINE = 50.0

__all__ = ["VOTE_LABELS", "mtf_agreement", "mtf_details", "vote", "votes_at"]


def vote(
    ema_12: FloatArray, ema_26: FloatArray, ema_slope: FloatArray, rsi_14: FloatArray
) -> NDArray[np.int8]:
    """Per-bar vote, int8: +1 long, -1 short, 0 neutral."""
    long = (ema_12 > ema_26) & (ema_slope > 0) & (rsi_14 > RSI_MIDLINE)
    short = (ema_12 < ema_26) & (ema_slope < 0) & (rsi_14 < RSI_MIDLINE)
    return long.astype(np.int8) - short.astype(np.int8)


def votes_at(
    close_ns: NDArray[np.int64], votes: NDArray[np.int8], at_ns: NDArray[np.int64]
) -> NDArray[np.int8]:
    """The vote of the last bar with close time <= each `at_ns` (0 if none).

    `close_ns` ascending bar close times (open + tf) in ns. Same semantics as
    `pandas.merge_asof(direction="backward", allow_exact_matches=True)` on close time.
    """
    idx = np.searchsorted(close_ns, at_ns, side="right") - 1
    return np.where(idx >= 0, votes[np.maximum(idx, 0)], 0).astype(np.int8)


def mtf_agreement(
    direction: NDArray[np.int8], votes: NDArray[np.int8], *, min_aligned: int
) -> tuple[NDArray[np.bool_], FloatArray]:
    """(mtf_aligned, mtf_score) per row; `votes` has shape (rows, timeframes)."""
    if votes.ndim != 2 or votes.shape[0] != direction.size:
        raise ValueError("votes must have shape (len(direction), n_timeframes)")
    agree = np.count_nonzero(votes == direction[:, None], axis=1)
    agree = np.where(direction != 0, agree, 0)
    aligned = agree >= min_aligned
    score = agree / votes.shape[1] if votes.shape[1] else np.zeros(direction.size)
    return aligned, np.asarray(score, dtype=np.float64)


def mtf_details(votes_row: Sequence[int], timeframes: Sequence[str]) -> dict[str, str]:
    """{"1m": "long", "15m": "neutral", ...} for one row of votes."""
    return {tf: VOTE_LABELS[int(v)] for tf, v in zip(timeframes, votes_row, strict=True)}

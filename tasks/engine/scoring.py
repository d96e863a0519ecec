"""Combine per-bar events into a direction and a score, and apply the cooldown.

Score: `net = sum_k w_k * direction_k * strength_k` over the event types (EVENT_WEIGHTS),
so opposite events cancel; direction = sign(net); `score = min(1, |net| / SCORE_SATURATION)`.
With the defaults a bare single event (strength 0.5, weight 1) scores 0.2 and one at full
strength 0.4, so the default threshold of 0.5 (net >= 1.25) takes at least two agreeing
events; two full-strength weight-1 events score 0.8.

Cooldown: after a signal for (symbol, timeframe, direction) on the bar opening at L, the
same direction may not fire again on a bar opening at t unless t - L > cooldown_bars *
timeframe (so `cooldown_bars = 3` blocks the next three bars). Both drivers run the same
`cooldown_mask` over time-ordered candidates with the last emitted open time as state.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

import numpy as np
from numpy.typing import NDArray

from signalengine.core.vocabulary import FloatArray
from signalengine.tasks.engine.events import EventSeries

EVENT_WEIGHTS: dict[str, float] = {
    "ema_cross": 1.0,
    "macd_cross": 0.75,
    "rsi_reversal": 1.0,
    "bb_breakout": 0.75,
    "volume_spike": 0.5,
    "trend_pullback": 0.75,
}
SCORE_SATURATION = 2.5

__all__ = ["EVENT_WEIGHTS", "SCORE_SATURATION", "cooldown_mask", "score_events"]


def score_events(
    events: Mapping[str, EventSeries], weights: Mapping[str, float] = EVENT_WEIGHTS
) -> tuple[NDArray[np.int8], FloatArray]:
    """Per-bar (direction int8 in {-1, 0, 1}, score in [0, 1]) from detector outputs.

    Event types missing from `weights` are ignored. The summation order is the order
    of `weights`, so the result is reproducible bit for bit.
    """
    net: FloatArray | None = None
    for name, weight in weights.items():
        event = events.get(name)
        if event is None:
            continue
        term = weight * event.direction * event.strength
        net = term if net is None else net + term
    if net is None:
        shape = next(iter(events.values())).direction.shape if events else (0,)
        return np.zeros(shape, dtype=np.int8), np.zeros(shape)
    direction = np.sign(net).astype(np.int8)
    score = np.minimum(1.0, np.abs(net) / SCORE_SATURATION)
    return direction, score


def cooldown_mask(
    ts_ns: NDArray[np.int64],
    direction: NDArray[np.int8],
    *,
    cooldown_ns: int,
    last_emitted: MutableMapping[int, int],
) -> NDArray[np.bool_]:
    """Which time-ordered candidates survive the cooldown; updates `last_emitted` in place.

    `ts_ns`: candidate bar open times (ns, ascending); `direction`: +1/-1 per candidate;
    `cooldown_ns`: cooldown_bars * timeframe in ns; `last_emitted`: direction -> open time
    (ns) of the last emitted signal, the state a live driver keeps between bars.
    """
    keep = np.zeros(ts_ns.size, dtype=np.bool_)
    for i, (ts, side) in enumerate(zip(ts_ns.tolist(), direction.tolist(), strict=True)):
        last = last_emitted.get(side)
        if last is None or ts - last > cooldown_ns:
            keep[i] = True
            last_emitted[side] = ts
    return keep

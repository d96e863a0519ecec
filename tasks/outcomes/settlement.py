"""How a signal ends (DESIGN §4): walk the 1m bars from `emitted_at` to `expires_at`.

Bars walked: 1m bars with open time >= emitted_at and close time (open + 1m) <= expires_at.
Long, per bar in time order: open <= stop -> sl_hit at the open; open >= target -> tp_hit
at the open; low <= stop -> sl_hit at the stop (checked first when both are touched);
high >= target -> tp_hit at the target. Short is the mirror image. No hit by expires_at:
expired at the close of the last 1m bar that closed by then (the entry price at
emitted_at when no 1m bar closed inside the window). `exit_time` = close time of the exit
bar, `entry_time` = emitted_at. `return_pct = (exit/entry - 1) * 100` (negated for short)
`- (fee_bps + slippage_bps) / 100`.

A signal with no hit yet whose `expires_at` is after `as_of` (default: close time of the
last 1m bar given) is not settleable yet: None / left out.

`settle_signal` is the plain reference walk; `settle_arrays` is the vectorized version for
many signals of one symbol (searchsorted + a gather of at most `max window` bars per
signal, chunked); tests check that they agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from signalengine.core.vocabulary import DEFAULT_STRATEGY, FloatArray, IntArray
from signalengine.tasks.engine.buckets import MINUTE_NS, index_ns

OUTCOMES: tuple[str, ...] = ("open", "tp_hit", "sl_hit", "expired")  # index = outcome code
_TP, _SL, _EXPIRED = 1, 2, 3
_CHUNK_CELLS = 2_000_000  # signals x bars gathered at once

PERFORMANCE_COLUMNS: tuple[str, ...] = (
    "signal_id",
    "run_id",
    "exchange",
    "symbol",
    "direction",
    "timeframe",
    "entry_price",
    "exit_price",
    "entry_time",
    "exit_time",
    "outcome",
    "return_pct",
    "duration_sec",
    "score",
    "strategy",
)

__all__ = [
    "OUTCOMES",
    "PERFORMANCE_COLUMNS",
    "Settlement",
    "SettlementArrays",
    "performance_frame",
    "settle_arrays",
    "settle_frame",
    "settle_signal",
    "settle_signals",
]


@dataclass(frozen=True)
class Settlement:
    """The end of one signal."""

    outcome: str
    exit_price: float
    exit_time: pd.Timestamp
    return_pct: float
    duration_sec: float


@dataclass(frozen=True)
class SettlementArrays:
    """Vectorized result: `outcome` codes index OUTCOMES (0 = not settleable yet)."""

    outcome: NDArray[np.int8]
    exit_price: FloatArray
    exit_ns: IntArray
    return_pct: FloatArray


def _ns(value: Any) -> int:
    return int(pd.Timestamp(value).as_unit("ns").value)


def _return_pct(side: int, entry: float, exit_price: float, cost_pct: float) -> float:
    return side * (exit_price / entry - 1.0) * 100.0 - cost_pct


def settle_signal(
    signal: Mapping[str, Any],
    bars_1m: pd.DataFrame,
    *,
    fee_bps: float = 0.0,
    slippage_bps: float = 0.0,
    as_of: pd.Timestamp | None = None,
) -> Settlement | None:
    """Settle one signal over 1m bars (UTC open-time index; open/high/low/close).

    `signal` needs direction ('long'|'short'), entry_price, take_profit, stop_loss,
    emitted_at, expires_at. Returns None while it cannot be settled yet.
    """
    side = 1 if signal["direction"] == "long" else -1
    entry, target, stop = (float(signal[k]) for k in ("entry_price", "take_profit", "stop_loss"))
    emitted, expires = _ns(signal["emitted_at"]), _ns(signal["expires_at"])
    opens = index_ns(bars_1m)
    as_of_ns = _ns(as_of) if as_of is not None else int(opens[-1]) + MINUTE_NS if opens.size else 0
    cost = (fee_bps + slippage_bps) / 100.0
    cols = [np.asarray(bars_1m[c], dtype=np.float64) for c in ("open", "high", "low", "close")]
    last_close: tuple[float, int] | None = None
    for i, bar_open in enumerate(opens.tolist()):
        closes_at = bar_open + MINUTE_NS
        if bar_open < emitted or closes_at > as_of_ns:
            continue
        if closes_at > expires:
            break
        o, h, lo, c = (float(col[i]) for col in cols)
        # Mirror a short into a long: negate prices, swap high and low.
        po, ph, pl, ps, pt = (o, h, lo, stop, target) if side > 0 else (-o, -lo, -h, -stop, -target)
        hit: tuple[str, float] | None = None
        if po <= ps:
            hit = ("sl_hit", o)
        elif po >= pt:
            hit = ("tp_hit", o)
        elif pl <= ps:
            hit = ("sl_hit", stop)
        elif ph >= pt:
            hit = ("tp_hit", target)
        if hit is not None:
            return _settlement(hit[0], hit[1], closes_at, side, entry, emitted, cost)
        last_close = (c, closes_at)
    if as_of_ns < expires:
        return None
    price, when = last_close if last_close is not None else (entry, emitted)
    return _settlement("expired", price, when, side, entry, emitted, cost)


def _settlement(
    outcome: str, price: float, exit_ns: int, side: int, entry: float, emitted: int, cost: float
) -> Settlement:
    return Settlement(
        outcome=outcome,
        exit_price=price,
        exit_time=pd.Timestamp(exit_ns, unit="ns", tz="UTC"),
        return_pct=_return_pct(side, entry, price, cost),
        duration_sec=(exit_ns - emitted) / 1e9,
    )


def settle_arrays(
    bars: Mapping[str, FloatArray | IntArray],
    *,
    side: NDArray[np.int8],
    entry: FloatArray,
    take_profit: FloatArray,
    stop_loss: FloatArray,
    emitted_ns: IntArray,
    expires_ns: IntArray,
    as_of_ns: int,
    cost_pct: float,
) -> SettlementArrays:
    """Settle many signals of one symbol at once.

    `bars`: `ts` (1m open times, int64 ns, ascending) and float64 `open, high, low, close`.
    Signal arrays are aligned (one element per signal); `side` is +1 long / -1 short.
    """
    ts = np.asarray(bars["ts"], dtype=np.int64)
    # A bar closes at ts + 1m: "closed by t" is searched as ts <= t - 1m (exact in int64),
    # so no array of every bar's close time is built.
    o, h, lo, c = (np.asarray(bars[k], dtype=np.float64) for k in ("open", "high", "low", "close"))
    n = side.size
    outcome = np.zeros(n, dtype=np.int8)
    exit_price = np.full(n, np.nan)
    exit_ns = np.zeros(n, dtype=np.int64)
    start = np.searchsorted(ts, emitted_ns, side="left")
    stop = np.searchsorted(ts, np.minimum(expires_ns, as_of_ns) - MINUTE_NS, side="right")
    length = np.maximum(stop - start, 0)
    width = int(length.max()) if n else 0
    rows = max(1, _CHUNK_CELLS // max(width, 1))
    sgn = side.astype(np.float64)
    for first_row in range(0, n if width else 0, rows):
        part = slice(first_row, min(n, first_row + rows))
        code, price, bar = _first_hits(
            (o, h, lo),
            start=start[part],
            length=length[part],
            width=width,
            side=sgn[part],
            take_profit=take_profit[part],
            stop_loss=stop_loss[part],
        )
        outcome[part] = code
        exit_price[part] = np.where(code > 0, price, np.nan)
        exit_ns[part] = np.where(code > 0, ts[bar] + MINUTE_NS, 0)
    # Expiry for the rest: last 1m bar closed by expires_at inside the window, else entry.
    expire = (outcome == 0) & (expires_ns <= as_of_ns)
    last = np.searchsorted(ts, expires_ns - MINUTE_NS, side="right") - 1
    in_window = expire & (last >= start)
    outcome[expire] = _EXPIRED
    exit_price[in_window] = c[last[in_window]]
    exit_ns[in_window] = ts[last[in_window]] + MINUTE_NS
    bare = expire & ~in_window
    exit_price[bare] = entry[bare]
    exit_ns[bare] = emitted_ns[bare]
    return_pct = sgn * (exit_price / entry - 1.0) * 100.0 - cost_pct
    return_pct[outcome == 0] = np.nan
    return SettlementArrays(outcome, exit_price, exit_ns, return_pct)


def _first_hits(
    ohl: tuple[FloatArray, FloatArray, FloatArray],
    *,
    start: IntArray,
    length: IntArray,
    width: int,
    side: FloatArray,
    take_profit: FloatArray,
    stop_loss: FloatArray,
) -> tuple[NDArray[np.int8], FloatArray, IntArray]:
    """(outcome code or 0, exit price, bar index) of the first stop/target bar per signal."""
    o, h, lo = ohl
    cols = np.arange(width)
    valid = cols[None, :] < length[:, None]
    idx = np.minimum(start[:, None] + cols[None, :], o.size - 1)
    s = side[:, None]
    long = s > 0
    # Mirror shorts into longs: negate prices and swap high with low.
    po = s * o[idx]
    ph = np.where(long, h[idx], -lo[idx])
    pl = np.where(long, lo[idx], -h[idx])
    ps, pt = s * stop_loss[:, None], s * take_profit[:, None]
    gap_sl, gap_tp = valid & (po <= ps), valid & (po >= pt)
    touch_sl, touch_tp = valid & (pl <= ps), valid & (ph >= pt)
    hit = gap_sl | gap_tp | touch_sl | touch_tp
    first = hit.argmax(axis=1)
    r = np.arange(first.size)
    g_sl, g_tp, t_sl = gap_sl[r, first], gap_tp[r, first], touch_sl[r, first]
    bar = idx[r, first]
    price = np.where(g_sl | g_tp, o[bar], np.where(t_sl, stop_loss, take_profit))
    code = np.where(g_sl | (~g_tp & t_sl), _SL, _TP)
    code = np.where(hit[r, first], code, 0).astype(np.int8)
    return code, price, bar


def settle_signals(
    signals: pd.DataFrame,
    bars_1m: pd.DataFrame,
    *,
    fee_bps: float = 0.0,
    slippage_bps: float = 0.0,
    as_of: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """`signal_performance` rows (PERFORMANCE_COLUMNS) for the settleable signals of one symbol.

    `signals` has the `signals` table columns (at least id, run_id, exchange, symbol,
    direction, timeframe, entry_price, take_profit, stop_loss, emitted_at, expires_at,
    score); `bars_1m` is that symbol's 1m frame. `as_of` defaults to the last bar's close.
    """
    settled = settle_frame(
        signals, bars_1m, fee_bps=fee_bps, slippage_bps=slippage_bps, as_of=as_of
    )
    return performance_frame(signals, settled)


def settle_frame(
    signals: pd.DataFrame,
    bars_1m: pd.DataFrame,
    *,
    fee_bps: float = 0.0,
    slippage_bps: float = 0.0,
    as_of: pd.Timestamp | None = None,
) -> SettlementArrays:
    """`settle_arrays` of the signals of one symbol (the columns `settle_signals` reads), one
    element per row of `signals`, in order; `performance_frame` turns them into rows."""
    ts = index_ns(bars_1m)
    as_of_ns = _ns(as_of) if as_of is not None else int(ts[-1]) + MINUTE_NS if ts.size else 0
    bars: dict[str, FloatArray | IntArray] = {"ts": ts}
    for col in ("open", "high", "low", "close"):
        bars[col] = np.asarray(bars_1m[col], dtype=np.float64)
    side = np.where(signals["direction"].to_numpy() == "long", 1, -1).astype(np.int8)
    return settle_arrays(
        bars,
        side=side,
        entry=signals["entry_price"].to_numpy(dtype=np.float64),
        take_profit=signals["take_profit"].to_numpy(dtype=np.float64),
        stop_loss=signals["stop_loss"].to_numpy(dtype=np.float64),
        emitted_ns=_times_ns(signals["emitted_at"]),
        expires_ns=_times_ns(signals["expires_at"]),
        as_of_ns=as_of_ns,
        cost_pct=(fee_bps + slippage_bps) / 100.0,
    )


def performance_frame(
    signals: pd.DataFrame, settled: SettlementArrays, rows: IntArray | None = None
) -> pd.DataFrame:
    """PERFORMANCE_COLUMNS of settled signals: `settled` is aligned with the rows of
    `signals` (`settle_frame`); `rows` picks and orders the (settled) rows to report,
    by default every settled one in order."""
    if rows is None:
        rows = np.flatnonzero(settled.outcome > 0)
    emitted = _times_ns(signals["emitted_at"])[rows]
    exit_ns = settled.exit_ns[rows]
    return pd.DataFrame(
        {
            "signal_id": _text(signals["id"], rows),
            "run_id": _text(signals["run_id"], rows),
            "exchange": _text(signals["exchange"], rows),
            "symbol": _text(signals["symbol"], rows),
            "direction": _text(signals["direction"], rows),
            "timeframe": _text(signals["timeframe"], rows),
            "entry_price": signals["entry_price"].to_numpy(dtype=np.float64)[rows],
            "exit_price": settled.exit_price[rows],
            "entry_time": pd.to_datetime(emitted, unit="ns", utc=True),
            "exit_time": pd.to_datetime(exit_ns, unit="ns", utc=True),
            "outcome": np.asarray(OUTCOMES, dtype=object)[settled.outcome[rows]],
            "return_pct": settled.return_pct[rows],
            "duration_sec": (exit_ns - emitted) / 1e9,
            "score": signals["score"].to_numpy(dtype=np.float64)[rows],
            "strategy": _strategies(signals, rows),
        },
        columns=list(PERFORMANCE_COLUMNS),
    )


# The dtype pandas gives a column of Python strings: a column already of it is taken as is.
_INFERRED_TEXT = pd.Series(["text"]).dtype


def _text(column: pd.Series, rows: IntArray, dtype: type | None = None) -> Any:
    """`column`'s values at `rows`, as the frame infers them from Python objects (a column
    of no rows stays object: pandas infers nothing from it)."""
    if rows.size and column.dtype == _INFERRED_TEXT:
        return column.array.take(rows)
    return column.to_numpy(dtype=dtype)[rows]


def _strategies(signals: pd.DataFrame, rows: IntArray) -> Any:
    """Each signal's strategy; frames from before strategies existed are the default's."""
    if "strategy" in signals.columns:
        return _text(signals["strategy"], rows, dtype=object)
    return np.full(rows.size, DEFAULT_STRATEGY, dtype=object)


def _times_ns(values: pd.Series) -> IntArray:
    times = pd.DatetimeIndex(pd.to_datetime(values, utc=True))
    return np.asarray(times.as_unit("ns").asi8, dtype=np.int64)

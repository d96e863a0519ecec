"""What `strategy check` compares: signal frames bit for bit, and scrambled futures.

Pure (numpy/pandas only). Two signal frames are compared by signal id (deterministic:
run, exchange, symbol, timeframe, direction, trigger bar); a float is equal only to the
same 64 bits (NaN equals NaN, 0.0 differs from -0.0), a time to the same nanosecond and a
JSON column (events, mtf_details, features) to the same structure with the same floats.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from signalengine.tasks.engine.buckets import OHLCV_COLUMNS, index_ns

__all__ = [
    "SignalDiff",
    "diff_features",
    "diff_signals",
    "first_diff",
    "same_value",
    "scramble_after",
]


def same_value(a: Any, b: Any) -> bool:
    """Bitwise equality of signal values (floats by their bits, containers recursively)."""
    if isinstance(a, float | np.floating) or isinstance(b, float | np.floating):
        if not isinstance(a, float | int | np.number) or not isinstance(b, float | int | np.number):
            return False
        return np.float64(a).tobytes() == np.float64(b).tobytes()
    if isinstance(a, pd.Timestamp) or isinstance(b, pd.Timestamp):
        try:
            return bool(pd.Timestamp(a).value == pd.Timestamp(b).value)
        except (TypeError, ValueError):
            return False
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    if a is None or b is None:
        return a is None and b is None
    return bool(a == b)


@dataclass(frozen=True)
class SignalDiff:
    """One signal that differs between a reference run and another run.

    `kind`: "missing" (only in the reference), "added" (only in the other run) or
    "changed" (in both, `fields` lists the columns whose values differ; `features` the
    feature names inside the `features` column that moved, with both values).
    """

    kind: str
    id: str
    ts: pd.Timestamp
    direction: str
    fields: tuple[str, ...] = ()
    features: tuple[tuple[str, Any, Any], ...] = ()
    votes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe form for the verdict."""
        return {
            "kind": self.kind,
            "id": self.id,
            "ts": self.ts.isoformat(),
            "direction": self.direction,
            "fields": list(self.fields),
            "features": [{"name": n, "reference": a, "other": b} for n, a, b in self.features],
            "votes": list(self.votes),
        }


def _records(frame: pd.DataFrame) -> dict[str, dict[str, Any]]:
    return {str(r["id"]): {str(k): v for k, v in r.items()} for r in frame.to_dict("records")}


def diff_features(a: Mapping[str, Any], b: Mapping[str, Any]) -> tuple[tuple[str, Any, Any], ...]:
    """(name, value in a, value in b) of every feature whose value differs (either side)."""
    names = list(dict.fromkeys([*a, *b]))
    return tuple(
        (n, _plain(a.get(n)), _plain(b.get(n))) for n in names if not same_value(a.get(n), b.get(n))
    )


def _plain(value: Any) -> Any:
    """A JSON-safe scalar (NaN as None)."""
    if isinstance(value, float | np.floating):
        return None if math.isnan(float(value)) else float(value)
    return value


def diff_signals(reference: pd.DataFrame, other: pd.DataFrame) -> list[SignalDiff]:
    """Every signal that is not bit-identical in the two frames, ordered by trigger bar."""
    ref, oth = _records(reference), _records(other)
    out: list[SignalDiff] = []
    for sid in ref.keys() | oth.keys():
        a, b = ref.get(sid), oth.get(sid)
        row = a if a is not None else b
        assert row is not None
        ts, direction = pd.Timestamp(row["ts"]), str(row["direction"])
        if a is None or b is None:
            out.append(SignalDiff("added" if a is None else "missing", sid, ts, direction))
            continue
        fields = tuple(c for c in a if not same_value(a[c], b.get(c)))
        if fields:
            moved = diff_features(a.get("features") or {}, b.get("features") or {})
            va, vb = a.get("mtf_details") or {}, b.get("mtf_details") or {}
            votes = tuple(tf for tf in dict.fromkeys([*va, *vb]) if va.get(tf) != vb.get(tf))
            out.append(SignalDiff("changed", sid, ts, direction, fields, moved, votes))
    out.sort(key=lambda d: (d.ts.value, d.direction, d.id))
    return out


def first_diff(reference: pd.DataFrame, other: pd.DataFrame) -> SignalDiff | None:
    """The earliest differing signal, or None when the frames hold the same signals."""
    diffs = diff_signals(reference, other)
    return diffs[0] if diffs else None


def scramble_after(
    bars_1m: pd.DataFrame, cut_ns: int, *, seed: int, mirror: bool = False
) -> pd.DataFrame:
    """A copy of 1m bars whose every bar opening at or after `cut_ns` is replaced by a
    seeded random walk (same open times; OHLC consistent; volumes permuted).

    The walk starts from the last close before the cut, with the per-bar volatility of
    the bars it replaces, so a strategy sees a plausible but different future. Bars
    before the cut are untouched (bit for bit). `mirror` negates the walk's steps: of a
    walk and its mirror, one moves every later close the other way.
    """
    ts = index_ns(bars_1m)
    begin = int(np.searchsorted(ts, cut_ns, side="left"))
    out = bars_1m.copy()
    n = ts.size - begin
    if n <= 0:
        return out
    rng = np.random.default_rng(seed)
    close = np.asarray(bars_1m["close"], dtype=np.float64)
    last = close[begin - 1] if begin else close[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        rets = np.diff(np.log(close[max(begin - 1, 0) :]))
    sigma = float(np.nanstd(rets)) if rets.size > 1 else 0.0
    sigma = sigma if math.isfinite(sigma) and sigma > 0 else 1e-3
    steps = rng.normal(0.0, sigma, n)
    new_close = last * np.exp(np.cumsum(-steps if mirror else steps))
    new_open = np.r_[last, new_close[:-1]]
    wick = np.abs(rng.normal(0.0, sigma, n)) * new_close
    cols = {
        "open": new_open,
        "high": np.maximum(new_open, new_close) + wick,
        "low": np.minimum(new_open, new_close) - wick,
        "close": new_close,
        "volume": rng.permutation(np.asarray(bars_1m["volume"], dtype=np.float64)[begin:]),
    }
    for name in OHLCV_COLUMNS:
        values = np.asarray(out[name], dtype=np.float64).copy()
        values[begin:] = cols[name]
        out[name] = values
    return out

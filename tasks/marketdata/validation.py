"""Kline validation: split a batch into rows fit to store and rows to reject, with reasons.

A batch is a DataFrame with columns `exchange, symbol, ts, open, high, low, close,
volume`; `ts` is the bar open time (UTC, tz-aware, or epoch milliseconds). Values may
arrive as strings (exchanges send prices as text); they are parsed here, and anything
that does not parse is rejected rather than coerced.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

KLINE_COLUMNS = ["exchange", "symbol", "ts", "open", "high", "low", "close", "volume"]
_PRICE_COLUMNS = ["open", "high", "low", "close", "volume"]
_MINUTE_NS = 60_000_000_000


@dataclass
class ValidatedBatch:
    """Rows that passed (typed: float64 prices, UTC timestamps) and rows that did not."""

    valid: pd.DataFrame
    rejected: list[dict[str, Any]] = field(default_factory=list)


def _json_safe(value: Any) -> Any:
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value


def raw_row(row: Mapping[Hashable, Any]) -> str:
    """The original row as JSON text, with non-finite numbers kept as strings."""
    return json.dumps({k: _json_safe(v) for k, v in row.items()}, default=str)


def _parse_ts(values: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = pd.to_datetime(values, utc=True)
    else:
        numeric = pd.to_numeric(values, errors="coerce")
        if numeric.notna().all():
            parsed = pd.to_datetime(numeric, unit="ms", utc=True, errors="coerce")
        else:
            parsed = pd.to_datetime(values, utc=True, errors="coerce", format="mixed")
    return parsed.astype("datetime64[ns, UTC]")


def _reasons(frame: pd.DataFrame, known_symbols: Collection[str] | None) -> np.ndarray:
    """One reason per row ('' when valid); the first failed rule wins."""
    reason = np.full(len(frame), "", dtype=object)
    unset = np.ones(len(frame), dtype=bool)

    def flag(mask: np.ndarray | pd.Series, text: str) -> None:
        hit = unset & np.asarray(mask, dtype=bool)
        reason[hit] = text
        unset[hit] = False

    ts = frame["ts"]
    flag(ts.isna().to_numpy(), "unparseable timestamp")
    prices = {c: frame[c].to_numpy(dtype=np.float64) for c in _PRICE_COLUMNS}
    for column in _PRICE_COLUMNS:
        flag(~np.isfinite(prices[column]), f"{column} is not a finite number")
    ns = ts.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    flag(ts.notna().to_numpy() & (ns % _MINUTE_NS != 0), "timestamp is not aligned to a minute")
    o, h, lo, c, v = (prices[k] for k in _PRICE_COLUMNS)
    flag(h < np.maximum(o, c), "high below max(open, close)")
    flag(lo > np.minimum(o, c), "low above min(open, close)")
    flag(v < 0, "negative volume")
    flag((o <= 0) | (h <= 0) | (lo <= 0) | (c <= 0), "non-positive price")
    if known_symbols is not None:
        flag(~frame["symbol"].isin(list(known_symbols)).to_numpy(), "unknown symbol")
    return reason


def validate_klines(
    batch: pd.DataFrame, *, known_symbols: Collection[str] | None = None
) -> ValidatedBatch:
    """Validate a batch; rows keep their order, rejected ones carry the raw row and a reason."""
    missing = [c for c in KLINE_COLUMNS if c not in batch.columns]
    if missing:
        raise ValueError(f"kline batch lacks columns {missing}")
    if batch.empty:
        return ValidatedBatch(valid=_typed(batch.iloc[0:0]))
    frame = batch[KLINE_COLUMNS].copy()
    frame["ts"] = _parse_ts(frame["ts"])
    for column in _PRICE_COLUMNS:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    reasons = _reasons(frame, known_symbols)
    bad = reasons != ""
    rejected = []
    for pos in np.flatnonzero(bad):
        ts = frame["ts"].iloc[pos]
        rejected.append(
            {
                "exchange": str(batch["exchange"].iloc[pos]),
                "symbol": str(batch["symbol"].iloc[pos]),
                "ts": ts if pd.notna(ts) else None,
                "raw": raw_row(batch.iloc[pos].to_dict()),
                "reason": reasons[pos],
            }
        )
    return ValidatedBatch(valid=frame[~bad].reset_index(drop=True), rejected=rejected)


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    empty = pd.DataFrame({c: pd.Series(dtype="float64") for c in KLINE_COLUMNS})
    empty["exchange"] = empty["exchange"].astype(object)
    empty["symbol"] = empty["symbol"].astype(object)
    empty["ts"] = pd.Series(dtype="datetime64[ns, UTC]")
    return empty

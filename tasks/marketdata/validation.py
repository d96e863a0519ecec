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
    elif isinstance(values.dtype, np.dtype) and values.dtype.kind in "iu":
        # epoch ms as sent (the live stream): what the branch below makes of them, sooner
        parsed = pd.to_datetime(values, unit="ms", utc=True, errors="coerce")
    else:
        numeric = pd.to_numeric(values, errors="coerce")
        if numeric.notna().all():
            parsed = pd.to_datetime(numeric, unit="ms", utc=True, errors="coerce")
        else:
            parsed = pd.to_datetime(values, utc=True, errors="coerce", format="mixed")
    return parsed.astype("datetime64[ns, UTC]")


def _parse_price(values: pd.Series) -> np.ndarray:
    """float64 per row, NaN where the value does not parse."""
    if values.dtype == object or (
        isinstance(values.dtype, pd.StringDtype) and values.dtype.na_value is not pd.NA
    ):
        # what to_numeric parses such a Series as (its values as objects), without the Series
        parsed = pd.to_numeric(values.to_numpy(dtype=object), errors="coerce")
        return np.asarray(parsed).astype("float64")
    return pd.to_numeric(values, errors="coerce").astype("float64").to_numpy()


def _reasons(
    ts: pd.Series,
    prices: dict[str, np.ndarray],
    symbols: pd.Series,
    known_symbols: Collection[str] | None,
) -> np.ndarray:
    """One reason per row ('' when valid); the first failed rule wins."""
    reason = np.full(len(ts), "", dtype=object)
    unset = np.ones(len(ts), dtype=bool)

    def flag(mask: np.ndarray, text: str) -> None:
        hit = unset & mask
        reason[hit] = text
        unset[hit] = False

    missing = ts.isna().to_numpy()
    flag(missing, "unparseable timestamp")
    for column in _PRICE_COLUMNS:
        flag(~np.isfinite(prices[column]), f"{column} is not a finite number")
    ns = ts.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    flag(~missing & (ns % _MINUTE_NS != 0), "timestamp is not aligned to a minute")
    o, h, lo, c, v = (prices[k] for k in _PRICE_COLUMNS)
    flag(h < np.maximum(o, c), "high below max(open, close)")
    flag(lo > np.minimum(o, c), "low above min(open, close)")
    flag(v < 0, "negative volume")
    flag((o <= 0) | (h <= 0) | (lo <= 0) | (c <= 0), "non-positive price")
    if known_symbols is not None:
        # plain objects: `isin` on Arrow-backed strings walks them in Python (10x slower)
        known = np.array(list(known_symbols), dtype=object)
        values = pd.Series(symbols.to_numpy(dtype=object), dtype=object)
        flag(~values.isin(known).to_numpy(dtype=bool), "unknown symbol")
    return reason


def _as_is(column: pd.Series) -> Any:
    """The values of `column` for a new frame (default index) keeping its dtype: a plain
    object array would be inferred to `str` there."""
    if isinstance(column.dtype, pd.api.extensions.ExtensionDtype):
        return column.array
    return pd.Series(column.to_numpy(), dtype=column.dtype)


def validate_klines(
    batch: pd.DataFrame, *, known_symbols: Collection[str] | None = None
) -> ValidatedBatch:
    """Validate a batch; rows keep their order, rejected ones carry the raw row and a reason.

    The valid frame has the columns of KLINE_COLUMNS (exchange and symbol of the batch's
    dtypes, ts datetime64[ns, UTC], prices float64) and a fresh RangeIndex.
    """
    missing = [c for c in KLINE_COLUMNS if c not in batch.columns]
    if missing:
        raise ValueError(f"kline batch lacks columns {missing}")
    if batch.empty:
        return ValidatedBatch(valid=_typed(batch.iloc[0:0]))
    ts = _parse_ts(batch["ts"])
    prices = {c: _parse_price(batch[c]) for c in _PRICE_COLUMNS}
    # built in one go (column by column assignment costs more than the checks here)
    frame = pd.DataFrame(
        {"exchange": _as_is(batch["exchange"]), "symbol": _as_is(batch["symbol"]), "ts": ts.array}
        | prices
    )
    reasons = _reasons(ts, prices, batch["symbol"], known_symbols)
    bad = reasons != ""
    if not bad.any():
        return ValidatedBatch(valid=frame)
    rejected = []
    for pos in np.flatnonzero(bad):
        stamp = ts.iloc[pos]
        rejected.append(
            {
                "exchange": str(batch["exchange"].iloc[pos]),
                "symbol": str(batch["symbol"].iloc[pos]),
                "ts": stamp if pd.notna(stamp) else None,
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

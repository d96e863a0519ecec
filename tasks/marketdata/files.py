"""Kline files: Parquet (pyarrow) and CSV with columns ts, open, high, low, close, volume.

`ts` is the bar open time: a timestamp (naive means UTC) or epoch milliseconds. Files
hold 1m bars: one whose usual spacing is not one minute (an hourly file, say) is refused
rather than stored as if its bars were minutes. Exports add `bars` (1m bars per bucket).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

FILE_COLUMNS = ["ts", "open", "high", "low", "close", "volume"]
EXPORT_COLUMNS = [*FILE_COLUMNS, "bars"]
_MINUTE = pd.Timedelta(minutes=1)


def _open_times(values: pd.Series) -> pd.Series:
    """Parsed UTC open times (epoch ms or timestamps); unparseable ones become NaT."""
    if pd.api.types.is_datetime64_any_dtype(values):  # numbers would be ns, not ms
        return pd.to_datetime(values, utc=True)
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().all():
        return pd.to_datetime(numeric, unit="ms", utc=True, errors="coerce")
    return pd.to_datetime(values, utc=True, errors="coerce", format="mixed")


def check_minute_spacing(frame: pd.DataFrame, *, path: Path) -> None:
    """Raise ValueError when the most common gap between bars is not one minute.

    Gaps and single bad rows are fine (validation rejects those row by row); a file whose
    bars are typically 5 minutes or an hour apart is not a file of 1m bars.
    """
    times = _open_times(frame["ts"]).dropna().drop_duplicates().sort_values()
    if len(times) < 2:
        return
    usual = times.diff().dropna().mode().iloc[0]
    if usual != _MINUTE:
        raise ValueError(
            f"{path}: bars are usually {usual} apart, not 1 minute; import takes 1m bars"
            " (resample the file, or export it from its source at 1m)"
        )


def read_klines_file(path: Path, *, exchange: str, symbol: str) -> pd.DataFrame:
    """Read a file into the storage layout; raw values are kept for validation to judge."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        frame = pd.read_parquet(path, engine="pyarrow")
    elif suffix in {".csv", ".txt"}:
        frame = pd.read_csv(path, dtype=str)
    else:
        raise ValueError(f"unsupported file type {suffix!r}: use .parquet or .csv")
    if "ts" not in frame.columns:
        for alias in ("date", "timestamp", "time", "open_time"):
            if alias in frame.columns:
                frame = frame.rename(columns={alias: "ts"})
                break
    missing = [c for c in FILE_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path} lacks columns {missing}; expected {FILE_COLUMNS}")
    frame = frame[FILE_COLUMNS].copy()
    check_minute_spacing(frame, path=path)
    frame.insert(0, "symbol", symbol)
    frame.insert(0, "exchange", exchange)
    return frame


def write_klines_file(frame: pd.DataFrame, path: Path) -> None:
    """Write bars (ts as UTC timestamps, and `bars` when present) to Parquet or CSV."""
    out = frame[[c for c in EXPORT_COLUMNS if c in frame.columns]]
    if "bars" in out.columns:  # a count, whatever dtype the read produced
        out = out.astype({"bars": "int64"})
    if path.suffix.lower() == ".parquet":
        out.to_parquet(path, engine="pyarrow", index=False)
    elif path.suffix.lower() == ".csv":
        out.to_csv(path, index=False)
    else:
        raise ValueError(f"unsupported file type {path.suffix!r}: use .parquet or .csv")

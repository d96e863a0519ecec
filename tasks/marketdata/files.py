"""Kline files: Parquet (pyarrow) and CSV with columns ts, open, high, low, close, volume.

`ts` is the bar open time: a timestamp (naive means UTC) or epoch milliseconds.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

FILE_COLUMNS = ["ts", "open", "high", "low", "close", "volume"]


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
    frame.insert(0, "symbol", symbol)
    frame.insert(0, "exchange", exchange)
    return frame


def write_klines_file(frame: pd.DataFrame, path: Path) -> None:
    """Write bars (ts as UTC timestamps) to Parquet or CSV by the file's suffix."""
    out = frame[FILE_COLUMNS]
    if path.suffix.lower() == ".parquet":
        out.to_parquet(path, engine="pyarrow", index=False)
    elif path.suffix.lower() == ".csv":
        out.to_csv(path, index=False)
    else:
        raise ValueError(f"unsupported file type {path.suffix!r}: use .parquet or .csv")

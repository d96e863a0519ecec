"""Kline files: the 1m-spacing check reads every timestamp form a user's file can hold."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from signalengine.tasks.marketdata.files import read_klines_file


def _write(path: Path, ts: pd.Series | pd.DatetimeIndex) -> Path:
    frame = pd.DataFrame({"ts": ts, "open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5})
    frame["volume"] = 3.0
    frame.to_parquet(path)
    return path


@pytest.mark.parametrize("form", ["utc", "naive", "epoch_ms"])
def test_minute_files_are_read_whatever_the_timestamp_type(tmp_path: Path, form: str) -> None:
    ts = pd.date_range("2025-01-01", periods=90, freq="1min", tz="UTC")
    value = {"utc": ts, "naive": ts.tz_localize(None), "epoch_ms": ts.as_unit("ms").asi8}[form]
    frame = read_klines_file(_write(tmp_path / "m.parquet", value), exchange="x", symbol="A/B")
    assert len(frame) == 90


@pytest.mark.parametrize("freq", ["5min", "1h"])
def test_files_of_other_spacings_are_refused(tmp_path: Path, freq: str) -> None:
    ts = pd.date_range("2025-01-01", periods=40, freq=freq, tz="UTC")
    with pytest.raises(ValueError, match="not 1 minute"):
        read_klines_file(_write(tmp_path / "h.parquet", ts), exchange="x", symbol="A/B")

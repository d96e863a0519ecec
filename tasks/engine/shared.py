"""Standard features of one symbol's series, computed at most once and shared by strategies.

Several strategies run over the same bars: the engine hands each of them the same
`SeriesFeatures` per symbol and timeframe, so the TA-Lib pass is paid once whatever the
number of strategies. A column group is computed on first read: reading only
`VOTE_COLUMNS` (what the default MTF vote reads) computes the cheap vote subset, any
other feature column the full `feature_arrays` once (its vote columns are bit-identical to
the subset's, both being `vote_feature_arrays` of the same closes).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
from numpy.typing import NDArray

from signalengine.core.vocabulary import FloatArray
from signalengine.tasks.engine.buckets import OHLCV_COLUMNS, ClosedSeries
from signalengine.tasks.engine.features import (
    FEATURE_COLUMNS,
    VOTE_COLUMNS,
    feature_arrays,
    vote_feature_arrays,
)

__all__ = ["SeriesFeatures", "shared_features"]


class SeriesFeatures(Mapping[str, FloatArray]):
    """OHLCV and FEATURE_COLUMNS of one closed series (whole length), lazily, once."""

    def __init__(self, series: ClosedSeries) -> None:
        self.series = series
        self._vote: dict[str, FloatArray] | None = None
        self._full: dict[str, FloatArray] | None = None

    def _features(self, name: str) -> dict[str, FloatArray]:
        if self._full is not None:
            return self._full
        if name in VOTE_COLUMNS:
            if self._vote is None:
                self._vote = vote_feature_arrays(self.series.cols["close"])
            return self._vote
        c = self.series.cols
        self._full = feature_arrays(c["high"], c["low"], c["close"], c["volume"])
        return self._full

    def __getitem__(self, name: str) -> FloatArray:
        if name in OHLCV_COLUMNS:
            return self.series.cols[name]
        if name in FEATURE_COLUMNS:
            return self._features(name)[name]
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter((*OHLCV_COLUMNS, *FEATURE_COLUMNS))

    def __len__(self) -> int:
        return len(OHLCV_COLUMNS) + len(FEATURE_COLUMNS)

    def at(self, rows: NDArray[np.int64]) -> Mapping[str, FloatArray]:
        """The columns at `rows` only (what an MTF vote reads), each taken on first read."""
        return _Rows(self, rows)


class _Rows(Mapping[str, FloatArray]):
    """A lazy row selection of another mapping's columns."""

    def __init__(self, columns: Mapping[str, FloatArray], rows: NDArray[np.int64]) -> None:
        self._columns, self._rows = columns, rows

    def __getitem__(self, name: str) -> FloatArray:
        return self._columns[name][self._rows]

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns)

    def __len__(self) -> int:
        return len(self._columns)


def shared_features(series: Mapping[str, ClosedSeries]) -> dict[str, SeriesFeatures]:
    """One `SeriesFeatures` per timeframe of a symbol's series."""
    return {tf: SeriesFeatures(s) for tf, s in series.items()}

"""Standard features of one symbol's series, computed at most once and shared by strategies.

Several strategies run over the same bars: the engine hands each of them the same
`SeriesFeatures` per symbol and timeframe, so the TA-Lib pass is paid once whatever the
number of strategies. A column group is computed on first read: reading only
`VOTE_COLUMNS` (what the default MTF vote reads) computes the cheap vote subset, any
other feature column the full `feature_arrays` once (its vote columns are bit-identical to
the subset's, both being `vote_feature_arrays` of the same closes). Read at rows (`at`),
ema_slope is formed at those rows only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import numpy as np
from numpy.typing import NDArray

from signalengine.core.vocabulary import FloatArray
from signalengine.tasks.engine.buckets import OHLCV_COLUMNS, ClosedSeries
from signalengine.tasks.engine.features import (
    FEATURE_COLUMNS,
    VOTE_COLUMNS,
    ema_slope,
    feature_arrays,
    vote_feature_arrays,
)

__all__ = ["Columns", "SeriesFeatures", "column_at", "rows_of", "shared_features"]


class SeriesFeatures(Mapping[str, FloatArray]):
    """OHLCV and FEATURE_COLUMNS of one closed series (whole length), lazily, once."""

    def __init__(self, series: ClosedSeries) -> None:
        self.series = series
        self._vote: dict[str, FloatArray] | None = None
        self._full: Mapping[str, FloatArray] | None = None

    def _features(self, name: str) -> Mapping[str, FloatArray]:
        if self._full is not None:
            return self._full
        if name in VOTE_COLUMNS:
            if self._vote is None:  # ema_slope on its own: votes read it at a few rows
                self._vote = vote_feature_arrays(self.series.cols["close"], slope=False)
            if name == "ema_slope" and name not in self._vote:
                self._vote[name] = ema_slope(self._vote["ema_12"])
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
        return _Rows(self, rows, self.column_at)

    def column_at(self, name: str, rows: NDArray[np.int64]) -> FloatArray:
        """Column `name` at `rows`, formed at those rows only where it can be (the vote
        subset's ema_slope, the full features' ROW_COLUMNS): the same values."""
        if name == "ema_slope" and self._full is None and name not in (self._vote or {}):
            return ema_slope(self["ema_12"], rows)
        if name in FEATURE_COLUMNS:
            return column_at(self._features(name), name, rows)
        return self[name][rows]


def column_at(columns: Mapping[str, FloatArray], name: str, rows: NDArray[np.int64]) -> FloatArray:
    """`columns[name][rows]`, through the mapping's own `column_at` when it has one (a
    column formed at the rows read only: `SeriesFeatures`, `FeatureArrays`, `Columns`)."""
    at = getattr(columns, "column_at", None)
    return at(name, rows) if at is not None else columns[name][rows]


def rows_of(columns: Mapping[str, FloatArray], rows: NDArray[np.int64]) -> Mapping[str, FloatArray]:
    """`columns` at `rows`, each column taken when read: a vote or an exit rule reads a few
    of a series' columns at its candidates."""
    return _Rows(columns, rows, lambda name, at: column_at(columns, name, at))


class Columns(Mapping[str, FloatArray]):
    """Several mappings of columns as one, the first holding a name wins (`{**last, ...,
    **first}` without reading every column), keeping each one's `column_at`."""

    def __init__(self, *parts: Mapping[str, FloatArray]) -> None:
        self._parts = parts

    def _part(self, name: str) -> Mapping[str, FloatArray]:
        for part in self._parts:
            if name in part:
                return part
        raise KeyError(name)

    def __getitem__(self, name: str) -> FloatArray:
        return self._part(name)[name]

    def __contains__(self, name: object) -> bool:
        return any(name in part for part in self._parts)

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(name for part in self._parts for name in part))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def column_at(self, name: str, rows: NDArray[np.int64]) -> FloatArray:
        """The column at `rows` from the part that holds it (see `column_at`)."""
        return column_at(self._part(name), name, rows)


class _Rows(Mapping[str, FloatArray]):
    """A lazy row selection of another mapping's columns: `take(name, rows)` on each read."""

    def __init__(
        self,
        columns: Mapping[str, FloatArray],
        rows: NDArray[np.int64],
        take: Callable[[str, NDArray[np.int64]], FloatArray],
    ) -> None:
        self._columns, self._rows, self._take = columns, rows, take

    def __getitem__(self, name: str) -> FloatArray:
        return self._take(name, self._rows)

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns)

    def __len__(self) -> int:
        return len(self._columns)


def shared_features(series: Mapping[str, ClosedSeries]) -> dict[str, SeriesFeatures]:
    """One `SeriesFeatures` per timeframe of a symbol's series."""
    return {tf: SeriesFeatures(s) for tf, s in series.items()}

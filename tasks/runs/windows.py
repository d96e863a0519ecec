"""The live stream's trailing windows, in memory: what a primary close reads, without a query.

Per timeframe one `_Track` holds every symbol's recent closed bars as stacked numpy rows
(`ts` int64 ns open times, UTC; float64 OHLCV), shape (symbols, capacity). A primary close
selects, per symbol and timeframe, exactly the rows the database path selected
(`load_bars(start = at - (window + 1) * tf, closed_by = at)`, then the last `window` rows)
as contiguous views, so `evaluate_latest_series` gets the same float64 values the backtest
reads from the same stored klines: live == backtest, bit for bit.

The database stays the source of truth:
- `seed` reads the windows through the columnar COPY path (tasks.marketdata.columnar), at
  start and for any symbol marked dirty;
- `advance` appends the 1m bars the stream has just stored and, for each higher timeframe
  whose buckets closed, buckets them from the held bars below it in the engine's order
  (`engine_bucket_order`, through `aggregate_buckets`: what the backtest does with the
  same stored 1m bars, so live == backtest by construction), with no query: a close
  need not wait for the relations' upkeep of its minute;
- a bar the windows cannot place (a late bar behind the newest, a gap, a symbol whose
  newest stored bar disagrees with the newest held) marks its symbol dirty, and the next
  `advance` reseeds that symbol from the database (after `before_reads`, which a stream
  that evaluates a minute while it is still being stored uses to wait for its commit).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from numpy.typing import NDArray

from signalengine.core.vocabulary import TIMEFRAME_MINUTES, FloatArray, engine_bucket_order
from signalengine.tasks.engine.buckets import OHLCV_COLUMNS, ClosedSeries, aggregate_buckets
from signalengine.tasks.marketdata.columnar import read_bars

__all__ = ["LiveWindows"]

MINUTE_NS = 60_000_000_000
MS = 1_000_000  # ns per ms
_EMPTY_TS = np.iinfo(np.int64).max  # unused slots sort after every bar


def _width_ns(timeframe: str) -> int:
    return TIMEFRAME_MINUTES[timeframe] * MINUTE_NS


class _Track:
    """One timeframe's bars of every symbol: row i holds symbol i's bars in `[0, end[i])`."""

    def __init__(self, symbols: int, timeframe: str, capacity: int) -> None:
        self.timeframe, self.width_ns = timeframe, _width_ns(timeframe)
        self.ts = np.full((symbols, capacity), _EMPTY_TS, dtype=np.int64)
        self.cols = {c: np.zeros((symbols, capacity)) for c in OHLCV_COLUMNS}
        self.end = np.zeros(symbols, dtype=np.int64)

    @property
    def capacity(self) -> int:
        return int(self.ts.shape[1])

    def last_ts(self) -> NDArray[np.int64]:
        """Newest held open time per symbol (-1 when none)."""
        rows = np.arange(self.end.size)
        last = self.ts[rows, np.maximum(self.end - 1, 0)]
        return np.where(self.end > 0, last, -1)

    def holds(self, row: int, ts: int) -> bool:
        held = self.ts[row, : self.end[row]]
        at = int(np.searchsorted(held, ts))
        return at < held.size and int(held[at]) == ts

    def load(self, row: int, ts: NDArray[np.int64], values: Mapping[str, FloatArray]) -> None:
        """Replace one symbol's bars (ascending open times)."""
        self._fit(ts.size + self.keep)
        n = ts.size
        self.ts[row, :n], self.ts[row, n:] = ts, _EMPTY_TS
        for c in OHLCV_COLUMNS:
            self.cols[c][row, :n] = values[c]
        self.end[row] = n

    def append(
        self, rows: NDArray[np.int64], ts: NDArray[np.int64], values: Mapping[str, FloatArray]
    ) -> None:
        """Append one bar to each of `rows` (distinct), keeping `keep` newest on overflow."""
        full = rows[self.end[rows] >= self.capacity]
        for row in full.tolist():
            self._compact(row)
        at = self.end[rows]
        self.ts[rows, at] = ts
        for c in OHLCV_COLUMNS:
            self.cols[c][rows, at] = values[c]
        self.end[rows] = at + 1

    keep = 0  # set by LiveWindows: rows a row keeps when it is compacted

    def _compact(self, row: int) -> None:
        """Move a full row's newest `keep` bars to its front (amortised: once per keep bars)."""
        if self.keep >= self.capacity:
            self._fit(self.capacity * 2)
            return
        end, keep = int(self.end[row]), self.keep
        self.ts[row, :keep] = self.ts[row, end - keep : end]
        self.ts[row, keep:] = _EMPTY_TS
        for c in OHLCV_COLUMNS:
            self.cols[c][row, :keep] = self.cols[c][row, end - keep : end]
        self.end[row] = keep

    def _fit(self, capacity: int) -> None:
        if capacity <= self.capacity:
            return
        grow = capacity - self.capacity
        self.ts = np.pad(self.ts, ((0, 0), (0, grow)), constant_values=_EMPTY_TS)
        self.cols = {c: np.pad(v, ((0, 0), (0, grow))) for c, v in self.cols.items()}

    def rows_between(
        self, rows: NDArray[np.int64], lo_ns: int, hi_ns: int
    ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
        """The held bars of `rows` with open time in [lo, hi), flattened in (row, time)
        order: (row of each bar, its column in the track, its open time)."""
        ts = self.ts[rows]
        first = np.sum(ts < lo_ns, axis=1)
        count = np.sum(ts < hi_ns, axis=1) - first
        width = int(count.max()) if count.size else 0
        cols = first[:, None] + np.arange(width)
        keep = np.arange(width) < count[:, None]
        owner = np.broadcast_to(rows[:, None], cols.shape)[keep]
        cols = cols[keep]
        return owner, cols, self.ts[owner, cols]

    def selection(self, at_ns: int, window: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Per symbol, rows [lo, hi) = bars with open time in [at - (window+1) tf, at - tf],
        the last `window` of them (what the database path selected)."""
        hi = np.sum(self.ts <= at_ns - self.width_ns, axis=1)
        lo = np.sum(self.ts < at_ns - (window + 1) * self.width_ns, axis=1)
        return np.maximum(lo, hi - window), hi


class _HeldSeries(Mapping[str, ClosedSeries]):
    """One symbol's series at one close, each timeframe selected when first read."""

    __slots__ = ("_at_ns", "_made", "_row", "_windows")

    def __init__(self, windows: LiveWindows, row: int, at_ns: int) -> None:
        self._windows, self._row, self._at_ns = windows, row, at_ns
        self._made: dict[str, ClosedSeries] = {}

    def __getitem__(self, timeframe: str) -> ClosedSeries:
        made = self._made.get(timeframe)
        if made is None:
            if timeframe not in self._windows.tracks:
                raise KeyError(timeframe)
            made = self._windows._select(timeframe, self._row, self._at_ns)
            self._made[timeframe] = made
        return made

    def __iter__(self) -> Iterator[str]:
        return iter(self._windows.tracks)

    def __len__(self) -> int:
        return len(self._windows.tracks)


@dataclass
class LiveWindows:
    """Trailing closed-bar windows of one exchange's symbols, every configured timeframe."""

    exchange: str
    symbols: list[str]
    timeframes: tuple[str, ...]
    window: int
    # the engine's primary timeframe (bucketed from 1m bars, as the backtest does); None:
    # every timeframe from the largest one below it, as the relations are
    primary: str | None = None
    synced_ms: int = -1  # every held bucket closed by this time is held (epoch ms)
    dirty: set[str] = field(default_factory=set)
    tracks: dict[str, _Track] = field(default_factory=dict)
    reseeded: int = 0  # symbols reseeded from the database after start (gap, late bar)
    _row: dict[str, int] = field(default_factory=dict)
    _plan: list[tuple[str, str]] = field(default_factory=list)
    _depth: dict[str, int] = field(default_factory=dict)  # bars a source track must hold

    def __post_init__(self) -> None:
        self._row = {s: i for i, s in enumerate(self.symbols)}
        for tf in self.timeframes:
            track = _Track(len(self.symbols), tf, 2 * (self.window + 2))
            track.keep = self.window + 2
            self.tracks[tf] = track
        if "1m" not in self.tracks:
            raise ValueError("live windows are advanced from 1m bars: timeframes need 1m")
        # a higher timeframe is bucketed from held bars, so the window below it must hold
        # a whole bucket of it (seeded and kept that deep at least)
        self._plan = engine_bucket_order(self.timeframes, self.primary or "1m")
        for tf, source in self._plan:
            need = TIMEFRAME_MINUTES[tf] // TIMEFRAME_MINUTES[source] + 1
            self._depth[source] = max(self._depth.get(source, 0), need)
            self.tracks[source].keep = max(self.tracks[source].keep, need + 1)

    def seed(
        self,
        conn: psycopg.Connection[Any],
        *,
        at_ms: int,
        from_ms: int | None = None,
        symbols: Sequence[str] | None = None,
    ) -> None:
        """Read the windows as of `at_ms` from the database (columnar COPY path).

        `from_ms`: the earliest primary close still to evaluate (a restarted stream
        catching up), so its window is held too. `symbols`: only these (a reseed).
        """
        names = list(self.symbols if symbols is None else symbols)
        if not names:
            return
        at = pd.Timestamp(at_ms * MS, tz="UTC")
        first = pd.Timestamp(min(at_ms, from_ms if from_ms is not None else at_ms) * MS, tz="UTC")
        for tf, track in self.tracks.items():
            width = pd.Timedelta(track.width_ns, unit="ns")
            depth = max(self.window + 1, self._depth.get(tf, 0))
            cols = read_bars(
                conn,
                exchange=self.exchange,
                symbols=names,
                timeframe=tf,
                start=first - width * depth,
                closed_by=at,
            )
            for name in names:
                rows = cols.rows_of(name)
                values = {c: cols.values[c][rows] for c in OHLCV_COLUMNS}
                track.load(self._row[name], cols.ts_ns[rows], values)
        self.dirty.difference_update(names)
        if symbols is None:
            self.synced_ms = at_ms

    def mark_dirty(self, symbols: Iterable[str]) -> None:
        """These symbols' windows no longer match the database: reseed on the next advance."""
        self.dirty.update(s for s in symbols if s in self._row)

    def take_1m(self, bars: pd.DataFrame) -> None:
        """Append stored 1m bars (`symbol, ts, open .. volume`, validated and written).

        Only the bar right after a symbol's newest held one, of a minute not yet advanced
        past, is appended; a bar the windows already hold is a duplicate or a rejected
        conflict (the database kept the held value); anything else (a late bar, a gap
        filled over REST) marks its symbol dirty.
        """
        if bars.empty:
            return
        frame = bars.drop_duplicates(subset=["symbol", "ts"], keep="first")
        frame = frame[frame["symbol"].isin(self._row)]
        ts = pd.DatetimeIndex(frame["ts"]).as_unit("ns").asi8
        rows = frame["symbol"].map(self._row).to_numpy(dtype=np.int64)
        order = np.lexsort((ts, rows))
        ts, rows = ts[order], rows[order]
        values = {c: frame[c].to_numpy(dtype=np.float64)[order] for c in OHLCV_COLUMNS}
        track = self.tracks["1m"]
        synced_ns = self.synced_ms * MS
        while rows.size:  # one bar per symbol per pass (usually a single pass)
            first = np.r_[True, rows[1:] != rows[:-1]]
            r, t = rows[first], ts[first]
            last = track.last_ts()[r]
            # a bar of a minute the windows were already advanced past is late even when
            # it follows the newest held one: a closed higher-timeframe bucket read
            # without it is stale now
            nxt = ((t == last + MINUTE_NS) | (last < 0)) & (t + MINUTE_NS > synced_ns)
            track.append(r[nxt], t[nxt], {c: v[first][nxt] for c, v in values.items()})
            for row, stamp in zip(r[~nxt].tolist(), t[~nxt].tolist(), strict=True):
                if not track.holds(row, stamp):
                    self.dirty.add(self.symbols[row])
            rows, ts = rows[~first], ts[~first]
            values = {c: v[~first] for c, v in values.items()}

    def advance(
        self,
        conn: psycopg.Connection[Any],
        *,
        upto_ms: int,
        newest_ms: Mapping[str, int | None] | None = None,
        from_ms: int | None = None,
        before_reads: Callable[[], None] | None = None,
    ) -> None:
        """Bring every window to `upto_ms` after the 1m bars up to it were taken.

        Higher-timeframe buckets that closed in (synced, upto] are bucketed from the held
        bars; `newest_ms` (newest stored 1m open time per symbol, the stream's
        watermarks) exposes gap fills the 1m windows did not see; dirty symbols are
        reseeded (holding the windows of closes from `from_ms` on, as `seed`), once
        `before_reads` has returned: the database holds every bar up to `upto_ms` then.
        """
        if upto_ms <= self.synced_ms:
            return
        if newest_ms is not None:
            last = self.tracks["1m"].last_ts()
            for symbol, mark in newest_ms.items():
                row = self._row.get(symbol)
                if row is not None and mark is not None and mark * MS != int(last[row]):
                    self.dirty.add(symbol)
        clean = np.array(
            [self._row[s] for s in self.symbols if s not in self.dirty], dtype=np.int64
        )
        if clean.size:
            for tf, source in self._plan:
                self._bucket_closed(tf, source, clean, after_ms=self.synced_ms, upto_ms=upto_ms)
        if self.dirty:
            if before_reads is not None:
                before_reads()
            stale = sorted(self.dirty)
            self.reseeded += len(stale)
            self.seed(conn, at_ms=upto_ms, from_ms=from_ms, symbols=stale)
        self.synced_ms = upto_ms

    def _bucket_closed(
        self, timeframe: str, source: str, rows: NDArray[np.int64], *, after_ms: int, upto_ms: int
    ) -> None:
        """Append `timeframe`'s buckets closing in (after, upto] (close = open + width) of
        `rows`, bucketed from the held bars of `source` (already advanced to `upto`)."""
        track = self.tracks[timeframe]
        width = track.width_ns
        first_open = ((after_ms * MS - width) // width + 1) * width
        last_open = (upto_ms * MS - width) // width * width
        if last_open < first_open:
            return  # no bucket of this timeframe closed
        below = self.tracks[source]
        owner, cols, ts = below.rows_between(rows, first_open, last_open + width)
        if not ts.size:
            return
        level: dict[str, NDArray[np.generic]] = {"code": owner, "ts": ts}
        level |= {c: below.cols[c][owner, cols] for c in OHLCV_COLUMNS}
        out = aggregate_buckets(level, width)
        bucket_ts = np.asarray(out["ts"], dtype=np.int64)
        code = np.asarray(out["code"], dtype=np.int64)
        for bucket in np.unique(bucket_ts).tolist():  # ascending: one bar per row and bucket
            pick = bucket_ts == bucket
            r = code[pick]
            newer = bucket > track.last_ts()[r]
            values = {c: np.asarray(out[c], dtype=np.float64)[pick][newer] for c in OHLCV_COLUMNS}
            track.append(r[newer], bucket_ts[pick][newer], values)

    def series(self, at_ms: int) -> dict[str, Mapping[str, ClosedSeries]]:
        """symbol -> timeframe -> closed bars by `at_ms` (at most `window`), as views.

        Each symbol's timeframes are selected on first read: a close reads every
        symbol's primary series but the others only for the few bars that fire.
        """
        if at_ms > self.synced_ms:
            raise ValueError(f"windows hold bars up to {self.synced_ms}, not {at_ms}")
        at_ns = at_ms * MS
        return {s: _HeldSeries(self, row, at_ns) for row, s in enumerate(self.symbols)}

    def _select(self, timeframe: str, row: int, at_ns: int) -> ClosedSeries:
        """One symbol's rows of `_Track.selection` (two binary searches, no copy)."""
        track = self.tracks[timeframe]
        held = track.ts[row, : track.end[row]]
        hi = int(np.searchsorted(held, at_ns - track.width_ns, "right"))
        lo = int(np.searchsorted(held, at_ns - (self.window + 1) * track.width_ns, "left"))
        lo = max(lo, hi - self.window)
        cols = {c: track.cols[c][row, lo:hi] for c in OHLCV_COLUMNS}
        return ClosedSeries.from_arrays(timeframe, held[lo:hi], cols)

    def nbytes(self) -> int:
        """Memory the windows hold (bytes)."""
        return sum(
            t.ts.nbytes + sum(v.nbytes for v in t.cols.values()) for t in self.tracks.values()
        )

"""Bulk bar reads straight into numpy: one binary array per column and symbol.

Every bulk read (backtest and retrain history, settlement windows, live seeding through
`load_bars`) goes through here. Per symbol the server runs an index range scan of the
primary key in open-time order (no sort: one query with `symbol = ANY(...)` made the
server sort every row, spilling to disk) and returns the series as one row of arrays,
`array_agg(ts), array_agg(open), ...`, in PostgreSQL's binary format. A binary array of
fixed-width values is one `numpy.frombuffer` with a structured dtype: no Python object
per bar, no text parsing, no `to_datetime`. The symbols' arrays are laid end to end with
start offsets and counts, so splitting by symbol is a slice, not a boolean mask.

Why not COPY: psycopg hands a COPY stream over one message per row, so a binary COPY of a
symbol-year still ran half a million Python iterations (4.5 s for 4 symbol-years here);
the arrays take 2.0-2.4 s, on par with the ADBC PostgreSQL driver's Arrow batches (2.3-3.0
s, same data, same machine), and need no extra dependency. bench/backtest_e2e.py's
`read_path` section measures both again. A server without COPY (PGlite in the tests) gets
the same arrays from an ordinary query.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import numpy as np
import pandas as pd
import psycopg
from numpy.typing import NDArray
from psycopg import sql
from psycopg.abc import Buffer
from psycopg.adapt import Loader
from psycopg.pq import Format
from psycopg.rows import tuple_row

from signalengine.core.timescale import backend
from signalengine.core.vocabulary import TIMEFRAME_MINUTES, FloatArray, timeframe_relation

__all__ = ["BAR_COLUMNS", "BarColumns", "TimeUnit", "read_bars", "read_latest_bars"]

TimeUnit = Literal["s", "ms", "us", "ns"]

BAR_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in Unix microseconds (binary timestamptz)
_KEYS = ("ts", *BAR_COLUMNS, "bars")
_ELEMENTS = (">i8", *[">f8"] * len(BAR_COLUMNS), ">i4")  # timestamptz = int8 µs since 2000
_ARRAY_OIDS = (1185, 1022, 1007)  # timestamptz[], float8[], int4[]


@dataclass(frozen=True)
class BarColumns:
    """Bars of several symbols as flat arrays, each symbol's rows contiguous and in ts order.

    Symbol `symbols[i]` owns rows `starts[i]:starts[i] + counts[i]`.
    `ts_ns` are UTC bar open times in ns since the epoch; prices and volume float64;
    `bars` the 1m bars per bucket (1 for 1m rows).
    """

    symbols: tuple[str, ...]
    starts: NDArray[np.int64]
    counts: NDArray[np.int64]
    ts_ns: NDArray[np.int64]
    values: dict[str, FloatArray]
    bars: NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.ts_ns.size)

    def rows_of(self, symbol: str) -> slice:
        """The row range of one symbol."""
        i = self.symbols.index(symbol)
        return slice(int(self.starts[i]), int(self.starts[i] + self.counts[i]))

    def frame(self, symbol: str, *, with_bars: bool = True, unit: TimeUnit = "us") -> pd.DataFrame:
        """One symbol's bars: index `ts` (UTC, `unit` resolution: PostgreSQL keeps µs, the
        engine works in ns), float64 OHLCV (and `bars`) columns."""
        rows = self.rows_of(symbol)
        stamps = self.ts_ns[rows].view("datetime64[ns]")
        index = pd.DatetimeIndex(stamps, name="ts").tz_localize("UTC").as_unit(unit)
        data: dict[str, Any] = {c: self.values[c][rows] for c in BAR_COLUMNS}
        if with_bars:
            data["bars"] = self.bars[rows].astype(np.float64)
        return pd.DataFrame(data, index=index, copy=True)

    def frames(self, *, with_bars: bool = True, unit: TimeUnit = "us") -> dict[str, pd.DataFrame]:
        """Every requested symbol's frame (`frame`), in request order."""
        return {s: self.frame(s, with_bars=with_bars, unit=unit) for s in self.symbols}


def _query(timeframe: str, *, arrays: bool) -> sql.Composed:
    """One symbol's bars in open-time order: an index range scan of the primary key, no
    sort (with `symbol = ANY(...)` for all symbols at once the server sorts every row).

    `arrays`: the whole series as one row of arrays (one message instead of one per bar).
    """
    select = sql.SQL(
        "SELECT ts, open, high, low, close, volume, bars::int4 AS bars"
        " FROM {} WHERE exchange = %(exchange)s AND symbol = %(symbol)s"
        " AND (%(start)s::timestamptz IS NULL OR ts >= %(start)s::timestamptz)"
        " AND (%(upper)s::timestamptz IS NULL OR ts < %(upper)s::timestamptz)"
        " ORDER BY ts"
    ).format(sql.Identifier(timeframe_relation(timeframe)))
    if not arrays:
        return select
    # 1m rows are single bars: their `bars` array (all ones) is not sent (every array
    # costs the server about as much as the index scan itself), the reader fills it in.
    kept = [c for c in _KEYS if c != "bars" or timeframe != "1m"]
    aggregates = sql.SQL(", ").join(
        sql.SQL("array_agg({})").format(sql.Identifier(c)) if c in kept else sql.SQL("NULL")
        for c in _KEYS
    )
    return sql.SQL("SELECT {} FROM ({}) AS k").format(aggregates, select)


class _RawArray(Loader):
    """Hands back a binary array value untouched, for numpy to read (no Python per element)."""

    format = Format.BINARY

    def load(self, data: Buffer) -> bytes:
        return bytes(data)


def _array_values(raw: bytes | None, element: str) -> NDArray[Any]:
    """A 1-D binary PostgreSQL array of fixed-width `element`s (numpy code) as an array.

    Layout: ndim, flags, element oid, then per dimension size and lower bound (int4 each),
    then per element its length (int4) and value, big-endian.
    """
    if raw is None:  # array_agg over no rows
        return np.empty(0, dtype=np.dtype(element).newbyteorder("="))
    ndim = int(np.frombuffer(raw, dtype=">i4", count=1)[0])
    if ndim != 1:
        raise ValueError(f"expected a 1-D array, got {ndim} dimensions")
    cells = np.frombuffer(raw, dtype=np.dtype([("len", ">i4"), ("v", element)]), offset=20)
    if (cells["len"] != np.dtype(element).itemsize).any():
        raise ValueError("NULL inside a bar column")
    return cells["v"].astype(np.dtype(element).newbyteorder("="))


def _from_arrays(
    conn: psycopg.Connection[Any], statement: sql.Composed, params: dict[str, Any]
) -> dict[str, NDArray[Any]]:
    with conn.cursor(binary=True, row_factory=tuple_row) as cur:
        for oid in _ARRAY_OIDS:
            cur.adapters.register_loader(oid, _RawArray)
        row = cur.execute(statement, params).fetchone()
    if row is None:
        return _empty()
    return _parse_arrays(row)


def _parse_arrays(row: Sequence[Any]) -> dict[str, NDArray[Any]]:
    """The row of binary arrays (`_query(arrays=True)`) as numpy arrays."""
    out = {
        name: _array_values(raw, element)
        for name, raw, element in zip(_KEYS, row, _ELEMENTS, strict=True)
    }
    out["ts"] = out["ts"].astype(np.int64)
    if row[_KEYS.index("bars")] is None:  # not sent (1m) or no rows: one bar per row
        out["bars"] = np.ones(out["ts"].size, dtype=np.int64)
    else:
        out["bars"] = out["bars"].astype(np.int64)
    return out


def _empty() -> dict[str, NDArray[Any]]:
    return {k: np.empty(0, dtype=np.float64 if k in BAR_COLUMNS else np.int64) for k in _KEYS}


def _from_rows(
    conn: psycopg.Connection[Any], statement: sql.Composed, params: dict[str, Any]
) -> dict[str, NDArray[Any]]:
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(statement, params).fetchall()
    return _parse_rows(rows)


def _parse_rows(rows: Sequence[Sequence[Any]]) -> dict[str, NDArray[Any]]:
    """Plain (ts, open .. volume, bars) rows as the arrays of `_parse_arrays`."""
    if not rows:
        return _empty()
    cols = list(zip(*rows, strict=True))
    stamps = pd.DatetimeIndex(pd.to_datetime(list(cols[0]), utc=True)).as_unit("us")
    out: dict[str, NDArray[Any]] = {
        "ts": stamps.asi8 - _PG_EPOCH_US,
        "bars": np.asarray(cols[6], dtype=np.int64),
    }
    out |= {c: np.asarray(cols[1 + i], dtype=np.float64) for i, c in enumerate(BAR_COLUMNS)}
    return out


def read_bars(
    conn: psycopg.Connection[Any],
    *,
    exchange: str,
    symbols: Sequence[str],
    timeframe: str,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
    closed_by: pd.Timestamp | None = None,
) -> BarColumns:
    """Bars of `symbols` with open time in [start, end), as flat arrays (`BarColumns`).

    `closed_by` keeps only buckets whose close time (open + timeframe) is at or before it.
    """
    width = pd.Timedelta(minutes=TIMEFRAME_MINUTES[timeframe])
    upper = end
    if closed_by is not None:
        limit = closed_by - width + pd.Timedelta(microseconds=1)
        upper = limit if upper is None else min(upper, limit)
    names = list(dict.fromkeys(symbols))
    arrays = backend(conn).copy  # PGlite (no COPY) also lacks what the array path needs
    read = _from_arrays if arrays else _from_rows
    statement = _query(timeframe, arrays=arrays)
    parts = []
    with conn.transaction():
        if arrays:  # JIT compiling these plans costs more than it saves (~15 % of a read)
            conn.execute("SET LOCAL jit = off")
        for name in names:
            params = {"exchange": exchange, "symbol": name, "start": start, "upper": upper}
            part = read(conn, statement, params)
            if part["ts"].size > 1 and not bool(np.all(np.diff(part["ts"]) > 0)):
                order = np.argsort(part["ts"], kind="stable")  # never seen; cheap insurance
                part = {k: v[order] for k, v in part.items()}
            parts.append(part)
    return _columns(names, parts)


def _columns(names: Sequence[str], parts: Sequence[dict[str, NDArray[Any]]]) -> BarColumns:
    """The symbols' arrays laid end to end (`BarColumns`); `ts` in µs since 2000 -> ns."""
    counts = np.array([p["ts"].size for p in parts], dtype=np.int64)
    starts = np.r_[0, np.cumsum(counts)[:-1]].astype(np.int64) if names else counts
    cols = {k: np.concatenate([p[k] for p in parts]) for k in _KEYS} if parts else _empty()
    return BarColumns(
        symbols=tuple(names),
        starts=starts,
        counts=counts,
        ts_ns=(np.asarray(cols["ts"], dtype=np.int64) + _PG_EPOCH_US) * 1000,
        values={c: np.asarray(cols[c], dtype=np.float64) for c in BAR_COLUMNS},
        bars=np.asarray(cols["bars"], dtype=np.int64),
    )


# Per async connection: whether the server answers the array path (not PGlite).
_ASYNC_ARRAYS: weakref.WeakKeyDictionary[psycopg.AsyncConnection[Any], bool] = (
    weakref.WeakKeyDictionary()
)


async def _async_arrays(conn: psycopg.AsyncConnection[Any]) -> bool:
    known = _ASYNC_ARRAYS.get(conn)
    if known is None:
        async with conn.cursor(row_factory=tuple_row) as cur:
            await cur.execute("SELECT version() NOT ILIKE '%emscripten%'")
            row = await cur.fetchone()
        known = _ASYNC_ARRAYS[conn] = bool(row and row[0])
    return known


def _latest_query(timeframe: str, *, closed: bool, arrays: bool) -> sql.Composed:
    """The newest `limit` bars of one symbol, oldest first (see `read_latest_bars`)."""
    where: sql.Composable = sql.SQL("exchange = %(exchange)s AND symbol = %(symbol)s")
    if closed:
        where += sql.SQL(
            " AND ts + %(width)s <= (SELECT max(ts) + interval '1 minute' FROM klines"
            "  WHERE exchange = %(exchange)s AND symbol = %(symbol)s)"
        )
    newest = sql.SQL(
        "SELECT ts, open, high, low, close, volume, bars::int4 AS bars FROM {} WHERE {}"
        " ORDER BY ts DESC LIMIT %(limit)s"
    ).format(sql.Identifier(timeframe_relation(timeframe)), where)
    if not arrays:
        return sql.SQL("SELECT * FROM ({}) AS k ORDER BY ts").format(newest)
    aggregates = sql.SQL(", ").join(
        sql.SQL("array_agg({} ORDER BY ts)").format(sql.Identifier(c)) for c in _KEYS
    )
    return sql.SQL("SELECT {} FROM ({}) AS k").format(aggregates, newest)


async def read_latest_bars(
    conn: psycopg.AsyncConnection[Any],
    *,
    exchange: str,
    symbol: str,
    timeframe: str,
    limit: int,
    closed: bool = False,
) -> BarColumns:
    """The newest `limit` bars of one symbol, oldest first, as `BarColumns` (the API's series).

    `closed`: only buckets closed by the newest stored 1m bar (a bucket [ts, ts + tf) is
    closed once that bar closes at or after its end). Same arrays as `read_bars`: one row
    of binary arrays, or plain rows on a server without the array path (PGlite).
    """
    params = {
        "exchange": exchange,
        "symbol": symbol,
        "limit": limit,
        "width": timedelta(minutes=TIMEFRAME_MINUTES[timeframe]),
    }
    arrays = await _async_arrays(conn)
    statement = _latest_query(timeframe, closed=closed, arrays=arrays)
    if arrays:
        async with conn.cursor(binary=True, row_factory=tuple_row) as cur:
            for oid in _ARRAY_OIDS:
                cur.adapters.register_loader(oid, _RawArray)
            await cur.execute(statement, params)
            row = await cur.fetchone()
        part = _empty() if row is None else _parse_arrays(row)
    else:
        async with conn.cursor(row_factory=tuple_row) as cur:
            await cur.execute(statement, params)
            part = _parse_rows(await cur.fetchall())
    return _columns([symbol], [part])

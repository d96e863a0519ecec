"""Bulk bar reads straight into numpy: binary COPY, fixed-width rows, one split by symbol.

Every bulk read (backtest and retrain history, settlement windows, live seeding, the API's
kline series) goes through here. The server sends
`COPY (SELECT code, ts, open .. volume, bars ... ORDER BY symbol, ts) TO STDOUT (FORMAT
BINARY)`; `code` is the symbol's position in the requested list, so every row has the same
width and a whole block of rows is one `numpy.frombuffer` with a structured dtype: no
Python object per row, no text parsing, no `to_datetime`. Rows arrive sorted by symbol
(the primary key's order, so an index range scan), so the split by symbol is one pass
over `code` (group starts and counts), not a boolean mask per symbol.

Measured against the ADBC PostgreSQL driver (Arrow record batches from the same binary
COPY), this path was as fast or faster and needs no extra dependency; see
bench/backtest_e2e.py's `read_path` section. A server without COPY (PGlite in the tests)
gets the same arrays from an ordinary query.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import psycopg
from numpy.typing import NDArray
from psycopg import sql
from psycopg.rows import tuple_row

from signalengine.core.timescale import backend
from signalengine.core.vocabulary import TIMEFRAME_MINUTES, FloatArray, timeframe_relation

__all__ = ["BAR_COLUMNS", "BarColumns", "TimeUnit", "read_bars"]

TimeUnit = Literal["s", "ms", "us", "ns"]

BAR_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in Unix microseconds (binary timestamptz)
_HEADER_BYTES = 19  # signature (11) + flags (4) + header extension length (4, zero)
# One binary COPY row: field count, then (length, value) per field, big-endian.
_ROW = np.dtype(
    [("n", ">i2"), ("l_code", ">i4"), ("code", ">i4"), ("l_ts", ">i4"), ("ts", ">i8")]
    + [x for c in BAR_COLUMNS for x in ((f"l_{c}", ">i4"), (c, ">f8"))]
    + [("l_bars", ">i4"), ("bars", ">i4")]
)
_FIELDS = 3 + len(BAR_COLUMNS)
_KEYS = ("code", "ts", *BAR_COLUMNS, "bars")
# Bytes gathered before one parse: large enough that numpy overhead vanishes, small
# enough that the raw bytes never rival the parsed arrays in memory.
PARSE_BLOCK_BYTES = 8 << 20


@dataclass(frozen=True)
class BarColumns:
    """Bars of several symbols as flat arrays sorted by (symbol, ts), with group starts.

    Symbol `symbols[i]` owns rows `starts[i]:starts[i] + counts[i]` (rows are in the
    server's symbol order, so these need not follow the request order).
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


def _query(timeframe: str, *, copy: bool) -> sql.Composed:
    select = sql.SQL(
        "SELECT array_position(%(symbols)s::text[], symbol)::int4 - 1 AS code, ts,"
        " open, high, low, close, volume, bars::int4 FROM {} WHERE exchange = %(exchange)s"
        " AND symbol = ANY(%(symbols)s::text[])"
        " AND (%(start)s::timestamptz IS NULL OR ts >= %(start)s::timestamptz)"
        " AND (%(upper)s::timestamptz IS NULL OR ts < %(upper)s::timestamptz)"
        " ORDER BY symbol, ts"
    ).format(sql.Identifier(timeframe_relation(timeframe)))
    if copy:
        return sql.SQL("COPY ({}) TO STDOUT (FORMAT BINARY)").format(select)
    return select


def _parse_blocks(chunks: Iterator[bytes | bytearray | memoryview]) -> Iterator[NDArray[Any]]:
    """Structured row arrays from the COPY byte stream (header skipped, trailer dropped).

    Bytes are gathered into blocks of about PARSE_BLOCK_BYTES, so each numpy call covers
    tens of thousands of rows, and memory holds one block beyond the parsed arrays.
    """
    pending = bytearray()
    header_seen = False
    width = _ROW.itemsize
    for chunk in chunks:
        pending += chunk
        if not header_seen:
            if len(pending) < _HEADER_BYTES:
                continue
            if not pending.startswith(b"PGCOPY\n\xff\r\n\x00"):
                raise ValueError("not a PostgreSQL binary COPY stream")
            del pending[:_HEADER_BYTES]
            header_seen = True
        if len(pending) >= PARSE_BLOCK_BYTES:
            yield _take_rows(pending, width)
    if len(pending) >= width:
        yield _take_rows(pending, width)
    if bytes(pending) not in (b"", b"\xff\xff"):
        raise ValueError("binary COPY stream ended inside a row (a NULL value or a new column?)")


def _take_rows(pending: bytearray, width: int) -> NDArray[Any]:
    """Parse and remove the whole rows at the front of `pending`."""
    count = len(pending) // width
    rows = np.frombuffer(pending, dtype=_ROW, count=count).copy()
    del pending[: count * width]
    if not (rows["n"] == _FIELDS).all() or (rows["l_ts"] != 8).any() or (rows["l_bars"] != 4).any():
        raise ValueError("unexpected row layout in binary COPY (NULL in a bar column?)")
    return rows


def _from_copy(
    conn: psycopg.Connection[Any], statement: sql.Composed, params: dict[str, Any]
) -> dict[str, NDArray[Any]]:
    parts: dict[str, list[NDArray[Any]]] = {k: [] for k in _KEYS}
    with conn.cursor() as cur, cur.copy(statement, params) as copy:
        for block in _parse_blocks(iter(copy)):
            for name, out in parts.items():
                out.append(block[name].astype(np.float64 if name in BAR_COLUMNS else np.int64))
    return {k: np.concatenate(v) if v else np.empty(0) for k, v in parts.items()}


def _from_rows(
    conn: psycopg.Connection[Any], statement: sql.Composed, params: dict[str, Any]
) -> dict[str, NDArray[Any]]:
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(statement, params).fetchall()
    if not rows:
        return {k: np.empty(0) for k in _KEYS}
    cols = list(zip(*rows, strict=True))
    stamps = pd.DatetimeIndex(pd.to_datetime(list(cols[1]), utc=True)).as_unit("us")
    out: dict[str, NDArray[Any]] = {
        "code": np.asarray(cols[0], dtype=np.int64),
        "ts": stamps.asi8 - _PG_EPOCH_US,
        "bars": np.asarray(cols[7], dtype=np.int64),
    }
    out |= {c: np.asarray(cols[2 + i], dtype=np.float64) for i, c in enumerate(BAR_COLUMNS)}
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
    params = {"exchange": exchange, "symbols": names, "start": start, "upper": upper}
    use_copy = backend(conn).copy
    read = _from_copy if use_copy else _from_rows
    cols = read(conn, _query(timeframe, copy=use_copy), params)
    code = np.asarray(cols["code"], dtype=np.int64)
    counts = np.zeros(len(names), dtype=np.int64)
    starts = np.zeros(len(names), dtype=np.int64)
    if code.size:
        firsts = np.flatnonzero(np.r_[True, code[1:] != code[:-1]])
        if firsts.size > len(names):
            raise ValueError("rows of one symbol were not contiguous")
        starts[code[firsts]] = firsts
        counts[code[firsts]] = np.diff(np.r_[firsts, code.size])
    return BarColumns(
        symbols=tuple(names),
        starts=starts,
        counts=counts,
        ts_ns=(np.asarray(cols["ts"], dtype=np.int64) + _PG_EPOCH_US) * 1000,
        values={c: np.asarray(cols[c], dtype=np.float64) for c in BAR_COLUMNS},
        bars=np.asarray(cols["bars"], dtype=np.int64),
    )

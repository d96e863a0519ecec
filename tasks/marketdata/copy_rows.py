"""Bars as PostgreSQL binary COPY data, built in numpy (the write side of klines).

A row is a 2-byte field count, then per field a 4-byte length and the value, big-endian:
exchange and symbol as UTF-8 text, ts (UTC, tz-aware) as int8 microseconds since
2000-01-01, prices as float8, counts as int4. Rows whose exchange and symbol are equally
long in bytes share one fixed-size numpy record layout, so a batch of such rows (a live
minute of 500 symbols) is built in a few vectorized assignments.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd

__all__ = ["COPY_HEADER", "COPY_TRAILER", "binary_blocks", "binary_copy_payload", "epoch_us"]

COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8
COPY_TRAILER = b"\xff\xff"
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in Unix microseconds (binary timestamptz)


def epoch_us(ts: pd.Series) -> np.ndarray:
    """UTC microseconds since the Unix epoch."""
    return pd.DatetimeIndex(ts).as_unit("us").asi8


def _encoded(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the value as UTF-8 bytes (`str` of it, as the INSERT path sends) in a
    fixed-size `S` array as wide as the longest, and its length in bytes."""
    codes, distinct = pd.factorize(column, use_na_sentinel=False)
    text = np.char.encode(np.asarray(distinct, dtype=object).astype(str), "utf-8")
    return text[codes], np.char.str_len(text).astype(np.int64)[codes]


def binary_blocks(
    frame: pd.DataFrame, *, floats: list[str], ints: tuple[str, ...], block_rows: int
) -> Iterator[bytes]:
    """Binary COPY rows (no header, no trailer), at most `block_rows` rows per block.

    One fixed-size numpy record layout per (byte length of exchange, byte length of
    symbol), the strings fixed-size fields: rows whose names are equally long (usually
    all of a batch) are one vectorized block. Every field is a 4-byte length then the
    value, big-endian; ts is microseconds since 2000-01-01 UTC.
    """
    ts_all = epoch_us(frame["ts"]) - _PG_EPOCH_US
    values = {c: frame[c].to_numpy(dtype="float64") for c in floats}
    values |= {c: frame[c].to_numpy(dtype="int64") for c in ints}
    # as wide as the longest value, cut to a class's width on assignment (exact there)
    ex_all, ex_len = _encoded(frame["exchange"])
    sym_all, sym_len = _encoded(frame["symbol"])
    length_class = ex_len * (int(sym_len.max(initial=0)) + 1) + sym_len
    classes = np.unique(length_class)
    for cls in classes:
        rows = np.arange(len(frame)) if len(classes) == 1 else np.flatnonzero(length_class == cls)
        le, ls = int(ex_len[rows[0]]), int(sym_len[rows[0]])
        layout = [("n", ">i2"), ("le", ">i4"), ("ex", f"S{le}"), ("ls", ">i4")]
        layout += [("sym", f"S{ls}"), ("lt", ">i4"), ("ts", ">i8")]
        layout += [x for c in floats for x in ((f"l_{c}", ">i4"), (c, ">f8"))]
        layout += [x for c in ints for x in ((f"l_{c}", ">i4"), (c, ">i4"))]
        for lo in range(0, len(rows), block_rows):
            part = rows[lo : lo + block_rows]
            out = np.empty(len(part), dtype=np.dtype(layout))
            out["n"] = 3 + len(floats) + len(ints)
            out["le"], out["ls"], out["lt"] = le, ls, 8
            out["ex"], out["sym"] = ex_all[part], sym_all[part]
            out["ts"] = ts_all[part]
            for column in floats:
                out[f"l_{column}"] = 8
                out[column] = values[column][part]
            for column in ints:
                out[f"l_{column}"] = 4
                out[column] = values[column][part]
            yield out.tobytes()


def binary_copy_payload(
    frame: pd.DataFrame, *, floats: list[str], ints: tuple[str, ...] = ()
) -> bytes:
    """`frame` as PostgreSQL binary COPY data: exchange, symbol, ts, *floats, *ints.

    `ts` is tz-aware UTC (sent to microseconds), floats float8, ints int4.
    """
    blocks = binary_blocks(frame, floats=floats, ints=ints, block_rows=len(frame) or 1)
    return b"".join([COPY_HEADER, *blocks, COPY_TRAILER])

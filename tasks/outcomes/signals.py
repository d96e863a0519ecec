"""Writing signals (idempotent: one row per run, series, direction and trigger bar)."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import Any

import pandas as pd
from psycopg.rows import tuple_row
from psycopg.types.json import Jsonb

from signalengine.core.db import DbConn
from signalengine.core.vocabulary import DEFAULT_STRATEGY
from signalengine.tasks.engine.records import SIGNAL_COLUMNS, CooldownState, Signal

_JSON_COLUMNS = {"events", "mtf_details", "features"}
# Rows per INSERT statement (one array per column, so the statement text stays the same).
INSERT_CHUNK = 5000
_COLUMN_TYPES: dict[str, str] = {}  # signals column -> SQL type, read once per process
# Columns a caller may leave out: records from before strategies existed are the default's.
_OPTIONAL = {"strategy": DEFAULT_STRATEGY, "strategy_version": None}


def _row(record: Mapping[Hashable, Any] | Mapping[str, Any]) -> tuple[Any, ...]:
    values = {c: record[c] if c in record else _OPTIONAL[c] for c in SIGNAL_COLUMNS}
    return tuple(Jsonb(v) if c in _JSON_COLUMNS else v for c, v in values.items())


def _signal_row(signal: Signal) -> tuple[Any, ...]:
    return tuple(
        Jsonb(getattr(signal, c)) if c in _JSON_COLUMNS else getattr(signal, c)
        for c in SIGNAL_COLUMNS
    )


def insert_signals(
    conn: DbConn,
    signals: Iterable[Signal] | pd.DataFrame,
) -> int:
    """Insert signals, skipping ones already stored; returns how many were new.

    Each statement's new rows fire one `signals` NOTIFY listing their ids (sql/011).
    """
    rows: list[tuple[Any, ...]]
    if isinstance(signals, pd.DataFrame):
        rows = [_row(record) for record in signals.to_dict("records")]
    else:  # the fields as they are: `as_record` deep-copies every nested dict
        rows = [_signal_row(signal) for signal in signals]
    if not rows:
        return 0
    types = _column_types(conn)
    columns = ", ".join(SIGNAL_COLUMNS)
    arrays = ", ".join(f"%b::{types[c]}[]" for c in SIGNAL_COLUMNS)  # binary: no escaping
    # One statement per chunk, one array per column, rows in the caller's order: one round
    # trip, a statement text psycopg parses once (a VALUES list of 20,000 placeholders took
    # longer to build than the insert), and the signals trigger (sql/011) NOTIFYs once per
    # statement, not once per signal.
    query = (
        f"INSERT INTO signals ({columns}) SELECT {columns}"
        f" FROM unnest({arrays}) WITH ORDINALITY AS batch({columns}, position)"
        " ORDER BY position ON CONFLICT DO NOTHING"
    )
    inserted = 0
    with conn.transaction(), conn.cursor() as cur:
        for start in range(0, len(rows), INSERT_CHUNK):
            chunk = rows[start : start + INSERT_CHUNK]
            cur.execute(query, [list(column) for column in zip(*chunk, strict=True)])
            inserted += cur.rowcount
    return inserted


def _column_types(conn: DbConn) -> dict[str, str]:
    """SQL type of each `signals` column, from the catalog (the schema's one home)."""
    if not _COLUMN_TYPES.keys() >= set(SIGNAL_COLUMNS):  # first call, or a newer schema
        with conn.cursor(row_factory=tuple_row) as cur:
            rows = cur.execute(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
                " WHERE attrelid = 'signals'::regclass AND attnum > 0 AND NOT attisdropped"
            ).fetchall()
        _COLUMN_TYPES.update({str(name): str(kind) for name, kind in rows})
    return _COLUMN_TYPES


def load_cooldown_state(
    conn: DbConn,
    *,
    run_id: str,
    symbols: list[str],
    strategy: str = DEFAULT_STRATEGY,
) -> CooldownState:
    """Cooldown state rebuilt from the run's newest signal of `strategy` per series and side
    (each strategy has its own cooldown)."""
    rows = conn.execute(
        "SELECT symbol, timeframe, direction, max(ts) AS ts FROM signals"
        " WHERE run_id = %s AND strategy = %s AND symbol = ANY(%s)"
        " GROUP BY symbol, timeframe, direction",
        (run_id, strategy, symbols),
    ).fetchall()
    frame = pd.DataFrame(rows, columns=["symbol", "timeframe", "direction", "ts"])
    return CooldownState.from_signals(frame)

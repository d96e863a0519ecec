"""Writing signals (idempotent: one row per run, series, direction and trigger bar)."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import Any

import pandas as pd
from psycopg.types.json import Jsonb

from signalengine.core.db import DbConn
from signalengine.core.vocabulary import DEFAULT_STRATEGY
from signalengine.tasks.engine.records import SIGNAL_COLUMNS, CooldownState, Signal

_JSON_COLUMNS = {"events", "mtf_details", "features"}
# Rows per INSERT statement: 1000 x ~25 columns stays far below 65535 parameters.
INSERT_CHUNK = 1000
# Columns a caller may leave out: records from before strategies existed are the default's.
_OPTIONAL = {"strategy": DEFAULT_STRATEGY, "strategy_version": None}


def _row(record: Mapping[Hashable, Any] | Mapping[str, Any]) -> tuple[Any, ...]:
    values = {c: record[c] if c in record else _OPTIONAL[c] for c in SIGNAL_COLUMNS}
    return tuple(Jsonb(v) if c in _JSON_COLUMNS else v for c, v in values.items())


def insert_signals(
    conn: DbConn,
    signals: Iterable[Signal] | pd.DataFrame,
) -> int:
    """Insert signals, skipping ones already stored; returns how many were new.

    Each statement's new rows fire one `signals` NOTIFY listing their ids (sql/011).
    """
    records: list[dict[Hashable, Any]] | list[dict[str, Any]]
    if isinstance(signals, pd.DataFrame):
        records = signals.to_dict("records")
    else:
        records = [s.as_record() for s in signals]
    if not records:
        return 0
    columns = ", ".join(SIGNAL_COLUMNS)
    one_row = "(" + ", ".join(["%s"] * len(SIGNAL_COLUMNS)) + ")"
    inserted = 0
    # One multi-row statement per chunk: one round trip instead of one per row, and the
    # signals trigger (sql/011) NOTIFYs once per statement, not once per signal.
    with conn.transaction(), conn.cursor() as cur:
        for start in range(0, len(records), INSERT_CHUNK):
            chunk = records[start : start + INSERT_CHUNK]
            rows = ", ".join([one_row] * len(chunk))
            cur.execute(
                f"INSERT INTO signals ({columns}) VALUES {rows} ON CONFLICT DO NOTHING",
                [value for record in chunk for value in _row(record)],
            )
            inserted += cur.rowcount
    return inserted


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

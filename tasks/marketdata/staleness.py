"""How stale the stored bars are against the exchange's own clock, measured on a timer.

Measured per minute from the bars that arrive, a stall cannot show: no bar, no
measurement. So the stream also asks the exchange for its time every
`STALENESS_SECONDS` and compares the close of the slowest symbol's newest stored bar with
it: `stream_ingest_lag_seconds` and the shard's `stream_health` row (read by `/health`).
A negative lag means the exchange's clock is *behind* the stored bars (a simulator
restarted at an earlier time): nothing new is stored until it catches up.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pandas as pd
import psycopg

from signalengine.tasks import metrics
from signalengine.tasks.marketdata.batching import MINUTE_MS
from signalengine.tasks.marketdata.exchange import RestPolicy, exchange_time_ms

logger = logging.getLogger(__name__)

STALENESS_SECONDS = 10.0

__all__ = ["STALENESS_SECONDS", "ingest_lag_seconds", "record_staleness", "watch_staleness"]


def ingest_lag_seconds(marks: dict[str, int | None], *, exchange_ms: int) -> float | None:
    """Exchange time minus the close of the slowest symbol's newest bar, s; None if none."""
    known = [v for v in marks.values() if v is not None]
    if not known:
        return None
    return (exchange_ms - (min(known) + MINUTE_MS)) / 1000.0


def record_staleness(
    url: str, *, name: str, exchange: str, exchange_ms: int, marks: dict[str, int | None]
) -> float | None:
    """Set the lag gauge and upsert the shard's `stream_health` row; the lag (s)."""
    lag = ingest_lag_seconds(marks, exchange_ms=exchange_ms)
    known = [v for v in marks.values() if v is not None]
    newest = None if not known else pd.Timestamp((min(known) + MINUTE_MS) * 1_000_000, tz="UTC")
    if lag is not None:
        metrics.INGEST_LAG.labels(exchange).set(max(0.0, lag))
    with psycopg.connect(url, autocommit=True) as conn:  # its own: the stream's is busy
        conn.execute(
            "INSERT INTO stream_health (name, exchange_time, newest_close, lag_seconds,"
            " updated_at) VALUES (%s, %s, %s, %s, now()) ON CONFLICT (name) DO UPDATE SET"
            " exchange_time = EXCLUDED.exchange_time, newest_close = EXCLUDED.newest_close,"
            " lag_seconds = EXCLUDED.lag_seconds, updated_at = now()",
            (name, pd.Timestamp(exchange_ms * 1_000_000, tz="UTC"), newest, lag),
        )
    return lag


async def watch_staleness(
    client: Any,
    marks: Any,
    *,
    url: str,
    name: str,
    policy: RestPolicy,
    every: float = STALENESS_SECONDS,
) -> None:
    """Measure and record the lag every `every` seconds until cancelled (never raises).

    `marks` is the stream's `ingest.Watermarks` (read, never changed).
    """
    while True:
        try:
            now_ms = await exchange_time_ms(client, policy=policy)
            await asyncio.to_thread(
                record_staleness,
                url,
                name=name,
                exchange=marks.exchange,
                exchange_ms=now_ms,
                marks=dict(marks.by_symbol),
            )
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a blip of the exchange or database: measure next time
            logger.warning("ingest staleness not measured: %s", error)
        await asyncio.sleep(every)

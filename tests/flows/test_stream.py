"""The streaming flow against the exchange simulator: what lands in the DB is the truth."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
from prefect import tags
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterStartTime,
    TaskRunFilter,
    TaskRunFilterName,
)

from signalengine.simulator import market_bars, running_simulator
from tests.utils.net import free_port

SYMBOLS = ["BTC/USDT", "ETH/USDT"]
ANCHOR = pd.Timestamp("2025-03-03 12:00", tz="UTC")


def _stored(db, symbol: str) -> pd.DataFrame:
    rows = db.execute(
        "SELECT ts, open, high, low, close, volume FROM klines WHERE symbol = %s ORDER BY ts",
        (symbol,),
    ).fetchall()
    return pd.DataFrame(rows)


def _truth(symbol: str, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    bars = market_bars(symbol, int(start.value // 1_000_000), int(end.value // 1_000_000))
    return pd.DataFrame(
        {
            "ts": pd.to_datetime(bars["ts"], unit="ms", utc=True),
            **{c: bars[c].astype("float64") for c in ("open", "high", "low", "close", "volume")},
        }
    )


async def test_stream_stores_exactly_the_exchange_bars(db, prefect_harness, monkeypatch) -> None:
    from signalengine.flows.stream import stream

    anchor_ms = int(ANCHOR.value // 1_000_000)
    with running_simulator(symbols=SYMBOLS, speed=600, anchor_ms=anchor_ms) as url:
        monkeypatch.setenv("SIGNALENGINE_EXCHANGE_URL", url)
        monkeypatch.setenv("SIGNALENGINE_SYMBOLS", '["BTC/USDT", "ETH/USDT"]')
        monkeypatch.setenv("SIGNALENGINE_BACKFILL_DAYS", "0.5")
        monkeypatch.setenv("SIGNALENGINE_STREAM_METRICS_PORT", str(free_port()))
        started = datetime.now(UTC)
        with tags("signalengine", "stream"):  # as `signalengine stream` runs it
            summary = await stream(max_minutes=15)
    assert summary["minutes"] >= 15
    # the run keeps the command's tags; its per-minute task runs carry none, so Prefect's
    # tag concurrency gate never holds a minute (flows.stream.untagged)
    async with get_client() as client:
        runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(after_=started))
        )
        minute_runs = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[r.id for r in runs])),
            task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="ingest_minute")),
        )
    assert len(runs) == 1 and {"signalengine", "stream"} <= set(runs[0].tags)
    assert len(minute_runs) >= 15 and all(not r.tags for r in minute_runs)
    for symbol in SYMBOLS:
        stored = _stored(db, symbol)
        first, last = stored["ts"].iloc[0], stored["ts"].iloc[-1]
        # catch-up starts backfill_days before the exchange clock at start-up
        # (the sim clock runs 600x, so a slow start-up shifts it by sim hours)
        assert ANCHOR - pd.Timedelta(hours=12) <= first <= ANCHOR
        assert last >= ANCHOR + pd.Timedelta(minutes=15)
        truth = _truth(symbol, first, last + pd.Timedelta(minutes=1))
        assert len(stored) == len(truth)  # no gap, no duplicate
        stored["ts"] = pd.to_datetime(stored["ts"], utc=True)
        pd.testing.assert_frame_equal(stored, truth, check_exact=True, check_dtype=False)
    mark = db.execute("SELECT ts FROM stream_watermarks").fetchone()["ts"]
    assert pd.Timestamp(mark) >= ANCHOR
    assert np.isclose(pd.Timestamp(mark).minute % 5, 0)

"""The stream through REST rate limits, malformed klines and a long database outage.

Ground truth is the simulator's market (`market_bars`); what the database holds must
equal it exactly.
"""

from __future__ import annotations

import os
import threading
import time

import httpx
import pandas as pd
import psycopg
import pytest

from signalengine.simulator import Faults, running_simulator
from signalengine.tasks import metrics
from tests.flows.test_stream import SYMBOLS
from tests.flows.test_stream_faults import _assert_truth, _configure
from tests.utils.tcpproxy import TcpProxy

ANCHOR = pd.Timestamp("2025-07-07 10:00", tz="UTC")
ANCHOR_MS = int(ANCHOR.value // 1_000_000)
# The suite's outage spans several capped waits (core.dbconn.WAIT_CAP_SECONDS) and keeps
# the suite inside its time budget; `ready()` has no attempt limit at all. The runs past
# the old ~179 s give-up horizon: SIGNALENGINE_TEST_DB_OUTAGE_SECONDS=190 (or 300, the
# issue's 5 minutes; both passed on this machine, 265 s and 550 s wall).
OUTAGE_SECONDS = float(os.environ.get("SIGNALENGINE_TEST_DB_OUTAGE_SECONDS", "30"))
OUTAGE_SPEED = 120  # simulated minutes per real minute during the outage test
OUTAGE_MINUTES = int(OUTAGE_SECONDS * OUTAGE_SPEED / 60)  # simulated minutes it spans


async def test_catch_up_through_429_every_7th_request(db, prefect_harness, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from signalengine.flows.stream import stream

    faults = Faults(rest_429_every=7, retry_after_s=1, ws_drop_every_s=2.0, duplicate_rate=0.1)
    reconnects_before = metrics.COLLECTOR_RECONNECTS.labels("binance")._value.get()
    with running_simulator(symbols=SYMBOLS, speed=120, anchor_ms=ANCHOR_MS, faults=faults) as url:
        _configure(monkeypatch, url)
        monkeypatch.setenv("SIGNALENGINE_BACKFILL_DAYS", "10")
        summary = await stream(max_minutes=14)
        status = httpx.get(f"{url}/sim/status").json()
    assert status["injected"]["rest_429"] >= 4  # the catch-up itself met several 429s
    # every dropped socket was followed by a reconnect, and each was counted (the last
    # drop may come after the stream stopped watching)
    drops = status["injected"]["ws_drops"]
    reconnects = metrics.COLLECTOR_RECONNECTS.labels("binance")._value.get() - reconnects_before
    assert drops >= 2 and drops - 1 <= reconnects <= drops
    assert summary["minutes"] >= 14
    _assert_truth(db)  # no gap, no duplicate, every value exact
    for symbol in SYMBOLS:
        row = db.execute(
            "SELECT min(ts) AS lo, max(ts) AS hi, count(*) AS n FROM klines WHERE symbol = %s",
            (symbol,),
        ).fetchone()
        assert row["lo"] <= ANCHOR - pd.Timedelta(days=10) + pd.Timedelta(hours=1)
        assert row["n"] >= 10 * 1440
    # the summary reports what was stored, catch-up included
    assert summary["bars_stored"] == db.execute("SELECT count(*) AS n FROM klines").fetchone()["n"]


async def test_every_malformed_kline_reaches_klines_rejected(
    db, prefect_harness, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    from signalengine.flows.stream import stream

    counted_before = metrics.KLINES_REJECTED.labels("binance", "ws")._value.get()
    faults = Faults(malformed_rate=0.1)
    with running_simulator(symbols=SYMBOLS, speed=240, anchor_ms=ANCHOR_MS, faults=faults) as url:
        _configure(monkeypatch, url)
        await stream(max_minutes=40)
        sent = httpx.get(f"{url}/sim/status").json()["malformed_klines"]
    last_ms = int(
        pd.Timestamp(db.execute("SELECT max(ts) AS hi FROM klines").fetchone()["hi"]).value
        // 1_000_000
    )
    # the stream stopped after minute `last_ms`: malformed klines of later minutes were
    # sent but never processed
    expected = sorted(
        (k["symbol"], int(k["t"]), k["c"], k["h"], k["l"])
        for k in sent
        if int(k["t"]) // 60_000 * 60_000 <= last_ms
    )
    rows = db.execute("SELECT symbol, raw FROM klines_rejected WHERE source = 'ws'").fetchall()
    rejected = sorted(
        (r["symbol"], int(r["raw"]["ts"]), r["raw"]["close"], r["raw"]["high"], r["raw"]["low"])
        for r in rows
    )
    assert len(expected) >= 4  # ~10 % of 80 closed klines
    assert rejected == expected  # exactly the malformed payloads: none lost, none extra
    counted = metrics.KLINES_REJECTED.labels("binance", "ws")._value.get() - counted_before
    assert counted == len(rows)
    _assert_truth(db)


@pytest.mark.timeout(OUTAGE_SECONDS + 400)  # start-up, the outage, and the catch-up after it
async def test_database_outage_is_waited_out_with_nothing_lost(
    db, database_url, prefect_harness, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    from signalengine.flows.stream import stream

    info = psycopg.conninfo.conninfo_to_dict(database_url)
    proxy = TcpProxy(str(info.get("host", "127.0.0.1")), int(info.get("port", 5432)))
    proxied = psycopg.conninfo.make_conninfo(database_url, host="127.0.0.1", port=proxy.port)
    beats: list[float] = []  # heartbeat counter sampled during the outage
    outage_done = threading.Event()
    state: dict[str, float] = {}  # the stream's database gauges at the end of the outage

    def outage() -> None:
        while db_watermark(database_url) is None:  # streaming has begun
            time.sleep(0.5)
        time.sleep(3)
        proxy.down()
        deadline = time.monotonic() + OUTAGE_SECONDS
        while time.monotonic() < deadline:
            beats.append(metrics.HEARTBEATS._value.get())
            time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
        beats.append(metrics.HEARTBEATS._value.get())
        state.update(
            up=metrics.DATABASE_UP._value.get(), waited=metrics.DATABASE_OUTAGE._value.get()
        )
        proxy.up()
        outage_done.set()

    with running_simulator(symbols=SYMBOLS, speed=OUTAGE_SPEED, anchor_ms=ANCHOR_MS) as url:
        _configure(monkeypatch, url)
        monkeypatch.setenv("SIGNALENGINE_DATABASE_URL", proxied)
        monkeypatch.setenv("SIGNALENGINE_DB_WAIT_CAP_SECONDS", "5")
        thread = threading.Thread(target=outage, daemon=True)
        thread.start()
        # the outage spans OUTAGE_MINUTES simulated minutes; the stream must get past it
        summary = await stream(max_minutes=OUTAGE_MINUTES + 10)
        thread.join(timeout=5)
    proxy.close()
    assert outage_done.is_set()
    assert proxy.refused >= 5  # the stream kept trying to reconnect while it was down
    # the event loop was never frozen: the heartbeat advanced between every two samples
    assert len(beats) >= 3
    assert all(b > a for a, b in zip(beats, beats[1:], strict=False))
    # ... and it said it was waiting: down, for about as long as the outage
    assert state["up"] == 0.0 and state["waited"] >= OUTAGE_SECONDS / 2
    assert metrics.DATABASE_UP._value.get() == 1.0
    assert summary["minutes"] >= OUTAGE_MINUTES + 10
    mark = pd.Timestamp(db_watermark(database_url))
    assert mark >= ANCHOR + pd.Timedelta(minutes=OUTAGE_MINUTES)  # resumed past the outage
    _assert_truth(db)  # and nothing was lost


def db_watermark(url: str) -> object:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT max(ts) FROM stream_watermarks").fetchone()
    return None if row is None else row[0]

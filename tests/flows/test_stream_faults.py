"""The stream under a hostile exchange and a lost database: the DB still holds the truth."""

from __future__ import annotations

import threading

import pandas as pd
import psycopg

from signalengine.simulator import Faults, running_simulator
from tests.flows.test_stream import SYMBOLS, _stored, _truth
from tests.utils.net import free_port

ANCHOR = pd.Timestamp("2025-05-05 08:00", tz="UTC")


def _configure(monkeypatch, url: str) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SIGNALENGINE_EXCHANGE_URL", url)
    monkeypatch.setenv("SIGNALENGINE_SYMBOLS", '["BTC/USDT", "ETH/USDT"]')
    monkeypatch.setenv("SIGNALENGINE_BACKFILL_DAYS", "0.1")
    monkeypatch.setenv("SIGNALENGINE_STREAM_METRICS_PORT", str(free_port()))


def _assert_truth(db) -> None:  # type: ignore[no-untyped-def]
    for symbol in SYMBOLS:
        stored = _stored(db, symbol)
        stored["ts"] = pd.to_datetime(stored["ts"], utc=True)
        first, last = stored["ts"].iloc[0], stored["ts"].iloc[-1]
        truth = _truth(symbol, first, last + pd.Timedelta(minutes=1))
        assert len(stored) == len(truth)
        pd.testing.assert_frame_equal(stored, truth, check_exact=True, check_dtype=False)


async def test_drops_duplicates_disorder_and_garbage(db, prefect_harness, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from signalengine.flows.stream import stream

    faults = Faults(
        ws_drop_every_s=2.0, duplicate_rate=0.2, out_of_order_rate=0.2, malformed_rate=0.2
    )
    anchor_ms = int(ANCHOR.value // 1_000_000)
    with running_simulator(symbols=SYMBOLS, speed=240, anchor_ms=anchor_ms, faults=faults) as url:
        _configure(monkeypatch, url)
        summary = await stream(max_minutes=40)
        import httpx

        status = httpx.get(f"{url}/sim/status").json()
    assert summary["minutes"] >= 40
    _assert_truth(db)
    rejected = db.execute(
        "SELECT reason, count(*) AS n FROM klines_rejected GROUP BY reason"
    ).fetchall()
    reasons = {r["reason"]: r["n"] for r in rejected}
    injected = status["injected"]
    assert injected["malformed"] > 0 and injected["ws_drops"] > 0
    assert injected["duplicates"] > 0 and injected["out_of_order"] > 0
    # rejected rows are exactly malformed klines (some may be lost with a dropped socket)
    assert 0 < sum(reasons.values()) <= injected["malformed"]
    assert "differs from the stored bar" not in reasons


async def test_database_connection_killed_mid_stream(
    db, database_url, prefect_harness, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    from signalengine.flows.stream import stream

    anchor_ms = int(ANCHOR.value // 1_000_000)
    stop = threading.Event()
    spared = db.info.backend_pid  # the fixture's own connection
    kills: list[int] = []

    def killer() -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            while not stop.wait(1.5):
                rows = conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    " AND pid <> %s",
                    (spared,),
                ).fetchall()
                kills.append(len(rows))

    with running_simulator(symbols=SYMBOLS, speed=120, anchor_ms=anchor_ms) as url:
        _configure(monkeypatch, url)
        # enough signals to compare, with cooldowns on (state a failed attempt must not touch)
        monkeypatch.setenv("SIGNALENGINE_SIGNAL_SCORE_THRESHOLD", "0.2")
        monkeypatch.setenv("SIGNALENGINE_MTF_MIN_ALIGNED", "1")
        monkeypatch.setenv("SIGNALENGINE_PRIMARY_TIMEFRAME", "1m")
        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        try:
            summary = await stream(max_minutes=30)
        finally:
            stop.set()
            thread.join()
    assert summary["minutes"] >= 30
    assert sum(kills) >= 3  # the stream's connection really was cut, repeatedly
    with psycopg.connect(database_url, row_factory=psycopg.rows.dict_row, autocommit=True) as fresh:
        _assert_truth(fresh)
        end_mark = fresh.execute(
            "SELECT ts FROM stream_watermarks WHERE name LIKE 'live:%'"
        ).fetchone()["ts"]
    # live signals equal a replay over the same stored klines, from the live run's start
    start_mark = pd.Timestamp(summary["evaluated_after_ms"], unit="ms", tz="UTC")
    await stream(source="replay", run_id="rp", start=start_mark.isoformat())
    window = "emitted_at > %s AND emitted_at <= %s"
    key = "symbol, timeframe, direction, ts, entry_price, take_profit, stop_loss, score"
    live = db.execute(
        f"SELECT {key} FROM signals WHERE run_id = 'live' AND {window}", (start_mark, end_mark)
    ).fetchall()
    replayed = db.execute(
        f"SELECT {key} FROM signals WHERE run_id = 'rp' AND {window}", (start_mark, end_mark)
    ).fetchall()
    assert len(live) >= 3, "too few live signals for the comparison to prove anything"
    assert sorted(map(str, live)) == sorted(map(str, replayed))

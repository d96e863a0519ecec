"""Two exchanges at once, for real: a Binance-dialect and a Bybit-dialect simulator on
loopback, one `signalengine stream` process with SIGNALENGINE_EXCHANGES running one flow
run per exchange through ccxt. Stored bars per exchange equal that simulator's market
exactly, each exchange gets its own signals and watermark, the API separates them."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from signalengine.simulator import market_bars, running_simulator, venue_seed
from tests.api.conftest import api_settings
from tests.api.server import ApiServer
from tests.flows.test_scale_out import _env, _wait_for
from tests.utils.processes import running, signalengine, stop

ANCHOR = pd.Timestamp("2025-07-07 09:00", tz="UTC")
VENUES = {"binance": ["BTC/USDT", "ETH/USDT"], "bybit": ["BTC/USDT", "SOL/USDT"]}
SPEED = 240  # a simulated minute lasts 0.25 s: both streams keep up on a loaded machine


def _stored(db, exchange: str, symbol: str) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    rows = db.execute(
        "SELECT ts, open, high, low, close, volume FROM klines"
        " WHERE exchange = %s AND symbol = %s ORDER BY ts",
        (exchange, symbol),
    ).fetchall()
    frame = pd.DataFrame(rows)
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame


def _truth(exchange: str, symbol: str, first: pd.Timestamp, last: pd.Timestamp) -> pd.DataFrame:
    start, end = int(first.value // 1_000_000), int(last.value // 1_000_000) + 60_000
    bars = market_bars(symbol, start, end, seed=venue_seed(exchange))
    return pd.DataFrame(
        {
            "ts": pd.to_datetime(bars["ts"], unit="ms", utc=True),
            **{c: bars[c].astype("float64") for c in ("open", "high", "low", "close", "volume")},
        }
    )


def _signal_counts(db) -> dict[str, int]:  # type: ignore[no-untyped-def]
    rows = db.execute(
        "SELECT exchange, count(*) AS n FROM signals WHERE run_id = 'live' GROUP BY exchange"
    ).fetchall()
    return {row["exchange"]: int(row["n"]) for row in rows}


def _marks(db) -> dict[str, pd.Timestamp]:  # type: ignore[no-untyped-def]
    rows = db.execute("SELECT name, ts FROM stream_watermarks").fetchall()
    return {row["name"]: pd.Timestamp(row["ts"]) for row in rows}


@pytest.mark.slow
async def test_two_exchanges_streamed_at_once(
    db, database_url, prefect_harness, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    anchor_ms = int(ANCHOR.value // 1_000_000)
    with (
        running_simulator(symbols=VENUES["binance"], speed=SPEED, anchor_ms=anchor_ms) as binance,
        running_simulator(
            exchange="bybit", symbols=VENUES["bybit"], speed=SPEED, anchor_ms=anchor_ms
        ) as bybit,
    ):
        urls = {"binance": binance, "bybit": bybit}
        exchanges = [{"id": v, "url": urls[v], "symbols": s} for v, s in VENUES.items()]
        env = {
            **_env(database_url, binance),
            "SIGNALENGINE_EXCHANGES": json.dumps(exchanges),
            "SIGNALENGINE_BACKFILL_DAYS": "0.25",
            "SIGNALENGINE_SIGNAL_SCORE_THRESHOLD": "0.2",
            "SIGNALENGINE_STREAM_METRICS_PORT": "0",
        }
        log = tmp_path / "stream.log"
        proc = signalengine(["stream"], env=env, log=log)
        with running([proc]):
            _wait_for(lambda: len(_marks(db)) == 2 or proc.poll() is not None, 120)
            # streaming: until each exchange has a signal (a loaded machine catches up slowly)
            deadline = time.monotonic() + 150
            while time.monotonic() < deadline and proc.poll() is None:
                if set(_signal_counts(db)) == set(VENUES):
                    break
                time.sleep(0.5)
            seen = (_signal_counts(db), _marks(db))
            proc.send_signal(signal.SIGTERM)  # one signal: both runs finish and end Cancelled
            code = proc.wait(60)
            stop(proc)
    output = log.read_text()
    assert code == 0, output[-3000:]
    summary = json.loads(output.strip().splitlines()[-1])
    assert set(summary["exchanges"]) == set(VENUES)
    assert all(run["cancelled"] for run in summary["exchanges"].values()), summary

    # each exchange's bars, from its first to its last stored minute, are its market exactly
    for venue, symbols in VENUES.items():
        for symbol in symbols:
            stored = _stored(db, venue, symbol)
            first, last = stored["ts"].iloc[0], stored["ts"].iloc[-1]
            # the 0.25-day catch-up ran, then streaming (the anchor itself is passed only
            # if the stream started quickly: not so on a loaded machine)
            assert last - first >= pd.Timedelta(hours=6), (venue, symbol)
            truth = _truth(venue, symbol, first, last)
            assert len(stored) == len(truth), (venue, symbol)  # no gap, no duplicate
            pd.testing.assert_frame_equal(stored, truth, check_exact=True, check_dtype=False)
        listed = {
            r["symbol"]
            for r in db.execute(
                "SELECT DISTINCT symbol FROM klines WHERE exchange = %s", (venue,)
            ).fetchall()
        }
        assert listed == set(symbols)
    # the same pair on two venues is two different markets, both stored
    assert not _stored(db, "binance", "BTC/USDT")["close"].equals(
        _stored(db, "bybit", "BTC/USDT")["close"]
    )
    assert set(_marks(db)) == {"live:binance:all", "live:bybit:all"}

    counts = _signal_counts(db)
    assert set(counts) == set(VENUES) and all(counts.values()), (counts, seen)
    # the streams have stopped, so /health may say degraded: only startup is awaited
    api_server = ApiServer(api_settings(database_url), wait_healthy=False)
    with api_server as api, httpx.Client(base_url=api.url) as http:
        for venue, symbols in VENUES.items():
            page = http.get("/signals", params={"exchange": venue, "limit": 1000}).json()
            got = page["signals"]
            assert len(got) == counts[venue]
            assert {s["exchange"] for s in got} == {venue}
            assert {s["symbol"] for s in got} <= set(symbols)
            ids = {
                str(r["id"])
                for r in db.execute(
                    "SELECT id FROM signals WHERE run_id = 'live' AND exchange = %s", (venue,)
                ).fetchall()
            }
            assert {s["id"] for s in got} == ids
        both = http.get("/signals", params={"limit": 1000}).json()["signals"]
        assert len(both) == sum(counts.values())

"""Scale-out and crash recovery with real processes on one machine.

- two stream shards and two API replicas on one database: each symbol is ingested by
  exactly one shard, and every WebSocket client on either replica gets every signal once;
- a stream killed with SIGKILL mid-run and restarted leaves no missing or duplicate bars,
  and its signals equal a replay of the same klines (nothing skipped, nothing twice).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
import websockets

from signalengine.simulator import running_simulator
from tests.flows.test_stream import _truth
from tests.utils.net import free_port
from tests.utils.processes import running, signalengine, stop, stop_all, wait_http

pytestmark = pytest.mark.slow
SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT"]
ANCHOR = pd.Timestamp("2025-06-02 06:00", tz="UTC")
MORE_SIGNALS = {"SIGNALENGINE_SIGNAL_SCORE_THRESHOLD": "0.15"}  # a signal every few seconds
KEY = "symbol, timeframe, direction, ts, entry_price, take_profit, stop_loss"


def _env(database_url: str, sim_url: str) -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    env = dict(os.environ)
    env.update(
        {
            "SIGNALENGINE_DATABASE_URL": database_url,
            "SIGNALENGINE_EXCHANGE_URL": sim_url,
            "SIGNALENGINE_SYMBOLS": json.dumps(SYMBOLS),
            "SIGNALENGINE_BACKFILL_DAYS": "0.5",
            "SIGNALENGINE_SIGNAL_SCORE_THRESHOLD": "0.3",
            "SIGNALENGINE_MTF_MIN_ALIGNED": "1",
            "SIGNALENGINE_COOLDOWN_BARS": "0",
            "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        }
    )
    return env


def _assert_bars_match_truth(db) -> None:  # type: ignore[no-untyped-def]
    for symbol in SYMBOLS:
        rows = db.execute(
            "SELECT ts, open, high, low, close, volume FROM klines WHERE symbol = %s ORDER BY ts",
            (symbol,),
        ).fetchall()
        stored = pd.DataFrame(rows)
        stored["ts"] = pd.to_datetime(stored["ts"], utc=True)
        truth = _truth(symbol, stored["ts"].iloc[0], stored["ts"].iloc[-1] + pd.Timedelta("1min"))
        assert len(stored) == len(truth), symbol
        pd.testing.assert_frame_equal(stored, truth, check_exact=True, check_dtype=False)


async def _collect(url: str, stop: asyncio.Event, into: list[dict]) -> None:  # type: ignore[type-arg]
    """Every signal message on `url` until `stop` is set."""
    async with websockets.connect(url) as ws:
        while not stop.is_set():
            try:
                message = json.loads(await asyncio.wait_for(ws.recv(), 0.5))
            except TimeoutError:
                continue
            if message["type"] == "signal":
                into.append(message["data"])


def _metrics_page(port: int) -> str:
    """A shard's /metrics text; empty while it is not serving yet."""
    try:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.TransportError:
        return ""


def _live_ids(db) -> set[str]:  # type: ignore[no-untyped-def]
    rows = db.execute("SELECT id::text AS id FROM signals WHERE run_id = 'live'").fetchall()
    return {r["id"] for r in rows}


def _collected(metrics_texts: list[str], symbol: str) -> list[str]:
    """The shards' metrics pages that count WebSocket messages of `symbol`."""
    return [
        m for m in metrics_texts if f'symbol="{symbol}"' in m and "collector_messages_total{" in m
    ]


async def test_two_shards_two_replicas(db, database_url, prefect_harness, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    anchor_ms = int(ANCHOR.value // 1_000_000)
    with running_simulator(symbols=SYMBOLS, speed=300, anchor_ms=anchor_ms) as sim_url:
        env = _env(database_url, sim_url)
        api_ports = [free_port(), free_port()]
        metric_ports = [free_port(), free_port()]
        apis = [
            signalengine(["api", "--port", str(p)], env=env, log=tmp_path / f"api{i}.log")
            for i, p in enumerate(api_ports)
        ]
        with running(apis):
            for proc, port in zip(apis, api_ports, strict=True):
                wait_http(f"http://127.0.0.1:{port}/health", timeout=30, proc=proc)
            received: list[list[dict]] = [[], [], [], []]  # type: ignore[type-arg]
            urls = [f"ws://127.0.0.1:{p}/ws/feed" for p in api_ports for _ in range(2)]
            done = asyncio.Event()
            # the clients listen from before the shards start until after they stopped
            clients = [
                asyncio.create_task(_collect(u, done, r))
                for u, r in zip(urls, received, strict=True)
            ]
            await asyncio.sleep(1)
            shards = [
                signalengine(
                    ["stream", "--shard", f"{i}/2"],
                    env={**env, **MORE_SIGNALS, "SIGNALENGINE_STREAM_METRICS_PORT": str(mp)},
                    log=tmp_path / f"shard{i}.log",
                )
                for i, mp in enumerate(metric_ports)
            ]
            with running(shards):
                # a loaded machine catches up slowly: wait (bounded) until every symbol was
                # collected by a shard and live signals have been stored
                deadline = time.monotonic() + 180
                while time.monotonic() < deadline:
                    messages = [_metrics_page(mp) for mp in metric_ports]
                    if all(_collected(messages, s) for s in SYMBOLS) and len(_live_ids(db)) >= 3:
                        break
                    await asyncio.sleep(1)
                stop_all(shards)
            live = _live_ids(db)
            # the shards have stopped: wait (bounded) for every stored signal to arrive
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and any(
                {m["id"] for m in got} != live for got in received
            ):
                await asyncio.sleep(0.5)
            done.set()
            await asyncio.gather(*clients)
    assert live, "no live signal"
    for got in received:
        ids = [m["id"] for m in got]
        assert len(ids) == len(set(ids))  # once each
        assert set(ids) == live  # every signal, on every client of either replica
    # every symbol was collected by exactly one shard
    for symbol in SYMBOLS:
        assert len(_collected(messages, symbol)) == 1, symbol
    _assert_bars_match_truth(db)


async def test_stream_killed_mid_run_resumes_without_loss(
    db, database_url, prefect_harness, tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    anchor_ms = int(ANCHOR.value // 1_000_000)
    with running_simulator(symbols=SYMBOLS, speed=600, anchor_ms=anchor_ms) as sim_url:
        env = {**_env(database_url, sim_url), "SIGNALENGINE_STREAM_METRICS_PORT": "0"}
        first = signalengine(["stream"], env=env, log=tmp_path / "stream1.log")
        with running([first]):
            _wait_for(lambda: _watermark(db) is not None, 60)
            start_mark = _watermark(db)
            time.sleep(8)
            os.killpg(first.pid, signal.SIGKILL)  # no goodbye: mid-batch, mid-transaction
            first.wait(10)
        killed_at = _watermark(db)
        second = signalengine(["stream"], env=env, log=tmp_path / "stream2.log")
        with running([second]):
            _wait_for(lambda: (_watermark(db) or start_mark) > killed_at, 60)
            time.sleep(6)
            stop(second)
    end_mark = _watermark(db)
    assert end_mark > killed_at > start_mark
    _assert_bars_match_truth(db)
    from signalengine.flows.stream import stream

    for key, value in env.items():  # the replay runs here: same engine settings as the stream
        if key.startswith("SIGNALENGINE_"):
            monkeypatch.setenv(key, value)
    await stream(symbols=SYMBOLS, source="replay", run_id="rp")
    window = "emitted_at > %s AND emitted_at <= %s"
    live = db.execute(
        f"SELECT {KEY} FROM signals WHERE run_id = 'live' AND {window}", (start_mark, end_mark)
    ).fetchall()
    replayed = db.execute(
        f"SELECT {KEY} FROM signals WHERE run_id = 'rp' AND {window}", (start_mark, end_mark)
    ).fetchall()
    assert live, "no live signal across the crash: the comparison would prove nothing"
    assert {tuple(r.values()) for r in live} == {tuple(r.values()) for r in replayed}


def _watermark(db):  # type: ignore[no-untyped-def]
    row = db.execute("SELECT ts FROM stream_watermarks WHERE name LIKE 'live:%'").fetchone()
    return None if row is None else row["ts"]


def _wait_for(condition, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.3)
    raise AssertionError("condition not met in time")


async def test_stream_cancelled_through_prefect_stops_cleanly(
    db, database_url, prefect_harness, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState
    from prefect.client.schemas.objects import StateType
    from prefect.states import Cancelling

    running_filter = FlowRunFilter(state=FlowRunFilterState(type={"any_": [StateType.RUNNING]}))
    async with get_client() as client:
        # runs of earlier tests killed without a goodbye may still read RUNNING
        before = {run.id for run in await client.read_flow_runs(flow_run_filter=running_filter)}
    anchor_ms = int(ANCHOR.value // 1_000_000)
    with running_simulator(symbols=SYMBOLS, speed=120, anchor_ms=anchor_ms) as sim_url:
        env = {**_env(database_url, sim_url), "SIGNALENGINE_STREAM_METRICS_PORT": "0"}
        proc = signalengine(["stream"], env=env, log=tmp_path / "stream.log")
        with running([proc]):
            _wait_for(lambda: _watermark(db) is not None, 60)
            async with get_client() as client:
                runs = [
                    run
                    for run in await client.read_flow_runs(flow_run_filter=running_filter)
                    if run.id not in before
                ]
                assert len(runs) == 1
                await client.set_flow_run_state(runs[0].id, Cancelling(), force=True)
                deadline = time.monotonic() + 60
                while proc.poll() is None and time.monotonic() < deadline:
                    await asyncio.sleep(0.5)
                assert proc.poll() is not None, "the stream ignored its cancellation"
                final = await client.read_flow_run(runs[0].id)
    assert final.state is not None and final.state.type == StateType.CANCELLED
    log = (tmp_path / "stream.log").read_text()
    assert "Traceback" not in log


BACKFILLED = ["XRP/USDT", "ADA/USDT"]  # written by a concurrent backfill, not streamed
LIVE_WINDOW = pd.Timedelta("3h")  # exchange time streamed live after the catch-up
# Policies forced this often: each forced run collides with the shards' own refreshes
# (which wait their turn and retry), far more often than scheduled policies ever would.
FORCE_EVERY_SECONDS = 2.0


def _assert_timeframes_exact(db, symbols: list[str], *, relation: str) -> None:  # type: ignore[no-untyped-def]
    """Every 5m/15m/1h bucket of `relation` equals pandas over the stored 1m bars."""
    from tests.utils.aggregates import (
        assert_buckets_equal,
        pandas_buckets,
        relation_bars,
        stored_1m,
    )

    for symbol in symbols:
        bars = stored_1m(db, exchange="binance", symbol=symbol)
        for tf in ("5m", "15m", "1h"):
            got = relation_bars(db, relation.format(tf), exchange="binance", symbol=symbol)
            assert_buckets_equal(got, pandas_buckets(bars, tf), f"{symbol} {relation} {tf}")


def _shard_marks(db) -> dict[str, pd.Timestamp]:  # type: ignore[no-untyped-def]
    rows = db.execute(
        "SELECT name, ts FROM stream_watermarks WHERE name LIKE 'live:%/2'"
    ).fetchall()
    return {r["name"].rsplit(":", 1)[-1]: pd.Timestamp(r["ts"]) for r in rows}


@pytest.mark.timeout(600)  # real tier only; under a loaded machine the streams lag
async def test_two_shards_catch_up_one_window_on_timescaledb(
    real_timescale, timescale_clean, prefect_harness, tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """Both shards backfill the same 12 h window at start-up (every bar of it behind the
    refreshes: the simulator's clock is in 2025), then stream, while a `backfill` process
    writes a day of two other symbols into the same aggregate windows and the refresh
    policies are forced again and again. No refresh error reaches a log, every process
    that was not stopped exits 0, the bars are the exchange's, and each shard's live
    signals equal one single-process replay of the same klines (the backfilled symbols
    are not streamed, so they cannot change what the engine saw).

    Real TimescaleDB only: each stream process holds several connections at once, which
    PGlite (one client at a time) cannot serve. The plain-PostgreSQL shape of this test is
    test_two_shards_two_replicas; the writers-and-policies race itself runs on PGlite too
    (tests/tasks/test_timescale_writes.py)."""
    import psycopg
    from psycopg.rows import dict_row

    from signalengine.core.migrate import upgrade
    from signalengine.flows.stream import stream
    from signalengine.tasks.marketdata.batching import shard_symbols
    from tests.utils.timescale import run_refresh_policies

    anchor_ms = int(ANCHOR.value // 1_000_000)
    with (
        psycopg.connect(timescale_clean, autocommit=True, row_factory=dict_row) as db,
        running_simulator(
            symbols=[*SYMBOLS, *BACKFILLED], speed=300, anchor_ms=anchor_ms
        ) as sim_url,
    ):
        env = {**_env(timescale_clean, sim_url), "SIGNALENGINE_STREAM_METRICS_PORT": "0"}
        shards = [
            signalengine(["stream", "--shard", f"{i}/2"], env=env, log=tmp_path / f"shard{i}.log")
            for i in range(2)
        ]
        since, until = ANCHOR - pd.Timedelta("1D"), ANCHOR
        args = ["backfill", "--symbols", ",".join(BACKFILLED)]
        args += ["--since", since.isoformat(), "--until", until.isoformat()]
        backfill = signalengine(args, env=env, log=tmp_path / "backfill.log")
        forced = 0
        with running([*shards, backfill]):
            deadline = time.monotonic() + 240
            first: dict[str, pd.Timestamp] = {}
            while True:  # policies forced during the catch-up and the live minutes after it
                forced += 1
                run_refresh_policies(db)
                marks = _shard_marks(db)
                first = first or (marks if len(marks) == 2 else {})
                if first and all(marks[s] - first[s] >= LIVE_WINDOW for s in first):
                    break
                assert all(p.poll() is None for p in shards), [
                    (tmp_path / f"shard{i}.log").read_text()[-3000:] for i in range(2)
                ]
                assert backfill.poll() in (None, 0), (tmp_path / "backfill.log").read_text()
                assert time.monotonic() < deadline, f"shards did not stream: {marks}"
                await asyncio.sleep(FORCE_EVERY_SECONDS)
            assert backfill.wait(timeout=120) == 0, (tmp_path / "backfill.log").read_text()
            for proc in shards:
                stop(proc, sig=signal.SIGTERM)
        last = _shard_marks(db)
        logs = {i: (tmp_path / f"shard{i}.log").read_text() for i in range(2)}
        logs[2] = (tmp_path / "backfill.log").read_text()
        for words in ("LockNotAvailable", "due to a concurrent refresh", "busy for", "Traceback"):
            assert not any(words in text for text in logs.values()), (words, logs)
        assert forced >= 2
        # a shard that ignored SIGTERM for 20 s was killed, maybe between its commit and
        # the end of its refresh chain: the views are exact anyway, and the sweep that the
        # next `db upgrade` (or writer) runs refreshes and clears what it left pending
        _assert_timeframes_exact(db, [*SYMBOLS, *BACKFILLED], relation="klines_{}")
        upgrade(timescale_clean)
        assert db.execute("SELECT count(*) AS n FROM klines_pending").fetchone() == {"n": 0}
        _assert_timeframes_exact(db, [*SYMBOLS, *BACKFILLED], relation="klines_{}_cagg")
        _assert_bars_match_truth(db)
        for symbol in BACKFILLED:
            rows = db.execute(
                "SELECT ts, open, high, low, close, volume FROM klines WHERE symbol = %s"
                " ORDER BY ts",
                (symbol,),
            ).fetchall()
            stored = pd.DataFrame(rows)
            stored["ts"] = pd.to_datetime(stored["ts"], utc=True)
            pd.testing.assert_frame_equal(
                stored, _truth(symbol, since, until), check_exact=True, check_dtype=False
            )
        for key, value in env.items():  # the replay: same engine settings as the shards
            if key.startswith("SIGNALENGINE_"):
                monkeypatch.setenv(key, value)
        await stream(symbols=SYMBOLS, source="replay", run_id="rp")
        compared = 0
        for shard, start_mark in first.items():
            window = "symbol = ANY(%s) AND emitted_at > %s AND emitted_at <= %s"
            params = (shard_symbols(SYMBOLS, shard), start_mark, last[shard])
            live = db.execute(
                f"SELECT {KEY} FROM signals WHERE run_id = 'live' AND {window}", params
            ).fetchall()
            replayed = db.execute(
                f"SELECT {KEY} FROM signals WHERE run_id = 'rp' AND {window}", params
            ).fetchall()
            assert {tuple(r.values()) for r in live} == {tuple(r.values()) for r in replayed}
            compared += len(live)
        assert compared, "no live signal in the window: the comparison would prove nothing"

"""API benchmark: REST throughput/latency at 100,000 signals, WebSocket fan-out latency.

Prints one JSON object. Everything runs on 127.0.0.1: a fresh database on the local
PostgreSQL (dropped at the end), the API as its own process (`signalengine api`), and the
load generator here. Fan-out latency is measured from the commit of a signal INSERT (the
NOTIFY fires at commit) to its arrival at each of N WebSocket clients.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import psycopg
import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from signalengine.core.migrate import upgrade  # noqa: E402
from tests.utils.net import free_port  # noqa: E402

SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT", "XRP/USDT"]


def _fill(url: str, n: int) -> None:
    """n settled live signals over 90 days, loaded with COPY (NOTIFY trigger off)."""
    rng = np.random.default_rng(1)
    start = np.datetime64("2025-01-01T00:00")
    signals, outcomes = [], []
    for i in range(n):
        sid = uuid.uuid4()
        ts = start + np.timedelta64(int(i * 90 * 1440 / n), "m")
        emitted = ts + np.timedelta64(5, "m")
        outcome = ("tp_hit", "sl_hit", "expired")[int(rng.integers(0, 3))]
        ret = float(rng.normal(0.1, 1.0))
        symbol = SYMBOLS[i % len(SYMBOLS)]
        direction = "long" if i % 2 else "short"
        signals.append(
            (
                sid,
                "live",
                "binance",
                symbol,
                "5m",
                direction,
                f"{ts}Z",
                f"{emitted}Z",
                100.0,
                102.0,
                99.0,
                f"{emitted + np.timedelta64(60, 'm')}Z",
                float(rng.uniform(0.5, 1)),
                outcome,
            )
        )
        exit_time = emitted + np.timedelta64(int(rng.integers(1, 60)), "m")
        outcomes.append(
            (
                sid,
                "live",
                "binance",
                symbol,
                direction,
                "5m",
                100.0,
                100.0 + ret,
                f"{emitted}Z",
                f"{exit_time}Z",
                outcome,
                ret,
                600.0,
                0.7,
            )
        )
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SET session_replication_role = replica")
        with cur.copy(
            "COPY signals (id, run_id, exchange, symbol, timeframe, direction, ts,"
            " emitted_at, entry_price, take_profit, stop_loss, expires_at, score,"
            " status) FROM STDIN"
        ) as copy:
            for row in signals:
                copy.write_row(row)
        with cur.copy("COPY signal_performance FROM STDIN") as copy:
            for row in outcomes:
                copy.write_row(row)
        cur.execute("SET session_replication_role = origin")
        conn.commit()
        conn.autocommit = True
        conn.execute("ANALYZE")


async def _load(base: str, path: str, *, requests: int, concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            queue.get_nowait()
            t0 = time.perf_counter()
            response = await client.get(path)
            latencies.append(time.perf_counter() - t0)
            response.raise_for_status()

    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        await client.get(path)  # warm
        started = time.perf_counter()
        await asyncio.gather(*[worker(client) for _ in range(concurrency)])
        elapsed = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {
        "rps": round(requests / elapsed, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
    }


async def _fanout(ws_url: str, db_url: str, *, clients: int, signals: int) -> dict[str, float]:
    arrivals: dict[str, list[float]] = {}
    connected = 0

    async def client() -> None:
        nonlocal connected
        async with websockets.connect(ws_url, max_queue=None, open_timeout=60) as ws:
            await ws.recv()  # connected
            connected += 1
            while True:
                message = json.loads(await ws.recv())
                if message["type"] == "signal":
                    arrivals.setdefault(message["data"]["id"], []).append(time.perf_counter())

    tasks = [asyncio.create_task(client()) for _ in range(clients)]
    while connected < clients:
        await asyncio.sleep(0.1)
    sent: dict[str, float] = {}
    with psycopg.connect(db_url, autocommit=True) as conn:
        for _ in range(signals):
            sid = str(uuid.uuid4())
            now = time.time()
            conn.execute(
                "INSERT INTO signals (id, exchange, symbol, timeframe, direction, ts, emitted_at,"
                " entry_price, take_profit, stop_loss, expires_at, score) VALUES (%s, 'binance',"
                " 'BTC/USDT', '5m', 'long', to_timestamp(%s), to_timestamp(%s), 1, 2, 0.5,"
                " to_timestamp(%s), 0.9)",
                (sid, now, now, now + 3600),
            )
            sent[sid] = time.perf_counter()
            await asyncio.sleep(0.25)
    await asyncio.sleep(3)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    lat = np.array(
        [(t - sent[sid]) * 1000 for sid, times in arrivals.items() if sid in sent for t in times]
    )
    delivered = sum(len(times) for sid, times in arrivals.items() if sid in sent)
    return {
        "clients": clients,
        "signals": signals,
        "delivered": delivered,
        "expected": clients * signals,
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2),
    }


async def main(n: int, clients: int) -> dict[str, object]:
    name = f"signalengine_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(SERVER, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = psycopg.conninfo.make_conninfo(SERVER, dbname=name)
    port = free_port()
    proc = None
    try:
        upgrade(url)
        t0 = time.perf_counter()
        _fill(url, n)
        fill_s = time.perf_counter() - t0
        env = {**os.environ, "SIGNALENGINE_DATABASE_URL": url, "DO_NOT_TRACK": "1"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "signalengine", "api", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                if httpx.get(f"{base}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        return {
            "signals_in_db": n,
            "fill_seconds": round(fill_s, 2),
            "signals_limit_50": await _load(
                base, "/signals?limit=50", requests=2000, concurrency=8
            ),
            "performance_stats": await _load(
                base, "/performance/stats", requests=2000, concurrency=8
            ),
            "performance_stats_filtered": await _load(
                base,
                "/performance/stats?symbol=ETHUSDT&direction=long&lookback_days=30",
                requests=2000,
                concurrency=8,
            ),
            "ws_fanout": await _fanout(
                f"ws://127.0.0.1:{port}/ws/feed", url, clients=clients, signals=20
            ),
        }
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        with psycopg.connect(SERVER, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--signals", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=1000)
    args = parser.parse_args()
    import uvloop  # the load generator's own overhead should not dominate what it measures

    print(json.dumps(uvloop.run(main(args.signals, args.clients))))

"""Durable webhooks end to end: a receiver down for longer than the old retry span (~7.5 s),
the stream SIGKILLed half-way, two delivery workers: after recovery every strong live
signal reaches the receiver, exactly once by idempotency key, and the outbox says so."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pandas as pd
import pytest

from signalengine.simulator import running_simulator
from tests.flows.test_scale_out import _env, _wait_for
from tests.utils.processes import running, signalengine, stop
from tests.utils.receiver import WebhookReceiver

pytestmark = pytest.mark.slow
ANCHOR = pd.Timestamp("2025-08-04 09:00", tz="UTC")
SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT"]
MIN_SCORE = 0.35


def _outbox(db) -> dict[str, int]:  # type: ignore[no-untyped-def]
    rows = db.execute("SELECT status, count(*) AS n FROM webhook_outbox GROUP BY status")
    return {r["status"]: r["n"] for r in rows.fetchall()}


async def test_receiver_down_and_stream_killed_every_signal_delivered_once(
    db, database_url, prefect_harness, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    receiver = WebhookReceiver()  # down: nothing listens on its port yet
    anchor_ms = int(ANCHOR.value // 1_000_000)
    with running_simulator(symbols=SYMBOLS, speed=120, anchor_ms=anchor_ms) as sim:
        env = {
            **_env(database_url, sim),
            "SIGNALENGINE_SYMBOLS": json.dumps(SYMBOLS),
            "SIGNALENGINE_STREAM_METRICS_PORT": "0",
            "SIGNALENGINE_PRIMARY_TIMEFRAME": "1m",
            "SIGNALENGINE_WEBHOOK_URLS": json.dumps([receiver.url]),
            "SIGNALENGINE_WEBHOOK_MIN_SCORE": str(MIN_SCORE),
            "SIGNALENGINE_WEBHOOK_BACKOFF_SECONDS": "0.5",
            "SIGNALENGINE_WEBHOOK_MAX_BACKOFF_SECONDS": "2",
            "SIGNALENGINE_WEBHOOK_WORKERS": "1",  # one worker in the stream ...
        }
        worker = signalengine(["webhooks"], env=env, log=tmp_path / "worker.log")  # ... and one
        first = signalengine(["stream"], env=env, log=tmp_path / "stream1.log")
        with running([worker, first]):
            _wait_for(lambda: _outbox(db).get("pending", 0) >= 3, 90)
            down_since = time.monotonic()
            time.sleep(6)
            os.killpg(first.pid, signal.SIGKILL)  # mid-run, maybe mid-transaction
            first.wait(10)
            second = signalengine(["stream"], env=env, log=tmp_path / "stream2.log")
            with running([second]):
                time.sleep(max(0.0, 12 - (time.monotonic() - down_since)))  # > 7.5 s down
                attempts = db.execute("SELECT max(attempts) AS n FROM webhook_outbox").fetchone()
                assert attempts["n"] >= 3  # deliveries were tried (and failed) meanwhile
                receiver.start()
                time.sleep(5)  # more signals while the receiver is up
                stop(second)
            _wait_for(lambda: set(_outbox(db)) == {"delivered"}, 60)
            stop(worker)
    receiver.stop()
    strong = {
        str(r["id"])
        for r in db.execute(
            "SELECT id FROM signals WHERE run_id = 'live' AND score >= %s", (MIN_SCORE,)
        ).fetchall()
    }
    got = receiver.keys()
    assert len(strong) >= 3  # the outbox held 3 pending before the kill
    weak = db.execute(
        "SELECT count(*) AS n FROM signals WHERE run_id = 'live' AND score < %s", (MIN_SCORE,)
    ).fetchone()["n"]
    assert weak > 0  # the threshold really filtered something
    assert set(got) == strong  # every strong signal, nothing else
    # at least once; a repeat needs a worker killed between POST and commit, and only the
    # stream's worker was killed, once
    assert sum(got.values()) - len(got) <= 1
    counts = _outbox(db)
    assert counts == {"delivered": len(strong)}

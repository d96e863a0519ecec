"""The webhook outbox: written with the signals, claimed without overlap, retried for its
horizon, final on 4xx, visible with its attempts at GET /webhooks/deliveries."""

from __future__ import annotations

import threading
from collections import Counter

import httpx
import pandas as pd
import pytest

from signalengine.tasks.alerts.outbox import (
    DeliveryPolicy,
    deliver_due,
    delivery_counts,
    enqueue_deliveries,
)
from signalengine.tasks.outcomes.signals import insert_signals
from tests.tasks.test_webhooks import make_signal
from tests.utils.receiver import WebhookReceiver

FAST = DeliveryPolicy(secret="s", backoff_base_seconds=0.01, backoff_cap_seconds=0.05)


@pytest.fixture
def receiver():  # type: ignore[no-untyped-def]
    rx = WebhookReceiver()
    yield rx
    rx.stop()


def _store(db, scores: list[float], urls: list[str]) -> list[str]:  # type: ignore[no-untyped-def]
    base = make_signal(0.9).ts
    signals = [
        make_signal(s, ts=base + pd.Timedelta(minutes=i), features={"rsi_14": 50.0})
        for i, s in enumerate(scores)
    ]
    with db.transaction():
        insert_signals(db, signals)
        enqueue_deliveries(db, signals, urls=urls, min_score=0.8)
    return [s.id for s in signals if s.score >= 0.8]


def test_only_strong_live_signals_are_queued_once(db, receiver) -> None:  # type: ignore[no-untyped-def]
    strong = _store(db, [0.9, 0.5, 0.85], [receiver.url, receiver.url + "?token=x"])
    assert len(strong) == 2
    assert delivery_counts(db)["pending"] == 4
    again = [make_signal(0.9, id=strong[0])]
    assert enqueue_deliveries(db, again, urls=[receiver.url], min_score=0.8) == 0  # idempotent


def test_two_workers_never_post_one_delivery_twice(db, database_url, receiver) -> None:  # type: ignore[no-untyped-def]
    import psycopg
    from psycopg.rows import dict_row

    strong = _store(db, [0.9] * 40, [receiver.url])
    receiver.start()
    totals: Counter[str] = Counter()

    def work() -> None:
        with (
            psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn,
            httpx.Client(timeout=5) as client,
        ):
            while True:
                done = deliver_due(conn, client, FAST, limit=3)
                totals.update(done)
                if not any(done.values()) and delivery_counts(conn)["pending"] == 0:
                    return

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert receiver.keys() == dict.fromkeys(strong, 1)  # every one, exactly once
    assert totals["delivered"] == len(strong)
    assert delivery_counts(db) == {"pending": 0, "delivered": 40, "failed": 0, "rejected": 0}


def test_down_receiver_is_retried_then_failed_after_the_horizon(db, receiver) -> None:  # type: ignore[no-untyped-def]
    _store(db, [0.9], [receiver.url])  # receiver never started: connection refused
    short = DeliveryPolicy(horizon_seconds=0.5, backoff_base_seconds=0.01, backoff_cap_seconds=0.02)
    with httpx.Client(timeout=2) as client:
        first = deliver_due(db, client, short)
        assert first["retry"] == 1
        import time

        deadline = time.monotonic() + 10
        while delivery_counts(db)["failed"] == 0 and time.monotonic() < deadline:
            deliver_due(db, client, short)
            time.sleep(0.05)
    row = db.execute("SELECT status, attempts, last_error FROM webhook_outbox").fetchone()
    assert row["status"] == "failed" and row["attempts"] >= 2 and row["last_error"]

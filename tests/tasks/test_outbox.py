"""The webhook outbox: written with the signals, claimed without overlap, retried for its
horizon, final on 4xx, visible with its attempts at GET /webhooks/deliveries."""

from __future__ import annotations

import json
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


def _deliver_until_done(db, policy: DeliveryPolicy, *, rounds: int = 50) -> None:  # type: ignore[no-untyped-def]
    """Run the worker step until nothing is pending (retries are due within ms)."""
    import time

    with httpx.Client(timeout=2) as client:
        for _ in range(rounds):
            deliver_due(db, client, policy)
            if delivery_counts(db)["pending"] == 0:
                return
            time.sleep(0.03)


def test_signed_retried_with_one_delivery_id_and_the_idempotency_key(db) -> None:  # type: ignore[no-untyped-def]
    from signalengine.tasks.alerts.webhooks import (
        DELIVERY_HEADER,
        SIGNATURE_HEADER,
        verify_signature,
    )
    from tests.tasks.test_webhooks import SECRET, Receiver

    rx = Receiver(script=[503, 500])
    try:
        (signal_id,) = _store(db, [0.9], [rx.url])
        policy = DeliveryPolicy(secret=SECRET, backoff_base_seconds=0.01, backoff_cap_seconds=0.02)
        _deliver_until_done(db, policy)
    finally:
        rx.close()
    assert [status for _, _, status in rx.requests] == [503, 500, 200]
    assert {h[DELIVERY_HEADER] for h, _, _ in rx.requests} == {
        str(db.execute("SELECT id FROM webhook_outbox").fetchone()["id"])
    }
    assert {h["Idempotency-Key"] for h, _, _ in rx.requests} == {signal_id}
    assert all(h[SIGNATURE_HEADER].startswith("sha256=") for h, _, _ in rx.requests)
    assert all(verify_signature(body, h, SECRET) for h, body, _ in rx.requests)
    payload = json.loads(rx.requests[-1][1])
    assert payload["id"] == signal_id and payload["score"] == 0.9
    row = db.execute("SELECT status, attempts, last_status FROM webhook_outbox").fetchone()
    assert (row["status"], row["attempts"], row["last_status"]) == ("delivered", 3, 200)


def test_a_4xx_is_final_and_429_waits_for_retry_after(db) -> None:  # type: ignore[no-untyped-def]
    from tests.tasks.test_webhooks import Receiver

    rejecting, limiting = Receiver(script=[400]), Receiver(script=[429])
    try:
        _store(db, [0.9], [rejecting.url, limiting.url])
        with httpx.Client(timeout=2) as client:
            done = deliver_due(
                db, client, DeliveryPolicy(backoff_base_seconds=0.01, backoff_cap_seconds=5)
            )
    finally:
        rejecting.close()
        limiting.close()
    assert done["rejected"] == 1 and done["retry"] == 1
    rows = db.execute(
        "SELECT status, extract(epoch FROM next_attempt_at - last_attempt_at) AS wait"
        " FROM webhook_outbox ORDER BY status"
    ).fetchall()
    assert rows[0]["status"] == "pending"
    assert rows[0]["wait"] >= 1.0  # the receiver's Retry-After (1 s), not the ~0.01 s backoff
    assert rows[1]["status"] == "rejected"

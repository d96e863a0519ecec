"""Durable webhooks: deliveries written with their signals, posted by any number of workers.

Write side
    `enqueue_deliveries` inserts one `webhook_outbox` row per (signal, URL) for every
    live signal with ``score >= webhook_min_score``, inside the caller's transaction
    (the one that stores the signals), so a signal is never stored without its
    deliveries, and a retried transaction adds none twice (``UNIQUE (signal_id, url)``).

Delivery
    `deliver_due` claims due rows with ``FOR UPDATE SKIP LOCKED`` and keeps them locked
    while it posts, so two workers (threads, processes or replicas) never post one row at
    the same time; the outcome is written in the same transaction. A worker killed
    mid-post leaves the row pending, and it is posted again: delivery is at least once,
    and receivers dedupe on ``Idempotency-Key`` (the signal id; ``X-SignalEngine-Delivery``
    is the row id, stable across retries). Connection errors, timeouts, 408, 429 and 5xx
    are retried with exponential backoff (``Retry-After`` honoured) until the row is
    ``webhook_retry_horizon_seconds`` old; then it is ``failed``. Other 4xx are final
    (``rejected``). Headers and the signature are those of `webhooks` (module docstring).

Counts
    `delivery_counts` reads the table, so the figures survive restarts; the worker copies
    them into the ``webhook_outbox_deliveries{status}`` gauge.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
from prometheus_client import Gauge

from signalengine.core.config import Settings
from signalengine.core.db import DbConn
from signalengine.core.dbconn import ReconnectingConnection
from signalengine.core.errors import TemporaryDatabaseError
from signalengine.core.retry import backoff_seconds
from signalengine.core.vocabulary import LIVE_RUN
from signalengine.tasks.alerts.webhooks import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    redact_url,
    sign,
    signal_payload,
)
from signalengine.tasks.engine.records import Signal
from signalengine.tasks.metrics import REGISTRY

__all__ = [
    "IDEMPOTENCY_HEADER",
    "STATUSES",
    "DeliveryPolicy",
    "DeliveryWorker",
    "deliver_due",
    "delivery_counts",
    "enqueue_deliveries",
    "serve_outbox",
]

IDEMPOTENCY_HEADER = "Idempotency-Key"
STATUSES = ("pending", "delivered", "failed", "rejected")
CLAIM_BATCH = 20
IDLE_POLL_SECONDS = 0.5
_USER_AGENT = "SignalEngine-Webhook/2"
logger = logging.getLogger(__name__)

OUTBOX_DELIVERIES = Gauge(
    "webhook_outbox_deliveries",
    "Webhook deliveries in the outbox table by status (from the table: survives restarts).",
    ["status"],
    registry=REGISTRY,
)
for _status in STATUSES:
    OUTBOX_DELIVERIES.labels(_status)


@dataclass(frozen=True)
class DeliveryPolicy:
    """How deliveries are posted and retried."""

    secret: str | None = None
    timeout_seconds: float = 5.0
    horizon_seconds: float = 6 * 3600.0
    backoff_base_seconds: float = 1.0
    backoff_cap_seconds: float = 300.0

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryPolicy:
        secret = settings.webhook_secret
        return cls(
            secret=secret.get_secret_value() if secret is not None else None,
            timeout_seconds=settings.webhook_timeout_seconds,
            horizon_seconds=settings.webhook_retry_horizon_seconds,
            backoff_base_seconds=settings.webhook_backoff_seconds,
            backoff_cap_seconds=settings.webhook_max_backoff_seconds,
        )


def enqueue_deliveries(
    conn: DbConn, signals: Iterable[Signal], *, urls: list[str], min_score: float
) -> int:
    """Outbox rows for the live signals scoring >= `min_score`; returns rows added.

    Call inside the transaction that stores the signals (the rows reference them).
    """
    rows = [
        (s.id, url, signal_payload(s).decode())
        for s in signals
        if s.run_id == LIVE_RUN and s.score >= min_score  # NaN never passes
        for url in urls
    ]
    if not rows:
        return 0
    added = 0
    with conn.cursor() as cur:
        for row in rows:
            cur.execute(
                "INSERT INTO webhook_outbox (signal_id, url, body) VALUES (%s, %s, %s)"
                " ON CONFLICT (signal_id, url) DO NOTHING",
                row,
            )
            added += cur.rowcount
    return added


def _headers(row: dict[str, Any], policy: DeliveryPolicy) -> dict[str, str]:
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        EVENT_HEADER: "signal",
        DELIVERY_HEADER: str(row["id"]),
        IDEMPOTENCY_HEADER: str(row["signal_id"]),
        TIMESTAMP_HEADER: str(timestamp),
    }
    if policy.secret is not None:
        headers[SIGNATURE_HEADER] = sign(row["body"].encode(), policy.secret, timestamp)
    return headers


def _post(
    client: httpx.Client, row: dict[str, Any], policy: DeliveryPolicy
) -> tuple[str, int | None, str | None, float | None]:
    """One attempt: (outcome, HTTP status, error, Retry-After s); outcome in
    delivered / rejected / retry."""
    try:
        response = client.post(
            row["url"], content=row["body"].encode(), headers=_headers(row, policy)
        )
    except httpx.HTTPError as error:  # refused, reset, timed out: worth another try
        return "retry", None, type(error).__name__, None
    code = response.status_code
    if response.is_success:
        return "delivered", code, None, None
    if code in (408, 429) or code >= 500:
        raw = response.headers.get("Retry-After", "").strip()
        return "retry", code, f"HTTP {code}", float(raw) if raw.isdigit() else None
    return "rejected", code, f"HTTP {code}", None


def deliver_due(
    conn: DbConn, client: httpx.Client, policy: DeliveryPolicy, *, limit: int = CLAIM_BATCH
) -> dict[str, int]:
    """Claim up to `limit` due rows, post each, record the outcomes; returns outcome counts."""
    done = {"delivered": 0, "rejected": 0, "retry": 0, "failed": 0}
    with conn.transaction():
        rows = conn.execute(
            "SELECT id, signal_id, url, body, attempts,"
            " extract(epoch FROM now() - created_at) AS age FROM webhook_outbox"
            " WHERE status = 'pending' AND next_attempt_at <= now()"
            " ORDER BY next_attempt_at, id LIMIT %s FOR UPDATE SKIP LOCKED",
            (limit,),
        ).fetchall()
        for row in rows:
            outcome, code, error, retry_after = _post(client, row, policy)
            attempts = int(row["attempts"]) + 1
            delay = backoff_seconds(
                attempts - 1, base=policy.backoff_base_seconds, cap=policy.backoff_cap_seconds
            )
            if retry_after is not None:
                delay = max(delay, min(retry_after, policy.backoff_cap_seconds))
            if outcome == "retry" and float(row["age"]) + delay > policy.horizon_seconds:
                outcome = "failed"
                logger.warning(
                    "webhook %s: signal %s not delivered within %.0f s (%s)",
                    redact_url(row["url"]),
                    row["signal_id"],
                    policy.horizon_seconds,
                    error,
                )
            status = "pending" if outcome == "retry" else outcome
            conn.execute(
                "UPDATE webhook_outbox SET status = %s, attempts = %s, last_attempt_at = now(),"
                " next_attempt_at = now() + make_interval(secs => %s), last_status = %s,"
                " last_error = %s, delivered_at = CASE WHEN %s THEN now() END WHERE id = %s",
                (status, attempts, delay, code, error, outcome == "delivered", row["id"]),
            )
            done[outcome] += 1
    return done


def delivery_counts(conn: DbConn) -> dict[str, int]:
    """Deliveries by status, from the table (every status present, 0 when none)."""
    rows = conn.execute("SELECT status, count(*) AS n FROM webhook_outbox GROUP BY status")
    counts = dict.fromkeys(STATUSES, 0)
    counts.update({str(r["status"]): int(r["n"]) for r in rows.fetchall()})
    return counts


class DeliveryWorker:
    """A background thread that drains the outbox until `stop()`; survives database loss.

    Several may run at once, in one process or many: `deliver_due` never hands one row to
    two of them.
    """

    def __init__(self, url: str, policy: DeliveryPolicy, *, name: str = "webhook-worker") -> None:
        self._db = ReconnectingConnection(url)
        self._policy = policy
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.delivered = 0

    def start(self) -> DeliveryWorker:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def run_forever(self) -> None:
        """Drain in the calling thread until `stop()` (what `signalengine webhooks` runs)."""
        self._run()

    def _run(self) -> None:
        headers = {"User-Agent": _USER_AGENT}
        with httpx.Client(timeout=self._policy.timeout_seconds, headers=headers) as client:
            attempt = 0
            while not self._stop.is_set():
                try:
                    conn = self._db.get()
                    done = deliver_due(conn, client, self._policy)
                    self.delivered += done["delivered"]
                    for status, n in delivery_counts(conn).items():
                        OUTBOX_DELIVERIES.labels(status).set(n)
                    attempt = 0
                    if not any(done.values()):
                        self._stop.wait(IDLE_POLL_SECONDS)
                except (psycopg.Error, OSError, TemporaryDatabaseError) as error:
                    self._db.close()
                    delay = backoff_seconds(attempt, base=0.5, cap=15.0)
                    logger.warning(
                        "webhook worker: database lost (%s); retry in %.1f s", error, delay
                    )
                    attempt += 1
                    self._stop.wait(delay)
                except Exception:  # a bug must not end delivery for good
                    logger.exception("webhook worker crashed; restarting in 5 s")
                    self._stop.wait(5.0)
        self._db.close()


def serve_outbox(url: str, policy: DeliveryPolicy, *, workers: int, stop: threading.Event) -> int:
    """Run `workers` delivery threads until `stop` is set; returns deliveries made."""
    running = [DeliveryWorker(url, policy, name=f"webhooks-{i}").start() for i in range(workers)]
    stop.wait()
    for worker in running:
        worker.stop()
    return sum(worker.delivered for worker in running)

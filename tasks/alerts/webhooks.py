"""Alert webhooks: each strong live signal POSTed as signed JSON, off the stream's hot path.

What is sent
    Every signal with ``score >= webhook_min_score`` goes to every URL in ``webhook_urls``
    as one JSON object: its `signals` row (DESIGN §3) made JSON-safe (times as ISO 8601
    UTC strings, NaN and infinities as null), compact UTF-8 with sorted keys.

Headers
    ``Content-Type: application/json``
    ``X-SignalEngine-Event: signal``
    ``X-SignalEngine-Delivery``: a UUID, the same on every retry of one delivery
    ``X-SignalEngine-Timestamp``: Unix time in whole seconds at which this attempt was signed
    ``X-SignalEngine-Signature: sha256=<hex>`` (only with a ``webhook_secret``), where
    ``hex = HMAC-SHA256(key=secret as UTF-8, msg=timestamp as ASCII + b"." + raw body)``.
    Signing the timestamp with the body lets a receiver refuse replayed requests:
    `verify_signature` rejects timestamps more than 5 minutes away from its clock.

Delivery
    `WebhookDispatcher.dispatch` only serialises and enqueues, so the stream never waits
    on a receiver. Each URL has its own bounded queue and daemon worker thread, so a dead
    receiver delays nobody else; when a queue is full the oldest waiting delivery is
    dropped. Connection errors, timeouts, 5xx and 429 are retried with exponential
    backoff (``Retry-After`` in seconds is honoured, capped); other 4xx are final.
    Delivery is at least once: receivers dedupe on the body's ``id`` (the signal id, stable
    across retries and stream restarts). Outcomes are counted in
    ``webhook_deliveries_total{outcome}`` (`tasks.metrics.REGISTRY`): ``delivered``,
    ``failed`` (attempts exhausted), ``rejected`` (4xx), ``dropped`` (queue overflow or
    shutdown).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import random
import threading
import time
import uuid
from collections import Counter as Tally
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pandas as pd
from prometheus_client import Counter, Gauge
from pydantic import SecretStr

from signalengine.core.config import Settings
from signalengine.core.errors import ConfigurationError
from signalengine.tasks.engine.records import Signal
from signalengine.tasks.metrics import REGISTRY

__all__ = [
    "DELIVERY_HEADER",
    "EVENT_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WebhookDispatcher",
    "sign",
    "signal_payload",
    "verify_signature",
]

SIGNATURE_HEADER = "X-SignalEngine-Signature"
TIMESTAMP_HEADER = "X-SignalEngine-Timestamp"
DELIVERY_HEADER = "X-SignalEngine-Delivery"
EVENT_HEADER = "X-SignalEngine-Event"
DEFAULT_TOLERANCE_SECONDS = 300.0
DEFAULT_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 30.0
DROP_LOG_INTERVAL_SECONDS = 60.0
OUTCOMES = ("delivered", "failed", "rejected", "dropped")
_USER_AGENT = "SignalEngine-Webhook/1"

logger = logging.getLogger(__name__)

WEBHOOK_DELIVERIES = Counter(
    "webhook_deliveries_total",
    "Webhook deliveries by final outcome: delivered, failed (attempts exhausted),"
    " rejected (4xx), dropped (queue overflow or shutdown).",
    ["outcome"],
    registry=REGISTRY,
)
WEBHOOK_ATTEMPTS = Counter(
    "webhook_delivery_attempts_total",
    "Webhook HTTP attempts by result: ok, retry (connection error, timeout, 5xx, 429), error.",
    ["result"],
    registry=REGISTRY,
)
WEBHOOK_QUEUE_DEPTH = Gauge(
    "webhook_queue_depth",
    "Webhook deliveries waiting, over all URLs.",
    registry=REGISTRY,
)
for _outcome in OUTCOMES:  # export every series from the start, at 0
    WEBHOOK_DELIVERIES.labels(_outcome)
for _result in ("ok", "retry", "error"):
    WEBHOOK_ATTEMPTS.labels(_result)


def _json_safe(value: Any) -> Any:
    """A JSON-encodable copy: UTC ISO times, finite floats or None, plain containers."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    if isinstance(value, datetime):
        if value is pd.NaT:
            return None
        aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return aware.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_json_safe(v) for v in value]
    return str(value)  # UUID, Decimal, Timedelta: their canonical text


def signal_payload(signal: Signal | Mapping[str, Any]) -> bytes:
    """The webhook body of a signal: compact, key-sorted UTF-8 JSON of its record."""
    record = signal.as_record() if isinstance(signal, Signal) else signal
    return json.dumps(
        _json_safe(record), separators=(",", ":"), sort_keys=True, allow_nan=False
    ).encode()


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """``sha256=<hex>`` of HMAC-SHA256(secret, ``<timestamp>.`` + body)."""
    message = str(int(timestamp)).encode("ascii") + b"." + body
    return "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify_signature(
    body: bytes,
    headers: Mapping[str, str] | Any,
    secret: str | SecretStr,
    *,
    tolerance_seconds: float | None = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """True when `headers` carry a valid signature of the raw `body` made with `secret`.

    `headers` is any mapping with ``.items()`` (dict, ``http.server`` message, Starlette
    headers); names are matched case-insensitively. A timestamp further than
    `tolerance_seconds` from `now` (Unix s; default the clock) fails; None disables that.
    """
    by_name = {str(k).lower(): str(v) for k, v in headers.items()}
    given = by_name.get(SIGNATURE_HEADER.lower(), "")
    raw_ts = by_name.get(TIMESTAMP_HEADER.lower(), "")
    if not given.startswith("sha256=") or not raw_ts.isdigit():
        return False
    timestamp = int(raw_ts)
    clock = time.time() if now is None else now
    if tolerance_seconds is not None and abs(clock - timestamp) > tolerance_seconds:
        return False
    key = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
    # compare_digest takes the same time wherever the strings differ: no timing oracle.
    return hmac.compare_digest(sign(body, key, timestamp), given)


def redact_url(url: str) -> str:
    """scheme://host/path of a URL: query strings and credentials often hold tokens."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}{parts.path}"


_redact = redact_url


@dataclass(frozen=True)
class _Delivery:
    id: str
    signal_id: str
    body: bytes


class _Endpoint:
    """One URL: its bounded queue, its worker thread and HTTP client."""

    def __init__(self, url: str, queue_size: int) -> None:
        self.url = url
        self.queue: deque[_Delivery] = deque()
        self.queue_size = queue_size
        self.cond = threading.Condition()
        self.busy = False
        self.thread: threading.Thread | None = None
        self._drops_unlogged = 0
        self._drop_logged_at = -math.inf

    def put(self, delivery: _Delivery) -> _Delivery | None:
        """Enqueue; returns the oldest delivery when it had to make room for this one."""
        dropped = None
        with self.cond:
            if len(self.queue) >= self.queue_size:
                dropped = self.queue.popleft()
            self.queue.append(delivery)
            self.cond.notify_all()
        if dropped is None:
            WEBHOOK_QUEUE_DEPTH.inc()
        return dropped

    def note_drop(self, dropped: _Delivery) -> None:
        """Log drops at most once a minute: logging each one would slow `dispatch` down."""
        self._drops_unlogged += 1
        now = time.monotonic()
        if now - self._drop_logged_at >= DROP_LOG_INTERVAL_SECONDS:
            logger.warning(
                "webhook queue of %s full: dropped %d deliveries (latest signal %s)",
                _redact(self.url),
                self._drops_unlogged,
                dropped.signal_id,
            )
            self._drops_unlogged, self._drop_logged_at = 0, now

    def idle(self) -> bool:
        return not self.queue and not self.busy


class WebhookDispatcher:
    """Posts signals to webhook URLs from background threads; `dispatch` never blocks.

    Use as a context manager, or call `close()`: it waits up to its timeout for the
    queues to drain, then drops what is left.
    """

    def __init__(
        self,
        urls: Iterable[str],
        *,
        secret: str | SecretStr | None = None,
        min_score: float = 0.8,
        timeout_seconds: float = 5.0,
        max_attempts: int = 5,
        queue_size: int = 1000,
        backoff_seconds: float = DEFAULT_BACKOFF_SECONDS,
        max_backoff_seconds: float = MAX_BACKOFF_SECONDS,
    ) -> None:
        urls = list(urls)
        bad = [
            u
            for u in urls
            if urlsplit(u).scheme not in ("http", "https") or not urlsplit(u).hostname
        ]
        if bad:
            raise ConfigurationError(f"webhook URLs must be http(s)://host/...: {bad}")
        if max_attempts < 1 or queue_size < 1:
            raise ConfigurationError("webhook max_attempts and queue_size must be >= 1")
        self._secret = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
        self.min_score = min_score
        self._timeout = timeout_seconds
        self._max_attempts = max_attempts
        self._backoff = backoff_seconds
        self._max_backoff = max_backoff_seconds
        self._abort = threading.Event()
        self._closed = False
        self._stats: Tally[str] = Tally()
        self._stats_lock = threading.Lock()
        self._endpoints = [_Endpoint(url, queue_size) for url in urls]
        for endpoint in self._endpoints:
            endpoint.thread = threading.Thread(
                target=self._work,
                args=(endpoint,),
                daemon=True,
                name=f"webhook {_redact(endpoint.url)}",
            )
            endpoint.thread.start()

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookDispatcher | None:
        """A dispatcher for the configured URLs, or None when there are none."""
        if not settings.webhook_urls:
            return None
        return cls(
            settings.webhook_urls,
            secret=settings.webhook_secret,
            min_score=settings.webhook_min_score,
            timeout_seconds=settings.webhook_timeout_seconds,
            max_attempts=settings.webhook_max_attempts,
            queue_size=settings.webhook_queue_size,
        )

    def __enter__(self) -> WebhookDispatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> dict[str, int]:
        """This dispatcher's deliveries (one per signal and URL): queued, then by outcome."""
        with self._stats_lock:
            return {k: self._stats[k] for k in ("queued", *OUTCOMES)}

    def _count(self, outcome: str) -> None:
        with self._stats_lock:
            self._stats[outcome] += 1
        if outcome in OUTCOMES:
            WEBHOOK_DELIVERIES.labels(outcome).inc()

    def dispatch(self, signals: Iterable[Signal | Mapping[str, Any]]) -> int:
        """Queue each signal with score >= min_score for every URL; returns signals queued.

        Never waits on the network: it serialises and enqueues only.
        """
        if self._closed or not self._endpoints:
            return 0
        queued = 0
        for signal in signals:
            record = signal.as_record() if isinstance(signal, Signal) else signal
            score = record.get("score")
            if score is None or not float(score) >= self.min_score:  # NaN is never sent
                continue
            body = signal_payload(record)
            for endpoint in self._endpoints:
                dropped = endpoint.put(_Delivery(str(uuid.uuid4()), str(record.get("id")), body))
                self._count("queued")
                if dropped is not None:
                    self._count("dropped")
                    endpoint.note_drop(dropped)
            queued += 1
        return queued

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every queue is empty and nothing is in flight; False on timeout."""
        deadline = time.monotonic() + timeout
        for endpoint in self._endpoints:
            with endpoint.cond:
                if not endpoint.cond.wait_for(endpoint.idle, max(0.0, deadline - time.monotonic())):
                    return False
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Stop taking signals, drain for up to `timeout` s, then drop what is left."""
        self._closed = True
        self.wait_idle(timeout)
        self._abort.set()
        for endpoint in self._endpoints:
            with endpoint.cond:
                endpoint.cond.notify_all()
        for endpoint in self._endpoints:
            if endpoint.thread is not None:
                # An attempt in flight ends within the HTTP timeout; the thread is a daemon.
                endpoint.thread.join(timeout=self._timeout + 1.0)
            with endpoint.cond:  # anything a concurrent `dispatch` slipped in after the worker
                self._drop_queued(endpoint)

    def _drop_queued(self, endpoint: _Endpoint) -> None:
        """Empty a queue as dropped; the caller holds `endpoint.cond`."""
        left = len(endpoint.queue)
        endpoint.queue.clear()
        WEBHOOK_QUEUE_DEPTH.dec(left)
        for _ in range(left):
            self._count("dropped")
        endpoint.cond.notify_all()

    def _work(self, endpoint: _Endpoint) -> None:
        with httpx.Client(timeout=self._timeout, headers={"User-Agent": _USER_AGENT}) as client:
            while True:
                with endpoint.cond:
                    endpoint.cond.wait_for(lambda: bool(endpoint.queue) or self._abort.is_set())
                    if self._abort.is_set():
                        self._drop_queued(endpoint)
                        return
                    delivery = endpoint.queue.popleft()
                    endpoint.busy = True
                WEBHOOK_QUEUE_DEPTH.dec()
                try:
                    outcome = self._deliver(client, endpoint.url, delivery)
                except Exception:  # a bug here must not kill the thread and stall the queue
                    logger.exception("webhook delivery to %s crashed", _redact(endpoint.url))
                    outcome = "failed"
                self._count(outcome)
                with endpoint.cond:
                    endpoint.busy = False
                    endpoint.cond.notify_all()

    def _headers(self, delivery: _Delivery) -> dict[str, str]:
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            EVENT_HEADER: "signal",
            DELIVERY_HEADER: delivery.id,
            TIMESTAMP_HEADER: str(timestamp),
        }
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = sign(delivery.body, self._secret, timestamp)
        return headers

    def _deliver(self, client: httpx.Client, url: str, delivery: _Delivery) -> str:
        """POST with retries; returns the outcome (delivered, failed, rejected, dropped)."""
        for attempt in range(1, self._max_attempts + 1):
            retry_after: float | None = None
            try:
                response = client.post(url, content=delivery.body, headers=self._headers(delivery))
            except httpx.HTTPError as exc:  # refused, reset, timed out: worth another try
                reason = type(exc).__name__
            else:
                if response.is_success:
                    WEBHOOK_ATTEMPTS.labels("ok").inc()
                    return "delivered"
                if response.status_code != 429 and response.status_code < 500:
                    WEBHOOK_ATTEMPTS.labels("error").inc()
                    logger.warning(
                        "webhook %s refused signal %s: HTTP %d",
                        _redact(url),
                        delivery.signal_id,
                        response.status_code,
                    )
                    return "rejected"
                reason = f"HTTP {response.status_code}"
                raw = response.headers.get("Retry-After", "")
                retry_after = float(raw) if raw.isdigit() else None
            WEBHOOK_ATTEMPTS.labels("retry").inc()
            if attempt == self._max_attempts:
                logger.warning(
                    "webhook %s: signal %s not delivered after %d attempts (%s)",
                    _redact(url),
                    delivery.signal_id,
                    attempt,
                    reason,
                )
                return "failed"
            if self._abort.wait(self._delay(attempt, retry_after)):
                return "dropped"
        return "failed"

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Backoff before attempt `attempt + 1`: base·2^(attempt-1), jittered ±20 %, capped."""
        if retry_after is not None:
            return min(retry_after, self._max_backoff)
        base = min(self._max_backoff, self._backoff * 2.0 ** (attempt - 1))
        return float(base * random.uniform(0.8, 1.2))

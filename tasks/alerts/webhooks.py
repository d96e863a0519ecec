"""Alert webhooks: what is sent and how it is signed (delivery is `outbox`).

What is sent
    Every live signal with ``score >= webhook_min_score`` goes to every URL in
    ``webhook_urls`` as one JSON object: its `signals` row (DESIGN §3) made JSON-safe
    (times as ISO 8601 UTC strings, NaN and infinities as null), compact UTF-8 with
    sorted keys.

Headers
    ``Content-Type: application/json``
    ``X-SignalEngine-Event: signal``
    ``X-SignalEngine-Delivery``: the outbox row id, the same on every retry of a delivery
    ``Idempotency-Key``: the signal id, the same across retries, restarts and workers
    ``X-SignalEngine-Timestamp``: Unix time in whole seconds at which this attempt was signed
    ``X-SignalEngine-Signature: sha256=<hex>`` (only with a ``webhook_secret``), where
    ``hex = HMAC-SHA256(key=secret as UTF-8, msg=timestamp as ASCII + b"." + raw body)``.
    Signing the timestamp with the body lets a receiver refuse replayed requests:
    `verify_signature` rejects timestamps more than 5 minutes away from its clock.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
from pydantic import SecretStr

from signalengine.tasks.engine.records import Signal

__all__ = [
    "DELIVERY_HEADER",
    "EVENT_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "redact_url",
    "sign",
    "signal_payload",
    "verify_signature",
]

SIGNATURE_HEADER = "X-SignalEngine-Signature"
TIMESTAMP_HEADER = "X-SignalEngine-Timestamp"
DELIVERY_HEADER = "X-SignalEngine-Delivery"
EVENT_HEADER = "X-SignalEngine-Event"
DEFAULT_TOLERANCE_SECONDS = 300.0


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

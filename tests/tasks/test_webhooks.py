"""Webhook bodies and signatures; `Receiver`, a real HTTP receiver on 127.0.0.1, is what the
outbox tests (tests/tasks/test_outbox.py) deliver to."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pandas as pd
import pytest

from signalengine.tasks.alerts.webhooks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    redact_url,
    sign,
    signal_payload,
    verify_signature,
)
from signalengine.tasks.engine.records import Signal

SECRET = "test-secret-not-for-production"


class Receiver:
    """A webhook receiver: answers from `script` (then 200), records every request."""

    def __init__(self, script: list[int] | None = None, gate: threading.Event | None = None):
        self.script: deque[int] = deque(script or [])
        self.gate = gate
        self.requests: list[tuple[dict[str, str], bytes, int]] = []
        self.arrived = threading.Event()
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.arrived.set()
                if receiver.gate is not None:
                    receiver.gate.wait(10)
                with receiver.lock:
                    status = receiver.script.popleft() if receiver.script else 200
                    receiver.requests.append((dict(self.headers.items()), body, status))
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", "1")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook?token=t"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def accepted(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(body) for _, body, status in self.requests if status < 300]

    def close(self) -> None:
        if self.gate is not None:
            self.gate.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(script: list[int] | None = None, gate: threading.Event | None = None) -> Receiver:
        made.append(Receiver(script, gate))
        return made[-1]

    yield make
    for r in made:
        r.close()


def make_signal(score: float, **overrides: Any) -> Signal:
    ts = pd.Timestamp("2025-03-01 12:00", tz="UTC")
    fields: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "run_id": "live",
        "exchange": "binance",
        "symbol": "BTC/USDT",
        "timeframe": "5m",
        "direction": "long",
        "ts": ts,
        "emitted_at": ts + pd.Timedelta(minutes=5),
        "entry_price": 60_000.0,
        "take_profit": 61_200.0,
        "stop_loss": 59_400.0,
        "expires_at": ts + pd.Timedelta(hours=1, minutes=5),
        "score": score,
        "events": [{"type": "ema_cross", "direction": "long"}],
        "mtf_aligned": True,
        "mtf_score": 0.75,
        "mtf_details": {"1m": "long", "5m": "long", "15m": "neutral"},
        "ai_probability": None,
        "model_version": None,
        "features": {"rsi_14": 61.5, "volume_z": float("nan")},
    }
    fields.update(overrides)
    return Signal(**fields)


def test_signature_verifies_and_body_is_the_json_safe_record() -> None:
    signal = make_signal(0.9)
    body = signal_payload(signal)
    stamp = int(time.time())
    headers = {TIMESTAMP_HEADER: str(stamp), SIGNATURE_HEADER: sign(body, SECRET, stamp)}
    assert headers[SIGNATURE_HEADER].startswith("sha256=")
    assert verify_signature(body, headers, SECRET)
    # names are case-insensitive, as HTTP says
    assert verify_signature(body, {k.lower(): v for k, v in headers.items()}, SECRET)
    assert not verify_signature(body + b" ", headers, SECRET)
    assert not verify_signature(body, headers, "another-secret")
    assert not verify_signature(body, {TIMESTAMP_HEADER: str(stamp)}, SECRET)  # unsigned
    # the timestamp is signed: replaying the body under a fresh timestamp fails ...
    forged = {**headers, TIMESTAMP_HEADER: str(stamp + 1)}
    assert not verify_signature(body, forged, SECRET, tolerance_seconds=None)
    # ... and an old (replayed) request is refused
    assert not verify_signature(body, headers, SECRET, now=time.time() + 3600)

    payload = json.loads(body)
    assert payload["id"] == signal.id and payload["score"] == 0.9
    assert payload["ts"] == "2025-03-01T12:00:00+00:00"
    assert payload["expires_at"] == "2025-03-01T13:05:00+00:00"
    assert payload["features"] == {"rsi_14": 61.5, "volume_z": None}
    assert payload["mtf_details"]["15m"] == "neutral"
    assert signal_payload(signal.as_record()) == body  # rows read back encode the same


def test_urls_are_shown_without_query_or_credentials() -> None:
    assert redact_url("https://user:pw@hooks.example:8443/se?token=abc") == (
        "https://hooks.example:8443/se"
    )

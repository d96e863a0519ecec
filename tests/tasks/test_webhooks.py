"""Alert webhooks against a real HTTP receiver on 127.0.0.1 (http.server in a thread)."""

from __future__ import annotations

import json
import math
import socket
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
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookDispatcher,
    verify_signature,
)
from signalengine.tasks.engine.records import Signal
from signalengine.tasks.metrics import REGISTRY
from tests.utils.net import free_port

SECRET = "test-secret-not-for-production"
FAST = {"timeout_seconds": 2.0, "backoff_seconds": 0.01, "max_backoff_seconds": 0.05}


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


@pytest.fixture
def dispatchers() -> Iterator[Callable[..., WebhookDispatcher]]:
    made: list[WebhookDispatcher] = []

    def make(urls: list[str], **kwargs: Any) -> WebhookDispatcher:
        made.append(WebhookDispatcher(urls, **{**FAST, **kwargs}))
        return made[-1]

    yield make
    for d in made:
        d.close(timeout=0.5)


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


def counted(outcome: str) -> float:
    value = REGISTRY.get_sample_value("webhook_deliveries_total", {"outcome": outcome})
    return value or 0.0


def test_signature_verifies_and_body_is_the_json_safe_record(
    receiver: Callable[..., Receiver], dispatchers: Callable[..., WebhookDispatcher]
) -> None:
    rx = receiver()
    dispatcher = dispatchers([rx.url], secret=SECRET, min_score=0.8)
    signal = make_signal(0.9)
    assert dispatcher.dispatch([signal]) == 1
    assert dispatcher.wait_idle(5)

    ((headers, body, status),) = rx.requests
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert headers[SIGNATURE_HEADER].startswith("sha256=")
    assert abs(int(headers[TIMESTAMP_HEADER]) - time.time()) < 10
    assert verify_signature(body, headers, SECRET)
    # names are case-insensitive, as HTTP says
    assert verify_signature(body, {k.lower(): v for k, v in headers.items()}, SECRET)
    assert not verify_signature(body + b" ", headers, SECRET)
    assert not verify_signature(body, headers, "another-secret")
    # the timestamp is signed: replaying the body under a fresh timestamp fails ...
    forged = {**headers, TIMESTAMP_HEADER: str(int(headers[TIMESTAMP_HEADER]) + 1)}
    assert not verify_signature(body, forged, SECRET, tolerance_seconds=None)
    # ... and an old (replayed) request is refused
    assert not verify_signature(body, headers, SECRET, now=time.time() + 3600)

    payload = json.loads(body)
    assert payload["id"] == signal.id and payload["score"] == 0.9
    assert payload["ts"] == "2025-03-01T12:00:00+00:00"
    assert payload["expires_at"] == "2025-03-01T13:05:00+00:00"
    assert payload["features"] == {"rsi_14": 61.5, "volume_z": None}
    assert payload["mtf_details"]["15m"] == "neutral"


def test_without_a_secret_nothing_is_signed(
    receiver: Callable[..., Receiver], dispatchers: Callable[..., WebhookDispatcher]
) -> None:
    rx = receiver()
    dispatcher = dispatchers([rx.url])
    dispatcher.dispatch([make_signal(0.99)])
    assert dispatcher.wait_idle(5)
    ((headers, body, _),) = rx.requests
    assert SIGNATURE_HEADER not in headers
    assert not verify_signature(body, headers, SECRET)


def test_signals_below_the_threshold_are_not_sent(
    receiver: Callable[..., Receiver], dispatchers: Callable[..., WebhookDispatcher]
) -> None:
    rx = receiver()
    dispatcher = dispatchers([rx.url], min_score=0.8)
    signals = [make_signal(s) for s in (0.5, 0.79, 0.8, 0.95, math.nan)]
    assert dispatcher.dispatch(signals) == 2
    # plain records (e.g. rows read back from the database) work too
    assert dispatcher.dispatch([make_signal(0.3).as_record()]) == 0
    assert dispatcher.wait_idle(5)
    assert sorted(p["score"] for p in rx.accepted()) == [0.8, 0.95]


def test_fails_twice_then_one_accepted_delivery(
    receiver: Callable[..., Receiver], dispatchers: Callable[..., WebhookDispatcher]
) -> None:
    rx = receiver(script=[503, 500])
    before = counted("delivered")
    dispatcher = dispatchers([rx.url], secret=SECRET, max_attempts=4)
    signal = make_signal(0.9)
    dispatcher.dispatch([signal])
    assert dispatcher.wait_idle(10)

    assert [status for _, _, status in rx.requests] == [503, 500, 200]
    assert [p["id"] for p in rx.accepted()] == [signal.id]
    # one delivery, retried: the same delivery id every time, each attempt signed afresh
    assert len({h[DELIVERY_HEADER] for h, _, _ in rx.requests}) == 1
    assert all(verify_signature(body, h, SECRET) for h, body, _ in rx.requests)
    assert dispatcher.stats()["delivered"] == 1 and dispatcher.stats()["failed"] == 0
    assert counted("delivered") - before == 1


def test_a_4xx_is_final(
    receiver: Callable[..., Receiver], dispatchers: Callable[..., WebhookDispatcher]
) -> None:
    rx = receiver(script=[400])
    dispatcher = dispatchers([rx.url])
    dispatcher.dispatch([make_signal(0.9)])
    assert dispatcher.wait_idle(5)
    assert len(rx.requests) == 1
    assert dispatcher.stats()["rejected"] == 1


HUNG_TIMEOUT = 30.0


@pytest.mark.parametrize("dead", ["refused", "hung"])
def test_a_dead_receiver_blocks_neither_dispatch_nor_other_receivers(
    dead: str, receiver: Callable[..., Receiver], dispatchers: Callable[..., WebhookDispatcher]
) -> None:
    blackhole = socket.socket()
    try:
        if dead == "hung":  # accepts connections in the kernel backlog, never answers
            blackhole.bind(("127.0.0.1", 0))
            blackhole.listen(100)
            port = blackhole.getsockname()[1]
        else:  # nothing listens: connection refused
            port = free_port()
        healthy = receiver()
        failed_before = counted("failed")
        # A hung receiver holds each attempt for the whole timeout: a dispatch that waited
        # for it even once could not return before HUNG_TIMEOUT. The checks below follow
        # from that ordering, not from how fast this machine is (no wall-clock bound).
        dispatcher = dispatchers(
            [f"http://127.0.0.1:{port}/hook", healthy.url],
            timeout_seconds=HUNG_TIMEOUT if dead == "hung" else 0.3,
            max_attempts=2,
            queue_size=5,
        )
        signals = [make_signal(0.9) for _ in range(100)]

        queued: list[int] = []
        caller = threading.Thread(target=lambda: queued.append(dispatcher.dispatch(signals)))
        caller.start()
        caller.join(HUNG_TIMEOUT / 3)
        assert queued == [100], "dispatch did not return while the receiver was dead"
        if dead == "hung":
            # no attempt on the hung URL has ended yet, so dispatch waited for none
            assert dispatcher.stats()["failed"] == 0

        # the healthy receiver is served while the dead one is still being retried
        deadline = time.monotonic() + 5
        while len(healthy.accepted()) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(healthy.accepted()) >= 5
        blackhole.close()  # resets the hung connections: its attempts now fail fast
        assert dispatcher.wait_idle(15)
        stats = dispatcher.stats()
        # 100 for each URL: the dead URL's all failed or were dropped from its full queue
        assert stats["queued"] == 200
        assert stats["delivered"] + stats["failed"] + stats["dropped"] == 200
        assert stats["failed"] >= 5
        assert stats["delivered"] == len(healthy.accepted())
        assert counted("failed") - failed_before == stats["failed"]
    finally:
        blackhole.close()


def test_queue_overflow_drops_the_oldest(
    receiver: Callable[..., Receiver], dispatchers: Callable[..., WebhookDispatcher]
) -> None:
    gate = threading.Event()
    rx = receiver(gate=gate)
    dropped_before = counted("dropped")
    dispatcher = dispatchers([rx.url], queue_size=2, timeout_seconds=10)
    a, b, c, d = (make_signal(0.9) for _ in range(4))

    dispatcher.dispatch([a])
    assert rx.arrived.wait(5)  # `a` is in flight, held at the receiver: the queue is empty
    dispatcher.dispatch([b, c, d])  # the queue holds 2: `b` makes way for `d`
    assert dispatcher.stats()["dropped"] == 1
    gate.set()
    assert dispatcher.wait_idle(5)

    assert [p["id"] for p in rx.accepted()] == [a.id, c.id, d.id]
    assert dispatcher.stats()["delivered"] == 3
    assert counted("dropped") - dropped_before == 1


def test_close_drops_what_it_cannot_deliver(dispatchers: Callable[..., WebhookDispatcher]) -> None:
    dispatcher = dispatchers(
        [f"http://127.0.0.1:{free_port()}/"],
        max_attempts=1000,
        backoff_seconds=5.0,
        max_backoff_seconds=5.0,
    )
    dispatcher.dispatch([make_signal(0.9) for _ in range(3)])
    started = time.monotonic()
    dispatcher.close(timeout=0.2)
    assert time.monotonic() - started < 3
    assert dispatcher.stats()["dropped"] == 3
    assert dispatcher.dispatch([make_signal(0.9)]) == 0

"""GET /webhooks/deliveries: delivery state, attempts and counts, URLs redacted."""

from __future__ import annotations

from tests.tasks.test_outbox import _store
from tests.utils.receiver import WebhookReceiver


def test_deliveries_route_shows_state_attempts_and_counts(db, client) -> None:  # type: ignore[no-untyped-def]
    receiver = WebhookReceiver()
    _store(db, [0.9, 0.95], [receiver.url + "?token=secret"])
    body = client.get("/webhooks/deliveries").json()
    assert body["counts"]["pending"] == 2
    assert {d["status"] for d in body["deliveries"]} == {"pending"}
    assert all("secret" not in d["url"] for d in body["deliveries"])
    assert client.get("/webhooks/deliveries", params={"status": "nope"}).status_code == 422

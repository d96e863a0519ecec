"""Alerts: strong live signals POSTed as signed JSON webhooks, through a durable outbox."""

from signalengine.tasks.alerts.outbox import DeliveryPolicy, DeliveryWorker, enqueue_deliveries
from signalengine.tasks.alerts.webhooks import signal_payload, verify_signature

__all__ = [
    "DeliveryPolicy",
    "DeliveryWorker",
    "enqueue_deliveries",
    "signal_payload",
    "verify_signature",
]

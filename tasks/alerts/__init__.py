"""Alerts: strong live signals POSTed as signed JSON webhooks."""

from signalengine.tasks.alerts.webhooks import WebhookDispatcher, signal_payload, verify_signature

__all__ = ["WebhookDispatcher", "signal_payload", "verify_signature"]

"""SignalEngine's HTTP API: REST routes, the /ws/feed WebSocket, /metrics and the dashboard."""

from signalengine.api.main import create_app, serve

__all__ = ["create_app", "serve"]

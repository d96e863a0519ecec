"""Telemetry off for us and every child process: nothing may leave 127.0.0.1."""

from __future__ import annotations

import os

TELEMETRY_OFF = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY": "false",
}


def disable_telemetry() -> None:
    """Set the opt-outs in this process's environment (children inherit them)."""
    for key, value in TELEMETRY_OFF.items():
        os.environ[key] = value

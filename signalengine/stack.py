"""What a running `up` shares with other commands, and how it starts and stops cleanly.

- The stack file (`state_dir/stack.json`, written once every service answers, removed at
  stop) holds the URLs of its Prefect API, MLflow server, simulator and database. Every
  CLI command started while it runs reads it (`use_running_stack`), so its flow runs land
  in the stack's Prefect UI and its models in the stack's MLflow, instead of a temporary
  Prefect server of its own; a variable already set in the environment wins.
- The simulator's clock is anchored right after the newest stored bar (`sim_anchor_ms`):
  it runs faster than real time, so a restarted demo whose clock began at "now" again
  would lie behind the stored bars and the stream would store nothing for a long while.
- The stream's Prefect run ends Cancelled, never left Running: `up` stops the stream
  first, then marks any of its runs still unfinished Cancelled (`cancel_stream_runs`);
  runs left Running by a killed earlier stack are marked so at the next start.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import psycopg

STACK_FILE = "stack.json"
MINUTE_MS = 60_000

__all__ = [
    "STACK_FILE",
    "cancel_stream_runs",
    "has_trained_model",
    "read_running_stack",
    "remove_stack_file",
    "sim_anchor_ms",
    "use_running_stack",
    "write_stack_file",
]

# stack.json key -> the environment variable it provides to other commands
_ENV = {
    "prefect_api_url": "PREFECT_API_URL",
    "mlflow_tracking_uri": "SIGNALENGINE_MLFLOW_TRACKING_URI",
    "exchange_url": "SIGNALENGINE_EXCHANGE_URL",
    "database_url": "SIGNALENGINE_DATABASE_URL",
}


def write_stack_file(state_dir: Path, urls: dict[str, str]) -> Path:
    """Record the running stack's URLs (and this process id) for other commands."""
    path = state_dir / STACK_FILE
    path.write_text(json.dumps({**urls, "pid": os.getpid()}, indent=2))
    return path


def remove_stack_file(state_dir: Path) -> None:
    """Forget the stack (at stop): commands go back to their own defaults."""
    (state_dir / STACK_FILE).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def read_running_stack(state_dir: Path) -> dict[str, Any] | None:
    """The stack file's contents when its `up` process still runs, else None."""
    path = state_dir / STACK_FILE
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    pid = data.get("pid")
    if not isinstance(pid, int) or not _alive(pid):
        return None
    return data


def use_running_stack(state_dir: Path, environ: dict[str, str] | Any = os.environ) -> bool:
    """Point this process at the running stack (setdefault: the environment wins)."""
    stack = read_running_stack(state_dir)
    if stack is None:
        return False
    for key, name in _ENV.items():
        if stack.get(key):
            environ.setdefault(name, str(stack[key]))
    if "MLFLOW_TRACKING_URI" not in environ and "SIGNALENGINE_MLFLOW_TRACKING_URI" in environ:
        environ["MLFLOW_TRACKING_URI"] = environ["SIGNALENGINE_MLFLOW_TRACKING_URI"]
    return True


def sim_anchor_ms(database_url: str, *, exchange: str) -> int | None:
    """Close time (epoch ms) of the newest stored 1m bar of `exchange`; None when empty."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT max(ts) FROM klines WHERE exchange = %s", (exchange,)).fetchone()
    if row is None or row[0] is None:
        return None
    return int(row[0].timestamp() * 1000) + MINUTE_MS


def has_trained_model(database_url: str) -> bool:
    """Whether any retrain registered a model in this database (sql/009 decisions)."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT EXISTS (SELECT 1 FROM model_decisions)").fetchone()
    return bool(row and row[0])


def _stream_runs(client: httpx.Client, states: list[str]) -> list[dict[str, Any]]:
    body = {
        "flows": {"name": {"any_": ["stream"]}},
        "flow_runs": {"state": {"type": {"any_": states}}},
    }
    answer = client.post("/flow_runs/filter", json=body)
    answer.raise_for_status()
    runs: list[dict[str, Any]] = answer.json()
    return runs


def _set_state(client: httpx.Client, run_id: str, state: str) -> None:
    name = state.capitalize()
    client.post(
        f"/flow_runs/{run_id}/set_state",
        json={"state": {"type": state, "name": name}, "force": True},
    ).raise_for_status()


def cancel_stream_runs(api_url: str) -> list[str]:
    """Mark every unfinished `stream` run of the Prefect API at `api_url` Cancelled; ids.

    Only for runs whose process is gone (a stream that runs is stopped with SIGTERM and
    ends its own run Cancelled): a killed stack's runs, or one that died at stop.
    """
    with httpx.Client(base_url=api_url, timeout=5.0) as client:
        runs = _stream_runs(client, ["RUNNING", "PENDING", "CANCELLING"])
        for run in runs:
            _set_state(client, str(run["id"]), "CANCELLED")
    return [str(r["id"]) for r in runs]

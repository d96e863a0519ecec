"""The stack file: commands in other terminals use the running `up`, the environment wins."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from signalengine.stack import (
    read_running_stack,
    remove_stack_file,
    use_running_stack,
    write_stack_file,
)

URLS = {
    "prefect_api_url": "http://127.0.0.1:4999/api",
    "mlflow_tracking_uri": "http://127.0.0.1:5999",
    "exchange_url": "http://127.0.0.1:8999",
    "database_url": "postgresql://postgres@127.0.0.1:54999/postgres",
}


def test_a_running_stack_fills_what_the_environment_leaves_unset(tmp_path: Path) -> None:
    write_stack_file(tmp_path, URLS)  # written by this (running) process
    env = {"PREFECT_API_URL": "http://elsewhere:4200/api"}
    assert use_running_stack(tmp_path, env)
    assert env == {
        "PREFECT_API_URL": "http://elsewhere:4200/api",  # an explicit setting wins
        "SIGNALENGINE_MLFLOW_TRACKING_URI": URLS["mlflow_tracking_uri"],
        "MLFLOW_TRACKING_URI": URLS["mlflow_tracking_uri"],
        "SIGNALENGINE_EXCHANGE_URL": URLS["exchange_url"],
        "SIGNALENGINE_DATABASE_URL": URLS["database_url"],
    }
    remove_stack_file(tmp_path)
    assert read_running_stack(tmp_path) is None
    assert not use_running_stack(tmp_path, {})


def test_a_stack_file_left_by_a_dead_up_is_ignored(tmp_path: Path) -> None:
    # a child writes the file and exits: its pid is gone, as after a killed `up`
    code = (
        "from pathlib import Path; from signalengine.stack import write_stack_file;"
        f" write_stack_file(Path({str(tmp_path)!r}), {URLS!r})"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ))
    assert (tmp_path / "stack.json").exists()
    assert read_running_stack(tmp_path) is None
    env: dict[str, str] = {}
    assert not use_running_stack(tmp_path, env) and env == {}

"""The suite never reads the demo's state: `make demo` then `make test` in one clone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from signalengine.core.config import get_settings
from signalengine.tasks.learning.registry import tracking_uri
from tests.conftest import TEST_STATE_DIR

CHECKOUT_STATE = Path(__file__).resolve().parents[2] / ".state"


def test_this_process_and_its_children_use_a_state_dir_of_their_own() -> None:
    settings = get_settings()
    assert settings.state_dir.resolve() == TEST_STATE_DIR.resolve()
    assert settings.state_dir.resolve() != CHECKOUT_STATE.resolve()
    assert tracking_uri(settings) == f"sqlite:///{(TEST_STATE_DIR / 'mlflow' / 'mlflow.db')}"
    # mlflow.set_tracking_uri() exports MLFLOW_TRACKING_URI: whatever an earlier test set,
    # it is never the checkout's store
    assert str(CHECKOUT_STATE) not in os.environ.get("MLFLOW_TRACKING_URI", "")
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "from signalengine.core.config import Settings; print(Settings().state_dir)",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=CHECKOUT_STATE.parent,  # where a relative `.state` would be the demo's
    )
    assert Path(child.stdout.strip()).resolve() == TEST_STATE_DIR.resolve()

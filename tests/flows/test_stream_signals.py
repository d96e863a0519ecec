"""SIGTERM (and Ctrl-C) end a stream run as Cancelled in Prefect, not Crashed."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pandas as pd
import pytest

from signalengine.simulator import running_simulator
from tests.flows.test_scale_out import _env, _wait_for, _watermark
from tests.utils.processes import running, signalengine, stop

ANCHOR = pd.Timestamp("2025-09-01 00:00", tz="UTC")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_signal_ends_the_run_cancelled(
    db, database_url, prefect_harness, tmp_path: Path, sig: signal.Signals
) -> None:  # type: ignore[no-untyped-def]
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    anchor_ms = int(ANCHOR.value // 1_000_000)
    with running_simulator(symbols=["BTC/USDT"], speed=120, anchor_ms=anchor_ms) as sim:
        env = {
            **_env(database_url, sim),
            "SIGNALENGINE_SYMBOLS": '["BTC/USDT"]',
            "SIGNALENGINE_STREAM_METRICS_PORT": "0",
        }
        log = tmp_path / "stream.log"
        proc = signalengine(["stream"], env=env, log=log)
        with running([proc]):
            _wait_for(lambda: _watermark(db) is not None, 60)
            time.sleep(2)
            proc.send_signal(sig)  # the process alone, as a terminal or supervisor would
            code = proc.wait(30)
            stop(proc)
    assert code == 0, log.read_text()[-2000:]
    last = log.read_text().strip().splitlines()[-1]
    assert json.loads(last)["cancelled"] is True
    name = next(
        line.split("Beginning flow run '")[1].split("'")[0]
        for line in log.read_text().splitlines()
        if "Beginning flow run '" in line
    )
    async with get_client() as client:
        runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name]))
        )
    assert [run.state.type.value for run in runs if run.state] == ["CANCELLED"]
    # tagged for the zombie automation, which marks a killed run Crashed
    assert "signalengine" in runs[0].tags
